//! Scenario 11 of issue 10: a burst of `--rm` containers that print 20 lines and exit at once.
//! Each one is either read in full (its 20 lines once, in order) or, when the daemon had removed
//! it before its logs could be read, counted in `gone_before_read` and named in a warning: nothing
//! is lost silently. The captured fraction is reported. Containers the filters leave out, removed
//! as fast, are neither read nor counted.

use std::time::Duration;

use super::kit::{names_whole, parallel, percent, terminate_checked, wait_until, warned};
use crate::ctx::{AgentYaml, Ctx, IMAGE, numbered};
use crate::scenario::{Outcome, Scenario};
use log_capturer_testkit::docker::docker;

pub const SCENARIO: Scenario = Scenario {
    name: "rm-burst",
    what: "200 --rm containers print 20 lines and exit at once: each read in full, or counted (gone_before_read) and named",
    quick: true,
    run,
};

const LINES: usize = 20;
const GONE: &str = "log_capturer_container_stream_errors_total{reason=\"gone_before_read\"}";

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let n = if ctx.quick { 40 } else { 200 };
    let foreign_n = if ctx.quick { 5 } else { 20 };
    let mut agent = ctx.start_agent("agent", &AgentYaml::default())?;
    let before = agent.metric(GONE);
    let script = format!("for i in $(seq 1 {LINES}); do echo \"rm $i\"; done");
    let label = ctx.label();
    // Selected containers carry the run's label; foreign ones a label the filter does not
    // match (they remove themselves).
    let foreign_label = format!("{label}-foreign");
    let names: Vec<String> = (0..n).map(|i| format!("{}-rm{i}", ctx.prefix)).collect();
    let foreign: Vec<String> = (0..foreign_n)
        .map(|i| format!("{}-fr{i}", ctx.prefix))
        .collect();
    let create = |name: &String, label: &str| {
        docker(&[
            "create",
            "--rm",
            "--network",
            "none",
            "--label",
            label,
            "--name",
            name,
            IMAGE,
            "sh",
            "-c",
            &script,
        ])
        .map(|_| ())
    };
    let mut problems = Vec::new();
    for r in parallel(&names, 6, |name| create(name, &label)) {
        r?;
    }
    for r in parallel(&foreign, 6, |name| create(name, &foreign_label)) {
        r?;
    }
    // The burst: every container started within moments, by 16 `docker start` at once.
    let mut all: Vec<String> = names.iter().chain(&foreign).cloned().collect();
    fastrand_shuffle(&mut all);
    let groups: Vec<Vec<String>> = all
        .chunks(all.len().div_ceil(16))
        .map(<[_]>::to_vec)
        .collect();
    for r in parallel(&groups, 16, |group| {
        let mut args = vec!["start"];
        args.extend(group.iter().map(String::as_str));
        docker(&args)
    }) {
        if let Err(e) = r {
            problems.push(format!("start: {e}"));
        }
    }
    // They remove themselves.
    let removed = wait_until(Duration::from_secs(120), || {
        docker(&["ps", "-aq", "--filter", &format!("name={}-", ctx.prefix)])
            .is_ok_and(|ids| ids.is_empty())
    });
    if !removed {
        problems.push("containers still present 120 s after the burst".into());
    }
    let expected = numbered("rm", LINES);
    let unread = |agent: &crate::ctx::Agent| -> Vec<String> {
        names
            .iter()
            .filter(|name| agent.records(name).map(|r| r.is_empty()).unwrap_or(false))
            .cloned()
            .collect()
    };
    // Settled: every unread container counted and named.
    wait_until(Duration::from_secs(60), || {
        let gone = unread(&agent);
        let log = agent.log();
        agent.metric(GONE) - before == gone.len() as f64
            && gone.iter().all(|name| warned(&log, name))
    });
    std::thread::sleep(Duration::from_secs(2));
    let (mut full, mut gone, mut partial, mut captured) = (0, Vec::new(), Vec::new(), 0);
    for name in &names {
        let (out, err) = agent.messages(name)?;
        captured += out.len() + err.len();
        if out.is_empty() && err.is_empty() {
            gone.push(name.clone());
        } else if out == expected && err.is_empty() {
            full += 1;
        } else {
            partial.push(format!("{name}: {} lines", out.len() + err.len()));
        }
    }
    let counted = agent.metric(GONE) - before;
    let log = agent.log();
    let named = gone.iter().filter(|name| warned(&log, name)).count();
    let foreign_named = foreign
        .iter()
        .filter(|name| names_whole(&log, name))
        .count();
    let foreign_written = foreign
        .iter()
        .filter(|name| agent.records(name).is_ok_and(|r| !r.is_empty()))
        .count();
    if !partial.is_empty() {
        problems.push(format!(
            "{} containers partly read or duplicated: {}",
            partial.len(),
            partial
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if counted != gone.len() as f64 {
        problems.push(format!(
            "{} containers produced nothing but gone_before_read rose by {counted}",
            gone.len()
        ));
    }
    if named != gone.len() {
        problems.push(format!(
            "{} of {} unread containers named in a warning",
            named,
            gone.len()
        ));
    }
    if foreign_named > 0 || foreign_written > 0 {
        problems.push(format!(
            "{foreign_named} of {foreign_n} containers outside the filters named in the log, {foreign_written} written"
        ));
    }
    terminate_checked(&mut agent, Duration::from_secs(30), &mut problems)?;
    Ok(Outcome::judge(
        problems,
        format!(
            "{full} of {n} containers read in full, {} gone before they could be read, each counted and named",
            gone.len()
        ),
    )
    .count("containers", n)
    .count("full", full)
    .count("gone", gone.len())
    .count("partial", partial.len())
    .count("counted", counted)
    .count("named", named)
    .count("lines", format!("{captured}/{}", n * LINES))
    .count("captured", percent(captured, n * LINES))
    .count("foreign_named", foreign_named))
}

/// A shuffle without a dependency: selected and foreign containers start interleaved.
fn fastrand_shuffle(v: &mut [String]) {
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}
