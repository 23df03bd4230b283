//! A line under `max_line_bytes`: cut (`line_overflow: truncate`) or split into several entries.

use super::{Encoder, Modified};
use crate::config::LineOverflow;
use crate::pipeline::LogLine;

/// The largest prefix of `s` of at most `max` bytes ending on a character boundary.
pub(super) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

impl Encoder {
    /// The pieces a line becomes under `max_line_bytes`.
    pub(super) fn pieces<'a>(&self, text: &'a str, modified: &mut Modified) -> Vec<&'a str> {
        if text.len() <= self.max_line {
            return vec![text];
        }
        match self.overflow {
            LineOverflow::Truncate => {
                modified.truncated += 1;
                vec![cut(text, self.max_line)]
            }
            LineOverflow::Split => {
                modified.split += 1;
                let mut rest = text;
                let mut out = Vec::new();
                while !rest.is_empty() {
                    let piece = cut(rest, self.max_line);
                    // A single character wider than the limit still has to go somewhere.
                    let piece = if piece.is_empty() {
                        &rest[..rest.chars().next().map_or(rest.len(), char::len_utf8)]
                    } else {
                        piece
                    };
                    out.push(piece);
                    rest = &rest[piece.len()..];
                }
                out
            }
        }
    }

    /// The entries one line becomes, as byte lengths (1 unless `split` cuts it), calling
    /// `each` for every one in order. What `build` sends, without building it: the worker
    /// cuts pushes at `batch.max_entries` / `batch.max_bytes` with it.
    pub fn entry_sizes(&self, line: &LogLine, mut each: impl FnMut(usize)) {
        let text = String::from_utf8_lossy(&line.message);
        if text.len() <= self.max_line {
            each(text.len());
            return;
        }
        for piece in self.pieces(&text, &mut Modified::default()) {
            each(piece.len());
        }
    }
}
