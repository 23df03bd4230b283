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

mod agent;
mod daemon_cpu;
mod fake_engine;
mod files;
mod kafka;
mod kafka_producer;
mod processing;
mod runlog;

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use agent::{Agent, AgentConfig, agent_binary};
use log_capturer_testkit::docker::docker;
use log_capturer_testkit::{cpu_seconds, status_field, sum_prefix};

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
            "{commit},{},{},{},{},{:.4},{target}\n",
            r.scenario, r.case, r.metric, r.unit, r.value
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

fn firehose(binary: &Path, out: &Path, runs: usize, args: &Args) -> Result<Vec<Row>, String> {
    let quick = args.quick;
    let mut rows = Vec::new();
    // (sink, fsync policy): the file sink once per policy asked for.
    let mut outputs: Vec<(&str, Option<&str>)> = Vec::new();
    for sink in &args.sinks {
        match sink.as_str() {
            "null" => outputs.push(("null", None)),
            "file" => outputs.extend(args.fsync.iter().map(|f| ("file", Some(f.as_str())))),
            other => return Err(format!("unknown sink {other:?} (null, file)")),
        }
    }
    let cases: &[(usize, usize)] = &[(1, 100), (10, 100), (100, 100), (10, 1024)];
    for &(containers, line_bytes) in cases {
        let total = match (quick, line_bytes) {
            (true, _) => 200_000,
            (false, 100) => 3_000_000,
            _ => 600_000,
        };
        let per = total / containers;
        let total = per * containers;
        let (body, message_bytes) = fake_engine::frames(per, line_bytes);
        let mb = (message_bytes * containers) as f64 / 1e6;
        for &(sink, fsync) in &outputs {
            let (mut rate, mut mbs, mut cpu, mut rss) = (vec![], vec![], vec![], vec![]);
            for run in 0..runs {
                let dir = out.join(format!(
                    "firehose-{containers}x{line_bytes}-{sink}{}-{run}",
                    fsync.map(|f| format!("-{f}")).unwrap_or_default()
                ));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let engine = fake_engine::FakeEngine::start(&dir, containers, Some(body.clone()))?;
                let agent = Agent::start(
                    binary,
                    &dir,
                    AgentConfig {
                        docker_host: Some(engine.docker_host()),
                        sink,
                        rotation: "1h",
                        include_label: None,
                        fsync,
                        processing: None,
                        extra: "",
                    },
                )?;
                let key = format!("log_capturer_sink_lines_total{{sink=\"{sink}\"}}");
                let took = agent.wait_metric(&key, total as f64, Duration::from_secs(600))?;
                let secs = took.as_secs_f64();
                cpu.push(cpu_seconds(agent.pid()) / (total as f64 / 1e6));
                rss.push(status_field(agent.pid(), "VmHWM:") / 1024.0);
                rate.push(total as f64 / secs);
                mbs.push(mb / secs);
                agent.terminate()?;
                engine.stop();
                let _ = std::fs::remove_dir_all(dir.join("out"));
            }
            let case = match fsync {
                Some(f) => {
                    format!("{containers} containers, {line_bytes} B lines → {sink} (fsync {f})")
                }
                None => format!("{containers} containers, {line_bytes} B lines → {sink}"),
            };
            let target_rate = match (line_bytes, sink) {
                (100, "null") => Some((">=", 1_000_000.0)),
                (100, "file") => Some((">=", 700_000.0)),
                _ => None,
            };
            rows.push(Row {
                scenario: "firehose".into(),
                case: case.clone(),
                metric: "throughput",
                unit: "lines/s",
                value: median(rate),
                target: target_rate,
            });
            rows.push(Row {
                scenario: "firehose".into(),
                case: case.clone(),
                metric: "throughput",
                unit: "MB/s",
                value: median(mbs),
                target: None,
            });
            let cpu_target = (line_bytes == 100 && sink == "null").then_some(("<=", 0.5));
            rows.push(Row {
                scenario: "firehose".into(),
                case: case.clone(),
                metric: "agent CPU per million lines",
                unit: "s",
                value: median(cpu),
                target: cpu_target,
            });
            rows.push(Row {
                scenario: "firehose".into(),
                case,
                metric: "peak RSS",
                unit: "MiB",
                value: median(rss),
                target: None,
            });
            eprintln!("bench: firehose {containers}x{line_bytes} {sink} done");
        }
    }
    Ok(rows)
}

fn dockerd_pid() -> Result<u32, String> {
    let o = Command::new("pgrep")
        .args(["-xo", "dockerd"])
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|_| "no dockerd process found".to_string())
}

fn daemon(binary: &Path, out: &Path, runs: usize, quick: bool) -> Result<Vec<Row>, String> {
    docker(&["image", "inspect", "lc-test:busybox"]).map_err(|_| {
        "test image lc-test:busybox missing: run scripts/build-test-image (needs a running dockerd)".to_string()
    })?;
    let dockerd = dockerd_pid()?;
    let per = if quick { 20_000 } else { 200_000 };
    let mut rows = Vec::new();
    for k in [1usize, 10] {
        let (mut secs, mut agent_cpu, mut daemon_cpu, mut rss) = (vec![], vec![], vec![], vec![]);
        for run in 0..runs {
            let label = format!("lc.bench=daemon-{}-{k}-{run}", std::process::id());
            let dir = out.join(format!("daemon-{k}-{run}"));
            // The agent follows the containers live, from their first line; the window covers
            // dockerd receiving, storing and serving the lines, and the agent reading them.
            let agent = Agent::start(
                binary,
                &dir,
                AgentConfig {
                    docker_host: None,
                    sink: "file",
                    rotation: "1h",
                    include_label: Some(&label),
                    fsync: None,
                    processing: None,
                    extra: "",
                },
            )?;
            let d0 = cpu_seconds(dockerd);
            let a0 = cpu_seconds(agent.pid());
            let t0 = Instant::now();
            let mut names = Vec::new();
            for i in 0..k {
                let name = format!("bench-{}-{k}-{run}-{i}", std::process::id());
                docker(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--label",
                    &label,
                    "lc-test:busybox",
                    "seq",
                    "1",
                    &per.to_string(),
                ])?;
                names.push(name);
            }
            let result = (|| {
                agent.wait_metric(
                    "log_capturer_sink_lines_total{sink=\"file\"}",
                    (k * per) as f64,
                    Duration::from_secs(600),
                )?;
                let took = t0.elapsed().as_secs_f64();
                let cpu = cpu_seconds(agent.pid()) - a0;
                let d1 = cpu_seconds(dockerd);
                let peak = status_field(agent.pid(), "VmHWM:") / 1024.0;
                Ok::<_, String>((took, cpu, d1 - d0, peak))
            })();
            agent.terminate()?;
            let mut rm = vec!["rm", "-f"];
            rm.extend(names.iter().map(String::as_str));
            let _ = docker(&rm);
            let _ = std::fs::remove_dir_all(dir.join("out"));
            let (took, cpu, dcpu, peak) = result?;
            secs.push(took);
            agent_cpu.push(cpu);
            daemon_cpu.push(dcpu);
            rss.push(peak);
        }
        let case = format!("{k} container(s) × {per} lines → file");
        let (a, d) = (median(agent_cpu), median(daemon_cpu));
        rows.push(Row {
            scenario: "daemon".into(),
            case: case.clone(),
            metric: "time until every line captured",
            unit: "s",
            value: median(secs),
            target: None,
        });
        rows.push(Row {
            scenario: "daemon".into(),
            case: case.clone(),
            metric: "agent CPU",
            unit: "s",
            value: a,
            target: None,
        });
        rows.push(Row {
            scenario: "daemon".into(),
            case: case.clone(),
            metric: "dockerd CPU (same window)",
            unit: "s",
            value: d,
            target: None,
        });
        rows.push(Row {
            scenario: "daemon".into(),
            case: case.clone(),
            metric: "agent CPU / dockerd CPU",
            unit: "%",
            value: if d > 0.0 { 100.0 * a / d } else { 0.0 },
            target: Some(("<=", 15.0)),
        });
        rows.push(Row {
            scenario: "daemon".into(),
            case,
            metric: "peak RSS",
            unit: "MiB",
            value: median(rss),
            target: None,
        });
        eprintln!("bench: daemon {k} done");
    }
    Ok(rows)
}

/// What one reopen of a container's logs costs dockerd, against the size of its json log: a
/// rotation asks for `since=<cursor>`, and the daemon reads the file from its start up to there
/// before it sends anything. Measured with `since=now` and no `follow`, so each request ends when
/// that scan does.
fn reopen(runs: usize, quick: bool) -> Result<Vec<Row>, String> {
    docker(&["image", "inspect", "lc-test:busybox"]).map_err(|_| {
        "test image lc-test:busybox missing: run scripts/build-test-image (needs a running dockerd)".to_string()
    })?;
    let dockerd = dockerd_pid()?;
    let sizes: &[u64] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 300_000, 1_000_000]
    };
    let reopens = if quick { 3 } else { 5 };
    let mut rows = Vec::new();
    for &lines in sizes {
        let name = format!("bench-reopen-{}-{lines}", std::process::id());
        docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "lc-test:busybox",
            "sh",
            "-c",
            &format!("seq 1 {lines}; exec sleep 3600"),
        ])?;
        let result = (|| {
            let t0 = Instant::now();
            while docker(&["logs", "--tail", "1", &name])? != lines.to_string() {
                if t0.elapsed() > Duration::from_secs(300) {
                    return Err(format!("{name}: {lines} lines not written after 300 s"));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let (mut cpu, mut wall) = (vec![], vec![]);
            for _ in 0..runs * reopens {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let url = format!(
                    "http://docker/containers/{name}/logs?stdout=1&stderr=1&timestamps=1&since={now:.9}"
                );
                let d0 = cpu_seconds(dockerd);
                let t = Instant::now();
                let o = Command::new("curl")
                    .args([
                        "-sf",
                        "--unix-socket",
                        "/var/run/docker.sock",
                        "-o",
                        "/dev/null",
                        &url,
                    ])
                    .status()
                    .map_err(|e| format!("curl: {e}"))?;
                if !o.success() {
                    return Err(format!("curl {url}: {o}"));
                }
                wall.push(t.elapsed().as_secs_f64());
                cpu.push(cpu_seconds(dockerd) - d0);
            }
            Ok((median(cpu), median(wall)))
        })();
        let _ = docker(&["rm", "-f", &name]);
        let (cpu, wall) = result?;
        let case = format!("json log of {lines} lines, since=now");
        rows.push(Row {
            scenario: "reopen".into(),
            case: case.clone(),
            metric: "dockerd CPU per reopen",
            unit: "s",
            value: cpu,
            target: None,
        });
        rows.push(Row {
            scenario: "reopen".into(),
            case,
            metric: "time until the first line could come",
            unit: "s",
            value: wall,
            target: None,
        });
        eprintln!("bench: reopen {lines} done");
    }
    Ok(rows)
}

fn idle(binary: &Path, out: &Path, runs: usize, quick: bool) -> Result<Vec<Row>, String> {
    let n = if quick { 200 } else { 1000 };
    let rotation = 20.0;
    let (
        mut per_stream,
        mut tasks,
        mut fds,
        mut rot,
        mut open_wave,
        mut back,
        mut shut,
        mut base_rss,
    ) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    // The same agent on the null sink, rotating every `rotation` seconds, for the baseline and
    // for the measured run.
    let rotation_setting = format!("{rotation}s");
    let start_idle_agent = |engine: &fake_engine::FakeEngine, dir: &Path| {
        Agent::start(
            binary,
            dir,
            AgentConfig {
                docker_host: Some(engine.docker_host()),
                sink: "null",
                rotation: &rotation_setting,
                include_label: None,
                fsync: None,
                processing: None,
                extra: "",
            },
        )
    };
    for run in 0..runs {
        // Baseline: the same agent with no container at all.
        let dir = out.join(format!("idle-base-{run}"));
        let engine = fake_engine::FakeEngine::start(&dir_ready(&dir)?, 0, None)?;
        let agent = start_idle_agent(&engine, &dir)?;
        std::thread::sleep(Duration::from_secs(1));
        let base = status_field(agent.pid(), "VmRSS:");
        agent.terminate()?;
        engine.stop();

        let dir = out.join(format!("idle-{run}"));
        let engine = fake_engine::FakeEngine::start(&dir_ready(&dir)?, n, None)?;
        let agent = start_idle_agent(&engine, &dir)?;
        let opened = agent.wait_metric(
            "log_capturer_container_streams_active",
            n as f64,
            Duration::from_secs(120),
        )?;
        open_wave.push(opened.as_secs_f64());
        std::thread::sleep(Duration::from_secs(2));
        let m = agent.metrics();
        let before = (
            m.get("log_capturer_tasks_alive").copied().unwrap_or(0.0),
            m.get("log_capturer_file_descriptors_open")
                .copied()
                .unwrap_or(0.0),
        );
        let rss = status_field(agent.pid(), "VmRSS:");
        per_stream.push((rss - base) / n as f64);
        base_rss.push(base / 1024.0);
        tasks.push(before.0);
        fds.push(before.1);
        // The rotation wave: from the first rotation until every stream has rotated and is
        // open again.
        let deadline = Instant::now() + Duration::from_secs_f64(rotation * 3.0);
        let mut first = None;
        let mut done = None;
        while Instant::now() < deadline {
            let m = agent.metrics();
            let r = sum_prefix(&m, "log_capturer_container_stream_rotations_total");
            let active = m
                .get("log_capturer_container_streams_active")
                .copied()
                .unwrap_or(0.0);
            if r > 0.0 && first.is_none() {
                first = Some(Instant::now());
            }
            if r >= n as f64 && active >= n as f64 {
                done = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (Some(f), Some(d)) = (first, done) else {
            return Err("the idle streams did not all rotate".into());
        };
        rot.push((d - f).as_secs_f64());
        std::thread::sleep(Duration::from_millis(500));
        let m = agent.metrics();
        let after = (
            m.get("log_capturer_tasks_alive").copied().unwrap_or(0.0),
            m.get("log_capturer_file_descriptors_open")
                .copied()
                .unwrap_or(0.0),
        );
        back.push(if after == before { 1.0 } else { 0.0 });
        shut.push(agent.terminate()?.as_secs_f64());
        engine.stop();
    }
    let case = format!("{n} idle streams, null sink");
    let row = |metric, unit, value, target| Row {
        scenario: "idle".into(),
        case: case.clone(),
        metric,
        unit,
        value,
        target,
    };
    Ok(vec![
        row("empty agent RSS", "MiB", median(base_rss), None),
        row(
            "RSS per idle stream",
            "KiB",
            median(per_stream),
            Some(("<=", 48.0)),
        ),
        row("tasks alive", "tasks", median(tasks), None),
        row("FDs open", "FDs", median(fds), None),
        row(
            "time to open all streams (from agent start)",
            "s",
            median(open_wave),
            None,
        ),
        row(
            "full rotation of all streams",
            "s",
            median(rot),
            Some(("<=", 2.0)),
        ),
        row(
            "tasks and FDs back at pre-rotation count",
            "runs ok/total",
            back.iter().sum::<f64>() / back.len() as f64,
            Some((">=", 1.0)),
        ),
        row(
            "shutdown (SIGTERM → exit)",
            "s",
            median(shut),
            Some(("<=", 2.0)),
        ),
    ])
}

fn dir_ready(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    Ok(dir.to_path_buf())
}
