//! Issue 10, scenario 4: dockerd SIGKILLed mid-stream and started again 20 s later (quick: 5 s), on a daemon the
//! suite owns with `--live-restore` (its containers keep running; they block on their full
//! log pipe while no daemon reads it). The agent stays up (`/health` answers throughout),
//! `/ready` goes false then true by itself, and every line arrives exactly once, in order.

use std::time::{Duration, Instant};

use crate::counted;
use crate::ctx::{AgentYaml, Ctx};
use crate::daemon::Daemon;
use crate::scenario::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "dockerd-kill",
    what: "dockerd SIGKILLed mid-stream, started 20 s later: the agent stays up, /ready false then true, 0 lost, 0 dup, in order",
    quick: false,
    run,
};

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let mut daemon = Daemon::start(&ctx.out_dir.join("dockerd"), true)?;
    let actx = daemon.ctx_for(ctx);
    let (containers, lines, down) = if ctx.quick {
        (2, 3_000, Duration::from_secs(5))
    } else {
        (4, 10_000, Duration::from_secs(20))
    };
    let mut agent = actx.start_agent("agent", &AgentYaml::default())?;
    let mut names = Vec::new();
    for c in 0..containers {
        let suffix = format!("kill-{c}");
        let tag = format!("{}-{suffix}", ctx.prefix);
        let script = counted::script(&tag, lines, 50, 50_000);
        names.push(daemon.run_container(ctx, &suffix, &["--stop-timeout", "2"], &script)?);
    }
    daemon.wait_served(&names[0], Duration::from_secs(120), |out| {
        out.len() >= lines / 5
    })?;
    let at_fault = daemon.served_counts(&names);
    let served_before: usize = at_fault.iter().sum();

    daemon.kill()?;
    let killed = Instant::now();
    // Watch the agent while no daemon runs: /health must answer all along, /ready must not.
    let (mut samples, mut health_failures, mut ready_200, mut first_unready) = (0, 0, 0, None);
    while killed.elapsed() < down {
        samples += 1;
        if agent.process.get("/health").map(|(s, _)| s) != Some(200) {
            health_failures += 1;
        }
        if agent.process.get("/ready").map(|(s, _)| s) == Some(200) {
            ready_200 += 1;
        } else if first_unready.is_none() {
            first_unready = Some(killed.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let started = Instant::now();
    daemon.spawn()?;
    let back = counted::eventually(Duration::from_secs(90), || {
        agent.process.get("/ready").map(|(s, _)| s) == Some(200)
    });
    let ready_again_s = started.elapsed().as_secs_f64();

    let mut problems = Vec::new();
    if at_fault.iter().any(|&n| n >= lines) {
        problems.push(format!(
            "not mid-stream: lines served per container at the kill {at_fault:?} of {lines}"
        ));
    }
    if health_failures > 0 {
        problems.push(format!(
            "/health failed {health_failures} of {samples} times while the daemon was down"
        ));
    }
    if first_unready.is_none() {
        problems.push("/ready never went false while the daemon was down".into());
    }
    if !back {
        problems.push("the agent was not ready again within 90 s of the daemon's start".into());
    }
    let tally = daemon.account_to_the_end(
        &agent,
        &names,
        |i| format!("{}-kill-{i}", ctx.prefix),
        lines,
    )?;
    counted::stop_clean(&mut agent, &tally, &mut problems)?;
    daemon.remove_all()?;
    drop(daemon);

    let mut outcome = Outcome::judge(
        problems,
        format!(
            "{containers}x{lines} lines; killed after {served_before}, down {} s; unready after {:.1} s, ready again {ready_again_s:.1} s after the start",
            down.as_secs(),
            first_unready.unwrap_or(-1.0)
        ),
    );
    outcome.counts = counted::counts(&tally);
    Ok(outcome
        .count("served_at_kill", served_before)
        .count("down_s", down.as_secs())
        .count("health_fail", health_failures)
        .count("ready_200_while_down", ready_200)
        .count("ready_again_s", format!("{ready_again_s:.1}")))
}
