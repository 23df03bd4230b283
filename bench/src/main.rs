//! `log-capturer-bench`: reproducible cost figures of the release agent, run as a real process.
//!
//! - firehose: a fake Engine API serves N containers' pre-generated frames as fast as the socket
//!   takes them; the agent writes to the null sink and, separately, to the file sink;
//! - processing: the firehose to the null sink through processing pipelines (see `processing`);
//! - daemon: K real containers print 200 000 lines each into json-file; the agent reads them
//!   back, and its CPU is compared with dockerd's for the same window;
//! - idle: 1 000 idle follow streams: memory per stream, tasks, FDs, a full rotation, shutdown;
//! - files, files-live: the host-file source (`sources.files`) into the null sink (see `files`);
//! - daemon-cpu: host CPU per container line on the real dockerd, `docker.capture: api` against
//!   `json_file` and a baseline without agent (see `daemon_cpu`).
//! - kafka: the firehose into the Kafka sink and librdkafka's mock cluster, lz4 and zstd, to
//!   broker acknowledgement (see `kafka`).
//!
//! Figures are printed as a table and written as CSV and JSON (one row per measurement, with
//! the commit) for comparison across commits. Nothing is asserted: targets are shown beside.
//!
//! (Alike on purpose: every scenario module has the same `scenario(binary, out, runs, quick,
//! log)` entry point, starts the agent with a full `AgentConfig` and lists its own `Row`s;
//! `duplicates` pairs those signatures and tables, which are the shared shape, not copies.)

mod agent;
mod daemon;
mod daemon_cpu;
mod fake_engine;
mod files;
mod firehose;
mod idle;
mod kafka;
mod kafka_producer;
mod processing;
mod runlog;

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use agent::agent_binary;
use daemon::{daemon, reopen};
use firehose::firehose;
use idle::idle;

#[derive(Parser)]
#[command(
    name = "log-capturer-bench",
    version,
    about = "Benchmark the release agent"
)]
struct Args {
    /// Scenarios to run: firehose, processing, daemon, idle, reopen, and (not run by default)
    /// files, files-live, daemon-cpu, kafka.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "firehose,processing,daemon,idle,reopen"
    )]
    scenarios: Vec<String>,
    /// Runs of each measurement; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Smaller inputs (one run, fewer lines): a smoke test of the runner itself.
    #[arg(long)]
    quick: bool,
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Where results go; default target/bench/<unix time>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Firehose: the sinks to measure (null, file).
    #[arg(long, value_delimiter = ',', default_value = "null,file")]
    sinks: Vec<String>,
    /// Firehose → file: the `sinks.file.fsync` policies to measure (always, interval, never).
    #[arg(long, value_delimiter = ',', default_value = "interval")]
    fsync: Vec<String>,
}

/// One measured row.
#[derive(Clone, Debug)]
struct Row {
    scenario: String,
    case: String,
    metric: &'static str,
    unit: &'static str,
    value: f64,
    target: Option<(&'static str, f64)>,
}

impl Row {
    /// The one way every scenario builds its rows: `scenario` and `case` name the measurement,
    /// `target` (if any) is shown beside the value.
    fn new(
        scenario: &str,
        case: &str,
        metric: &'static str,
        unit: &'static str,
        value: f64,
        target: Option<(&'static str, f64)>,
    ) -> Row {
        Row {
            scenario: scenario.to_string(),
            case: case.to_string(),
            metric,
            unit,
            value,
            target,
        }
    }

    fn meets(&self) -> Option<bool> {
        self.target.map(|(op, t)| {
            if op == ">=" {
                self.value >= t
            } else {
                self.value <= t
            }
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn commit() -> String {
    Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

fn run(args: &Args) -> Result<(), String> {
    let binary = agent_binary(args.agent.clone())?;
    let stamp = log_capturer_testkit::unix_time();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/{stamp}")));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let runs = if args.quick { 1 } else { args.runs.max(1) };
    let mut rows = Vec::new();
    let log = runlog::RunLog::new(&out);
    for s in &args.scenarios {
        match s.as_str() {
            "firehose" => rows.extend(firehose(&binary, &out, runs, args)?),
            "processing" => rows.extend(processing::scenario(&binary, &out, runs, args.quick)?),
            "daemon" => rows.extend(daemon(&binary, &out, runs, args.quick)?),
            "idle" => rows.extend(idle(&binary, &out, runs, args.quick)?),
            "reopen" => rows.extend(reopen(runs, args.quick)?),
            "files" => rows.extend(files::scenario(&binary, &out, runs, args.quick, &log)?),
            "files-live" => rows.extend(files::live(&binary, &out, runs, args.quick, &log)?),
            "daemon-cpu" => {
                rows.extend(daemon_cpu::scenario(&binary, &out, runs, args.quick, &log)?)
            }
            "kafka" => rows.extend(kafka::scenario(&binary, &out, runs, args.quick, &log)?),
            other => {
                return Err(format!(
                    "unknown scenario {other:?} (firehose, processing, daemon, idle, reopen, \
                     files, files-live, daemon-cpu, kafka)"
                ));
            }
        }
    }
    let commit = commit();
    let table = render(&rows, &commit, runs);
    println!("{table}");
    std::fs::write(out.join("results.md"), &table).map_err(|e| e.to_string())?;
    let mut csv = String::from("commit,scenario,case,metric,unit,value,target\n");
    for r in &rows {
        let target = r
            .target
            .map(|(op, t)| format!("{op}{t}"))
            .unwrap_or_default();
        csv.push_str(&format!(
            "{commit},{},{},{},{},{:.4},{}\n",
            csv_field(&r.scenario),
            csv_field(&r.case),
            csv_field(r.metric),
            csv_field(r.unit),
            r.value,
            csv_field(&target)
        ));
    }
    std::fs::write(out.join("results.csv"), csv).map_err(|e| e.to_string())?;
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({"commit": commit, "scenario": r.scenario, "case": r.case, "metric": r.metric,
                "unit": r.unit, "value": r.value, "target": r.target.map(|(op, t)| format!("{op}{t}")), "meets": r.meets()})
        })
        .collect();
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!("results in {}", out.display());
    Ok(())
}

fn render(rows: &[Row], commit: &str, runs: usize) -> String {
    let mut t = format!(
        "log-capturer benchmarks — commit {commit}, median of {runs} run(s), {} cores\n\n| scenario | case | metric | value | target |\n|---|---|---|---|---|\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for r in rows {
        let target = match (r.target, r.meets()) {
            (Some((op, v)), Some(ok)) => format!("{op} {v} {}", if ok { "✓" } else { "✗" }),
            _ => String::new(),
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} {} | {target} |\n",
            r.scenario,
            r.case,
            r.metric,
            if r.value >= 1000.0 {
                format!("{:.0}", r.value)
            } else {
                format!("{:.3}", r.value)
            },
            r.unit
        ));
    }
    t
}

pub(crate) fn dir_ready(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    Ok(dir.to_path_buf())
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break (the case
/// names do: "10 containers, 100 B lines → file"), its quotes doubled.
fn csv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\"")).into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod csv_tests {
    use super::csv_field;

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("throughput"), "throughput");
        assert_eq!(
            csv_field("10 containers, 100 B lines → file"),
            "\"10 containers, 100 B lines → file\""
        );
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
