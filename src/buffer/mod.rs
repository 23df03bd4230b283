//! On-disk buffers: an append-only, crash-safe segment store used by the Loki sink to keep
//! request bodies while Loki is unreachable (replayed in order when it recovers, also after
//! a restart) and, as a second instance, to keep dead letters (batches Loki rejected).
//!
//! See [`segment`] for the file format and the crash semantics.

pub mod segment;

pub use segment::{
    AppendError, FsyncPolicy, OpenReport, ParseRecordIdError, RecordId, SegmentStore, StoreOptions,
};
