//! From capture to sinks: the bounded queue, the writer that fans batches out to the sinks, and
//! acknowledgements that let checkpoints advance only past what every sink has flushed.

mod record;
mod writer;

pub use record::{Batch, ContainerMeta, LogLine, StreamKind};
pub use writer::{SinkWriter, WriterSettings};
