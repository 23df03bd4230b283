//! Scenario 13 of issue 10: a container renamed (also while paused), paused and unpaused, and
//! restarted with `docker restart` (also right after a rename) while it writes. Every line once
//! and in order across its names (the daemon's `docker logs` is the reference); each record
//! carries the name the container had when the agent read it (README: later lines carry the new
//! name, and so go to the new name's file): names never go back, a line stamped 2 s after a rename
//! never carries an old name, and no series of an old name is left in `/metrics`.

use std::time::Duration;

use super::kit::{now_ns, parse_timestamp_ns, terminate_checked, wait_until};
use crate::ctx::{AgentYaml, Ctx, verify};
use crate::scenario::{Outcome, Scenario};
use log_capturer_testkit::docker::docker;

pub const SCENARIO: Scenario = Scenario {
    name: "rename-pause-restart",
    what: "rename (also while paused), pause/unpause, docker restart (also right after a rename) while writing: every line once, in order, names right",
    quick: true,
    run,
};

/// Each start of the container tags its lines with its run number; every 5th line also on
/// stderr. About 50 lines per second.
const SCRIPT: &str = "n=$(cat /tmp/runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/runs; \
    i=1; while true; do echo \"run$n $i\"; [ $((i % 5)) -eq 0 ] && echo \"err$n $i\" >&2; \
    i=$((i+1)); usleep 20000; done";

/// A line stamped this long after a rename must carry the new name.
const RENAME_SETTLES_NS: i64 = 2_000_000_000;

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

struct Record {
    /// Index of the name it was written under.
    name: usize,
    ts_ns: i64,
    stderr: bool,
    message: String,
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let step = Duration::from_millis(if ctx.quick { 1000 } else { 4000 });
    let mut agent = ctx.start_agent("agent", &AgentYaml::default())?;
    let names: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|s| format!("{}-rn-{s}", ctx.prefix))
        .collect();
    let first = ctx.run_container("rn-a", &[], SCRIPT)?;
    if first != names[0] {
        return Err(format!("container named {first}, expected {}", names[0]));
    }
    if !agent.wait_records(&names[0], 20, Duration::from_secs(30)) {
        return Err("no lines captured within 30 s".into());
    }
    // (index of the new name, when the rename returned)
    let mut renames = Vec::new();
    let mut rename = |to: usize| -> Result<(), String> {
        docker(&["rename", &names[to - 1], &names[to]])?;
        renames.push((to, now_ns()));
        Ok(())
    };
    std::thread::sleep(step);
    rename(1)?;
    std::thread::sleep(step);
    docker(&["pause", &names[1]])?;
    std::thread::sleep(step / 2);
    rename(2)?;
    std::thread::sleep(step / 2);
    docker(&["unpause", &names[2]])?;
    std::thread::sleep(step);
    docker(&["restart", "-t", "1", &names[2]])?;
    std::thread::sleep(step);
    rename(3)?;
    docker(&["restart", "-t", "1", &names[3]])?;
    std::thread::sleep(step);
    docker(&["stop", "-t", "1", &names[3]])?;
    ctx.wait_exited(&names[3], Duration::from_secs(30))?;
    let served = ctx.served(&names[3])?;
    let want = served.stdout.len() + served.stderr.len();
    let read_all = |agent: &crate::ctx::Agent| -> Result<Vec<Record>, String> {
        let mut all = Vec::new();
        for (i, name) in names.iter().enumerate() {
            for r in agent.records(name)? {
                let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                if field("container_name") != *name {
                    return Err(format!(
                        "a record in {name}'s file says container_name {:?}",
                        field("container_name")
                    ));
                }
                all.push(Record {
                    name: i,
                    ts_ns: parse_timestamp_ns(&field("timestamp"))
                        .ok_or_else(|| format!("bad timestamp {:?}", field("timestamp")))?,
                    stderr: field("stream") == "stderr",
                    message: field("message"),
                });
            }
        }
        Ok(all)
    };
    let mut problems = Vec::new();
    if !wait_until(Duration::from_secs(60), || {
        read_all(&agent).is_ok_and(|r| r.len() >= want)
    }) {
        problems.push("lines still missing 60 s after the stop".into());
    }
    std::thread::sleep(Duration::from_secs(2));
    let records = read_all(&agent)?;
    // Output order: the names' files one after the other (names only move forward).
    let stream = |stderr: bool| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.stderr == stderr)
            .map(|r| r.message.clone())
            .collect()
    };
    let mut tally = verify(&served.stdout, &stream(false));
    tally.add(verify(&served.stderr, &stream(true)));
    if tally.lost + tally.duplicated + tally.out_of_order > 0 {
        problems.push(format!(
            "{} lost, {} duplicated, {} out of order",
            tally.lost, tally.duplicated, tally.out_of_order
        ));
    }
    // Names: in stamp order, within each stream (the order it is read in), they never go back
    // to an earlier name.
    let mut went_back = 0;
    for stderr in [false, true] {
        let mut by_time: Vec<&Record> = records.iter().filter(|r| r.stderr == stderr).collect();
        by_time.sort_by_key(|r| r.ts_ns);
        let mut highest = 0;
        for r in by_time {
            if r.name < highest {
                went_back += 1;
            }
            highest = highest.max(r.name);
        }
    }
    let stale = records
        .iter()
        .filter(|r| {
            renames
                .iter()
                .any(|(to, at)| r.name < *to && r.ts_ns > at + RENAME_SETTLES_NS)
        })
        .count();
    let early = records
        .iter()
        .filter(|r| {
            renames
                .iter()
                .any(|(to, at)| r.name >= *to && r.ts_ns < *at)
        })
        .count();
    if went_back > 0 {
        problems.push(format!("{went_back} records went back to an earlier name"));
    }
    if stale > 0 {
        problems.push(format!(
            "{stale} records stamped over 2 s after a rename carry an older name"
        ));
    }
    let per_name: Vec<usize> = (0..names.len())
        .map(|i| records.iter().filter(|r| r.name == i).count())
        .collect();
    if per_name.contains(&0) {
        problems.push(format!("a name got no record: {per_name:?}"));
    }
    let runs = served
        .stdout
        .iter()
        .filter_map(|l| l.split(' ').next())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if runs != 3 {
        problems.push(format!("the container ran {runs} times, expected 3"));
    }
    let body = agent
        .process
        .get("/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let old_series = names[..3]
        .iter()
        .map(|n| body.matches(&format!("container_name=\"{n}\"")).count())
        .sum::<usize>();
    if old_series > 0 {
        problems.push(format!(
            "{old_series} /metrics series still name an old name"
        ));
    }
    terminate_checked(&mut agent, Duration::from_secs(30), &mut problems)?;
    Ok(Outcome::judge(
        problems,
        format!(
            "{} lines over 3 runs and 4 names (records per name {per_name:?}); 3 renames, a pause, 2 restarts",
            tally.served
        ),
    )
    .count("served", tally.served)
    .count("captured", tally.captured)
    .count("lost", tally.lost)
    .count("dup", tally.duplicated)
    .count("out_of_order", tally.out_of_order)
    .count("name_went_back", went_back)
    .count("stale_name", stale)
    .count("new_name_before_rename", early)
    .count("old_name_series", old_series))
}
