//! Small helpers of the rm-burst, churn, rename-pause-restart, http-abuse and loki-faults
//! scenarios: bounded polling, docker commands run side by side, and the agent's resources
//! as an operator sees them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ctx::Agent;

/// SIGTERM, waiting up to `within`; a problem unless the agent stops with 0.
pub fn terminate_checked(
    agent: &mut Agent,
    within: Duration,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let exit = agent.terminate(within)?;
    if !exit.success() {
        problems.push(format!("agent stopped with {exit}"));
    }
    Ok(())
}

/// Polls `check` every 200 ms until it returns true or `within` has passed; its last answer.
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `f` over every item, on at most `threads` threads at once; the results in item order.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, items.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return done;
                        };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// What the agent holds, as its operator sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Held {
    /// `log_capturer_tasks_alive`.
    pub tasks: f64,
    /// Open FDs (`/proc/<pid>/fd`).
    pub fds: f64,
    /// RSS in MiB.
    pub rss_mib: f64,
    /// `log_capturer_containers_tracked`.
    pub tracked: f64,
    /// Lines of `/metrics` whose labels name a container (one per series).
    pub container_series: usize,
}

impl Held {
    pub fn of(agent: &Agent) -> Held {
        let pid = agent.process.pid().unwrap_or(0);
        let body = agent
            .process
            .get("/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let m = log_capturer_testkit::parse_metrics(&body);
        let get = |k: &str| m.get(k).copied().unwrap_or(-1.0);
        Held {
            tasks: get("log_capturer_tasks_alive"),
            fds: log_capturer_testkit::open_fds(pid),
            rss_mib: log_capturer_testkit::status_field(pid, "VmRSS:") / 1024.0,
            tracked: get("log_capturer_containers_tracked"),
            container_series: body
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains("container_name=\""))
                .count(),
        }
    }

    /// `tasks/fds/tracked/series` for a count cell.
    pub fn text(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.tasks, self.fds, self.tracked, self.container_series
        )
    }
}

/// Whether a WARN line of the agent's log names `name` (as a whole name: `c-1` is not named
/// by a line about `c-10`).
pub fn warned(log: &str, name: &str) -> bool {
    log.lines()
        .filter(|l| l.contains("WARN"))
        .any(|l| names_whole(l, name))
}

/// `name` occurs in `text` as a whole container name (terminal colour codes aside).
pub fn names_whole(text: &str, name: &str) -> bool {
    let text = &without_colours(text);
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(part_of_name) && !after.is_some_and(part_of_name)
    })
}

/// `text` without ANSI SGR sequences (`ESC [ ... m`), which the agent's log has on a terminal
/// and in files alike.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A percentage with one decimal.
pub fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

// Like src/docker/timestamp.rs's parser, written again on purpose: a check of the agent's
// output should not reuse the agent's own code (nor does this crate link it).
/// Nanoseconds since the UNIX epoch of a record's `timestamp` (`2026-11-30T19:41:00.123456789Z`,
/// as Docker writes it); `None` for anything else.
pub fn parse_timestamp_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = s.get(19..s.len() - 1)?;
    let nanos = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(digits) if !digits.is_empty() && digits.len() <= 9 => {
            digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60 * 1_000_000_000 + sec * 1_000_000_000 + nanos)
}

/// Now, in nanoseconds since the UNIX epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_timestamps() {
        assert_eq!(parse_timestamp_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp_ns("2026-01-01T00:00:00.000000001Z"),
            Some(1_767_225_600 * 1_000_000_000 + 1)
        );
        assert_eq!(
            parse_timestamp_ns("2026-11-30T19:41:00.5Z"),
            Some(1_796_067_660 * 1_000_000_000 + 500_000_000)
        );
        assert_eq!(parse_timestamp_ns("2026-11-30 19:41:00Z"), None);
        assert_eq!(parse_timestamp_ns("2026-11-30T19:41:00.1234567890Z"), None);
    }

    #[test]
    fn names_whole_names_only() {
        let log = "x WARN gone container=c-10 id=1\nx INFO container=c-2\n";
        assert!(warned(log, "c-10"));
        assert!(!warned(log, "c-1"));
        assert!(!warned(log, "c-2"));
        assert!(names_whole("container=\u{1b}[0mc-1\u{1b}[3m", "c-1"));
    }

    #[test]
    fn parallel_keeps_the_order() {
        let items: Vec<usize> = (0..50).collect();
        assert_eq!(
            parallel(&items, 7, |i| i * 2),
            (0..50).map(|i| i * 2).collect::<Vec<_>>()
        );
    }
}
