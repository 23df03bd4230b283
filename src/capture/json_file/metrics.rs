//! Metrics of the json-file capture mode (`log_capturer_json_file_*`).

use crate::observability::reasons::JsonFileFallbackReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Reasons of `log_capturer_json_file_fallbacks_total` (all start at 0; the enum documents
/// each).
pub const FALLBACK_REASONS: &[&str] = JsonFileFallbackReason::LABELS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub reason: &'static str,
}

#[derive(Default)]
pub struct JsonFileMetrics {
    /// Containers being read from their json-file log now.
    pub containers: Gauge,
    /// Bytes read from json-file logs (decompressed, for `.gz` rotated files).
    pub bytes_read: Counter,
    /// Docker rotations followed (moves from a log file to the next one).
    pub rotations: Counter,
    /// Containers read through the API instead, by reason.
    pub fallbacks: Family<FallbackLabels, Counter>,
    /// Entries that were not valid json-file lines (kept as raw text).
    pub parse_errors: Counter,
    /// Truncations of a written log seen (older daemons' `max-file=1` rotation): read from 0.
    pub truncations: Counter,
    /// Reopens from the cursor because a file's place in the rotation was ambiguous (several
    /// `.gz` files with its first entry).
    pub reopens: Counter,
}

impl JsonFileMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "log_capturer_json_file_containers",
            "Containers read from their json-file log (docker.capture: json_file)",
            self.containers.clone(),
        );
        registry.register(
            "log_capturer_json_file_bytes_read",
            "Bytes read from containers' json-file logs",
            self.bytes_read.clone(),
        );
        registry.register(
            "log_capturer_json_file_rotations",
            "Docker log file rotations followed (max-size/max-file)",
            self.rotations.clone(),
        );
        registry.register(
            "log_capturer_json_file_fallbacks",
            "Containers read through the Engine API in json_file mode, by reason",
            self.fallbacks.clone(),
        );
        registry.register(
            "log_capturer_json_file_parse_errors",
            "Malformed json-file entries (kept as raw text)",
            self.parse_errors.clone(),
        );
        registry.register(
            "log_capturer_json_file_truncations",
            "Truncations of a container's json-file log seen (read again from its start)",
            self.truncations.clone(),
        );
        registry.register(
            "log_capturer_json_file_reopens",
            "Reopens of a json-file log from the cursor (its place in Docker's rotation was ambiguous)",
            self.reopens.clone(),
        );
        for reason in FALLBACK_REASONS {
            let _ = self.fallbacks.get_or_create(&FallbackLabels { reason });
        }
    }

    pub fn fallback(&self, reason: JsonFileFallbackReason) {
        let reason = reason.as_label();
        self.fallbacks
            .get_or_create(&FallbackLabels { reason })
            .inc();
    }
}
