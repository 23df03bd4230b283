//! Scenario 7, corrupt checkpoints. Five containers print lines 1..100 and exit; the agent
//! captures them and stops; four of their checkpoint files are then damaged (garbage bytes,
//! truncated JSON, an empty file, another container's checkpoint copied over it) and the fifth
//! is left as it is. The containers are started again (lines 101..200) and so is the agent.
//!
//! What the README ("Exact resume") says: a corrupt or unreadable checkpoint is logged,
//! renamed to `<id>.json.corrupt-<time>` and counted (`log_capturer_checkpoint_corrupt_total`);
//! that container then starts as if it had no checkpoint, which on a state_dir used by an
//! earlier run means its first line. So each damaged container is read again from line 1
//! (its 100 first lines twice), the intact one resumes at 101, nothing is lost, and the agent
//! neither crashes nor stops capturing the others. A file that holds another container's
//! checkpoint is refused the same way (its content does not match its name).

use std::path::Path;
use std::time::Duration;

use crate::ctx::{AgentYaml, Ctx};
use crate::scenario::{Outcome, Scenario};
use log_capturer_testkit::docker::docker;

pub const SCENARIO: Scenario = Scenario {
    name: "corrupt-checkpoints",
    what: "garbage, truncated, empty and foreign checkpoint files: set aside, logged, counted; read again from line 1; 0 lost",
    quick: true,
    run,
};

/// Each run of a container prints the next 100 numbers (the count survives `docker start`).
const SCRIPT: &str = "n=$(cat /tmp/n 2>/dev/null || echo 0); end=$((n+100)); \
                      while [ $n -lt $end ]; do n=$((n+1)); echo $n; done; echo $n > /tmp/n";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Damage {
    None,
    Garbage,
    Truncated,
    Empty,
    /// The file of the intact container, copied over this one.
    Foreign,
}

const CONTAINERS: [(&str, Damage); 5] = [
    ("intact", Damage::None),
    ("garbage", Damage::Garbage),
    ("truncated", Damage::Truncated),
    ("empty", Damage::Empty),
    ("foreign", Damage::Foreign),
];

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let mut agent = ctx.start_agent("agent", &AgentYaml::default())?;
    let mut names = Vec::new();
    for (suffix, _) in CONTAINERS {
        names.push(ctx.run_container(suffix, &[], SCRIPT)?);
    }
    for name in &names {
        ctx.wait_exited(name, Duration::from_secs(60))?;
        if !agent.wait_records(name, 100, Duration::from_secs(60)) {
            return Err(format!("{name}: not 100 lines after 60 s (first run)"));
        }
    }
    let first = agent.terminate(Duration::from_secs(40))?;
    if !first.success() {
        return Err(format!("first stop: {first}"));
    }

    let checkpoints = agent.state_dir.join("checkpoints");
    let file_of = |name: &str| -> Result<std::path::PathBuf, String> {
        let id = docker(&["inspect", "--format", "{{.Id}}", name])?;
        Ok(checkpoints.join(format!("{id}.json")))
    };
    let intact = file_of(&names[0])?;
    let intact_text = std::fs::read(&intact).map_err(|e| format!("{}: {e}", intact.display()))?;
    let mut damaged = Vec::new();
    for ((_, damage), name) in CONTAINERS.iter().zip(&names) {
        let path = file_of(name)?;
        let bytes: Vec<u8> = match damage {
            Damage::None => continue,
            Damage::Garbage => (0..512u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            Damage::Truncated => intact_text[..intact_text.len() / 2].to_vec(),
            Damage::Empty => Vec::new(),
            Damage::Foreign => intact_text.clone(),
        };
        if !path.is_file() {
            return Err(format!(
                "{name}: no checkpoint file {} to damage",
                path.display()
            ));
        }
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        damaged.push(path);
    }

    for name in &names {
        docker(&["start", name])?;
    }
    for name in &names {
        ctx.wait_exited(name, Duration::from_secs(60))?;
    }
    agent.start()?;
    let mut problems = Vec::new();
    for ((_, damage), name) in CONTAINERS.iter().zip(&names) {
        let want = if *damage == Damage::None { 200 } else { 300 };
        if !agent.wait_records(name, want, Duration::from_secs(60)) {
            problems.push(format!("{name}: fewer than {want} lines after 60 s"));
        }
    }
    let corrupt_metric = agent.metric("log_capturer_checkpoint_corrupt_total");
    // A last look: nothing more arrives (a too-early read would hide extra duplicates).
    std::thread::sleep(Duration::from_secs(2));
    let last = agent.terminate(Duration::from_secs(40))?;
    if !last.success() {
        problems.push(format!("second stop: {last}"));
    }

    let log = agent.log();
    if log.contains("panicked") {
        problems.push("the agent panicked".into());
    }
    let mut reported = 0;
    for path in &damaged {
        let shown = path.display().to_string();
        let logged = log
            .lines()
            .any(|l| l.contains("checkpoint file is corrupt") && l.contains(&shown));
        let aside = set_aside(path);
        if logged && aside {
            reported += 1;
        } else {
            problems.push(format!(
                "{}: logged {logged}, set aside {aside}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
            ));
        }
    }
    if corrupt_metric != damaged.len() as f64 {
        problems.push(format!(
            "log_capturer_checkpoint_corrupt_total {corrupt_metric}, expected {}",
            damaged.len()
        ));
    }
    let (mut lost, mut dup, mut ooo) = (0, 0, 0);
    for ((suffix, damage), name) in CONTAINERS.iter().zip(&names) {
        // Where reading resumes, per the README: line 1 again for a damaged checkpoint.
        let mut expected: Vec<String> = Vec::new();
        if *damage != Damage::None {
            expected.extend((1..=100).map(|n| n.to_string()));
        }
        expected.extend((1..=200).map(|n| n.to_string()));
        let (out, err) = agent.messages(name)?;
        let served = ctx.served(name)?;
        let all: Vec<String> = (1..=200).map(|n| n.to_string()).collect();
        if served.stdout != all {
            problems.push(format!("{suffix}: docker logs does not hold 1..200"));
        }
        if out != expected || !err.is_empty() {
            let t = crate::ctx::verify(&all, &out);
            problems.push(format!(
                "{suffix}: {} lines, against 1..200: lost {} dup {} out of order {}",
                out.len(),
                t.lost,
                t.duplicated,
                t.out_of_order
            ));
        }
        let t = crate::ctx::verify(&all, &out);
        lost += t.lost;
        dup += t.duplicated;
        ooo += t.out_of_order;
    }
    let note = "each damaged file logged, set aside and counted; its container read again from line 1 (100 dup each, as documented), the intact one resumed at 101";
    Ok(Outcome::judge(problems, note)
        .count("damaged", damaged.len())
        .count("reported", reported)
        .count("corrupt_metric", corrupt_metric)
        .count("lost", lost)
        .count("dup", dup)
        .count("out_of_order", ooo))
}

/// `<file>.corrupt-<time>` exists beside where `path` was, and `path` is gone or rewritten.
fn set_aside(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let prefix = format!("{name}.corrupt-");
    path.parent()
        .and_then(|d| std::fs::read_dir(d).ok())
        .is_some_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
}
