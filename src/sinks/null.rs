use std::io;

use super::{Sink, WriteError};
use crate::pipeline::Batch;

/// Counts and discards: what capture costs without any output (benchmarks).
pub struct NullSink;

impl Sink for NullSink {
    fn name(&self) -> &'static str {
        "null"
    }

    fn write_batch(&mut self, _batch: &Batch) -> Result<(), WriteError> {
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
