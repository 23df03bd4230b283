//! Builds Loki push bodies from deliveries: stream labels from a small fixed set of record
//! fields, high-cardinality fields as structured metadata, lines cut or split to the sink's
//! limit, entries of each stream in timestamp order; then protobuf + snappy (block) or JSON
//! (optionally gzip).
//!
//! What processing added to a record (see [`crate::processing::Extra`]):
//! - stream labels: `static_labels`, then the configured `labels` (a record field, a copied
//!   container label, `level`, or a container field: [`crate::processing::lookup`]), then the
//!   record's own labels (a labels stage), which replace a configured label of the same name;
//!   sorted by name, values cut to Loki's limit (counted);
//! - a host file's record: the container fields resolve to nothing and `stream` too (a file
//!   has no stdout/stderr); `file` and `filename` are its path, `host` the sink's as for a
//!   container, a group field by its name; and its stream gets `filename="<path>"` unless
//!   `labels` names `file` or `filename` or `static_labels` has `filename`
//!   ([`LokiSinkConfig::file_path_label`]), so that every file is a stream of its own;
//! - structured metadata: the configured `structured_metadata` names (looked up the same way),
//!   then the record's metadata (replacing a configured one of the same name), then `level`
//!   when the record has one and neither a stream label nor a metadata entry is named `level`
//!   (Loki 3 derives `detected_level` from it; Grafana reads `level`), then `truncated`;
//! - the entry's timestamp is the record's event time if a stage set one, else Docker's;
//! - the line stays the message;
//! - a push carries one tenant: a [`Slice`] only takes the lines of its tenant.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use super::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use crate::config::{
    LineOverflow, LokiEncoding, LokiSinkConfig, MAX_LABEL_VALUE, valid_label_name,
};
use crate::pipeline::{ContainerMeta, Delivery, LogLine, StreamKind};

/// A request body ready to send (or to buffer on disk and send later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    /// Loki entries in the body (after splitting).
    pub entries: usize,
    /// The push's tenant (`X-Scope-OrgID`); None: the sink's configured `tenant`.
    pub tenant: Option<String>,
}

/// How lines were changed to fit, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Modified {
    pub truncated: u64,
    pub split: u64,
    pub label_values_cut: u64,
    /// Record labels left out because their name is not a Loki label name.
    pub labels_invalid: u64,
}

pub struct Encoder {
    labels: Vec<String>,
    /// The label a host file's stream gets its path in when the configured labels name none
    /// ([`LokiSinkConfig::file_path_label`]).
    file_label: Option<&'static str>,
    static_labels: Vec<(String, String)>,
    metadata: Vec<String>,
    host: String,
    max_line: usize,
    overflow: LineOverflow,
    encoding: LokiEncoding,
    gzip: bool,
    /// Tests: make `encode_slices` fail, as a compression bug would.
    #[cfg(test)]
    pub(crate) fail_for_test: bool,
}

/// Part of a delivery's entries: from piece `piece` of line `line`, `entries` entries (a line
/// becomes several entries under `line_overflow: split`), counting only the lines of `tenant`
/// (the others are in another tenant's push). A delivery larger than a push is sent as several
/// slices in consecutive pushes.
#[derive(Clone, Copy)]
pub struct Slice<'a> {
    pub delivery: &'a Delivery,
    pub line: usize,
    pub piece: usize,
    pub entries: usize,
    pub tenant: Option<&'a str>,
}

impl<'a> Slice<'a> {
    /// Every line of the delivery of the sink's own tenant (records without a tenant).
    pub fn whole(delivery: &'a Delivery) -> Self {
        Slice {
            delivery,
            line: 0,
            piece: 0,
            entries: usize::MAX,
            tenant: None,
        }
    }
}

/// The tenant a record goes to: its own (a tenant stage), or None for the sink's.
pub fn tenant_of(line: &LogLine) -> Option<&str> {
    line.extra
        .as_deref()
        .and_then(|e| e.tenant.as_deref())
        .filter(|t| !t.is_empty())
}

/// The largest prefix of `s` of at most `max` bytes ending on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

pub fn this_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

impl Encoder {
    pub fn new(config: &LokiSinkConfig) -> Self {
        Encoder {
            labels: config.labels.clone(),
            file_label: config.file_path_label(),
            static_labels: config.static_labels.clone().into_iter().collect(),
            metadata: config.structured_metadata.clone(),
            host: if config.host.is_empty() {
                this_hostname()
            } else {
                config.host.clone()
            },
            max_line: config.max_line_bytes.0 as usize,
            overflow: config.line_overflow,
            encoding: config.encoding,
            gzip: config.gzip,
            #[cfg(test)]
            fail_for_test: false,
        }
    }

    /// The value of a configured label or metadata name for a record: `host`, or what
    /// [`crate::processing::lookup`] finds (`stream`, `level`, a record field, a container
    /// field, a copied container label; for a host file `file`, a group field). Never the
    /// message. None when unset or empty.
    fn value<'a>(
        &'a self,
        meta: &'a ContainerMeta,
        line: &'a LogLine,
        name: &str,
    ) -> Option<Cow<'a, str>> {
        match name {
            "host" => Some(Cow::Borrowed(self.host.as_str())),
            "message" => None,
            _ if meta.is_file() => Self::file_value(meta, line, name),
            _ => crate::processing::lookup(line, meta, name),
        }
        .filter(|v| !v.is_empty())
    }

    /// [`Encoder::value`] for a host file's record: no `stream` (a file has no stdout or
    /// stderr; only a field of that name), and `filename` is the path unless a field of that
    /// name says otherwise (as `file` is).
    fn file_value<'a>(
        meta: &'a ContainerMeta,
        line: &'a LogLine,
        name: &str,
    ) -> Option<Cow<'a, str>> {
        match name {
            "stream" => line
                .fields()
                .and_then(|f| f.get(name))
                .map(|v| Cow::Borrowed(v.as_str()))
                .or_else(|| meta.field(name).map(Cow::Borrowed)),
            "filename" => crate::processing::lookup(line, meta, name)
                .or(Some(Cow::Borrowed(meta.name.as_str()))),
            _ => crate::processing::lookup(line, meta, name),
        }
    }

    /// Whether a record's stream labels may differ from those of its container's stream:
    /// it has labels of its own, or a configured label comes from its fields or level.
    fn labels_vary(&self, line: &LogLine) -> bool {
        let Some(e) = line.extra.as_deref() else {
            return false;
        };
        !e.labels.is_empty()
            || self.labels.iter().any(|n| match n.as_str() {
                // A level stage's level, or (without one) a field named level.
                "level" => e.level.is_some() || e.fields.get("level").is_some(),
                "stream" | "host" | "message" => false,
                _ => e.fields.get(n).is_some(),
            })
            || self.file_label.is_some_and(|n| e.fields.get(n).is_some())
    }

    /// Label set of a record's stream, sorted by name, values cut to Loki's limit.
    fn label_pairs(
        &self,
        meta: &ContainerMeta,
        line: &LogLine,
        modified: &mut Modified,
    ) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self.static_labels.clone();
        let mut add = |name: &str, v: &str, modified: &mut Modified| {
            let value = cut(v, MAX_LABEL_VALUE);
            if value.len() < v.len() {
                modified.label_values_cut += 1;
            }
            match pairs.iter_mut().find(|(k, _)| k == name) {
                Some(pair) => pair.1 = value.to_string(),
                None => pairs.push((name.to_string(), value.to_string())),
            }
        };
        for name in &self.labels {
            if let Some(v) = self.value(meta, line, name) {
                add(name, &v, modified);
            }
        }
        if let Some(name) = self.file_label.filter(|_| meta.is_file()) {
            // A host file's stream always names its file (and so has a label).
            if let Some(v) = Self::file_value(meta, line, name).filter(|v| !v.is_empty()) {
                add(name, &v, modified);
            }
        }
        for (name, v) in line.extra.iter().flat_map(|e| e.labels.iter()) {
            if !valid_label_name(name) {
                // Loki would refuse the whole push for it.
                modified.labels_invalid += 1;
            } else if !v.is_empty() {
                add(name, v, modified);
            }
        }
        pairs.sort();
        pairs
    }

    fn label_string(pairs: &[(String, String)]) -> String {
        let mut s = String::from("{");
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(k);
            s.push_str("=\"");
            escape_label_value(&mut s, v);
            s.push('"');
        }
        s.push('}');
        s
    }

    /// `level_is_label`: the record's stream has a `level` label (then no `level` metadata).
    fn metadata_pairs(
        &self,
        meta: &ContainerMeta,
        line: &LogLine,
        level_is_label: bool,
    ) -> Vec<LabelPairAdapter> {
        let mut out: Vec<LabelPairAdapter> = self
            .metadata
            .iter()
            .filter_map(|name| {
                self.value(meta, line, name).map(|v| LabelPairAdapter {
                    name: name.clone(),
                    value: v.into_owned(),
                })
            })
            .collect();
        if let Some(e) = line.extra.as_deref() {
            for (name, value) in &e.metadata {
                match out.iter_mut().find(|p| p.name == **name) {
                    Some(p) => p.value.clone_from(value),
                    None => out.push(LabelPairAdapter {
                        name: name.to_string(),
                        value: value.clone(),
                    }),
                }
            }
            if let Some(level) = e.level
                && !level_is_label
                && !out.iter().any(|p| p.name == "level")
            {
                out.push(LabelPairAdapter {
                    name: "level".to_string(),
                    value: level.as_str().to_string(),
                });
            }
        }
        if line.truncated {
            out.push(LabelPairAdapter {
                name: "truncated".to_string(),
                value: "true".to_string(),
            });
        }
        out
    }

    /// The pieces a line becomes under `max_line_bytes`.
    fn pieces<'a>(&self, text: &'a str, modified: &mut Modified) -> Vec<&'a str> {
        if text.len() <= self.max_line {
            return vec![text];
        }
        match self.overflow {
            LineOverflow::Truncate => {
                modified.truncated += 1;
                vec![cut(text, self.max_line)]
            }
            LineOverflow::Split => {
                modified.split += 1;
                let mut rest = text;
                let mut out = Vec::new();
                while !rest.is_empty() {
                    let piece = cut(rest, self.max_line);
                    // A single character wider than the limit still has to go somewhere.
                    let piece = if piece.is_empty() {
                        &rest[..rest.chars().next().map_or(rest.len(), char::len_utf8)]
                    } else {
                        piece
                    };
                    out.push(piece);
                    rest = &rest[piece.len()..];
                }
                out
            }
        }
    }

    /// Builds the push request for these deliveries (all of their entries).
    pub fn build(&self, deliveries: &[Arc<Delivery>]) -> (PushRequest, Modified) {
        let slices: Vec<Slice<'_>> = deliveries.iter().map(|d| Slice::whole(d)).collect();
        self.build_slices(&slices)
    }

    /// The entries one line becomes, as byte lengths (1 unless `split` cuts it), calling
    /// `each` for every one in order. What `build` sends, without building it: the worker
    /// cuts pushes at `batch.max_entries` / `batch.max_bytes` with it.
    pub fn entry_sizes(&self, line: &LogLine, mut each: impl FnMut(usize)) {
        let text = String::from_utf8_lossy(&line.message);
        if text.len() <= self.max_line {
            each(text.len());
            return;
        }
        for piece in self.pieces(&text, &mut Modified::default()) {
            each(piece.len());
        }
    }

    /// Builds the push request for these slices of deliveries.
    pub fn build_slices(&self, slices: &[Slice<'_>]) -> (PushRequest, Modified) {
        let mut modified = Modified::default();
        // The stream of a container's stream, for records whose labels do not vary.
        let mut index: HashMap<(String, StreamKind, String), usize> = HashMap::new();
        let mut by_labels: HashMap<String, usize> = HashMap::new();
        let mut streams: Vec<StreamAdapter> = Vec::new();
        let mut pending_sort = Vec::new();
        // Different containers (or records) can share a label set: one stream.
        let mut stream_of = |labels: String, streams: &mut Vec<StreamAdapter>| -> usize {
            *by_labels.entry(labels).or_insert_with_key(|labels| {
                streams.push(StreamAdapter {
                    labels: labels.clone(),
                    entries: Vec::new(),
                });
                streams.len() - 1
            })
        };
        let static_level = self.static_labels.iter().any(|(k, _)| k == "level");
        for slice in slices {
            let meta = &slice.delivery.batch.container;
            let mut skip = slice.piece;
            let mut left = slice.entries;
            for line in slice.delivery.batch.lines.iter().skip(slice.line) {
                if left == 0 {
                    break;
                }
                if tenant_of(line) != slice.tenant {
                    continue;
                }
                let (at, level_is_label) = if self.labels_vary(line) {
                    let pairs = self.label_pairs(meta, line, &mut modified);
                    let level_is_label = pairs.iter().any(|(k, _)| k == "level");
                    (
                        stream_of(Self::label_string(&pairs), &mut streams),
                        level_is_label,
                    )
                } else {
                    let key = (meta.id.clone(), line.stream, meta.name.clone());
                    let at = match index.get(&key) {
                        Some(&i) => i,
                        None => {
                            let pairs = self.label_pairs(meta, line, &mut modified);
                            let i = stream_of(Self::label_string(&pairs), &mut streams);
                            index.insert(key, i);
                            i
                        }
                    };
                    (at, static_level)
                };
                let text = String::from_utf8_lossy(&line.message);
                let ts_ns = line.display_ns();
                let timestamp = Some(Timestamp::from_nanos(ts_ns));
                let metadata = self.metadata_pairs(meta, line, level_is_label);
                pending_sort.resize(streams.len(), false);
                let entries = &mut streams[at].entries;
                if entries
                    .last()
                    .and_then(|e| e.timestamp)
                    .is_some_and(|t| t.to_nanos() > ts_ns)
                {
                    pending_sort[at] = true;
                }
                // A line split across two pushes is counted once, by the push with its start.
                let mut line_modified = Modified::default();
                let pieces = self.pieces(&text, &mut line_modified);
                if skip == 0 {
                    modified.truncated += line_modified.truncated;
                    modified.split += line_modified.split;
                }
                for piece in pieces.into_iter().skip(skip).take(left) {
                    entries.push(EntryAdapter {
                        timestamp,
                        line: piece.to_string(),
                        structured_metadata: metadata.clone(),
                    });
                    left -= 1;
                }
                skip = 0;
            }
        }
        for (s, needs) in streams.iter_mut().zip(pending_sort) {
            if needs {
                // Stable: pieces of a split line and equal stamps keep their order.
                s.entries
                    .sort_by_key(|e| e.timestamp.map(|t| t.to_nanos()).unwrap_or(0));
            }
        }
        (PushRequest { streams }, modified)
    }

    pub fn encode(&self, deliveries: &[Arc<Delivery>]) -> Result<(EncodedBatch, Modified), String> {
        let slices: Vec<Slice<'_>> = deliveries.iter().map(|d| Slice::whole(d)).collect();
        self.encode_slices(&slices)
    }

    /// The request as plain (uncompressed) JSON, which cannot fail: the worker's fallback
    /// when the configured encoding fails, so that a batch is never stuck unencodable.
    pub fn encode_slices_plain_json(&self, slices: &[Slice<'_>]) -> (EncodedBatch, Modified) {
        let (request, modified) = self.build_slices(slices);
        let entries = request.streams.iter().map(|s| s.entries.len()).sum();
        let batch = EncodedBatch {
            body: to_json(&request),
            content_type: "application/json",
            content_encoding: None,
            entries,
            tenant: None,
        };
        (batch, modified)
    }

    pub fn encode_slices(&self, slices: &[Slice<'_>]) -> Result<(EncodedBatch, Modified), String> {
        #[cfg(test)]
        if self.fail_for_test {
            return Err("compression failure injected by a test".to_string());
        }
        let (request, modified) = self.build_slices(slices);
        let entries = request.streams.iter().map(|s| s.entries.len()).sum();
        let batch = match self.encoding {
            LokiEncoding::Protobuf => {
                let raw = prost::Message::encode_to_vec(&request);
                let body = snap::raw::Encoder::new()
                    .compress_vec(&raw)
                    .map_err(|e| format!("snappy: {e}"))?;
                EncodedBatch {
                    body,
                    content_type: "application/x-protobuf",
                    content_encoding: None,
                    entries,
                    tenant: None,
                }
            }
            LokiEncoding::Json => {
                let json = to_json(&request);
                if self.gzip {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&json).map_err(|e| format!("gzip: {e}"))?;
                    let body = gz.finish().map_err(|e| format!("gzip: {e}"))?;
                    EncodedBatch {
                        body,
                        content_type: "application/json",
                        content_encoding: Some("gzip"),
                        entries,
                        tenant: None,
                    }
                } else {
                    EncodedBatch {
                        body: json,
                        content_type: "application/json",
                        content_encoding: None,
                        entries,
                        tenant: None,
                    }
                }
            }
        };
        Ok((batch, modified))
    }
}

/// Loki's JSON push format, from the same request.
fn to_json(request: &PushRequest) -> Vec<u8> {
    let streams: Vec<serde_json::Value> = request
        .streams
        .iter()
        .map(|s| {
            let labels: serde_json::Map<String, serde_json::Value> = parse_label_string(&s.labels)
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let values: Vec<serde_json::Value> = s
                .entries
                .iter()
                .map(|e| {
                    let ts = e.timestamp.map(|t| t.to_nanos()).unwrap_or(0).to_string();
                    if e.structured_metadata.is_empty() {
                        serde_json::json!([ts, e.line])
                    } else {
                        let md: serde_json::Map<String, serde_json::Value> = e
                            .structured_metadata
                            .iter()
                            .map(|p| (p.name.clone(), serde_json::Value::String(p.value.clone())))
                            .collect();
                        serde_json::json!([ts, e.line, md])
                    }
                })
                .collect();
            serde_json::json!({ "stream": labels, "values": values })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "streams": streams })).unwrap_or_default()
}

/// Parses the label strings this module writes (`{a="x", b="y\""}`).
pub fn parse_label_string(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim().to_string(), value));
    }
}

#[cfg(test)]
#[path = "encode_file_tests.rs"]
mod file_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Cursor;
    use crate::observability::metrics::Metrics;
    use crate::pipeline::{Batch, QueueBudget};
    use bytes::Bytes;

    fn meta(name: &str) -> Arc<ContainerMeta> {
        Arc::new(ContainerMeta::new(
            format!("{name}-id"),
            name.to_string(),
            "img:1".to_string(),
            Some("shop".to_string()),
            None,
        ))
    }

    pub(super) fn line(ts: i64, text: &str, stream: StreamKind) -> LogLine {
        LogLine {
            ts_ns: ts,
            stream,
            message: Bytes::from(text.to_string()),
            truncated: false,
            extra: None,
        }
    }

    async fn delivery(meta: Arc<ContainerMeta>, lines: Vec<LogLine>) -> Arc<Delivery> {
        delivery_at(meta, lines, Cursor::at(0).into()).await
    }

    /// Also used by `file_tests`.
    pub(super) async fn delivery_at(
        meta: Arc<ContainerMeta>,
        lines: Vec<LogLine>,
        position: crate::pipeline::AckPosition,
    ) -> Arc<Delivery> {
        let budget = QueueBudget::new(1 << 20, Arc::new(Metrics::new()));
        let permit = budget.acquire(1, 1).await.expect("permit");
        Arc::new(Delivery::new(
            Batch {
                container: meta,
                lines,
                position,
            },
            permit,
        ))
    }

    fn config() -> LokiSinkConfig {
        LokiSinkConfig {
            host: "h1".to_string(),
            ..LokiSinkConfig::default()
        }
    }

    #[tokio::test]
    async fn groups_by_labels_sorts_and_adds_metadata() {
        let enc = Encoder::new(&config());
        let d1 = delivery(
            meta("web"),
            vec![
                line(30, "c", StreamKind::Stdout),
                line(10, "a", StreamKind::Stdout),
                line(20, "err", StreamKind::Stderr),
            ],
        )
        .await;
        let (req, _) = enc.build(&[d1]);
        assert_eq!(req.streams.len(), 2);
        let out = &req.streams[0];
        assert_eq!(
            out.labels,
            r#"{compose_project="shop", container_name="web", host="h1", stream="stdout"}"#
        );
        let lines: Vec<&str> = out.entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["a", "c"], "timestamp order within a stream");
        let md: Vec<(&str, &str)> = out.entries[0]
            .structured_metadata
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(md, [("container_id", "web-id"), ("image", "img:1")]);
    }

    #[tokio::test]
    async fn truncates_or_splits_long_lines() {
        let long = "é".repeat(1000); // 2000 bytes
        let mut c = config();
        c.max_line_bytes = crate::config::ByteSize(1024);
        let enc = Encoder::new(&c);
        let (req, m) =
            enc.build(&[delivery(meta("w"), vec![line(1, &long, StreamKind::Stdout)]).await]);
        assert_eq!(req.streams[0].entries.len(), 1);
        assert_eq!(req.streams[0].entries[0].line.len(), 1024);
        assert_eq!(m.truncated, 1);
        c.line_overflow = LineOverflow::Split;
        let enc = Encoder::new(&c);
        let (req, m) =
            enc.build(&[delivery(meta("w"), vec![line(1, &long, StreamKind::Stdout)]).await]);
        let joined: String = req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(joined, long);
        assert_eq!(req.streams[0].entries.len(), 2);
        assert_eq!(m.split, 1);
    }

    /// Slices cut a delivery between entries, even inside a split line; the sizes the worker
    /// batches with are those of the entries built.
    #[tokio::test]
    async fn slices_cut_between_entries_of_a_split_line() {
        let mut c = config();
        c.max_line_bytes = crate::config::ByteSize(1024);
        c.line_overflow = LineOverflow::Split;
        let enc = Encoder::new(&c);
        let long = "x".repeat(2500); // 3 entries: 1024 + 1024 + 452
        let d = delivery(
            meta("w"),
            vec![
                line(1, "a", StreamKind::Stdout),
                line(2, &long, StreamKind::Stdout),
                line(3, "b", StreamKind::Stdout),
            ],
        )
        .await;
        let mut sizes = Vec::new();
        for l in &d.batch.lines {
            enc.entry_sizes(l, |n| sizes.push(n));
        }
        assert_eq!(sizes, [1, 1024, 1024, 452, 1]);
        let lines = |slice: Slice<'_>| {
            let (req, m) = enc.build_slices(&[slice]);
            let lines: Vec<usize> = req.streams[0]
                .entries
                .iter()
                .map(|e| e.line.len())
                .collect();
            (lines, m.split)
        };
        let first = Slice {
            delivery: &d,
            line: 0,
            piece: 0,
            entries: 2,
            tenant: None,
        };
        let second = Slice {
            delivery: &d,
            line: 1,
            piece: 1,
            entries: 3,
            tenant: None,
        };
        assert_eq!(lines(first), (vec![1, 1024], 1));
        assert_eq!(lines(second), (vec![1024, 452, 1], 0), "split counted once");
    }

    #[tokio::test]
    async fn protobuf_body_round_trips() {
        let enc = Encoder::new(&config());
        let d = delivery(
            meta("w"),
            vec![line(
                1_700_000_000_123_456_789,
                "hi \"there\"",
                StreamKind::Stdout,
            )],
        )
        .await;
        let (batch, _) = enc.encode(&[d]).expect("encode");
        assert_eq!(batch.content_type, "application/x-protobuf");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&batch.body)
            .expect("snappy block");
        let req: PushRequest = prost::Message::decode(raw.as_slice()).expect("protobuf");
        let e = &req.streams[0].entries[0];
        assert_eq!(e.line, "hi \"there\"");
        assert_eq!(
            e.timestamp.map(|t| t.to_nanos()),
            Some(1_700_000_000_123_456_789)
        );
    }

    fn md(e: &EntryAdapter) -> Vec<(&str, &str)> {
        e.structured_metadata
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect()
    }

    /// Record labels join (and override) the configured ones, record metadata and the level
    /// go to structured metadata, the event time is the entry's time, the line is the message.
    #[tokio::test]
    async fn records_bring_labels_metadata_level_and_event_time() {
        let mut c = config();
        c.labels = vec!["container_name".into(), "team".into()];
        let enc = Encoder::new(&c);
        let m = Arc::new(
            (*meta("web"))
                .clone()
                .with_label_fields(vec![("team".into(), "pay".into())]),
        );
        let plain = line(10, "plain", StreamKind::Stdout);
        let mut rich = line(20, "rich", StreamKind::Stdout);
        let e = rich.extra_mut();
        e.labels = vec![("app".into(), "shop".into()), ("team".into(), "ops".into())];
        e.metadata = vec![
            ("trace_id".into(), "t1".into()),
            ("image".into(), "x".into()),
        ];
        e.level = Some(crate::processing::Level::Error);
        e.event_ns = Some(5);
        let (req, _) = enc.build(&[delivery(m, vec![plain, rich]).await]);
        assert_eq!(req.streams.len(), 2);
        assert_eq!(
            req.streams[0].labels,
            r#"{container_name="web", team="pay"}"#
        );
        assert_eq!(
            md(&req.streams[0].entries[0]),
            [("container_id", "web-id"), ("image", "img:1")]
        );
        let s = &req.streams[1];
        assert_eq!(
            s.labels,
            r#"{app="shop", container_name="web", team="ops"}"#
        );
        let entry = &s.entries[0];
        assert_eq!(entry.line, "rich");
        assert_eq!(entry.timestamp.map(|t| t.to_nanos()), Some(5));
        assert_eq!(
            md(entry),
            [
                ("container_id", "web-id"),
                ("image", "x"),
                ("trace_id", "t1"),
                ("level", "error")
            ]
        );
    }

    /// A level that is a stream label is not repeated as metadata; a configured name finds
    /// record fields; records of the same labels share a stream; bad record labels are left
    /// out and counted; long values are cut and counted.
    #[tokio::test]
    async fn level_label_fields_and_limits() {
        let mut c = config();
        c.labels = vec!["level".into(), "app".into()];
        c.structured_metadata = vec!["user".into()];
        let enc = Encoder::new(&c);
        let mk = |ts: i64, app: &str| {
            let mut l = line(ts, "x", StreamKind::Stdout);
            let e = l.extra_mut();
            e.level = Some(crate::processing::Level::Warn);
            e.fields
                .set("app".into(), crate::processing::FieldValue::Str(app.into()));
            e.fields.set(
                "user".into(),
                crate::processing::FieldValue::Str("ann".into()),
            );
            l
        };
        let mut bad = mk(3, "a");
        bad.extra_mut().labels = vec![("bad-name".into(), "v".into())];
        let long = mk(4, &"y".repeat(MAX_LABEL_VALUE + 10));
        let lines = vec![mk(1, "a"), mk(2, "b"), bad, long];
        let (req, modified) = enc.build(&[delivery(meta("w"), lines).await]);
        let labels: Vec<&str> = req.streams.iter().map(|s| s.labels.as_str()).collect();
        assert_eq!(labels.len(), 3, "{labels:?}");
        assert_eq!(labels[0], r#"{app="a", level="warn"}"#);
        assert_eq!(labels[1], r#"{app="b", level="warn"}"#);
        assert_eq!(req.streams[0].entries.len(), 2, "same labels, one stream");
        assert_eq!(md(&req.streams[0].entries[0]), [("user", "ann")]);
        assert_eq!(modified.labels_invalid, 1);
        assert_eq!(modified.label_values_cut, 1);
    }

    /// A push carries one tenant: a slice takes only its tenant's lines.
    #[tokio::test]
    async fn slices_take_only_their_tenant() {
        let enc = Encoder::new(&config());
        let tenant = |ts: i64, t: Option<&str>| {
            let mut l = line(ts, &format!("l{ts}"), StreamKind::Stdout);
            if let Some(t) = t {
                l.extra_mut().tenant = Some(t.into());
            }
            l
        };
        let d = delivery(
            meta("w"),
            vec![
                tenant(1, Some("a")),
                tenant(2, None),
                tenant(3, Some("a")),
                tenant(4, Some("")),
            ],
        )
        .await;
        let lines = |slice: Slice<'_>| -> Vec<String> {
            let (req, _) = enc.build_slices(&[slice]);
            req.streams
                .iter()
                .flat_map(|s| s.entries.iter().map(|e| e.line.clone()))
                .collect()
        };
        assert_eq!(
            lines(Slice::whole(&d)),
            ["l2", "l4"],
            "empty tenant: the sink's"
        );
        let a = Slice {
            tenant: Some("a"),
            ..Slice::whole(&d)
        };
        assert_eq!(lines(a), ["l1", "l3"]);
        let from_second = Slice {
            line: 2,
            entries: 1,
            ..a
        };
        assert_eq!(lines(from_second), ["l3"]);
    }

    #[test]
    fn label_strings_round_trip() {
        let pairs = vec![
            ("a".to_string(), "x\"y\\z\nw".to_string()),
            ("b".to_string(), "plain".to_string()),
        ];
        let s = Encoder::label_string(&pairs);
        assert_eq!(parse_label_string(&s), pairs);
    }

    /// A configured label `level` and records with a `level` *field* (a json stage, no level
    /// stage): each record gets its own value, not the first record's cached label set.
    #[tokio::test]
    async fn a_level_field_label_is_per_record() {
        let mut c = config();
        c.labels = vec!["level".into()];
        let enc = Encoder::new(&c);
        let mk = |ts: i64, lvl: &str| {
            let mut l = line(ts, "x", StreamKind::Stdout);
            l.extra_mut().fields.set(
                "level".into(),
                crate::processing::FieldValue::Str(lvl.into()),
            );
            l
        };
        let (req, _) = enc.build(&[delivery(meta("w"), vec![mk(1, "info"), mk(2, "error")]).await]);
        let labels: Vec<&str> = req.streams.iter().map(|s| s.labels.as_str()).collect();
        assert_eq!(labels, [r#"{level="info"}"#, r#"{level="error"}"#]);
    }
}
