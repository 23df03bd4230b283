//! Splitting a file's bytes into lines, with the position that makes resuming exact.
//!
//! Chunks are read in order from one file; each complete line becomes a [`LogLine`] whose
//! message is a slice of the chunk (no copy, one `Bytes` per chunk). Rules:
//! - a line ends at `\n`, which is not part of it; a `\r` just before it is dropped too (CRLF
//!   files give the same records as LF ones);
//! - a line longer than `max_line_bytes` keeps its first `max_line_bytes` bytes and is flagged
//!   `truncated`; the rest, up to its newline, is consumed and dropped (as for containers);
//! - a last line without its newline is held (its bytes are read but not committed) until its
//!   newline comes or [`Splitter::flush`] emits it as it is. After such a flush the position
//!   counts its bytes, so it is never emitted twice; if the newline comes later, the bytes
//!   between the flushed part and that newline are a line of their own (a lone newline right
//!   after the flushed part ends it and makes no record).
//!
//! [`Splitter::committed`] is the file offset just past the last line handed out: what a batch
//! acknowledges, always a line boundary (or the end of a flushed partial line).

use bytes::{Bytes, BytesMut};

use crate::pipeline::{LogLine, StreamKind};

pub struct Splitter {
    max_line_bytes: usize,
    committed: u64,
    /// The held line's bytes so far (at most `max_line_bytes`).
    partial: BytesMut,
    /// The held line's length in the file (more than `partial` once it is too long).
    partial_len: u64,
    /// A partial line was flushed and nothing read since: a newline now only ends it.
    after_flush: bool,
}

impl Splitter {
    /// Starts at `offset` (a line boundary: a stored position).
    pub fn new(max_line_bytes: usize, offset: u64) -> Self {
        Splitter {
            max_line_bytes: max_line_bytes.max(1),
            committed: offset,
            partial: BytesMut::new(),
            partial_len: 0,
            after_flush: false,
        }
    }

    /// Offset just past the last line handed out.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Offset of the next byte to read (past the held partial line).
    pub fn read_offset(&self) -> u64 {
        self.committed + self.partial_len
    }

    pub fn has_partial(&self) -> bool {
        self.partial_len > 0
    }

    /// Forgets everything held and starts again at `offset` (after a truncation).
    pub fn reset(&mut self, offset: u64) {
        *self = Splitter::new(self.max_line_bytes, offset);
    }

    fn line(&self, message: Bytes, truncated: bool, ts_ns: i64) -> LogLine {
        LogLine {
            ts_ns,
            stream: StreamKind::Stdout,
            message,
            truncated,
            extra: None,
        }
    }

    /// The next bytes of the file (starting at [`Splitter::read_offset`]). Complete lines are
    /// appended to `out`, and when `starts` is given, the file offset each begins at.
    pub fn push(
        &mut self,
        chunk: Bytes,
        ts_ns: i64,
        out: &mut Vec<LogLine>,
        mut starts: Option<&mut Vec<u64>>,
    ) {
        let mut at = 0usize;
        if self.after_flush && !chunk.is_empty() {
            self.after_flush = false;
            if chunk[0] == b'\n' {
                at = 1;
                self.committed += 1;
            }
        }
        let base = at;
        for nl in memchr::memchr_iter(b'\n', &chunk[base..]) {
            let end = base + nl;
            let line_start = self.committed;
            if self.partial_len > 0 {
                self.extend_partial(&chunk[at..end]);
                let total = self.partial_len + (end - at) as u64;
                let cr = if end > at {
                    chunk[end - 1] == b'\r'
                } else {
                    self.partial.len() as u64 == total && self.partial.last() == Some(&b'\r')
                };
                let content = total - u64::from(cr);
                let truncated = content > self.max_line_bytes as u64;
                let mut message = std::mem::take(&mut self.partial);
                message.truncate(content.min(self.max_line_bytes as u64) as usize);
                out.push(self.line(message.freeze(), truncated, ts_ns));
                self.partial_len = 0;
                self.committed += total + 1;
            } else {
                let mut stop = end;
                if stop > at && chunk[stop - 1] == b'\r' {
                    stop -= 1;
                }
                let truncated = stop - at > self.max_line_bytes;
                let stop = stop.min(at + self.max_line_bytes);
                out.push(self.line(chunk.slice(at..stop), truncated, ts_ns));
                self.committed += (end - at) as u64 + 1;
            }
            if let Some(starts) = starts.as_deref_mut() {
                starts.push(line_start);
            }
            at = end + 1;
        }
        if at < chunk.len() {
            let rest = &chunk[at..];
            self.extend_partial(rest);
            self.partial_len += rest.len() as u64;
        }
    }

    fn extend_partial(&mut self, bytes: &[u8]) {
        let room = self.max_line_bytes.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Emits the held partial line as it is (no newline came in time, or the file was rotated
    /// away and read to its end); returns its start offset if there was one.
    pub fn flush(
        &mut self,
        ts_ns: i64,
        out: &mut Vec<LogLine>,
        starts: Option<&mut Vec<u64>>,
    ) -> bool {
        if self.partial_len == 0 {
            return false;
        }
        let truncated = self.partial_len > self.max_line_bytes as u64;
        let message = std::mem::take(&mut self.partial).freeze();
        out.push(self.line(message, truncated, ts_ns));
        if let Some(starts) = starts {
            starts.push(self.committed);
        }
        self.committed += self.partial_len;
        self.partial_len = 0;
        self.after_flush = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &mut Splitter, chunks: &[&str]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for c in chunks {
            s.push(Bytes::copy_from_slice(c.as_bytes()), 1, &mut out, None);
        }
        out.iter()
            .map(|l| {
                (
                    String::from_utf8_lossy(&l.message).into_owned(),
                    l.truncated,
                )
            })
            .collect()
    }

    fn texts(v: &[(String, bool)]) -> Vec<&str> {
        v.iter().map(|(t, _)| t.as_str()).collect()
    }

    #[test]
    fn complete_lines_and_a_held_partial_across_chunks() {
        let mut s = Splitter::new(100, 0);
        let out = split(&mut s, &["one\ntw", "o\r\nthr", "ee"]);
        assert_eq!(texts(&out), ["one", "two"]);
        assert_eq!(s.committed(), 9, "past `two\\r\\n`");
        assert_eq!(s.read_offset(), 14);
        assert!(s.has_partial());
        let out = split(&mut s, &["\n"]);
        assert_eq!(texts(&out), ["three"]);
        assert_eq!(s.committed(), 15);
        assert!(!s.has_partial());
    }

    #[test]
    fn empty_lines_are_lines() {
        let mut s = Splitter::new(100, 7);
        assert_eq!(texts(&split(&mut s, &["\n\na\n"])), ["", "", "a"]);
        assert_eq!(s.committed(), 11);
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_dropped_up_to_the_newline() {
        let mut s = Splitter::new(4, 0);
        let out = split(&mut s, &["abcdefgh\nxy\n", "0123", "456", "78\nok\n"]);
        assert_eq!(
            out,
            [
                ("abcd".to_string(), true),
                ("xy".to_string(), false),
                ("0123".to_string(), true),
                ("ok".to_string(), false)
            ]
        );
        assert_eq!(s.committed(), 25);
        // Exactly max_line_bytes is not cut.
        let mut s = Splitter::new(4, 0);
        assert_eq!(
            split(&mut s, &["ab", "cd\n"]),
            [("abcd".to_string(), false)]
        );
    }

    #[test]
    fn a_flushed_partial_is_never_emitted_twice() {
        let mut s = Splitter::new(100, 0);
        let mut out = Vec::new();
        s.push(Bytes::from_static(b"a\npart"), 1, &mut out, None);
        let mut starts = Vec::new();
        assert!(s.flush(1, &mut out, Some(&mut starts)));
        assert_eq!(starts, [2]);
        assert!(!s.flush(1, &mut out, None), "nothing held any more");
        assert_eq!(s.committed(), 6);
        // The newline that ends the flushed part makes no record; what follows it does.
        s.push(Bytes::from_static(b"\nnext\n"), 1, &mut out, None);
        let got: Vec<&[u8]> = out.iter().map(|l| &l.message[..]).collect();
        assert_eq!(got, [&b"a"[..], b"part", b"next"]);
        assert_eq!(s.committed(), 12);
        // More of the line after the flush: only that rest is a line.
        let mut s = Splitter::new(100, 0);
        let mut out = Vec::new();
        s.push(Bytes::from_static(b"par"), 1, &mut out, None);
        s.flush(1, &mut out, None);
        s.push(Bytes::from_static(b"tial\n"), 1, &mut out, None);
        let got: Vec<&[u8]> = out.iter().map(|l| &l.message[..]).collect();
        assert_eq!(got, [&b"par"[..], b"tial"]);
        assert_eq!(s.committed(), 8);
    }

    #[test]
    fn lines_are_slices_of_the_chunk_and_starts_are_offsets() {
        let chunk = Bytes::from_static(b"aa\nbbb\nc");
        let mut s = Splitter::new(100, 10);
        let mut out = Vec::new();
        let mut starts = Vec::new();
        s.push(chunk.clone(), 1, &mut out, Some(&mut starts));
        assert_eq!(starts, [10, 13]);
        let range = chunk.as_ptr() as usize..chunk.as_ptr() as usize + chunk.len();
        assert!(
            out.iter()
                .all(|l| range.contains(&(l.message.as_ptr() as usize)))
        );
        assert_eq!(s.committed(), 17);
        assert_eq!(s.read_offset(), 18);
    }
}
