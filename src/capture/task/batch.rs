//! From read bytes to a batch: decoding the buffered messages into lines, compacting the
//! lines' messages, and counting what a batch adds to the container's counters.

use bytes::BytesMut;

use crate::capture::assembler::Assembler;
use crate::capture::decoder::{Decoder, Message};
use crate::capture::error::{CaptureError, StreamErrorReason};
use crate::observability::metrics::{ContainerLabels, ContainerStreamLabels, Metrics};
use crate::pipeline::{LogLine, StreamKind};

use super::SessionEnd;

/// Copies the lines' messages, slices of read buffers that may be far larger (a 100-byte line
/// can keep a 256 KiB read alive until it is written), into one buffer of exactly their total
/// size; returns that size. Afterwards a batch holds the bytes the queue budget charges for,
/// and the read buffers are free as soon as the decoder is done with them.
pub fn compact(lines: &mut [LogLine]) -> usize {
    let total: usize = lines.iter().map(|l| l.message.len()).sum();
    let mut buf = BytesMut::with_capacity(total);
    for line in lines.iter() {
        buf.extend_from_slice(&line.message);
    }
    let buf = buf.freeze();
    let mut at = 0;
    for line in lines.iter_mut() {
        let len = line.message.len();
        line.message = buf.slice(at..at + len);
        at += len;
    }
    total
}

/// For tracing: each line's stream, timestamp and first bytes.
pub(super) fn line_summary(lines: &[LogLine]) -> String {
    lines
        .iter()
        .map(|l| {
            let head = &l.message[..l.message.len().min(12)];
            format!(
                "{:?}@{} {:?}/{}",
                l.stream,
                l.ts_ns,
                String::from_utf8_lossy(head),
                l.message.len()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decodes every complete message buffered in `decoder` into `lines`.
pub(in crate::capture) fn drain_decoder(
    decoder: &mut Decoder,
    assembler: &mut Assembler,
    lines: &mut Vec<LogLine>,
) -> Result<(), SessionEnd> {
    loop {
        match decoder.next_message() {
            Ok(Some(Message::Log { stream, payload })) => assembler.push(stream, payload, lines),
            Ok(Some(Message::SystemError(text))) => {
                return Err(SessionEnd::Error(CaptureError::failed(
                    StreamErrorReason::DaemonStreamError,
                    String::from_utf8_lossy(&text).trim(),
                )));
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(SessionEnd::Error(CaptureError::failed(
                    StreamErrorReason::Decode,
                    e.to_string(),
                )));
            }
        }
    }
}

/// What a batch adds to the container's counters (taken before the batch is handed over).
#[derive(Clone, Copy)]
pub(super) struct LineCounts {
    /// stdout or tty lines.
    pub(super) first: u64,
    pub(super) err: u64,
    pub(super) bytes: u64,
    pub(super) truncated: u64,
}

impl LineCounts {
    pub(super) fn of(lines: &[LogLine]) -> Self {
        let (mut err, mut bytes, mut truncated) = (0, 0, 0);
        for l in lines {
            err += u64::from(l.stream == StreamKind::Stderr);
            bytes += l.message.len() as u64;
            truncated += u64::from(l.truncated);
        }
        LineCounts {
            first: lines.len() as u64 - err,
            err,
            bytes,
            truncated,
        }
    }
}

/// Per-session handles to the container's counters (label lookups once, not per line).
/// A TTY container only ever has the `tty` series; others only `stdout` and `stderr`.
pub(super) struct SessionCounters {
    first: prometheus_client::metrics::counter::Counter,
    stderr: Option<prometheus_client::metrics::counter::Counter>,
    bytes: prometheus_client::metrics::counter::Counter,
}

impl SessionCounters {
    pub(super) fn new(metrics: &Metrics, name: &str, tty: bool) -> Self {
        let per_stream = |stream: StreamKind| {
            metrics
                .logs_collected
                .get_or_create(&ContainerStreamLabels {
                    container_name: name.to_string(),
                    stream: stream.as_str(),
                })
                .clone()
        };
        SessionCounters {
            first: per_stream(if tty {
                StreamKind::Tty
            } else {
                StreamKind::Stdout
            }),
            stderr: (!tty).then(|| per_stream(StreamKind::Stderr)),
            bytes: metrics
                .bytes_collected
                .get_or_create(&ContainerLabels {
                    container_name: name.to_string(),
                })
                .clone(),
        }
    }

    pub(super) fn count(&self, c: &LineCounts, metrics: &Metrics) {
        let LineCounts {
            first,
            err,
            bytes,
            truncated,
        } = *c;
        if first > 0 {
            self.first.inc_by(first);
        }
        if let (Some(c), true) = (&self.stderr, err > 0) {
            c.inc_by(err);
        }
        self.bytes.inc_by(bytes);
        if truncated > 0 {
            metrics.lines_truncated.inc_by(truncated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item 13 of issue 9: 100-byte lines decoded from one 256 KiB read are slices of it, so a
    /// batch of a few of them kept the whole read alive (the queue budget counted 100 bytes a
    /// line). After `compact` the batch's messages live in one buffer of exactly their size,
    /// and none of them points into the read buffer.
    #[test]
    fn a_batch_does_not_pin_the_read_buffer() {
        let mut read = Vec::new();
        let mut i = 0;
        while read.len() < 256 * 1024 {
            let text = format!("2026-11-28T23:49:08.{i:09}Z line {i} {}\n", "x".repeat(80));
            read.extend_from_slice(&[1, 0, 0, 0]);
            read.extend_from_slice(&(text.len() as u32).to_be_bytes());
            read.extend_from_slice(text.as_bytes());
            i += 1;
        }
        let read = bytes::Bytes::from(read);
        let range = read.as_ptr() as usize..read.as_ptr() as usize + read.len();
        let mut decoder = Decoder::new(false);
        let mut assembler = Assembler::new(1 << 20);
        let mut lines = Vec::new();
        decoder.push(read.clone());
        assert!(drain_decoder(&mut decoder, &mut assembler, &mut lines).is_ok());
        lines.truncate(5); // a small batch: the rest was handed over before, or filtered out
        assert!(
            lines
                .iter()
                .all(|l| range.contains(&(l.message.as_ptr() as usize))),
            "decoded lines are slices of the read buffer"
        );
        let total = compact(&mut lines);
        assert_eq!(total, lines.iter().map(|l| l.message.len()).sum::<usize>());
        for l in &lines {
            assert!(
                !range.contains(&(l.message.as_ptr() as usize)),
                "a batch's line still points into the read buffer"
            );
        }
        // One buffer, contiguous, exactly the messages.
        let start = lines[0].message.as_ptr() as usize;
        let end = lines[4].message.as_ptr() as usize + lines[4].message.len();
        assert_eq!(end - start, total);
        assert_eq!(&lines[0].message[..7], b"line 0 ");
        // The read buffer is referenced by nothing else now: `read` is its only owner.
        drop(decoder);
        assert!(read.is_unique(), "the read buffer is still shared");
    }
}
