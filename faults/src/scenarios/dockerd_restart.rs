//! Issue 10, scenario 3: dockerd restarted (SIGTERM, then started again) mid-stream, on a daemon the suite owns:
//! once with `--live-restore` (the containers keep running through it) and once without (the
//! daemon stops them, and `--restart always` brings them back when it starts). Every line
//! exactly once and in order; the agent notices (`/ready` false) and reconnects by itself.

use std::time::{Duration, Instant};

use crate::counted;
use crate::ctx::{AgentYaml, Ctx};
use crate::daemon::Daemon;
use crate::scenario::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "dockerd-restart",
    what: "dockerd restarted mid-stream, with live-restore and without (restart policy): 0 lost, 0 dup, in order, the agent reconnects by itself",
    quick: false,
    run,
};

fn run(ctx: &Ctx) -> Outcome {
    let mut outcome = Outcome::pass("");
    let mut notes = Vec::new();
    for live_restore in [true, false] {
        let phase = if live_restore { "live" } else { "policy" };
        match restart_once(ctx, live_restore) {
            Ok((problems, counts, note)) => {
                for (k, v) in counts {
                    outcome.counts.push((format!("{phase}.{k}"), v));
                }
                if !problems.is_empty() {
                    outcome.pass = false;
                    notes.push(format!("{phase}: {}", problems.join("; ")));
                } else {
                    notes.push(format!("{phase}: {note}"));
                }
            }
            Err(e) => {
                outcome.pass = false;
                notes.push(format!("{phase}: {e}"));
            }
        }
    }
    outcome.note = notes.join(" | ");
    outcome
}

type Counts = Vec<(String, String)>;

/// One restart of the daemon under capture: the problems found, the counts, a note.
fn restart_once(ctx: &Ctx, live_restore: bool) -> Result<(Vec<String>, Counts, String), String> {
    let phase = if live_restore { "live" } else { "policy" };
    let mut daemon = Daemon::start(&ctx.out_dir.join(format!("dockerd-{phase}")), live_restore)?;
    let actx = daemon.ctx_for(ctx);
    let (containers, lines) = if ctx.quick { (2, 3_000) } else { (4, 10_000) };
    let mut agent = actx.start_agent(&format!("agent-{phase}"), &AgentYaml::default())?;

    let mut names = Vec::new();
    for c in 0..containers {
        let suffix = format!("{phase}-{c}");
        let tag = format!("{}-{suffix}", ctx.prefix);
        let script = counted::script(&tag, lines, 50, 50_000);
        let mut extra = vec!["--stop-timeout", "2"];
        if !live_restore {
            extra.extend(["--restart", "always"]);
        }
        names.push(daemon.run_container(ctx, &suffix, &extra, &script)?);
    }

    // Mid-stream: once the first container is a fifth of the way.
    let first = names[0].clone();
    daemon.wait_served(&first, Duration::from_secs(120), |out| {
        out.len() >= lines / 5
    })?;
    let at_fault = daemon.served_counts(&names);
    let served_before: usize = at_fault.iter().sum();
    let reconnects_before = agent.metric("log_capturer_events_reconnects_total");

    let stopped = Instant::now();
    daemon.terminate()?;
    let stop_s = stopped.elapsed().as_secs_f64();
    let mut problems = Vec::new();
    let went_unready = counted::eventually(Duration::from_secs(10), || {
        agent.process.get("/ready").map(|(s, _)| s) != Some(200)
    });
    if !went_unready {
        problems.push("/ready stayed 200 with the daemon down".to_string());
    }
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    daemon.spawn()?;
    if !live_restore {
        // The restart policy brings them back.
        for n in &names {
            if !counted::eventually(Duration::from_secs(60), || {
                daemon.status(n).is_ok_and(|s| s == "running")
            }) {
                problems.push(format!("{n} was not brought back by its restart policy"));
            }
        }
    }
    let back = counted::eventually(Duration::from_secs(90), || {
        agent.process.get("/ready").map(|(s, _)| s) == Some(200)
    });
    let ready_again_s = started.elapsed().as_secs_f64();
    if !back {
        problems.push("the agent was not ready again within 90 s of the daemon's start".into());
    }

    if at_fault.iter().any(|&n| n >= lines) {
        problems.push(format!(
            "not mid-stream: lines served per container at the restart {at_fault:?} of {lines}"
        ));
    }
    let tally = daemon.account_to_the_end(
        &agent,
        &names,
        |i| format!("{}-{phase}-{i}", ctx.prefix),
        lines,
    )?;
    let reconnects = agent.metric("log_capturer_events_reconnects_total") - reconnects_before;
    let health = agent.process.get("/health").map(|(s, _)| s);
    if health != Some(200) {
        problems.push(format!("the agent's /health after the restart: {health:?}"));
    }
    counted::stop_clean(&mut agent, &tally, &mut problems)?;
    daemon.remove_all()?;
    drop(daemon);

    let mut counts = counted::counts(&tally);
    counts.extend([
        ("served_at_restart".to_string(), served_before.to_string()),
        ("dockerd_stop_s".to_string(), format!("{stop_s:.1}")),
        ("ready_again_s".to_string(), format!("{ready_again_s:.1}")),
        ("events_reconnects".to_string(), reconnects.to_string()),
    ]);
    let note = format!(
        "{containers}x{lines} lines; restarted after {served_before}; ready again {ready_again_s:.1} s after the start"
    );
    Ok((problems, counts, note))
}
