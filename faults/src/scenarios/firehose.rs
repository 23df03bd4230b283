//! What scenarios 1 and 2 share: several containers print numbered lines in fast bursts,
//! the agent is stopped by a signal while it is writing them, one more container runs and
//! exits entirely while the agent is down, the agent is started again, and every line is
//! accounted for against the containers' own numbering (cross-checked with `docker logs`).

use std::time::{Duration, Instant};

use crate::ctx::{Agent, AgentYaml, Ctx};
use crate::scenario::Outcome;
use log_capturer_testkit::verify::Tally;

/// `checkpoint.interval` the agents here run with (shorter than the 5 s default, so that the
/// crash window is a small part of the run and the bound below means something).
pub const CHECKPOINT_INTERVAL_S: f64 = 2.0;
/// The file sink's `fsync_interval` (default): a line flushed up to this long before a
/// checkpoint write can still be unacknowledged at it.
pub const FSYNC_INTERVAL_S: f64 = 1.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Term,
    Kill,
}

pub struct Run {
    pub tally: Tally,
    /// Per stream, the captured lines with repeats removed are in order.
    pub in_order_once_deduplicated: bool,
    /// Lines the file sink flushed in the `window_s` before the signal.
    pub flushed_in_window: f64,
    pub window_s: f64,
    /// Lines flushed before the signal (of the firehose containers' lines).
    pub flushed_at_signal: f64,
    pub expected: usize,
    pub first_exit: String,
    pub problems: Vec<String>,
}

/// Containers × lines, signal half-way, restart, drain, verify.
pub fn run(ctx: &Ctx, stop: Stop) -> Result<Run, String> {
    // Bursts of `burst` lines every `pause_us`: fast, but spread over seconds (quick: about
    // 2 s, full: about 20 s) so the signal comes while the containers are still writing.
    let (containers, lines, burst, pause_us) = if ctx.quick {
        (2, 20_000, 500, 50_000)
    } else {
        (4, 200_000, 1_000, 100_000)
    };
    let expected_total = containers * lines;
    let yaml = AgentYaml {
        checkpoint: format!("  interval: {CHECKPOINT_INTERVAL_S}s\n"),
        ..AgentYaml::default()
    };
    let mut agent = ctx.start_agent("agent", &yaml)?;
    let mut names = Vec::new();
    for i in 0..containers {
        // Odd containers write to stderr: both streams are exercised.
        let redirect = if i % 2 == 1 { " >&2" } else { "" };
        let script = format!(
            "i=0; while [ $i -lt {lines} ]; do seq $((i+1)) $((i+{burst})){redirect}; \
             i=$((i+{burst})); usleep {pause_us}; done"
        );
        names.push(ctx.run_container(&format!("fh{i}"), &[], &script)?);
    }
    // Watch the file sink's flushed-lines counter; signal at half the total.
    let started = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let at = expected_total as f64 / 2.0;
    loop {
        let flushed = agent.metric("log_capturer_sink_lines_total");
        samples.push((started.elapsed().as_secs_f64(), flushed));
        if flushed >= at {
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            return Err(format!(
                "only {flushed} of {expected_total} lines flushed after 180 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let signal_at = started.elapsed().as_secs_f64();
    let first_exit = match stop {
        Stop::Term => agent.terminate(Duration::from_secs(40))?,
        Stop::Kill => agent.kill()?,
    };
    let flushed_at_signal = samples.last().map_or(0.0, |s| s.1);
    let window_s = CHECKPOINT_INTERVAL_S + FSYNC_INTERVAL_S + 1.0;
    let before = samples
        .iter()
        .rev()
        .find(|s| s.0 <= signal_at - window_s)
        .map_or(0.0, |s| s.1);
    let mut problems = Vec::new();
    match stop {
        Stop::Term if !first_exit.success() => {
            problems.push(format!("SIGTERM: {first_exit}, expected exit 0"))
        }
        Stop::Kill if first_exit.signal != Some(9) => {
            problems.push(format!("SIGKILL: {first_exit}"))
        }
        _ => {}
    }
    if flushed_at_signal >= expected_total as f64 {
        problems.push("every line was written before the signal: nothing was mid-stream".into());
    }

    // A container that runs and exits entirely while the agent is down: no event, no
    // listing of running containers and no checkpoint show it; the restart must find it.
    let down_lines = if ctx.quick { 1_000 } else { 10_000 };
    let down = ctx.run_container("down", &[], &format!("seq 1 {down_lines}"))?;
    ctx.wait_exited(&down, Duration::from_secs(120))?;

    agent.start()?;
    for name in &names {
        ctx.wait_exited(name, Duration::from_secs(180))?;
    }
    let complete = wait_complete(&agent, &names, lines, Duration::from_secs(240))
        && wait_complete(
            &agent,
            std::slice::from_ref(&down),
            down_lines,
            Duration::from_secs(60),
        );
    if !complete {
        problems.push("not every line was written within 240 s of the restart".into());
    }
    let last_exit = agent.terminate(Duration::from_secs(40))?;
    if !last_exit.success() {
        problems.push(format!("final SIGTERM: {last_exit}"));
    }

    let expected: Vec<String> = (1..=lines).map(|n| n.to_string()).collect();
    let mut tally = Tally::default();
    let mut in_order = true;
    for (i, name) in names.iter().enumerate() {
        let served = ctx.served(name)?;
        let (served_lines, other) = if i % 2 == 1 {
            (&served.stderr, &served.stdout)
        } else {
            (&served.stdout, &served.stderr)
        };
        if *served_lines != expected || !other.is_empty() {
            problems.push(format!(
                "{name}: docker logs disagrees with the container's numbering ({} lines)",
                served_lines.len()
            ));
        }
        let (out, err) = agent.messages(name)?;
        let (captured, other) = if i % 2 == 1 { (err, out) } else { (out, err) };
        if !other.is_empty() {
            problems.push(format!("{name}: {} lines on the wrong stream", other.len()));
        }
        tally.add(crate::ctx::verify(&expected, &captured));
        in_order &= deduplicated_in_order(&captured);
    }
    let down_expected: Vec<String> = (1..=down_lines).map(|n| n.to_string()).collect();
    let (captured, other) = agent.messages(&down)?;
    if !other.is_empty() {
        problems.push(format!("{down}: {} lines on the wrong stream", other.len()));
    }
    if captured.is_empty() {
        problems.push(format!(
            "{down} (ran while the agent was down): none of its {down_lines} lines captured"
        ));
    }
    tally.add(crate::ctx::verify(&down_expected, &captured));
    in_order &= deduplicated_in_order(&captured);
    Ok(Run {
        tally,
        in_order_once_deduplicated: in_order,
        flushed_in_window: flushed_at_signal - before,
        window_s,
        flushed_at_signal,
        expected: expected_total + down_lines,
        first_exit: first_exit.to_string(),
        problems,
    })
}

/// Polls (bounded) until each container has all `lines` distinct lines written.
fn wait_complete(agent: &Agent, names: &[String], lines: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let done = names.iter().all(|n| {
            agent.messages(n).is_ok_and(|(out, err)| {
                let mut all: Vec<&String> = out.iter().chain(err.iter()).collect();
                all.sort();
                all.dedup();
                all.len() >= lines
            })
        });
        if done {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The numbers, first occurrences only, strictly increase.
fn deduplicated_in_order(captured: &[String]) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut last = 0u64;
    for line in captured {
        let Ok(n) = line.parse::<u64>() else {
            return false;
        };
        if seen.insert(n) {
            if n <= last {
                return false;
            }
            last = n;
        }
    }
    true
}

/// The counts both scenarios report.
pub fn counts(outcome: Outcome, r: &Run) -> Outcome {
    outcome
        .count("expected", r.expected)
        .count("captured", r.tally.captured)
        .count("lost", r.tally.lost)
        .count("dup", r.tally.duplicated)
        .count("out_of_order", r.tally.out_of_order)
        .count("at_signal", r.flushed_at_signal)
}

#[cfg(test)]
mod tests {
    use super::deduplicated_in_order;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn order_ignores_repeats_only() {
        assert!(deduplicated_in_order(&v(&["1", "2", "3", "2", "3", "4"])));
        assert!(!deduplicated_in_order(&v(&["1", "3", "2"])));
        assert!(!deduplicated_in_order(&v(&["1", "x"])));
    }
}
