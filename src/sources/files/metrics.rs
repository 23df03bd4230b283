//! Metrics of the host-file source (`log_capturer_files_*`, `log_capturer_file_*`).
//! Labels are fixed reason/kind names, and the path for the per-file lag gauge, whose series
//! is removed when the file goes away (deleted, rotated away and finished, or no longer
//! matched).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::checkpoint::FileId;
use crate::observability::metrics::ReasonLabels;
use crate::observability::reasons::{FileSourceErrorReason, HostFileRotationKind};

/// Reasons of `log_capturer_file_source_errors_total` (all start at 0; the enum documents
/// each).
pub const FILE_SOURCE_ERROR_REASONS: &[&str] = FileSourceErrorReason::LABELS;

/// Kinds of `log_capturer_file_rotations_total`.
pub const FILE_ROTATION_KINDS: &[&str] = HostFileRotationKind::LABELS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Default)]
pub struct FileSourceMetrics {
    /// Files matched by the globs and followed (open or idle-closed).
    pub watched: Gauge,
    /// Descriptors of followed files open now (at most `max_open_files`).
    pub open: Gauge,
    pub bytes_read: Counter,
    pub lines: Counter,
    /// Size minus acknowledged offset, per path (set through [`FileSourceMetrics::set_lag`]).
    pub lag_bytes: Family<PathLabels, Gauge>,
    /// Which file (identity) each `lag_bytes` series is of now: after rename + create two
    /// readers have had the same path; the one finishing must not remove the other's series.
    lag_owners: std::sync::Mutex<std::collections::HashMap<String, FileId>>,
    pub rotations: Family<KindLabels, Counter>,
    pub truncations: Counter,
    pub errors: Family<ReasonLabels, Counter>,
    /// inotify could not be set up or a watch failed: the rescan is what finds files.
    pub inotify_fallbacks: Counter,
    /// A stored position's inode now holds another file (other fingerprint): read as new.
    pub inode_reuses: Counter,
    /// Last lines without newline emitted after `flush_partial_after` or at rotation.
    pub partial_flushes: Counter,
}

impl FileSourceMetrics {
    /// The lag of the file `owner` at `labels`' path (the series is its own from now on).
    pub fn set_lag(&self, labels: &PathLabels, owner: FileId, lag: i64) {
        self.owners().insert(labels.path.clone(), owner);
        self.lag_bytes.get_or_create(labels).set(lag);
    }

    /// `owner` no longer reports its lag at `labels`' path: the series goes, unless another
    /// file has taken the path since.
    pub fn release_lag(&self, labels: &PathLabels, owner: FileId) {
        let mut owners = self.owners();
        if owners.get(&labels.path) == Some(&owner) {
            owners.remove(&labels.path);
            self.lag_bytes.remove(labels);
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, FileId>> {
        match self.lag_owners.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        for &reason in FILE_SOURCE_ERROR_REASONS {
            let _ = self.errors.get_or_create(&ReasonLabels { reason });
        }
        for &kind in FILE_ROTATION_KINDS {
            let _ = self.rotations.get_or_create(&KindLabels { kind });
        }
        let r = registry;
        r.register(
            "log_capturer_files_watched",
            "Host files matched by sources.files and followed",
            self.watched.clone(),
        );
        r.register(
            "log_capturer_files_open",
            "Host files whose descriptor is open (at most file_settings.max_open_files)",
            self.open.clone(),
        );
        r.register(
            "log_capturer_file_source_bytes_read",
            "Bytes read from host files",
            self.bytes_read.clone(),
        );
        r.register(
            "log_capturer_file_source_lines",
            "Lines read from host files (handed to the pipeline, before processing)",
            self.lines.clone(),
        );
        r.register(
            "log_capturer_file_lag_bytes",
            "Bytes of a host file not yet acknowledged by every sink (size minus position)",
            self.lag_bytes.clone(),
        );
        r.register(
            "log_capturer_file_rotations",
            "Host files rotated away (rename) or deleted, read to their end",
            self.rotations.clone(),
        );
        r.register(
            "log_capturer_file_truncations",
            "Host files found shorter than the position read (copytruncate): read again from 0",
            self.truncations.clone(),
        );
        r.register(
            "log_capturer_file_source_errors",
            "Host-file source failures, by reason",
            self.errors.clone(),
        );
        r.register(
            "log_capturer_file_source_inotify_fallbacks",
            "inotify unavailable or a watch failed (e.g. max_user_watches): the rescan finds files",
            self.inotify_fallbacks.clone(),
        );
        r.register(
            "log_capturer_file_source_inode_reuses",
            "Stored positions whose inode now holds another file (read from its start)",
            self.inode_reuses.clone(),
        );
        r.register(
            "log_capturer_file_source_partial_flushes",
            "Last lines without newline emitted after flush_partial_after or at rotation",
            self.partial_flushes.clone(),
        );
    }

    pub fn error(&self, reason: FileSourceErrorReason) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.as_label(),
            })
            .inc();
    }

    pub fn rotation(&self, kind: HostFileRotationKind) {
        self.rotations
            .get_or_create(&KindLabels {
                kind: kind.as_label(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason and kind starts at 0 (the call sites take the enums of
    /// `observability::reasons`, so these lists are all that can be counted).
    #[test]
    fn every_reason_and_kind_starts_at_zero() {
        let mut registry = Registry::default();
        let metrics = FileSourceMetrics::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        for r in FILE_SOURCE_ERROR_REASONS {
            let series = format!("log_capturer_file_source_errors_total{{reason=\"{r}\"}} 0");
            assert!(out.contains(&series), "{series} missing:\n{out}");
        }
    }
}
