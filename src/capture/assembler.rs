//! Turns messages into log lines: splits off the timestamp, merges Docker's 16 KiB pieces of a
//! long line (they share the first piece's timestamp; only the last ends in a newline), and
//! enforces `max_line_bytes`.

use bytes::{Buf, Bytes, BytesMut};

use super::decoder::STAMP_PREFIX;
use crate::docker::timestamp::{SecondCache, parse_rfc3339_nanos_cached};
use crate::pipeline::{LogLine, StreamKind};

struct Pending {
    stream: StreamKind,
    ts_ns: i64,
    buf: BytesMut,
    truncated: bool,
}

pub struct Assembler {
    max_line_bytes: usize,
    pending: Option<Pending>,
    /// Timestamp of the last message, for a message that arrives without one.
    last_ts_ns: i64,
    /// Messages that carried no parseable timestamp (they are kept, stamped with the last one).
    pub unstamped: u64,
    seconds: SecondCache,
}

impl Assembler {
    pub fn new(max_line_bytes: usize) -> Self {
        Assembler {
            max_line_bytes,
            pending: None,
            last_ts_ns: 0,
            unstamped: 0,
            seconds: SecondCache::default(),
        }
    }

    /// Adds one message (`timestamp SP content`); completed lines are appended to `out`.
    pub fn push(&mut self, stream: StreamKind, payload: Bytes, out: &mut Vec<LogLine>) {
        let (ts_ns, mut content) = self.split_stamp(payload);
        let complete = content.last() == Some(&b'\n');
        if complete {
            content.truncate(content.len() - 1);
            if stream == StreamKind::Tty && content.last() == Some(&b'\r') {
                content.truncate(content.len() - 1);
            }
        }
        // A piece continues the pending line only if it has the same stream and timestamp;
        // otherwise the pending one was an unterminated last line and stands on its own.
        if let Some(p) = &self.pending
            && (p.stream != stream || p.ts_ns != ts_ns)
        {
            self.flush(out);
        }
        if let Some(mut p) = self.pending.take() {
            self.append(&mut p, &content);
            if complete {
                out.push(p.into_line());
            } else {
                self.pending = Some(p);
            }
        } else if complete {
            let (message, truncated) = self.cut(content);
            out.push(LogLine {
                ts_ns,
                stream,
                message,
                truncated,
            });
        } else {
            let mut p = Pending {
                stream,
                ts_ns,
                buf: BytesMut::new(),
                truncated: false,
            };
            self.append(&mut p, &content);
            self.pending = Some(p);
        }
    }

    /// Emits a pending unterminated line (at the end of a stream).
    pub fn flush(&mut self, out: &mut Vec<LogLine>) {
        if let Some(p) = self.pending.take() {
            out.push(p.into_line());
        }
    }

    /// The timestamp and the content after it. Advancing past the stamp (rather than splitting
    /// it off) keeps one reference to the read buffer per line, not two.
    fn split_stamp(&mut self, mut payload: Bytes) -> (i64, Bytes) {
        let space = payload
            .iter()
            .take(STAMP_PREFIX + 8)
            .position(|&b| b == b' ');
        if let Some(space) = space
            && let Some(ts) = parse_rfc3339_nanos_cached(&payload[..space], &mut self.seconds)
        {
            payload.advance(space + 1);
            self.last_ts_ns = ts;
            return (ts, payload);
        }
        self.unstamped += 1;
        (self.last_ts_ns, payload)
    }

    fn cut(&self, mut content: Bytes) -> (Bytes, bool) {
        if content.len() <= self.max_line_bytes {
            return (content, false);
        }
        let at = utf8_floor(&content, self.max_line_bytes);
        content.truncate(at);
        (content, true)
    }

    fn append(&self, p: &mut Pending, content: &[u8]) {
        let room = self.max_line_bytes.saturating_sub(p.buf.len());
        if content.len() <= room {
            p.buf.extend_from_slice(content);
        } else if !p.truncated {
            let at = utf8_floor(content, room);
            p.buf.extend_from_slice(&content[..at]);
            p.truncated = true;
        }
    }
}

impl Pending {
    fn into_line(self) -> LogLine {
        LogLine {
            ts_ns: self.ts_ns,
            stream: self.stream,
            message: self.buf.freeze(),
            truncated: self.truncated,
        }
    }
}

/// The largest index <= `at` that does not split a UTF-8 sequence (if the text is UTF-8).
fn utf8_floor(s: &[u8], at: usize) -> usize {
    let mut i = at.min(s.len());
    let mut steps = 0;
    while i > 0 && i < s.len() && (s[i] & 0xC0) == 0x80 && steps < 3 {
        i -= 1;
        steps += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-11-28T23:49:08.780644778Z";
    const TS2: &str = "2026-11-28T23:49:08.780644779Z";

    fn msg(ts: &str, content: &str) -> Bytes {
        Bytes::from(format!("{ts} {content}"))
    }

    #[test]
    fn complete_line() {
        let mut a = Assembler::new(1024);
        let mut out = Vec::new();
        a.push(StreamKind::Stdout, msg(TS, "hello\n"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].message[..], b"hello");
        assert_eq!(
            Some(out[0].ts_ns),
            crate::docker::timestamp::parse_rfc3339_nanos(TS.as_bytes())
        );
        assert!(!out[0].truncated);
    }

    #[test]
    fn merges_pieces_with_same_stamp() {
        let mut a = Assembler::new(1 << 20);
        let mut out = Vec::new();
        a.push(StreamKind::Stdout, msg(TS, "aaa"), &mut out);
        a.push(StreamKind::Stdout, msg(TS, "bbb"), &mut out);
        assert!(out.is_empty());
        a.push(StreamKind::Stdout, msg(TS, "ccc\n"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].message[..], b"aaabbbccc");
    }

    #[test]
    fn unterminated_line_followed_by_other_stamp_stands_alone() {
        let mut a = Assembler::new(1 << 20);
        let mut out = Vec::new();
        a.push(StreamKind::Stdout, msg(TS, "last words"), &mut out);
        a.push(StreamKind::Stdout, msg(TS2, "next\n"), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0].message[..], b"last words");
        assert_eq!(&out[1].message[..], b"next");
        a.push(StreamKind::Stdout, msg(TS2, "tail"), &mut out);
        a.flush(&mut out);
        assert_eq!(&out[2].message[..], b"tail");
    }

    #[test]
    fn truncates_at_limit_and_marks() {
        let mut a = Assembler::new(1024);
        let mut out = Vec::new();
        let piece = "x".repeat(700);
        a.push(StreamKind::Stdout, msg(TS, &piece), &mut out);
        a.push(StreamKind::Stdout, msg(TS, &piece), &mut out);
        a.push(StreamKind::Stdout, msg(TS, &format!("{piece}\n")), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message.len(), 1024);
        assert!(out[0].truncated);
        a.push(
            StreamKind::Stdout,
            msg(TS2, &format!("{}\n", "y".repeat(2000))),
            &mut out,
        );
        assert_eq!(out[1].message.len(), 1024);
        assert!(out[1].truncated);
    }

    #[test]
    fn tty_strips_crlf() {
        let mut a = Assembler::new(1024);
        let mut out = Vec::new();
        a.push(StreamKind::Tty, msg(TS, "hi\r\n"), &mut out);
        assert_eq!(&out[0].message[..], b"hi");
    }

    #[test]
    fn unstamped_message_is_kept() {
        let mut a = Assembler::new(1024);
        let mut out = Vec::new();
        a.push(
            StreamKind::Stdout,
            Bytes::from_static(b"no stamp here\n"),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].message[..], b"no stamp here");
        assert_eq!(a.unstamped, 1);
    }

    #[test]
    fn utf8_cut_does_not_split_characters() {
        let s = "ééé".as_bytes(); // 2 bytes each
        assert_eq!(utf8_floor(s, 3), 2);
        assert_eq!(utf8_floor(s, 4), 4);
    }
}
