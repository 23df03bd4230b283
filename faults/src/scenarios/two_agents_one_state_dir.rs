//! Scenario 15, two agents on one state_dir: the second refuses clearly (exit 1, a message
//! naming the directory and that another agent holds it), and the first keeps running.

use std::time::Duration;

use crate::ctx::{AgentYaml, Ctx};
use crate::scenario::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "two-agents-one-state-dir",
    what: "a second agent on a state_dir in use refuses (exit 1, clear message); the first keeps running",
    quick: true,
    run,
};

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let mut first = ctx.start_agent("first", &AgentYaml::default())?;
    let mut second = ctx.agent(
        "second",
        &AgentYaml {
            state_dir: Some(first.state_dir.clone()),
            ..AgentYaml::default()
        },
    )?;
    second.process.spawn()?;
    let exit = second.process.wait_exit(Duration::from_secs(30))?;
    let log = second.log();
    let mut problems = Vec::new();
    if exit.code != Some(1) || exit.timed_out {
        problems.push(format!("second agent: {exit}, expected exit 1"));
    }
    let state = first.state_dir.display().to_string();
    let message = log
        .lines()
        // Printed once, through the agent's log (`ERROR ... agent failed to start`).
        .find(|l| {
            l.contains("agent failed to start") && l.contains("in use by another log-capturer")
        })
        .unwrap_or_default()
        .to_string();
    if message.is_empty() || !message.contains(&state) {
        problems.push(format!(
            "second agent's stderr has no `agent failed to start` line saying {state} is in use by another agent: {:?}",
            log.lines().last().unwrap_or_default()
        ));
    }
    if log.contains("panicked") || log.contains("RUST_BACKTRACE") {
        problems.push("the second agent panicked".into());
    }
    let first_ready = first.process.get("/ready").map(|(s, _)| s);
    if first_ready != Some(200) {
        problems.push(format!(
            "first agent /ready: {first_ready:?} after the refusal"
        ));
    }
    let first_exit = first.terminate(Duration::from_secs(30))?;
    if !first_exit.success() {
        problems.push(format!("first agent stopped with {first_exit}"));
    }
    // The lock goes with the process: the second one starts once the first has stopped.
    let restarted = second.start();
    if let Err(e) = &restarted {
        problems.push(format!("second agent after the first stopped: {e}"));
    } else {
        second.terminate(Duration::from_secs(30))?;
    }
    Ok(Outcome::judge(problems, message.trim().to_string())
        .count(
            "second_exit",
            exit.code.map_or("signal".into(), |c| c.to_string()),
        )
        .count(
            "first_ready_after",
            first_ready.map_or("none".into(), |s| s.to_string()),
        ))
}
