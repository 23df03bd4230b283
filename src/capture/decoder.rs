//! Splits the logs byte stream into messages, whatever the chunking of the reads.
//!
//! Non-TTY containers: multiplexed frames `[type, 0, 0, 0, len u32 BE] payload`, one message per
//! frame (1 stdout, 2 stderr, 3 system error). TTY containers: raw bytes, one message per line;
//! Docker's 16 KiB pieces of a long line carry no newline, so a piece ends where exactly 16 KiB
//! of content is followed by another timestamp.

use bytes::{Bytes, BytesMut};

use crate::pipeline::StreamKind;

/// Size of the content of Docker's partial pieces (moby's log copier buffer).
pub const PIECE_BYTES: usize = 16 * 1024;
/// Length of `2006-01-02T15:04:05.000000000Z ` (RFC3339Nano, fixed width, and a space).
pub const STAMP_PREFIX: usize = 31;
/// A frame larger than this is not something Docker sends: the stream is corrupt.
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// A TTY "line" with neither newline nor piece boundary is cut here to bound memory.
const MAX_TTY_MESSAGE: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A log message: timestamp, space, content (with its newline when complete).
    Log { stream: StreamKind, payload: Bytes },
    /// The daemon reported an error inside the stream (frame type 3).
    SystemError(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    UnknownFrameType(u8),
    FrameTooLarge(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownFrameType(t) => write!(f, "unknown stream frame type {t}"),
            DecodeError::FrameTooLarge(n) => write!(f, "stream frame of {n} bytes is too large"),
        }
    }
}

pub struct Decoder {
    tty: bool,
    /// Bytes carried over between reads: the start of one incomplete frame, or TTY data.
    buf: BytesMut,
    /// Multiplexed streams: the latest read, decoded in place, so whole frames become slices
    /// of the read buffer without a copy. Only a frame cut by a read boundary is copied (into
    /// `buf`), and only its own bytes: the carry-over never grows past one frame, and the rest
    /// of the read is still decoded in place.
    current: Bytes,
    /// TTY only: how far `buf` (after the stamp) has been searched for a newline.
    scanned: usize,
}

impl Decoder {
    pub fn new(tty: bool) -> Self {
        Decoder {
            tty,
            buf: BytesMut::new(),
            current: Bytes::new(),
            scanned: 0,
        }
    }

    pub fn push(&mut self, chunk: Bytes) {
        if self.tty {
            self.buf.extend_from_slice(&chunk);
        } else if self.current.is_empty() {
            self.current = chunk;
        } else {
            // Pushed before the last read was decoded: keep both, in order.
            let mut joined = BytesMut::with_capacity(self.current.len() + chunk.len());
            joined.extend_from_slice(&self.current);
            joined.extend_from_slice(&chunk);
            self.current = joined.freeze();
        }
    }

    /// The next complete message, if the buffered bytes hold one.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.tty {
            Ok(self.next_tty())
        } else {
            self.next_frame()
        }
    }

    /// At a clean end of stream: whatever is left, as a last message (TTY only: a truncated
    /// multiplexed frame is not a message).
    pub fn finish(&mut self) -> Option<Message> {
        if self.tty && !self.buf.is_empty() {
            self.scanned = 0;
            let payload = self.buf.split().freeze();
            return Some(Message::Log {
                stream: StreamKind::Tty,
                payload,
            });
        }
        None
    }

    fn next_frame(&mut self) -> Result<Option<Message>, DecodeError> {
        if !self.buf.is_empty() {
            return self.finish_carried_frame();
        }
        match frame_len(&self.current)? {
            Some(len) if self.current.len() >= 8 + len => {
                let frame = self.current.split_to(8 + len);
                Ok(Some(message(frame[0], frame.slice(8..))))
            }
            _ => {
                // Cut by the end of the read: carry it over and wait for the rest.
                self.buf.extend_from_slice(&self.current);
                self.current = Bytes::new();
                Ok(None)
            }
        }
    }

    /// Completes the carried-over frame from the latest read, taking only the bytes it lacks.
    fn finish_carried_frame(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.buf.len() < 8 {
            let take = (8 - self.buf.len()).min(self.current.len());
            self.buf.extend_from_slice(&self.current.split_to(take));
        }
        let Some(len) = frame_len(&self.buf)? else {
            return Ok(None);
        };
        let missing = 8 + len - self.buf.len();
        let take = missing.min(self.current.len());
        self.buf.reserve(missing);
        self.buf.extend_from_slice(&self.current.split_to(take));
        if take < missing {
            return Ok(None);
        }
        let mut frame = self.buf.split();
        let kind = frame[0];
        Ok(Some(message(kind, frame.split_off(8).freeze())))
    }

    fn next_tty(&mut self) -> Option<Message> {
        if self.buf.len() <= STAMP_PREFIX {
            return None;
        }
        let content = &self.buf[STAMP_PREFIX..];
        let from = self.scanned.min(content.len());
        if let Some(pos) = memchr_newline(&content[from..]) {
            let end = STAMP_PREFIX + from + pos + 1;
            let content_len = from + pos;
            // A newline beyond the 16 KiB mark may belong to a later piece: check the boundary.
            if content_len <= PIECE_BYTES || !self.piece_boundary() {
                return Some(self.take_tty(end));
            }
            return Some(self.take_tty(STAMP_PREFIX + PIECE_BYTES));
        }
        self.scanned = content.len();
        if content.len() >= PIECE_BYTES + STAMP_PREFIX && self.piece_boundary() {
            return Some(self.take_tty(STAMP_PREFIX + PIECE_BYTES));
        }
        if content.len() >= MAX_TTY_MESSAGE {
            return Some(self.take_tty(self.buf.len()));
        }
        None
    }

    /// Whether the 16 KiB of content after the stamp is followed by another stamp.
    fn piece_boundary(&self) -> bool {
        let at = STAMP_PREFIX + PIECE_BYTES;
        self.buf.len() >= at + STAMP_PREFIX
            && self.buf[at + STAMP_PREFIX - 1] == b' '
            && crate::docker::timestamp::parse_rfc3339_nanos(&self.buf[at..at + STAMP_PREFIX - 1])
                .is_some()
    }

    fn take_tty(&mut self, end: usize) -> Message {
        self.scanned = 0;
        Message::Log {
            stream: StreamKind::Tty,
            payload: self.buf.split_to(end).freeze(),
        }
    }
}

/// The payload length of the frame at the start of `b`, once its header is complete.
fn frame_len(b: &[u8]) -> Result<Option<usize>, DecodeError> {
    if b.len() < 8 {
        return Ok(None);
    }
    if b[0] > 3 {
        return Err(DecodeError::UnknownFrameType(b[0]));
    }
    let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(DecodeError::FrameTooLarge(len));
    }
    Ok(Some(len))
}

/// A frame's payload as a message of its stream (type already checked by `frame_len`).
fn message(kind: u8, payload: Bytes) -> Message {
    match kind {
        2 => Message::Log {
            stream: StreamKind::Stderr,
            payload,
        },
        3 => Message::SystemError(payload),
        _ => Message::Log {
            stream: StreamKind::Stdout,
            payload,
        },
    }
}

fn memchr_newline(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![kind, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn decode_all(tty: bool, input: &[u8], cuts: &[usize]) -> Vec<Message> {
        let mut d = Decoder::new(tty);
        let mut out = Vec::new();
        let mut start = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        points.push(input.len());
        for p in points {
            d.push(Bytes::copy_from_slice(&input[start..p.max(start)]));
            start = p.max(start);
            while let Some(m) = d.next_message().expect("valid stream") {
                out.push(m);
            }
        }
        out.extend(d.finish());
        out
    }

    const TS: &str = "2026-11-28T23:49:08.780644778Z ";

    fn sample_mux() -> (Vec<u8>, Vec<Message>) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for i in 0..20u8 {
            let kind = if i % 3 == 0 { 2 } else { 1 };
            let payload = format!("{TS}line {i} {}\n", "x".repeat(i as usize * 7));
            bytes.extend(frame(kind, payload.as_bytes()));
            expected.push(Message::Log {
                stream: if kind == 2 {
                    StreamKind::Stderr
                } else {
                    StreamKind::Stdout
                },
                payload: Bytes::from(payload),
            });
        }
        (bytes, expected)
    }

    proptest! {
        #[test]
        fn mux_any_chunking_same_messages(cuts in proptest::collection::vec(0usize..5000, 0..40)) {
            let (bytes, expected) = sample_mux();
            prop_assert_eq!(decode_all(false, &bytes, &cuts), expected);
        }

        #[test]
        fn tty_any_chunking_same_messages(cuts in proptest::collection::vec(0usize..60000, 0..40)) {
            let long = "y".repeat(40_000);
            let text = format!("{TS}a\r\n{TS}{}{TS}{}{TS}{}\r\n{TS}b\r\n",
                &long[..PIECE_BYTES], &long[PIECE_BYTES..2 * PIECE_BYTES], &long[2 * PIECE_BYTES..]);
            let msgs = decode_all(true, text.as_bytes(), &cuts);
            let lens: Vec<usize> = msgs.iter().map(|m| match m {
                Message::Log { payload, .. } => payload.len(),
                Message::SystemError(_) => 0,
            }).collect();
            prop_assert_eq!(lens, vec![STAMP_PREFIX + 3, STAMP_PREFIX + PIECE_BYTES,
                STAMP_PREFIX + PIECE_BYTES, STAMP_PREFIX + 40_000 - 2 * PIECE_BYTES + 2, STAMP_PREFIX + 3]);
        }
    }

    #[test]
    fn only_frames_cut_by_a_read_are_copied() {
        // Reads of 1 000 bytes over 60-byte frames: every read cuts one frame. Only those are
        // copied; every other frame is a slice of its read, and the carry-over stays one frame.
        let (bytes, expected) = sample_mux();
        let mut d = Decoder::new(false);
        let (mut out, mut copied) = (Vec::new(), 0);
        for chunk in bytes.chunks(1000) {
            let chunk = Bytes::copy_from_slice(chunk);
            let range = chunk.as_ptr_range();
            d.push(chunk);
            while let Some(m) = d.next_message().expect("valid stream") {
                if let Message::Log { payload, .. } = &m
                    && !range.contains(&payload.as_ptr())
                {
                    copied += 1;
                }
                out.push(m);
            }
            assert!(
                d.buf.capacity() <= 2 * 200,
                "carry-over grew to {}",
                d.buf.capacity()
            );
        }
        assert_eq!(out, expected);
        let cuts = bytes.len().div_ceil(1000) - 1;
        assert!(
            copied <= cuts,
            "{copied} frames copied for {cuts} read boundaries"
        );
    }

    #[test]
    fn system_error_frame() {
        let bytes = frame(3, b"boom");
        assert_eq!(
            decode_all(false, &bytes, &[]),
            vec![Message::SystemError(Bytes::from_static(b"boom"))]
        );
    }

    #[test]
    fn rejects_garbage_frames() {
        let mut d = Decoder::new(false);
        d.push(Bytes::from_static(&[9, 0, 0, 0, 0, 0, 0, 1, b'x']));
        assert_eq!(d.next_message(), Err(DecodeError::UnknownFrameType(9)));
        let mut d = Decoder::new(false);
        d.push(Bytes::from_static(&[1, 0, 0, 0, 0x7f, 0, 0, 0]));
        assert!(matches!(
            d.next_message(),
            Err(DecodeError::FrameTooLarge(_))
        ));
    }

    #[test]
    fn tty_line_longer_than_piece_without_boundary_is_kept_whole() {
        // 20 000 bytes then a newline, no stamp at 16 KiB: one message.
        let text = format!("{TS}{}\n", "z".repeat(20_000));
        let msgs = decode_all(true, text.as_bytes(), &[100, 17_000]);
        assert_eq!(msgs.len(), 1);
    }
}
