//! Scenario 12 of issue 10, churn: containers created, started, stopped and removed, several at a
//! time, for a few minutes. Every line of every container is captured exactly once and in order
//! (the daemon's `docker logs`, taken before the removal, is the reference), and afterwards the
//! agent holds what it held before: tasks, FDs, metric series that name a container, tracked
//! containers and checkpoint files.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::kit::{Held, parallel, terminate_checked, wait_until};
use crate::ctx::{AgentYaml, Ctx, IMAGE, verify};
use crate::scenario::{Outcome, Scenario};
use log_capturer_testkit::docker::{Served, docker};
use log_capturer_testkit::verify::Tally;

pub const SCENARIO: Scenario = Scenario {
    name: "churn",
    what: "300 containers created, started, stopped, removed: every line once, tasks/FDs/series/maps back to baseline",
    quick: false,
    run,
};

/// Lines per stream of each container.
const LINES: usize = 100;

// Every scenario's entry has this shape (scenario.rs); kept per file: some add their clean-up.
fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let (n, workers) = if ctx.quick { (24, 4) } else { (300, 8) };
    let mut agent = ctx.start_agent("agent", &AgentYaml::default())?;
    std::thread::sleep(Duration::from_secs(2));
    let baseline = Held::of(&agent);
    let label = ctx.label();
    // stdout and stderr interleaved; TERM ends it within a second (sh runs the trap once the
    // current `sleep 1` returns).
    let script = format!(
        "trap 'exit 0' TERM; for i in $(seq 1 {LINES}); do echo \"out $i\"; echo \"err $i\" >&2; done; \
         while true; do sleep 1; done"
    );
    let names: Vec<String> = (0..n).map(|i| format!("{}-ch{i}", ctx.prefix)).collect();
    let peak = Mutex::new(baseline);
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let lives = std::thread::scope(|s| {
        // Samples what the agent holds while the churn runs.
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Held::of(&agent);
                if let Ok(mut p) = peak.lock() {
                    p.tasks = p.tasks.max(now.tasks);
                    p.fds = p.fds.max(now.fds);
                    p.rss_mib = p.rss_mib.max(now.rss_mib);
                    p.tracked = p.tracked.max(now.tracked);
                    p.container_series = p.container_series.max(now.container_series);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let lives = parallel(&names, workers, |name| life(name, &label, &script));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        lives
    });
    let churn_secs = started.elapsed().as_secs();
    let mut problems = Vec::new();
    let mut served = Vec::new();
    for (name, life) in names.iter().zip(lives) {
        match life {
            Ok(s) => served.push((name.clone(), s)),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    let served_lines: usize = served
        .iter()
        .map(|(_, s)| s.stdout.len() + s.stderr.len())
        .sum();
    // Every line written, then everything released.
    let complete = |agent: &crate::ctx::Agent| {
        served.iter().all(|(name, s)| {
            agent
                .messages(name)
                .is_ok_and(|(o, e)| o.len() + e.len() >= s.stdout.len() + s.stderr.len())
        })
    };
    if !wait_until(Duration::from_secs(120), || complete(&agent)) {
        problems.push("lines still missing 120 s after the churn".into());
    }
    let checkpoints = |agent: &crate::ctx::Agent| {
        std::fs::read_dir(agent.state_dir.join("checkpoints"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let back = |agent: &crate::ctx::Agent| {
        let now = Held::of(agent);
        now.tasks <= baseline.tasks
            && now.fds <= baseline.fds
            && now.tracked == baseline.tracked
            && now.container_series == baseline.container_series
            && checkpoints(agent) == 0
    };
    let released = wait_until(Duration::from_secs(60), || back(&agent));
    let after = Held::of(&agent);
    if !released {
        problems.push(format!(
            "not back to baseline after 60 s: tasks/fds/tracked/series {} -> {}, {} checkpoint files",
            baseline.text(),
            after.text(),
            checkpoints(&agent)
        ));
    }
    let mut tally = Tally::default();
    for (name, s) in &served {
        let (out, err) = agent.messages(name)?;
        let t = |a, b| verify(a, b);
        let mut one = t(&s.stdout, &out);
        one.add(t(&s.stderr, &err));
        if one.lost + one.duplicated + one.out_of_order > 0 && problems.len() < 20 {
            problems.push(format!(
                "{name}: {} lost, {} duplicated, {} out of order",
                one.lost, one.duplicated, one.out_of_order
            ));
        }
        tally.add(one);
    }
    terminate_checked(&mut agent, Duration::from_secs(30), &mut problems)?;
    let peak = peak.into_inner().unwrap_or_default();
    Ok(Outcome::judge(
        problems,
        format!(
            "{} containers in {churn_secs} s, {served_lines} lines; tasks/fds/tracked/series at baseline {}, peak {}, after {}",
            served.len(),
            baseline.text(),
            peak.text(),
            after.text()
        ),
    )
    .count("containers", served.len())
    .count("served", tally.served)
    .count("captured", tally.captured)
    .count("lost", tally.lost)
    .count("dup", tally.duplicated)
    .count("out_of_order", tally.out_of_order)
    .count("tasks", format!("{}>{}>{}", baseline.tasks, peak.tasks, after.tasks))
    .count("fds", format!("{}>{}>{}", baseline.fds, peak.fds, after.fds))
    .count(
        "series",
        format!(
            "{}>{}>{}",
            baseline.container_series, peak.container_series, after.container_series
        ),
    )
    .count("tracked", format!("{}>{}>{}", baseline.tracked, peak.tracked, after.tracked))
    .count("rss_mib", format!("{:.0}>{:.0}>{:.0}", baseline.rss_mib, peak.rss_mib, after.rss_mib)))
}

/// One container's life: created, started, stopped, its logs taken, removed.
fn life(name: &str, label: &str, script: &str) -> Result<Served, String> {
    docker(&[
        "create",
        "--network",
        "none",
        "--label",
        label,
        "--name",
        name,
        IMAGE,
        "sh",
        "-c",
        script,
    ])?;
    docker(&["start", name])?;
    std::thread::sleep(Duration::from_millis(300 + fastrand_ms(name)));
    docker(&["stop", "-t", "5", name])?;
    let served = log_capturer_testkit::docker::served_logs(name)?;
    docker(&["rm", name])?;
    Ok(served)
}

/// 0..700 ms, different per container: lives of different lengths.
fn fastrand_ms(name: &str) -> u64 {
    name.bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 700
}
