//! The resume position of a container: the timestamp of the last line emitted and how many
//! lines carrying exactly that timestamp were emitted. `since` is inclusive, so a reopen at
//! `since=ts` re-sends those lines; `Replay` skips exactly them. No loss, no duplicate.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Nanoseconds since the UNIX epoch of the last emitted line (or the start position).
    pub ts_ns: i64,
    /// Lines with timestamp `ts_ns` already emitted.
    pub count: u64,
}

impl Cursor {
    pub fn at(ts_ns: i64) -> Self {
        Cursor { ts_ns, count: 0 }
    }

    /// Records one more emitted line. A line older than the cursor (a long line whose pieces
    /// were interleaved with the other stream) leaves it unchanged: `since` skips it anyway.
    pub fn advance(&mut self, ts_ns: i64) {
        if ts_ns > self.ts_ns {
            self.ts_ns = ts_ns;
            self.count = 1;
        } else if ts_ns == self.ts_ns {
            self.count += 1;
        }
    }

    /// Whether `self` is at or beyond `other` in stream order.
    pub fn is_at_or_after(&self, other: &Cursor) -> bool {
        (self.ts_ns, self.count) >= (other.ts_ns, other.count)
    }
}

/// Filters a re-opened stream so that only lines after `target` pass.
#[derive(Debug)]
pub struct Replay {
    target: Cursor,
    seen_at_target: u64,
}

impl Replay {
    pub fn new(target: Cursor) -> Self {
        Replay {
            target,
            seen_at_target: 0,
        }
    }

    /// Whether a line with this timestamp is new (to be emitted).
    pub fn admit(&mut self, ts_ns: i64) -> bool {
        if ts_ns < self.target.ts_ns {
            return false;
        }
        if ts_ns == self.target.ts_ns && self.seen_at_target < self.target.count {
            self.seen_at_target += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn skips_exactly_lines_at_cursor() {
        let mut r = Replay::new(Cursor {
            ts_ns: 10,
            count: 2,
        });
        let got: Vec<bool> = [9, 10, 10, 10, 11].iter().map(|&t| r.admit(t)).collect();
        assert_eq!(got, vec![false, false, false, true, true]);
    }

    proptest! {
        /// Reading a stream in sessions cut at arbitrary points, each reopened with the
        /// daemon's inclusive `since`, yields the stream exactly once.
        #[test]
        fn sessions_yield_each_line_once(
            steps in proptest::collection::vec(0i64..3, 1..200),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            // Non-decreasing timestamps with many ties, as Docker produces under load.
            let mut ts = 1_000i64;
            let stream: Vec<(i64, usize)> = steps.iter().enumerate().map(|(i, s)| { ts += s; (ts, i) }).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % stream.len()).collect();
            cuts.sort_unstable();
            let mut emitted = Vec::new();
            let mut cursor = Cursor::at(0);
            let mut session_start_cut = 0;
            for end in cuts.iter().copied().chain(std::iter::once(stream.len())) {
                // The daemon serves every line with ts >= cursor.ts_ns; the session reads up to
                // `end` lines of the underlying stream before it is cut.
                let mut replay = Replay::new(cursor);
                let since = cursor.ts_ns;
                for &(t, id) in stream.iter().filter(|(t, _)| *t >= since) {
                    if id >= end.max(session_start_cut) { break; }
                    if replay.admit(t) { cursor.advance(t); emitted.push(id); }
                }
                session_start_cut = end;
            }
            let expected: Vec<usize> = (0..stream.len()).collect();
            prop_assert_eq!(emitted, expected);
        }
    }
}
