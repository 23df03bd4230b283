//! From capture to sinks: the byte-budgeted queue, the router that fans batches out to one
//! worker per sink, and the ledger that lets a container's checkpoint advance only past what
//! every sink has acknowledged.
//!
//! ```text
//! capture ──Delivery──▶ queue (byte budget) ──▶ router ──▶ worker per sink ──▶ ledger ──▶ checkpoints
//! ```

mod budget;
pub(crate) mod encoded;
mod ledger;
mod record;
mod router;
mod writer;

pub use budget::{BudgetPermit, QueueBudget};
pub use ledger::AckLedger;
pub use record::{AckPosition, Batch, ContainerMeta, Delivery, LogLine, SourceKind, StreamKind};
pub use router::route;
pub use writer::{HELD_RETRY, LocalSinkWorker, OutputClosed, WriterSettings};
