use std::io;

use super::ndjson::encode_line;
use super::{Sink, WriteError, write_out};
use crate::pipeline::Batch;

/// NDJSON on standard output.
pub struct StdoutSink {
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink {
            buf: Vec::with_capacity(256 * 1024),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink::new()
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), WriteError> {
        for line in &batch.lines {
            encode_line(&mut self.buf, &batch.container, line);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        write_out(&mut io::stdout().lock(), &mut self.buf)
    }

    /// `EPIPE`: the reader of the pipe has exited (`log-capturer run | head`). No later write
    /// can succeed (Rust ignores SIGPIPE, so the write fails instead of killing the process).
    fn is_closed_for_good(&self, err: &io::Error) -> bool {
        err.kind() == io::ErrorKind::BrokenPipe
    }
}
