//! On-disk buffers: an append-only, crash-safe segment store used by the sinks that deliver
//! over the network (Loki, Kafka) to keep batches while their destination is unreachable
//! (replayed in order when it recovers, also after a restart) and, as a second instance, to
//! keep dead letters (what the destination refused for good). Each sink has its own
//! directories (`<state_dir>/buffer/<sink>`, `<state_dir>/dlq/<sink>`) and its own record
//! format inside the store's records.
//!
//! See [`segment`] for the file format and the crash semantics, [`dlq`] for the `dlq`
//! commands that manage the dead letters.

pub mod dlq;
pub mod segment;
mod shared;

pub use shared::{SharedStore, buffer_dir, buffer_options, dlq_dir, dlq_options};

pub use segment::{
    AppendError, FsyncPolicy, OpenReport, ParseRecordIdError, RecordId, SegmentStore, StoreError,
    StoreOptions,
};
