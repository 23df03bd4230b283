//! Where records go. A sink buffers what it is given and makes it durable (to the OS) on
//! `flush`; only then does the writer acknowledge the batch's cursor.
//!
//! Contract that keeps sink errors from losing or duplicating lines: `write_batch` either takes
//! the whole batch or fails before taking any of it; `flush` keeps whatever it could not write
//! and writes it on the next call. The writer retries the failing call only.

mod file;
pub mod loki;
pub mod ndjson;
mod null;
mod stdout;

pub use file::FileSink;
pub use null::NullSink;
pub use stdout::StdoutSink;

use crate::pipeline::Batch;
use std::io::{self, Write};

pub trait Sink: Send {
    /// Short name for metrics and logs ("stdout", "file").
    fn name(&self) -> &'static str;
    /// Buffers a whole batch, or fails having buffered none of it.
    fn write_batch(&mut self, batch: &Batch) -> io::Result<()>;
    /// Pushes everything buffered to the OS; on error, what was not written stays buffered.
    fn flush(&mut self) -> io::Result<()>;
}

/// Writes `buf` out; on error, drops only the part that was written.
pub(crate) fn write_out(out: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match out.write(&buf[done..]) {
            Ok(0) => {
                buf.drain(..done);
                return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes"));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.drain(..done);
                return Err(e);
            }
        }
    }
    buf.clear();
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `budget` bytes, then fails.
    struct Flaky {
        budget: usize,
        got: Vec<u8>,
    }

    impl Write for Flaky {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = b.len().min(self.budget).min(3);
            self.budget -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_write_keeps_exactly_the_unwritten_rest() {
        let mut out = Flaky {
            budget: 7,
            got: Vec::new(),
        };
        let mut buf = b"0123456789abcdef".to_vec();
        assert!(write_out(&mut out, &mut buf).is_err());
        assert_eq!(out.got, b"0123456");
        assert_eq!(buf, b"789abcdef");
        out.budget = 100;
        write_out(&mut out, &mut buf).expect("second attempt");
        assert_eq!(out.got, b"0123456789abcdef");
        assert!(buf.is_empty());
    }
}
