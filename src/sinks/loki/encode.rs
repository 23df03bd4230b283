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
//!
//! Files: this one cuts slices into the push request and encodes it (protobuf + snappy, JSON);
//! `encode/labels.rs` has the stream labels, metadata and label strings; `encode/lines.rs`
//! the cutting and splitting of lines under `max_line_bytes`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use super::SinkError;
use super::proto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
use crate::config::{LineOverflow, LokiEncoding, LokiSinkConfig};
use crate::pipeline::{Delivery, LogLine, StreamKind};

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

    /// Builds the push request for these deliveries (all of their entries).
    pub fn build(&self, deliveries: &[Arc<Delivery>]) -> (PushRequest, Modified) {
        let slices: Vec<Slice<'_>> = deliveries.iter().map(|d| Slice::whole(d)).collect();
        self.build_slices(&slices)
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

    pub fn encode(
        &self,
        deliveries: &[Arc<Delivery>],
    ) -> Result<(EncodedBatch, Modified), SinkError> {
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

    pub fn encode_slices(
        &self,
        slices: &[Slice<'_>],
    ) -> Result<(EncodedBatch, Modified), SinkError> {
        #[cfg(test)]
        if self.fail_for_test {
            return Err(SinkError::InjectedForTest);
        }
        let (request, modified) = self.build_slices(slices);
        let entries = request.streams.iter().map(|s| s.entries.len()).sum();
        let batch = match self.encoding {
            LokiEncoding::Protobuf => {
                let raw = prost::Message::encode_to_vec(&request);
                let body = snap::raw::Encoder::new()
                    .compress_vec(&raw)
                    .map_err(SinkError::Snappy)?;
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
                    gz.write_all(&json).map_err(SinkError::Gzip)?;
                    let body = gz.finish().map_err(SinkError::Gzip)?;
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

mod labels;
mod lines;

pub use labels::parse_label_string;
use lines::cut;

#[cfg(test)]
#[path = "encode_file_tests.rs"]
mod file_tests;

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
