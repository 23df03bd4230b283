//! Issue 10, scenario 9: Containers whose log driver the Engine API cannot read (`none`; `syslog` and `journald`
//! where the daemon can start them at all), on a daemon the suite owns so that its debug log
//! shows every request the agent makes. One is running before the agent starts (found by the
//! listing), one is started after (found by its event). Checked over 60 s (quick: 8 s): one
//! warning and one `unreadable_log_driver` error per container, the
//! `log_capturer_containers_unreadable` gauge, no reconnect loop (the daemon's count of the
//! agent's `/logs` requests for each container does not grow after the first), and a
//! json-file container printing meanwhile is captured whole, once, in order.

use std::time::{Duration, Instant};

use crate::counted;
use crate::ctx::{AgentYaml, Ctx};
use crate::daemon::Daemon;
use crate::scenario::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "unreadable-log-driver",
    what: "--log-driver none (syslog/journald if they start): one warning and a metric, no reconnect loop over 60 s, others unaffected",
    quick: true,
    run,
};

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

const IDLE: &str = "while true; do echo unreadable; sleep 1; done";

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let daemon = Daemon::start(&ctx.out_dir.join("dockerd"), false)?;
    let actx = daemon.ctx_for(ctx);
    let window = Duration::from_secs(if ctx.quick { 8 } else { 60 });
    let mut notes = Vec::new();

    // One unreadable container before the agent starts, the others after.
    let mut unreadable =
        vec![daemon.run_container(ctx, "none-0", &["--log-driver", "none"], IDLE)?];
    let yaml = AgentYaml {
        // Short rotations and back-off: a loop, if there is one, shows within the window.
        capture:
            "  rotation_interval: 1s\n  retry_backoff_initial: 100ms\n  retry_backoff_max: 1s\n"
                .into(),
        ..AgentYaml::default()
    };
    let agent = actx.start_agent("agent", &yaml)?;
    unreadable.push(daemon.run_container(ctx, "none-1", &["--log-driver", "none"], IDLE)?);
    for driver in ["syslog", "journald"] {
        let suffix = format!("{driver}-0");
        match daemon.run_container(ctx, &suffix, &["--log-driver", driver], IDLE) {
            Ok(name) => {
                notes.push(format!("{driver}: started"));
                unreadable.push(name);
            }
            Err(e) => {
                // The daemon's reason, without the CLI's usage hint after it.
                let reason = e
                    .lines()
                    .find_map(|l| l.split_once("Error response from daemon: "))
                    .map_or(e.as_str(), |(_, r)| r)
                    .trim()
                    .to_string();
                notes.push(format!("{driver}: does not start here ({reason})"));
                let _ = daemon.docker(&["rm", "-f", &format!("{}-{suffix}", ctx.prefix)]);
            }
        }
    }
    // The container that must not suffer: printing all through the window.
    let per_second = 100;
    let lines = per_second * window.as_secs() as usize;
    let tag = format!("{}-json-0", ctx.prefix);
    let normal = daemon.run_container(
        ctx,
        "json-0",
        &[],
        &counted::script(&tag, lines, 20, 100_000),
    )?;

    let ids: Vec<String> = unreadable
        .iter()
        .map(|n| daemon.id(n))
        .collect::<Result<_, _>>()?;
    let requests = || -> Vec<usize> { ids.iter().map(|id| daemon.log_requests(id)).collect() };
    let started = Instant::now();
    std::thread::sleep(window / 4);
    let early = requests();
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_millis(500));
    }
    let late = requests();

    let mut problems = Vec::new();
    let log = agent.log();
    for (i, name) in unreadable.iter().enumerate() {
        let warnings = log
            .lines()
            .filter(|l| l.contains("log driver cannot be read") && l.contains(name.as_str()))
            .count();
        if warnings != 1 {
            problems.push(format!("{name}: {warnings} warnings, expected 1"));
        }
        if late[i] != early[i] || late[i] > 2 || late[i] == 0 {
            problems.push(format!(
                "{name}: {} log requests after {} s, {} after {} s (expected 1 or 2, not growing)",
                early[i],
                (window / 4).as_secs(),
                late[i],
                window.as_secs()
            ));
        }
    }
    let errors = agent
        .metric("log_capturer_container_stream_errors_total{reason=\"unreadable_log_driver\"}");
    let gauge = agent.metric("log_capturer_containers_unreadable");
    if errors != unreadable.len() as f64 || gauge != unreadable.len() as f64 {
        problems.push(format!(
            "unreadable_log_driver errors {errors}, containers_unreadable {gauge}; expected {} each",
            unreadable.len()
        ));
    }

    let last = counted::last_line(&tag, lines);
    daemon.wait_served(&normal, Duration::from_secs(120), |out| {
        out.last().is_some_and(|l| *l == last)
    })?;
    let names = vec![normal.clone()];
    counted::wait_all(
        &agent,
        &names,
        |n| daemon.served(n),
        Duration::from_secs(60),
    )?;
    let tally = counted::account(&agent, &names, |n| daemon.served(n))?;
    if tally.lost + tally.duplicated + tally.out_of_order > 0 {
        problems.push(format!(
            "{normal}: lost {} dup {} out of order {}",
            tally.lost, tally.duplicated, tally.out_of_order
        ));
    }
    let mut agent = agent;
    let exit = agent.terminate(Duration::from_secs(60))?;
    if !exit.success() {
        problems.push(format!("the agent stopped with {exit}"));
    }
    daemon.remove_all()?;
    drop(daemon);

    let mut outcome = Outcome::judge(
        problems,
        format!(
            "{} unreadable containers over {} s; {}",
            unreadable.len(),
            window.as_secs(),
            notes.join("; ")
        ),
    );
    outcome.counts = counted::counts(&tally);
    Ok(outcome
        .count("unreadable", unreadable.len())
        .count("window_s", window.as_secs())
        .count(
            "log_requests",
            late.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("/"),
        )
        .count("unreadable_errors", errors)
        .count("unreadable_gauge", gauge))
}
