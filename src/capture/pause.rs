//! Sleeping between reads with sub-millisecond precision.
//!
//! Tokio's timers round up to whole milliseconds. A stream that dockerd serves at a few hundred
//! thousand lines a second fills its socket in about a millisecond, so its coalescing pause
//! (see `coalesce`) must be a fraction of one: those pauses use a `timerfd`, created the first
//! time a session needs one and closed with the session, so idle and moderate streams never
//! hold the extra descriptor.

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, timerfd_create, timerfd_settime,
};
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Pauses at least this long go to tokio's timer: rounding them up by under a millisecond
/// changes little.
const COARSE: Duration = Duration::from_millis(2);

#[derive(Default)]
pub struct PauseTimer {
    fine: Option<AsyncFd<OwnedFd>>,
    /// The timerfd could not be had (e.g. out of descriptors): tokio's timer for the rest of
    /// the session.
    coarse_only: bool,
}

impl PauseTimer {
    /// Sleeps for `pause`. Cancel-safe: a timer left armed is re-armed by the next call. If the
    /// timerfd fails, the pause is taken with tokio's timer instead (1 ms resolution) and the
    /// error is returned, once per session, for the caller to count.
    pub async fn sleep(&mut self, pause: Duration) -> Option<io::Error> {
        if pause >= COARSE || self.coarse_only {
            tokio::time::sleep(pause).await;
            return None;
        }
        match self.fine_sleep(pause).await {
            Ok(()) => None,
            Err(e) => {
                self.coarse_only = true;
                self.fine = None;
                tokio::time::sleep(pause).await;
                Some(e)
            }
        }
    }

    async fn fine_sleep(&mut self, pause: Duration) -> io::Result<()> {
        let fd = match &mut self.fine {
            Some(fd) => fd,
            None => {
                let fd = timerfd_create(
                    TimerfdClockId::Monotonic,
                    TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
                )?;
                // SAFETY: an `OwnedFd` is an open descriptor that it alone closes, and it reports
                // the same one for as long as the `AsyncFd` owns it.
                let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(io::Error::from)?;
                self.fine.insert(registered)
            }
        };
        // Arming resets the expiry count, so an expiry left over from a cancelled pause
        // cannot end this one early (a stale readiness only costs one `EAGAIN` below).
        let value = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(pause.subsec_nanos().max(1_000)),
        };
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        timerfd_settime(
            fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        loop {
            let mut ready = fd.readable().await?;
            let mut expirations = [0u8; 8];
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Instant;

    #[tokio::test]
    async fn fine_pauses_last_about_what_was_asked() {
        let mut timer = PauseTimer::default();
        for micros in [200u64, 500, 900] {
            let pause = Duration::from_micros(micros);
            let t0 = Instant::now();
            assert!(timer.sleep(pause).await.is_none(), "timerfd");
            // Never shorter; the upper bound is loose (a shared CI machine).
            assert!(t0.elapsed() >= pause, "{micros} µs");
        }
        assert!(timer.fine.is_some());
    }

    #[tokio::test]
    async fn a_cancelled_pause_does_not_cut_the_next_one_short() {
        let mut timer = PauseTimer::default();
        {
            // Arm the timer, then drop the pause before it ends.
            let sleep = std::pin::pin!(timer.sleep(Duration::from_micros(300)));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(sleep.poll(&mut cx).is_pending());
        }
        // Let the abandoned timer expire, then ask for a longer pause.
        std::thread::sleep(Duration::from_millis(1));
        let t0 = Instant::now();
        assert!(timer.sleep(Duration::from_micros(1500)).await.is_none());
        assert!(t0.elapsed() >= Duration::from_micros(1500));
    }

    #[tokio::test]
    async fn coarse_pauses_need_no_timerfd() {
        let mut timer = PauseTimer::default();
        assert!(timer.sleep(Duration::from_millis(3)).await.is_none());
        assert!(timer.fine.is_none());
    }
}
