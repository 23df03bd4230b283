//! Turns messages into log lines: splits off the timestamp, merges Docker's 16 KiB pieces of a
//! long line, and enforces `max_line_bytes`.
//!
//! Docker stamps every piece of a long line with the first piece's timestamp; only the last
//! piece ends in a newline, and the other stream's messages can come between the pieces. So
//! each stream (stdout/tty, stderr) has its own line state, and the two never touch:
//!
//! ```text
//!   Idle ──piece ending in \n──────────────▶ Idle       emit the line
//!   Idle ──piece without \n────────────────▶ Open(ts)   start a line
//!   Open(ts) ──same ts, without \n─────────▶ Open(ts)   append
//!   Open(ts) ──same ts, ending in \n───────▶ Idle       append, emit the merged line
//!   Open(ts) ──another ts──────────────────▶ (the open line was an unterminated last line:
//!                                             emit it) then the piece as from Idle
//!   Open(ts) ──flush (the container stopped)▶ Idle      emit it as it is
//! ```
//!
//! The earliest `ts` of an open line is the cursor's `unfinished_ns`: a reopen must serve
//! those pieces again, since the line is not delivered.

use bytes::{Buf, Bytes, BytesMut};

use super::decoder::STAMP_PREFIX;
use crate::docker::timestamp::{SecondCache, parse_rfc3339_nanos_cached};
use crate::pipeline::{LogLine, StreamKind};

/// The timestamp given to a message that carried none; the session replaces it with a real one
/// (see `ResumeFilter::filter`) and never filters such a line out.
pub const UNSTAMPED: i64 = i64::MIN;

/// A line of which some pieces have been read.
struct OpenLine {
    stream: StreamKind,
    ts_ns: i64,
    buf: BytesMut,
    truncated: bool,
}

/// The state of one stream's current line.
enum LineState {
    Idle,
    Open(OpenLine),
}

pub struct Assembler {
    max_line_bytes: usize,
    /// stdout (or tty), stderr.
    lines: [LineState; 2],
    /// Messages that carried no parseable timestamp (they are kept, stamped `UNSTAMPED`).
    pub unstamped: u64,
    seconds: SecondCache,
}

fn slot(stream: StreamKind) -> usize {
    usize::from(stream == StreamKind::Stderr)
}

impl Assembler {
    pub fn new(max_line_bytes: usize) -> Self {
        Assembler {
            max_line_bytes,
            lines: [LineState::Idle, LineState::Idle],
            unstamped: 0,
            seconds: SecondCache::default(),
        }
    }

    /// Adds one message (`timestamp SP content`); completed lines are appended to `out`.
    pub fn push(&mut self, stream: StreamKind, payload: Bytes, out: &mut Vec<LogLine>) {
        let (ts_ns, content) = self.split_stamp(payload);
        self.push_stamped(stream, ts_ns, content, out);
    }

    /// Adds one piece whose timestamp is already known (`content` as Docker logged it: a
    /// piece of a long line does not end in `\n`); completed lines are appended to `out`.
    pub fn push_stamped(
        &mut self,
        stream: StreamKind,
        ts_ns: i64,
        mut content: Bytes,
        out: &mut Vec<LogLine>,
    ) {
        let complete = content.last() == Some(&b'\n');
        if complete {
            content.truncate(content.len() - 1);
            if stream == StreamKind::Tty && content.last() == Some(&b'\r') {
                content.truncate(content.len() - 1);
            }
        }
        let i = slot(stream);
        let state = std::mem::replace(&mut self.lines[i], LineState::Idle);
        self.lines[i] = match state {
            LineState::Open(mut line) if line.ts_ns == ts_ns => {
                self.append(&mut line, &content);
                if complete {
                    out.push(line.into_line());
                    LineState::Idle
                } else {
                    LineState::Open(line)
                }
            }
            other => {
                if let LineState::Open(unterminated) = other {
                    out.push(unterminated.into_line());
                }
                if complete {
                    let (message, truncated) = self.cut(content);
                    out.push(LogLine {
                        ts_ns,
                        stream,
                        message,
                        truncated,
                        extra: None,
                    });
                    LineState::Idle
                } else {
                    let mut line = OpenLine {
                        stream,
                        ts_ns,
                        buf: BytesMut::new(),
                        truncated: false,
                    };
                    self.append(&mut line, &content);
                    LineState::Open(line)
                }
            }
        };
    }

    /// Emits every open line as it is (the stream has ended for good: the container stopped).
    pub fn flush(&mut self, out: &mut Vec<LogLine>) {
        for state in &mut self.lines {
            if let LineState::Open(line) = std::mem::replace(state, LineState::Idle) {
                out.push(line.into_line());
            }
        }
    }

    /// Whether some line is open (pieces read, not complete).
    pub fn has_open_line(&self) -> bool {
        self.lines.iter().any(|l| matches!(l, LineState::Open(_)))
    }

    /// The earliest timestamp of an open line: a reopen must start there to serve its pieces
    /// again. (A line without a timestamp cannot be asked for again; it is not counted.)
    pub fn earliest_open_ns(&self) -> Option<i64> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                LineState::Open(line) if line.ts_ns != UNSTAMPED => Some(line.ts_ns),
                _ => None,
            })
            .min()
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
            return (ts, payload);
        }
        self.unstamped += 1;
        (UNSTAMPED, payload)
    }

    fn cut(&self, mut content: Bytes) -> (Bytes, bool) {
        if content.len() <= self.max_line_bytes {
            return (content, false);
        }
        let at = utf8_floor(&content, self.max_line_bytes);
        content.truncate(at);
        (content, true)
    }

    fn append(&self, line: &mut OpenLine, content: &[u8]) {
        let room = self.max_line_bytes.saturating_sub(line.buf.len());
        if content.len() <= room {
            line.buf.extend_from_slice(content);
        } else if !line.truncated {
            let at = utf8_floor(content, room);
            line.buf.extend_from_slice(&content[..at]);
            line.truncated = true;
        }
    }
}

impl OpenLine {
    fn into_line(self) -> LogLine {
        LogLine {
            ts_ns: self.ts_ns,
            stream: self.stream,
            message: self.buf.freeze(),
            truncated: self.truncated,
            extra: None,
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

    /// 20 000 bytes on stdout in two pieces, `err` on stderr between them: one merged line.
    #[test]
    fn pieces_interleaved_with_the_other_stream_are_merged() {
        let mut a = Assembler::new(1 << 20);
        let mut out = Vec::new();
        a.push(StreamKind::Stdout, msg(TS, &"x".repeat(16_384)), &mut out);
        assert_eq!(a.earliest_open_ns(), parse(TS));
        a.push(StreamKind::Stderr, msg(TS2, "err\n"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].message[..], b"err");
        assert!(a.has_open_line(), "the stdout line is still open");
        a.push(
            StreamKind::Stdout,
            msg(TS, &format!("{}\n", "x".repeat(3_616))),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].stream, StreamKind::Stdout);
        assert_eq!(out[1].message.len(), 20_000);
        assert_eq!(out[1].ts_ns, parse(TS).expect("stamp"));
        assert!(!a.has_open_line());
        assert_eq!(a.earliest_open_ns(), None);
    }

    #[test]
    fn both_streams_can_hold_an_open_line() {
        let mut a = Assembler::new(1 << 20);
        let mut out = Vec::new();
        a.push(StreamKind::Stdout, msg(TS2, "o1"), &mut out);
        a.push(StreamKind::Stderr, msg(TS, "e1"), &mut out);
        assert_eq!(a.earliest_open_ns(), parse(TS));
        a.push(StreamKind::Stdout, msg(TS2, "o2\n"), &mut out);
        a.push(StreamKind::Stderr, msg(TS, "e2\n"), &mut out);
        let got: Vec<&[u8]> = out.iter().map(|l| &l.message[..]).collect();
        assert_eq!(got, vec![&b"o1o2"[..], &b"e1e2"[..]]);
    }

    fn parse(ts: &str) -> Option<i64> {
        crate::docker::timestamp::parse_rfc3339_nanos(ts.as_bytes())
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
        assert_eq!(
            out[0].ts_ns, UNSTAMPED,
            "marked for the session to stamp and admit"
        );
        assert_eq!(a.unstamped, 1);
    }

    #[test]
    fn utf8_cut_does_not_split_characters() {
        let s = "ééé".as_bytes(); // 2 bytes each
        assert_eq!(utf8_floor(s, 3), 2);
        assert_eq!(utf8_floor(s, 4), 4);
    }
}
