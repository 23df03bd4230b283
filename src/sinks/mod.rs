//! Where records go. A sink buffers what it is given and makes it durable (to the OS) on
//! `flush`; only then does the writer acknowledge the batch's cursor.

mod file;
pub mod ndjson;
mod stdout;

pub use file::FileSink;
pub use stdout::StdoutSink;

use crate::pipeline::Batch;
use std::io;

pub trait Sink: Send {
    /// Short name for metrics and logs ("stdout", "file").
    fn name(&self) -> &'static str;
    /// Buffers a batch. A failed batch is offered again in full.
    fn write_batch(&mut self, batch: &Batch) -> io::Result<()>;
    /// Pushes everything buffered to the OS.
    fn flush(&mut self) -> io::Result<()>;
}
