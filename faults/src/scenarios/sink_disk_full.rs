//! Issue 10, scenario 5: The file sink's disk fills up (its output directory is a small tmpfs, mostly taken by a
//! filler file), then the space comes back. Checked: the error is logged as "No space left
//! on device" and counted (`log_capturer_sink_failures_total{reason="io"}`); capture pauses
//! (the lines collected stop growing once the queue budget is spent); no record is ever torn
//! in what the files keep (after recovery, and after a SIGTERM while the disk is full, which
//! cuts each file back to its last acknowledged record and exits 3); after the space returns,
//! while running and across that restart, every line is there exactly once, in order.

use std::path::Path;
use std::time::Duration;

use crate::counted;
use crate::ctx::{Agent, AgentYaml, Ctx};
use crate::scenario::{Outcome, Scenario};
use crate::tmpfs::Tmpfs;

pub const SCENARIO: Scenario = Scenario {
    name: "sink-disk-full",
    what: "the file sink's disk full, then space freed (running, and across a SIGTERM while full): error and metric, capture pauses, no torn record, 0 lost 0 dup",
    quick: true,
    run,
};

// As in state_dir_full_or_readonly.rs: the entry, then the containers removed even on a failure.
fn run(ctx: &Ctx) -> Outcome {
    let outcome = check(ctx).unwrap_or_else(Outcome::fail);
    let _ = ctx.remove_containers();
    outcome
}

const TMPFS_BYTES: u64 = 32 << 20;

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let lines = if ctx.quick { 10_000 } else { 30_000 };
    let yaml = AgentYaml {
        // A small budget, so that capture visibly pauses behind the full disk.
        pipeline: "  queue_bytes: 1MiB\n  shutdown_timeout: 5s\n".into(),
        ..AgentYaml::default()
    };
    let mut agent = ctx.agent("agent", &yaml)?;
    let disk = Tmpfs::mount(&agent.out_dir(), TMPFS_BYTES)?;
    // Room for about a tenth of what the first two containers print.
    disk.fill_leaving(256 << 10)?;
    agent.start()?;
    let served = |n: &str| ctx.served(n).map(|s| (s.stdout, s.stderr));
    let burst = |tag: &str| format!("seq 1 {lines} | sed 's/^/{tag} /'");

    // Phase A: full while running, then the space comes back.
    let mut names = Vec::new();
    for c in 0..2 {
        let tag = format!("{}-full-{c}", ctx.prefix);
        names.push(ctx.run_container(&format!("full-{c}"), &[], &burst(&tag))?);
    }
    let mut problems = Vec::new();
    let failing = |agent: &Agent| {
        agent.metric("log_capturer_sink_failures_total{sink=\"file\",reason=\"io\"}")
    };
    if !counted::eventually(Duration::from_secs(60), || failing(&agent) > 0.0) {
        return Err("the file sink never reported a failure on the full disk".into());
    }
    let clear_error = agent.log().contains("No space left on device");
    if !clear_error {
        problems.push("the agent's log does not say \"No space left on device\"".into());
    }
    // Capture pauses: the budget fills, then nothing more is collected while the disk is full.
    std::thread::sleep(Duration::from_secs(2));
    let collected_a = agent.metric("log_capturer_logs_collected_total");
    std::thread::sleep(Duration::from_secs(3));
    let collected_b = agent.metric("log_capturer_logs_collected_total");
    let total = 2 * lines;
    if collected_b != collected_a || collected_b >= total as f64 {
        problems.push(format!(
            "capture did not pause: {collected_a} then {collected_b} of {total} lines collected 3 s apart"
        ));
    }
    let partial_tail_while_full = partial_tails(&agent.out_dir(), &names);
    let failures_a = failing(&agent);

    disk.free()?;
    counted::wait_all(&agent, &names, served, Duration::from_secs(120))?;
    let running = counted::account(&agent, &names, served)?;
    if !agent.log().contains("sink works again") {
        problems.push("the agent's log does not say the file sink works again".into());
    }
    check_files(
        &agent.out_dir(),
        &names,
        "after the space came back",
        &mut problems,
    );

    // Phase B: full again, and a SIGTERM while it is.
    disk.fill()?;
    let failures_before = failing(&agent);
    let tag = format!("{}-full-2", ctx.prefix);
    names.push(ctx.run_container("full-2", &[], &burst(&tag))?);
    if !counted::eventually(Duration::from_secs(60), || {
        failing(&agent) > failures_before
    }) {
        problems.push("no failure counted when the disk filled up again".into());
    }
    let stop = agent.terminate(Duration::from_secs(60))?;
    if stop.code != Some(3) {
        problems.push(format!(
            "SIGTERM with the disk full: {stop}, expected exit 3 (incomplete stop)"
        ));
    }
    check_files(
        &agent.out_dir(),
        &names,
        "after a SIGTERM while full",
        &mut problems,
    );
    disk.free()?;
    agent.start()?;
    counted::wait_all(&agent, &names, served, Duration::from_secs(120))?;
    let tally = counted::account(&agent, &names, served)?;
    check_files(&agent.out_dir(), &names, "at the end", &mut problems);
    let exit = agent.terminate(Duration::from_secs(60))?;
    if !exit.success() {
        problems.push(format!("the agent's last stop: {exit}"));
    }
    for (what, t) in [("while running", &running), ("in all", &tally)] {
        if t.lost + t.duplicated + t.out_of_order > 0 {
            problems.push(format!(
                "{what}: lost {} dup {} out of order {} (see {})",
                t.lost,
                t.duplicated,
                t.out_of_order,
                agent.dir.display()
            ));
        }
    }
    drop(disk);

    let mut outcome = Outcome::judge(
        problems,
        format!(
            "3x{lines} lines; paused at {collected_b} collected; SIGTERM while full: {stop}; \
             while full a file may end in the unwritten part of a record (kept and completed \
             when space returns): seen {partial_tail_while_full}"
        ),
    );
    outcome.counts = counted::counts(&tally);
    Ok(outcome
        .count("io_failures", failures_a)
        .count("collected_while_paused", collected_b)
        .count("stop_while_full_exit", stop.code.map_or(-1, |c| c))
        .count("partial_tail_while_full", partial_tail_while_full))
}

/// How many of the containers' files end in an incomplete record right now.
fn partial_tails(dir: &Path, names: &[String]) -> usize {
    names
        .iter()
        .filter(|n| {
            std::fs::read(dir.join(format!("{n}.log")))
                .is_ok_and(|b| b.last().is_some_and(|c| *c != b'\n'))
        })
        .count()
}

/// Every file ends in a newline and every line of it is a whole JSON record.
fn check_files(dir: &Path, names: &[String], when: &str, problems: &mut Vec<String>) {
    if partial_tails(dir, names) > 0 {
        problems.push(format!("{when}: a file ends in a partial record"));
    }
    for n in names {
        if let Err(e) = crate::ctx::read_ndjson(&dir.join(format!("{n}.log"))) {
            problems.push(format!("{when}: {e}"));
        }
    }
}
