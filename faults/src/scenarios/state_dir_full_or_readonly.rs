//! Issue 10, scenario 6: The state directory (a small tmpfs) runs out of space, then turns read-only, while the
//! agent captures; then the agent is started on a read-only state directory. Checked: each
//! failure is logged with its cause and counted (`log_capturer_checkpoint_errors_total`);
//! capture goes on; every checkpoint file on disk stays a valid checkpoint of its container;
//! writes resume once the space is back; a SIGTERM while checkpoints cannot be written exits
//! 3 and says so; a start on a read-only state directory is refused (exit 1) naming it; and
//! after it all nothing is lost. Duplicates are the lines acknowledged after the last
//! checkpoint that could be written (read again after the restart), and are reported.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::counted;
use crate::ctx::{Agent, AgentYaml, Ctx};
use crate::scenario::{Outcome, Scenario};
use crate::tmpfs::{Tmpfs, run_mount};

pub const SCENARIO: Scenario = Scenario {
    name: "state-dir-full-or-readonly",
    what: "state_dir full, then read-only, then a start on it read-only: clear errors, persisted checkpoints stay valid, nothing lost",
    quick: true,
    run,
};

fn run(ctx: &Ctx) -> Outcome {
    let outcome = check(ctx).unwrap_or_else(Outcome::fail);
    let _ = ctx.remove_containers();
    outcome
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let (containers, lines) = if ctx.quick { (2, 5_000) } else { (3, 15_000) };
    let yaml = AgentYaml {
        checkpoint: "  interval: 500ms\n".into(),
        pipeline: "  shutdown_timeout: 5s\n".into(),
        ..AgentYaml::default()
    };
    let mut agent = ctx.agent("agent", &yaml)?;
    let state = Tmpfs::mount(&agent.state_dir, 1 << 20)?;
    agent.start()?;
    let served = |n: &str| ctx.served(n).map(|s| (s.stdout, s.stderr));
    let mut names = Vec::new();
    for c in 0..containers {
        let suffix = format!("state-{c}");
        let tag = format!("{}-{suffix}", ctx.prefix);
        // A few hundred lines a second each (busybox sh): still printing through every phase.
        names.push(ctx.run_container(&suffix, &[], &counted::script(&tag, lines, 25, 50_000))?);
    }
    let checkpoints = agent.state_dir.join("checkpoints");
    if !counted::eventually(Duration::from_secs(30), || {
        count_json(&checkpoints) >= containers
    }) {
        return Err("no checkpoint files after 30 s".into());
    }
    let mut problems = Vec::new();
    let errors = |a: &Agent| a.metric("log_capturer_checkpoint_errors_total");
    let writes = |a: &Agent| a.metric("log_capturer_checkpoint_writes_total");

    // Full.
    state.fill()?;
    if !counted::eventually(Duration::from_secs(10), || errors(&agent) > 0.0) {
        problems.push("no checkpoint error counted with the state_dir full".into());
    }
    let full_logged = agent.log().contains("cannot write checkpoint")
        && agent.log().contains("No space left on device");
    if !full_logged {
        problems.push("no \"cannot write checkpoint ... No space left on device\" logged".into());
    }
    let records_full = records(&agent, &names);
    std::thread::sleep(Duration::from_secs(2));
    if records(&agent, &names) <= records_full {
        problems.push("capture stopped while the state_dir was full".into());
    }
    valid_checkpoints(&checkpoints, "while full", &mut problems);
    let errors_full = errors(&agent);
    state.free()?;
    let writes_back = writes(&agent);
    if !counted::eventually(Duration::from_secs(10), || writes(&agent) > writes_back) {
        problems.push("checkpoint writes did not resume once the space was back".into());
    }

    // Read-only: the checkpoints directory, bind-mounted read-only over itself (the state
    // directory as a whole cannot be remounted read-only while the agent holds its lock file
    // open for writing: the kernel refuses with EBUSY).
    let before_ro = records(&agent, &names);
    let ro = BindReadOnly::new(&checkpoints)?;
    let errors_before_ro = errors(&agent);
    if !counted::eventually(Duration::from_secs(10), || {
        errors(&agent) > errors_before_ro
    }) {
        problems.push("no checkpoint error counted with checkpoints read-only".into());
    }
    if !agent.log().contains("Read-only file system") {
        problems.push("no \"Read-only file system\" logged".into());
    }
    std::thread::sleep(Duration::from_secs(2));
    valid_checkpoints(&checkpoints, "while read-only", &mut problems);
    // Guard on the harness itself: the checks above mean something only if the containers
    // were still printing all along.
    let finished = names
        .iter()
        .filter(|n| served(n).is_ok_and(|(o, _)| o.len() >= lines))
        .count();
    if finished == names.len() {
        problems.push("the workload ended before the read-only phase did (too fast)".into());
    }
    let stop = agent.terminate(Duration::from_secs(60))?;
    let at_stop = records(&agent, &names);
    if stop.code != Some(3) {
        problems.push(format!(
            "SIGTERM with checkpoints read-only: {stop}, expected exit 3"
        ));
    }
    drop(ro);
    valid_checkpoints(&checkpoints, "after the stop", &mut problems);

    // A start on a read-only state directory: refused, naming it.
    state.read_only()?;
    agent.process.spawn()?;
    let refused = agent.process.wait_exit(Duration::from_secs(30))?;
    let refusal = agent
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("error"))
        .unwrap_or_default()
        .to_string();
    if refused.timed_out || refused.code != Some(1) {
        problems.push(format!(
            "a start on a read-only state_dir: {refused}, expected exit 1"
        ));
    }
    if !refusal.contains(&agent.state_dir.display().to_string()) {
        problems.push(format!(
            "the refusal does not name the state_dir: {refusal:?}"
        ));
    }
    state.read_write()?;

    // Back to normal: everything, once the containers are done.
    agent.start()?;
    for (i, n) in names.iter().enumerate() {
        let last = counted::last_line(&format!("{}-state-{i}", ctx.prefix), lines);
        if !counted::eventually(Duration::from_secs(300), || {
            served(n).is_ok_and(|(o, _)| o.last() == Some(&last))
        }) {
            return Err(format!("{n} did not finish within 300 s"));
        }
    }
    counted::wait_all(&agent, &names, served, Duration::from_secs(120))?;
    let tally = counted::account(&agent, &names, served)?;
    let exit = agent.terminate(Duration::from_secs(60))?;
    if !exit.success() {
        problems.push(format!("the agent's last stop: {exit}"));
    }
    // The window: what was acknowledged since the last checkpoint written before the
    // read-only phase (one interval before it, at most) up to the stop.
    let window = at_stop.saturating_sub(before_ro) + 2_000;
    if tally.lost > 0 || tally.duplicated > window {
        problems.push(format!(
            "lost {} dup {} (window {window}) (see {})",
            tally.lost,
            tally.duplicated,
            agent.dir.display()
        ));
    }
    drop(state);
    let mut outcome = Outcome::judge(
        problems,
        format!(
            "{containers}x{lines} lines; duplicates are the lines acknowledged while checkpoints \
             could not be written, read again after the restart; start on read-only: {}",
            refusal.trim()
        ),
    );
    outcome.counts = counted::counts(&tally);
    Ok(outcome
        .count("errors_full", errors_full)
        .count("dup_window", window)
        .count("stop_readonly_exit", stop.code.map_or(-1, |c| c))
        .count("start_readonly_exit", refused.code.map_or(-1, |c| c)))
}

/// Lines the agent has written for these containers so far.
fn records(agent: &Agent, names: &[String]) -> usize {
    names
        .iter()
        .map(|n| {
            agent
                .messages(n)
                .map(|(o, e)| o.len() + e.len())
                .unwrap_or(0)
        })
        .sum()
}

fn count_json(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// Every `<id>.json` parses and names its own container.
fn valid_checkpoints(dir: &Path, when: &str, problems: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        problems.push(format!("{when}: cannot list {}", dir.display()));
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let valid = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["container_id"] == id && v["timestamp_ns"].as_i64().is_some());
        if !valid {
            problems.push(format!(
                "{when}: {} is not a valid checkpoint",
                path.display()
            ));
        }
    }
}

/// `dir` bind-mounted over itself, read-only, until dropped.
struct BindReadOnly(String);

impl BindReadOnly {
    fn new(dir: &Path) -> Result<BindReadOnly, String> {
        let d = dir.display().to_string();
        run_mount(&["--bind", &d, &d])?;
        let bind = BindReadOnly(d.clone());
        run_mount(&["-o", "remount,bind,ro", &d])?;
        Ok(bind)
    }
}

impl Drop for BindReadOnly {
    fn drop(&mut self) {
        if Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| !s.success())
        {
            let _ = Command::new("umount").args(["-l", &self.0]).status();
        }
    }
}
