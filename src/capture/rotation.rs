//! When a stream may be rotated.
//!
//! Rotation exists for a follow stream that has gone quiet and might be stuck: closing and
//! reopening it from the cursor costs nothing in lines. It is not free for the daemon: with
//! `since`, dockerd reads the container's json log from its start up to `since` before it sends
//! anything (about 1.7 s per million lines, see docs/performance.md). A stream that is still
//! working through a backlog would pay that scan at every rotation, and once the scan takes as
//! long as the interval, capture makes no progress at all.
//!
//! So a stream is rotated at its deadline only when it has *caught up* since it was opened —
//! it has served a line stamped at or after the moment it was opened — or when it has served
//! nothing at all (idle, or stuck: what rotation is for). A stream that is serving a backlog
//! is left alone while bytes keep coming; if it then stays silent for a whole interval it is
//! treated as stuck and rotated. Waits that are not reads (the queue budget, the hand-over)
//! end in a rotation only for a caught-up stream: while we are the ones not reading, a reopen
//! would only make the daemon scan again.

use std::time::{Duration, Instant};

pub struct RotationGate {
    interval: Duration,
    /// Wall-clock time the stream was opened (nanoseconds since the epoch).
    opened_ns: i64,
    bytes_seen: bool,
    caught_up: bool,
    last_bytes: Instant,
}

/// What to do when the rotation deadline fires during a read or a pause.
#[derive(Debug, PartialEq, Eq)]
pub enum AtDeadline {
    Rotate,
    /// Behind and still being served: look again at this instant.
    NotBefore(Instant),
}

impl RotationGate {
    pub fn new(interval: Duration, opened: Instant, opened_ns: i64) -> Self {
        RotationGate {
            interval,
            opened_ns,
            bytes_seen: false,
            caught_up: false,
            last_bytes: opened,
        }
    }

    /// A read brought bytes at `now`; `newest_ns` is the latest timestamp of the lines it gave.
    pub fn on_read(&mut self, now: Instant, newest_ns: Option<i64>) {
        self.bytes_seen = true;
        self.last_bytes = now;
        if newest_ns.is_some_and(|ts| ts >= self.opened_ns) {
            self.caught_up = true;
        }
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Whether a wait that is not a read (queue budget, hand-over) may end in a rotation.
    pub fn may_rotate_while_not_reading(&self) -> bool {
        self.caught_up || !self.bytes_seen
    }

    /// The deadline fired while waiting for the stream.
    pub fn at_deadline(&self, now: Instant) -> AtDeadline {
        if self.may_rotate_while_not_reading() {
            return AtDeadline::Rotate;
        }
        let quiet_until = self.last_bytes + self.interval;
        if quiet_until > now {
            AtDeadline::NotBefore(quiet_until)
        } else {
            AtDeadline::Rotate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn idle_stream_rotates_at_its_deadline() {
        let t0 = Instant::now();
        let gate = RotationGate::new(SEC, t0, 1_000);
        assert!(gate.may_rotate_while_not_reading());
        assert_eq!(gate.at_deadline(t0 + SEC), AtDeadline::Rotate);
    }

    #[test]
    fn stream_serving_a_backlog_is_not_rotated_until_it_catches_up() {
        let t0 = Instant::now();
        let mut gate = RotationGate::new(SEC, t0, 1_000);
        gate.on_read(t0 + SEC / 2, Some(500)); // lines older than the open: a backlog
        assert!(!gate.caught_up());
        assert!(!gate.may_rotate_while_not_reading());
        assert_eq!(
            gate.at_deadline(t0 + SEC),
            AtDeadline::NotBefore(t0 + SEC / 2 + SEC)
        );
        gate.on_read(t0 + 2 * SEC, Some(999));
        assert_eq!(
            gate.at_deadline(t0 + 2 * SEC),
            AtDeadline::NotBefore(t0 + 3 * SEC)
        );
        gate.on_read(t0 + 2 * SEC, Some(1_000)); // written after the open: caught up
        assert!(gate.caught_up());
        assert!(gate.may_rotate_while_not_reading());
        assert_eq!(gate.at_deadline(t0 + 2 * SEC), AtDeadline::Rotate);
    }

    #[test]
    fn backlog_stream_that_goes_silent_for_an_interval_is_rotated() {
        let t0 = Instant::now();
        let mut gate = RotationGate::new(SEC, t0, 1_000);
        gate.on_read(t0 + SEC / 2, Some(10));
        assert_eq!(gate.at_deadline(t0 + 2 * SEC), AtDeadline::Rotate);
    }
}
