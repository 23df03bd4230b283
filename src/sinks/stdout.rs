use std::io::{self, Write};

use super::Sink;
use super::ndjson::encode_line;
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

    fn write_batch(&mut self, batch: &Batch) -> io::Result<()> {
        for line in &batch.lines {
            encode_line(&mut self.buf, &batch.container, line);
        }
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        let result = out.write_all(&self.buf).and_then(|()| out.flush());
        // On error the buffer is dropped too: the writer re-offers the unacknowledged batches.
        self.buf.clear();
        result
    }
}
