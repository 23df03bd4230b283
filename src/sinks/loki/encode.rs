//! Builds Loki push bodies from deliveries: stream labels from a small fixed set of record
//! fields, high-cardinality fields as structured metadata, lines cut or split to the sink's
//! limit, entries of each stream in timestamp order; then protobuf + snappy (block) or JSON
//! (optionally gzip).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use super::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use crate::config::{LineOverflow, LokiEncoding, LokiSinkConfig, MAX_LABEL_VALUE};
use crate::pipeline::{ContainerMeta, Delivery, LogLine, StreamKind};

/// A request body ready to send (or to buffer on disk and send later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    /// Loki entries in the body (after splitting).
    pub entries: usize,
}

/// How lines were changed to fit, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Modified {
    pub truncated: u64,
    pub split: u64,
    pub label_values_cut: u64,
}

pub struct Encoder {
    labels: Vec<String>,
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
/// becomes several entries under `line_overflow: split`). A delivery larger than a push is
/// sent as several slices in consecutive pushes.
#[derive(Clone, Copy)]
pub struct Slice<'a> {
    pub delivery: &'a Delivery,
    pub line: usize,
    pub piece: usize,
    pub entries: usize,
}

impl<'a> Slice<'a> {
    pub fn whole(delivery: &'a Delivery) -> Self {
        Slice {
            delivery,
            line: 0,
            piece: 0,
            entries: usize::MAX,
        }
    }
}

fn field<'a>(
    meta: &'a ContainerMeta,
    stream: StreamKind,
    host: &'a str,
    name: &str,
) -> Option<&'a str> {
    match name {
        "container_name" => Some(meta.name.as_str()),
        "container_id" => Some(meta.id.as_str()),
        "image" => Some(meta.image.as_str()),
        "compose_project" => meta.compose_project.as_deref(),
        "compose_service" => meta.compose_service.as_deref(),
        "stream" => Some(stream.as_str()),
        "host" => Some(host),
        _ => None,
    }
    .filter(|v| !v.is_empty())
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

    /// Label set of a container's stream, sorted by name, values cut to Loki's limit.
    fn label_pairs(
        &self,
        meta: &ContainerMeta,
        stream: StreamKind,
        modified: &mut Modified,
    ) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self.static_labels.clone();
        for name in &self.labels {
            if let Some(v) = field(meta, stream, &self.host, name) {
                let value = cut(v, MAX_LABEL_VALUE);
                if value.len() < v.len() {
                    modified.label_values_cut += 1;
                }
                pairs.push((name.clone(), value.to_string()));
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

    fn metadata_pairs(
        &self,
        meta: &ContainerMeta,
        stream: StreamKind,
        line: &LogLine,
    ) -> Vec<LabelPairAdapter> {
        let mut out: Vec<LabelPairAdapter> = self
            .metadata
            .iter()
            .filter_map(|name| {
                field(meta, stream, &self.host, name).map(|v| LabelPairAdapter {
                    name: name.clone(),
                    value: v.to_string(),
                })
            })
            .collect();
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
        let mut index: HashMap<(String, StreamKind, String), usize> = HashMap::new();
        let mut streams: Vec<StreamAdapter> = Vec::new();
        let mut pending_sort = Vec::new();
        for slice in slices {
            let meta = &slice.delivery.batch.container;
            let mut skip = slice.piece;
            let mut left = slice.entries;
            for line in slice.delivery.batch.lines.iter().skip(slice.line) {
                if left == 0 {
                    break;
                }
                let key = (meta.id.clone(), line.stream, meta.name.clone());
                let at = match index.get(&key) {
                    Some(&i) => i,
                    None => {
                        let labels =
                            Self::label_string(&self.label_pairs(meta, line.stream, &mut modified));
                        // Different containers can share a label set: merge into one stream.
                        let i = match streams.iter().position(|s| s.labels == labels) {
                            Some(i) => i,
                            None => {
                                streams.push(StreamAdapter {
                                    labels,
                                    entries: Vec::new(),
                                });
                                pending_sort.push(false);
                                streams.len() - 1
                            }
                        };
                        index.insert(key, i);
                        i
                    }
                };
                let text = String::from_utf8_lossy(&line.message);
                let timestamp = Some(Timestamp::from_nanos(line.ts_ns));
                let metadata = self.metadata_pairs(meta, line.stream, line);
                let entries = &mut streams[at].entries;
                if entries
                    .last()
                    .and_then(|e| e.timestamp)
                    .is_some_and(|t| t.to_nanos() > line.ts_ns)
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
                    }
                } else {
                    EncodedBatch {
                        body: json,
                        content_type: "application/json",
                        content_encoding: None,
                        entries,
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

    fn line(ts: i64, text: &str, stream: StreamKind) -> LogLine {
        LogLine {
            ts_ns: ts,
            stream,
            message: Bytes::from(text.to_string()),
            truncated: false,
            extra: None,
        }
    }

    async fn delivery(meta: Arc<ContainerMeta>, lines: Vec<LogLine>) -> Arc<Delivery> {
        let budget = QueueBudget::new(1 << 20, Arc::new(Metrics::new()));
        let permit = budget.acquire(1, 1).await.expect("permit");
        Arc::new(Delivery::new(
            Batch {
                container: meta,
                lines,
                cursor: Cursor::at(0),
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
        };
        let second = Slice {
            delivery: &d,
            line: 1,
            piece: 1,
            entries: 3,
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

    #[test]
    fn label_strings_round_trip() {
        let pairs = vec![
            ("a".to_string(), "x\"y\\z\nw".to_string()),
            ("b".to_string(), "plain".to_string()),
        ];
        let s = Encoder::label_string(&pairs);
        assert_eq!(parse_label_string(&s), pairs);
    }
}
