//! Containers that print counted lines, and their accounting, for the scenarios that break
//! the daemon or the agent's disks (3, 4, 5, 6, 9).

use std::time::{Duration, Instant};

use log_capturer_testkit::verify::Tally;

use crate::ctx::{Agent, verify};

/// A `sh -c` script printing `<tag> 1` … `<tag> <n>` on stdout, pausing `pause_us` every
/// `every` lines, then idling until stopped (so that a restart policy has nothing to
/// restart). The count survives a restart of the container: each number is appended to `/n`
/// before its line is printed, and a container the daemon brings back goes on after the last
/// number there, so no number is printed twice. (Appending, not rewriting: a kill between
/// the truncation and the write of a rewrite would leave `/n` empty and end the count.)
pub fn script(tag: &str, n: usize, every: usize, pause_us: u64) -> String {
    format!(
        "i=$(tail -n 1 /n 2>/dev/null); i=${{i:-0}}; \
         while [ $i -lt {n} ]; do i=$((i+1)); echo $i >> /n; echo \"{tag} $i\"; \
         if [ $((i % {every})) -eq 0 ]; then usleep {pause_us}; fi; done; \
         while true; do sleep 1; done"
    )
}

/// The line a container running [`script`] prints last.
pub fn last_line(tag: &str, n: usize) -> String {
    format!("{tag} {n}")
}

/// Polls (bounded) until the agent's output for `container` holds at least `lines` records;
/// then waits `settle` and returns whether it got there.
pub fn wait_records(agent: &Agent, container: &str, lines: usize, within: Duration) -> bool {
    let ok = agent.wait_records(container, lines, within);
    // A moment for anything written twice to show up too.
    std::thread::sleep(Duration::from_millis(500));
    ok
}

/// Every container's stdout and stderr, as the daemon served them, against the agent's.
/// `served(name)` gives (stdout, stderr).
pub fn account(
    agent: &Agent,
    containers: &[String],
    served: impl Fn(&str) -> Result<(Vec<String>, Vec<String>), String>,
) -> Result<Tally, String> {
    let mut total = Tally::default();
    for name in containers {
        let (out, err) = served(name)?;
        let (got_out, got_err) = agent.messages(name)?;
        total.add(verify(&out, &got_out));
        total.add(verify(&err, &got_err));
    }
    Ok(total)
}

/// Waits (bounded) for every container's output to hold as many records as it served.
pub fn wait_all(
    agent: &Agent,
    containers: &[String],
    served: impl Fn(&str) -> Result<(Vec<String>, Vec<String>), String>,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    for name in containers {
        let (out, err) = served(name)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_records(agent, name, out.len() + err.len(), left) {
            let (a, b) = agent.messages(name).unwrap_or_default();
            return Err(format!(
                "{name}: the agent wrote {} of {} lines within {} s",
                a.len() + b.len(),
                out.len() + err.len(),
                within.as_secs()
            ));
        }
    }
    Ok(())
}

/// Polls `f` every 100 ms until it is true or `within` passed; whether it became true.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM; a problem unless the agent stops with 0 and `tally` has nothing lost, duplicated
/// or out of order.
pub fn stop_clean(
    agent: &mut Agent,
    tally: &Tally,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let exit = agent.terminate(Duration::from_secs(60))?;
    if !exit.success() {
        problems.push(format!("the agent stopped with {exit}"));
    }
    if tally.lost + tally.duplicated + tally.out_of_order > 0 {
        problems.push(format!(
            "lost {} dup {} out of order {} (see {})",
            tally.lost,
            tally.duplicated,
            tally.out_of_order,
            agent.dir.display()
        ));
    }
    Ok(())
}

/// The standard counts of a tally, in report order.
pub fn counts(t: &Tally) -> Vec<(String, String)> {
    vec![
        ("lines".into(), t.served.to_string()),
        ("captured".into(), t.captured.to_string()),
        ("lost".into(), t.lost.to_string()),
        ("dup".into(), t.duplicated.to_string()),
        ("out_of_order".into(), t.out_of_order.to_string()),
    ]
}
