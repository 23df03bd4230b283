//! Where records go. A sink buffers what it is given, hands it to the OS on `flush`, and makes
//! it durable on `sync` when its [`Durability`] asks for it; only then does the writer
//! acknowledge the batch's cursor.
//!
//! Contract that keeps sink errors from losing or duplicating lines: `write_batch` either takes
//! the whole batch or fails before taking any of it; `flush` keeps whatever it could not write
//! and writes it on the next call. The writer retries the failing call only — except when
//! `write_batch` says the failure belongs to one container ([`WriteError::Container`]): the
//! writer then holds that container (its lines are neither written nor acknowledged) and the
//! others go on — and except when the sink says its output is closed for good
//! ([`Sink::is_closed_for_good`], a stdout whose reader exited): the writer then stops, and
//! with it the agent.

pub(crate) mod buffer_errors;
mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod loki;
pub mod ndjson;
mod null;
mod stdout;

pub use file::{FileSink, FileSinkSettings, Modes, PathTemplate, check_placeholders, template_of};
pub use null::NullSink;
pub use stdout::StdoutSink;

use crate::pipeline::{Batch, ContainerMeta};
use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

/// When written records count as acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Once the OS has them (`write` returned): a process crash loses nothing, a power loss or
    /// kernel crash can lose what the OS had not yet written back.
    Never,
    /// After an fsync of every file written, at each flush.
    Always,
    /// After an fsync at most this often (or earlier when much is waiting).
    Interval(Duration),
}

/// Why `write_batch` refused a batch (having buffered none of it).
#[derive(Debug)]
pub enum WriteError {
    /// The sink as a whole cannot write now (disk full, I/O error): retry, in order.
    Sink(io::Error),
    /// This container's output cannot be written, and retrying soon will not help (e.g.
    /// permission denied on its directory): hold this container, go on with the others.
    Container(io::Error),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Sink(e) | WriteError::Container(e) => e.fmt(f),
        }
    }
}

pub trait Sink: Send {
    /// Short name for metrics and logs ("stdout", "file").
    fn name(&self) -> &'static str;
    /// When the writer may acknowledge what it wrote (default: once flushed to the OS).
    fn durability(&self) -> Durability {
        Durability::Never
    }
    /// Buffers a whole batch, or fails having buffered none of it.
    fn write_batch(&mut self, batch: &Batch) -> Result<(), WriteError>;
    /// Pushes everything buffered to the OS; on error, what was not written stays buffered.
    fn flush(&mut self) -> io::Result<()>;
    /// Makes everything flushed so far durable (fsync). Called per [`Sink::durability`].
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Everything written so far has been acknowledged (resources of idle or ended outputs
    /// may be released now).
    fn commit(&mut self) {}
    /// The writer gives up (shutdown while the sink fails): drop what is buffered and remove
    /// what was written after the last `commit`, so nothing partial or unacknowledged stays.
    fn abandon(&mut self) {}
    /// A container's stream has ended (stopped or removed): its output may be released once
    /// its lines are committed.
    fn end_of_stream(&mut self, _container: &ContainerMeta) {}
    /// Whether `err` (from `flush`, `sync` or `write_batch`) means the output is gone for good,
    /// so that retrying can never succeed (stdout whose reader exited: `EPIPE`). The writer then
    /// stops the agent instead of retrying; nothing written after the error is acknowledged.
    fn is_closed_for_good(&self, _err: &io::Error) -> bool {
        false
    }
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
