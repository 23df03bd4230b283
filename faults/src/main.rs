//! `log-capturer-faults`: injects the faults an operator can cause (signals, corrupt state,
//! bad configs, hostile content, ...) into the real agent against the real dockerd, one
//! scenario at a time, and judges each against ground truth. `--quick` is the CI subset.

mod counted;
mod ctx;
mod daemon;
mod report;
mod scenario;
mod scenarios;
mod tmpfs;

use clap::Parser;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ctx::Ctx;
use scenario::{Outcome, Scenario};

// The same clap header as soak/src/main.rs: two binaries, each with its own CLI.
#[derive(Parser, Debug)]
#[command(
    name = "log-capturer-faults",
    version,
    about = "Inject faults into the real agent against a real dockerd and account for every line"
)]
struct Args {
    /// Run only these scenarios (comma-separated names; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The CI subset: only the scenarios marked quick, in their reduced form.
    #[arg(long)]
    quick: bool,
    /// The agent binary under test.
    #[arg(long, default_value = "target/release/log-capturer")]
    agent: PathBuf,
    /// Where report.md, report.json and each scenario's files go (default target/faults/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let all = scenarios::all();
    if args.list {
        for s in &all {
            println!(
                "{:<28} {:<6} {}",
                s.name,
                if s.quick { "quick" } else { "" },
                s.what
            );
        }
        return ExitCode::SUCCESS;
    }
    match run(&args, all) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("faults: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The scenarios `--only` and `--quick` select, in suite order; an unknown name is an error.
fn select(args: &Args, all: Vec<Scenario>) -> Result<Vec<Scenario>, String> {
    for name in &args.only {
        if !all.iter().any(|s| s.name == name) {
            return Err(format!("unknown scenario {name:?} (see --list)"));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|n| n == s.name))
        .filter(|s| !args.quick || s.quick)
        .collect())
}

fn run(args: &Args, all: Vec<Scenario>) -> Result<bool, String> {
    let chosen = select(args, all)?;
    if chosen.is_empty() {
        return Err("no scenario selected".into());
    }
    if !args.agent.is_file() {
        return Err(format!(
            "agent binary {} not found: `cargo build --release` or pass --agent",
            args.agent.display()
        ));
    }
    let agent_binary = std::fs::canonicalize(&args.agent).map_err(|e| e.to_string())?;
    let now = log_capturer_testkit::unix_time();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/faults/{now}")));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let out = std::fs::canonicalize(&out).map_err(|e| e.to_string())?;
    let build_script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/build-test-image"
    ));
    log_capturer_testkit::docker::ensure_ready(ctx::IMAGE, &build_script)?;
    let prefix = format!("lcf-{}", std::process::id());
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!(
        "faults: {} scenario(s), agent {}, output {}",
        chosen.len(),
        agent_binary.display(),
        out.display()
    );

    let mut rows = Vec::new();
    for s in &chosen {
        let ctx = Ctx {
            agent_binary: agent_binary.clone(),
            out_dir: out.join(s.name),
            prefix: format!("{prefix}-{}", rows.len() + 1),
            docker_host: std::env::var("DOCKER_HOST").ok(),
            quick: args.quick,
        };
        let started = Instant::now();
        eprintln!("faults: {} ...", s.name);
        let outcome = run_one(s, &ctx);
        let row = report::Row {
            name: s.name,
            outcome,
            seconds: started.elapsed().as_secs_f64(),
        };
        println!(
            "{} {:<28} {:>5.0}s  {}  {}",
            if row.outcome.pass { "PASS" } else { "FAIL" },
            row.name,
            row.seconds,
            row.outcome.counts_text(),
            row.outcome.note
        );
        rows.push(row);
    }
    report::write(&out, &rows, &command)?;
    let failed = rows.iter().filter(|r| !r.outcome.pass).count();
    println!(
        "{} passed, {failed} failed; {}/report.md",
        rows.len() - failed,
        out.display()
    );
    Ok(failed == 0)
}

/// One scenario in its own directory; a panic is a FAIL; its containers are removed whatever
/// happened.
fn run_one(s: &Scenario, ctx: &Ctx) -> Outcome {
    let mut outcome = match std::fs::create_dir_all(&ctx.out_dir) {
        Err(e) => Outcome::fail(format!("{}: {e}", ctx.out_dir.display())),
        Ok(()) => match catch_unwind(AssertUnwindSafe(|| (s.run)(ctx))) {
            Ok(o) => o,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                Outcome::fail(format!("the scenario panicked: {what}"))
            }
        },
    };
    if let Err(e) = ctx.remove_containers() {
        outcome.pass = false;
        outcome.note.push_str(&format!("; cleanup failed: {e}"));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &'static str, quick: bool) -> Scenario {
        Scenario {
            name,
            what: "",
            quick,
            run: |_| Outcome::pass(""),
        }
    }

    fn args(only: &[&str], quick: bool) -> Args {
        Args {
            only: only.iter().map(|s| s.to_string()).collect(),
            quick,
            agent: PathBuf::new(),
            out: None,
            list: false,
        }
    }

    #[test]
    fn selects_by_name_and_quick() {
        let all = || {
            vec![
                scenario("a", true),
                scenario("b", false),
                scenario("c", true),
            ]
        };
        let names = |v: Vec<Scenario>| v.iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(select(&args(&[], false), all()).unwrap()),
            ["a", "b", "c"]
        );
        assert_eq!(names(select(&args(&[], true), all()).unwrap()), ["a", "c"]);
        assert_eq!(
            names(select(&args(&["c", "b"], false), all()).unwrap()),
            ["b", "c"]
        );
        assert!(select(&args(&["zz"], false), all()).is_err());
    }

    #[test]
    fn scenario_names_are_unique() {
        let all = scenarios::all();
        let mut names: Vec<_> = all.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
