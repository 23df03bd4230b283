//! Read coalescing: how long a busy stream waits before its next read.
//!
//! dockerd writes every log line to the follow stream separately. A reader that keeps up
//! wakes, reads and hands a batch to the pipeline once per few lines, and that per-read cost
//! (a syscall, an epoll wake-up, a batch, a sink write) is most of what reading costs: without
//! coalescing the agent spent about a third of the CPU the daemon spends serving the lines.
//! Waiting a few milliseconds between reads lets each read bring about [`TARGET_LINES`].
//!
//! The pause must not make the daemon wait: a unix socket holds only a few hundred one-line
//! writes (each costs about 600 bytes of the sender's 208 KiB buffer), so the target is about a
//! third of that, and the pause is derived from the stream's measured rate. A stream served at
//! 300 000 lines/s needs a pause of about 0.4 ms, hence the sub-millisecond timer in `pause`.

use std::time::{Duration, Instant};

/// Lines and payload bytes one read should bring when a stream is busy.
pub const TARGET_LINES: f64 = 128.0;
pub const TARGET_BYTES: f64 = 32.0 * 1024.0;
/// The longest pause: the most latency coalescing adds to a line.
pub const MAX_PAUSE: Duration = Duration::from_millis(10);
/// Rates are measured over windows at least this long (single reads are too noisy).
const WINDOW: Duration = Duration::from_millis(10);
/// A shorter pause is not worth a timer (the stream would be over a million lines a second).
const MIN_PAUSE: Duration = Duration::from_micros(100);
/// A stream that would not bring this many lines in the longest pause is not paused.
const MIN_LINES_PER_PAUSE: f64 = 8.0;

pub struct Coalescer {
    window_start: Instant,
    window_lines: usize,
    window_bytes: usize,
    pause: Option<Duration>,
}

impl Coalescer {
    pub fn new(now: Instant) -> Self {
        Coalescer {
            window_start: now,
            window_lines: 0,
            window_bytes: 0,
            pause: None,
        }
    }

    /// Records a read of `lines` lines and `bytes` bytes finished at `now`; returns how long to
    /// wait before the next read.
    pub fn after_read(&mut self, lines: usize, bytes: usize, now: Instant) -> Option<Duration> {
        self.window_lines += lines;
        self.window_bytes += bytes;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            self.pause = pause_for_rate(self.window_lines, self.window_bytes, elapsed);
            self.window_start = now;
            self.window_lines = 0;
            self.window_bytes = 0;
        }
        // A read that already brought the target means we are behind: read again at once.
        if lines == 0 || lines as f64 >= TARGET_LINES || bytes as f64 >= TARGET_BYTES {
            return None;
        }
        self.pause
    }
}

/// The time a stream that brought `lines` and `bytes` over `elapsed` needs to bring the target;
/// none for a stream so slow that even the longest pause would gather only a few lines (a
/// pause there would cost a timer and two epoll changes per line and save nothing).
fn pause_for_rate(lines: usize, bytes: usize, elapsed: Duration) -> Option<Duration> {
    let secs = elapsed.as_secs_f64();
    if lines == 0 || secs <= 0.0 {
        return None;
    }
    let rate = lines as f64 / secs;
    if rate * MAX_PAUSE.as_secs_f64() < MIN_LINES_PER_PAUSE {
        return None;
    }
    let by_lines = TARGET_LINES / rate;
    let by_bytes = TARGET_BYTES * secs / bytes.max(1) as f64;
    let pause = Duration::from_secs_f64(by_lines.min(by_bytes)).min(MAX_PAUSE);
    (pause >= MIN_PAUSE).then_some(pause)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds reads of `lines` lines of 50 bytes every `every`, for a second.
    fn steady(lines: usize, every: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        let mut c = Coalescer::new(t0);
        let mut pause = None;
        let mut t = t0;
        while t < t0 + Duration::from_secs(1) {
            t += every;
            pause = c.after_read(lines, lines * 50, t);
        }
        pause
    }

    #[test]
    fn a_moderate_stream_pauses_for_the_target() {
        // 20 000 lines/s: 128 lines take 6.4 ms.
        let pause = steady(2, Duration::from_micros(100)).expect("a pause");
        assert!(
            (Duration::from_micros(6300)..=Duration::from_micros(6500)).contains(&pause),
            "{pause:?}"
        );
    }

    #[test]
    fn a_fast_stream_gets_a_sub_millisecond_pause() {
        // 250 000 lines/s: 128 lines take 0.512 ms.
        let pause = steady(25, Duration::from_micros(100)).expect("a pause");
        assert!(
            (Duration::from_micros(500)..=Duration::from_micros(525)).contains(&pause),
            "{pause:?}"
        );
        // 2 000 000 lines/s is not paused.
        assert_eq!(steady(200, Duration::from_micros(100)), None);
    }

    #[test]
    fn a_middling_stream_waits_at_most_the_maximum() {
        // 5 000 lines/s: 128 lines would take 25.6 ms.
        assert_eq!(steady(1, Duration::from_micros(200)), Some(MAX_PAUSE));
    }

    #[test]
    fn a_slow_stream_is_not_paused() {
        // 20 lines/s: a pause would gather a fraction of a line.
        assert_eq!(steady(1, Duration::from_millis(50)), None);
        // 500 lines/s: 5 lines in the longest pause, still not worth it.
        assert_eq!(steady(1, Duration::from_millis(2)), None);
    }

    #[test]
    fn a_read_that_brought_the_target_is_followed_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(t0);
        // 10 000 lines/s: worth pausing.
        assert!(
            c.after_read(100, 5_000, t0 + Duration::from_millis(10))
                .is_some()
        );
        assert_eq!(
            c.after_read(200, 10_000, t0 + Duration::from_millis(51)),
            None
        );
        assert_eq!(
            c.after_read(10, 40_000, t0 + Duration::from_millis(52)),
            None
        );
        assert_eq!(c.after_read(0, 0, t0 + Duration::from_millis(53)), None);
    }

    #[test]
    fn large_lines_are_paced_by_bytes() {
        // 8 000 lines/s of 1 KiB: 128 lines would take 16 ms, but 32 KiB takes 4 ms.
        let t0 = Instant::now();
        let mut c = Coalescer::new(t0);
        let mut pause = None;
        for i in 1..=100u32 {
            pause = c.after_read(2, 2048, t0 + Duration::from_micros(250) * i);
        }
        let pause = pause.expect("a pause");
        assert!(
            (Duration::from_micros(3900)..=Duration::from_micros(4100)).contains(&pause),
            "{pause:?}"
        );
    }
}
