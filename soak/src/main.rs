//! `log-capturer-soak`: runs the real agent against a real dockerd with a realistic mix of
//! containers for a while, samples it, then accounts for every line and judges leaks, stalls
//! and loss. `--quick` is part of the test suite; the long modes reproduce the incident.

mod agent;
mod chart;
mod report;
mod workload;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log_capturer::config::parse_duration;
use log_capturer_testkit::{docker, verify};
use workload::Kind;

#[derive(Parser, Debug)]
#[command(
    name = "log-capturer-soak",
    version,
    about = "Soak the real agent against a real dockerd"
)]
struct Args {
    /// CI preset: 20 containers, D = 60s, R = 2s, samples every 2s.
    #[arg(long)]
    quick: bool,
    /// Long-running containers (a mix of kinds; one uses --log-driver none).
    #[arg(long, default_value_t = 20)]
    containers: usize,
    /// Run duration D (e.g. 60s, 30m).
    #[arg(long, default_value = "60s", value_parser = duration)]
    duration: Duration,
    /// Agent rotation interval R.
    #[arg(long, default_value = "2s", value_parser = duration)]
    rotation: Duration,
    /// Sampling interval S.
    #[arg(long, default_value = "2s", value_parser = duration)]
    sample: Duration,
    /// Growth is fitted after this; default max(15s, D/6).
    #[arg(long, value_parser = duration)]
    warmup: Option<Duration>,
    /// A short-lived churn container is created this often (0s disables churn).
    #[arg(long, default_value = "3s", value_parser = duration)]
    churn_every: Duration,
    /// The agent binary; default: `log-capturer` next to this program.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Where the report, samples.csv, chart.png and the agent's output go.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "lc-test:busybox")]
    image: String,
    #[arg(long, default_value_t = 0.5)]
    max_task_growth: f64,
    #[arg(long, default_value_t = 0.5)]
    max_fd_growth: f64,
    /// MiB per 10 minutes.
    #[arg(long, default_value_t = 5.0)]
    max_rss_growth: f64,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration (e.g. 2s, 5m)"))
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.containers = 20;
        args.duration = Duration::from_secs(60);
        args.rotation = Duration::from_secs(2);
        args.sample = Duration::from_secs(2);
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn progress(msg: &str) {
    eprintln!("soak: {msg}");
}

fn run(args: &Args) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let binary = match &args.agent {
        Some(p) => p.clone(),
        None => exe.with_file_name("log-capturer"),
    };
    if !binary.exists() {
        return Err(format!(
            "agent binary {} not found: build it with `cargo build --release` or pass --agent",
            binary.display()
        ));
    }
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            % 0xffffff
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("soak-out/{run_id}")));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let label = format!("lc.soak={run_id}");
    let build_script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/build-test-image"
    ));
    docker::ensure_ready(&args.image, &build_script)?;

    let result = soak(args, &binary, &out, &run_id, &label);
    // Whatever happened: no container of this run is left behind.
    let _ = docker::remove_labelled(&label);
    result
}

fn soak(
    args: &Args,
    binary: &std::path::Path,
    out: &std::path::Path,
    run_id: &str,
    label: &str,
) -> Result<bool, String> {
    let commit = report::git_commit();
    let d = args.duration.as_secs_f64();
    let warmup = args
        .warmup
        .map(|w| w.as_secs_f64())
        .unwrap_or_else(|| (d / 6.0).max(15.0).min(d / 2.0));
    let kinds = workload::mix(args.containers);
    progress(&format!(
        "starting {} containers (run {run_id})",
        kinds.len()
    ));
    let mut containers = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        containers.push(workload::start(run_id, label, &args.image, *kind, i)?);
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let http = format!("127.0.0.1:{port}");
    let config =
        agent::write_config(out, label, args.rotation, &http).map_err(|e| e.to_string())?;
    let agent = agent::Agent::start(binary, &config, out, http)?;
    progress(&format!(
        "agent pid {} running for {d:.0} s, rotation {:.0} s, sampling every {:.0} s",
        agent.pid(),
        args.rotation.as_secs_f64(),
        args.sample.as_secs_f64()
    ));

    let stop_churn = Arc::new(AtomicBool::new(false));
    let churn = (!args.churn_every.is_zero()).then(|| {
        workload::spawn_churn(
            run_id.to_string(),
            label.to_string(),
            args.image.clone(),
            args.churn_every,
            Arc::clone(&stop_churn),
        )
    });
    // Churn stops before the end so the last samples show the steady state.
    let churn_end = (d - 15.0).max(d * 0.75);

    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut csv = String::from(agent::Sample::CSV_HEADER);
    csv.push('\n');
    let mut next = 0.0;
    let mut next_report = 0.0;
    while t0.elapsed().as_secs_f64() < d {
        let t = t0.elapsed().as_secs_f64();
        if t >= churn_end {
            stop_churn.store(true, Ordering::Relaxed);
        }
        if t >= next {
            let s = agent::sample(&agent, t);
            csv.push_str(&s.csv());
            csv.push('\n');
            if t >= next_report {
                progress(&format!(
                    "t={t:.0}s tasks={} fds={} rss={:.1}MiB streams={} rotations={} lines={}",
                    s.tasks, s.fds, s.rss_mib, s.streams_active, s.rotations, s.lines
                ));
                next_report = t + (d / 10.0).max(10.0);
            }
            samples.push(s);
            next += args.sample.as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let final_sample = agent::sample(&agent, t0.elapsed().as_secs_f64());
    csv.push_str(&final_sample.csv());
    csv.push('\n');
    samples.push(final_sample);
    let metrics = agent.metrics();

    let rotations: Vec<(String, f64)> = containers
        .iter()
        .filter(|c| c.kind.long_lived())
        .map(|c| {
            let key = format!(
                "log_capturer_container_stream_rotations_total{{container_name=\"{}\"}}",
                c.name
            );
            (c.name.clone(), metrics.get(&key).copied().unwrap_or(0.0))
        })
        .collect();
    let mut errors: Vec<(String, f64)> = metrics
        .iter()
        .filter_map(|(k, v)| {
            let reason = k
                .strip_prefix("log_capturer_container_stream_errors_total{reason=\"")?
                .strip_suffix("\"}")?;
            Some((reason.to_string(), *v))
        })
        .collect();
    errors.sort_by(|a, b| a.0.cmp(&b.0));

    stop_churn.store(true, Ordering::Relaxed);
    let (churned, mut harness_errors) = match churn {
        Some(handle) => handle
            .join()
            .map_err(|_| "churn thread panicked".to_string())?,
        None => (Vec::new(), Vec::new()),
    };
    progress("stopping emitters; letting the agent drain");
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let mut stop = vec!["stop", "-t", "1"];
    stop.extend(names.iter().copied());
    if let Err(e) = docker::docker(&stop) {
        harness_errors.push(e);
    }
    let mut served = Vec::new();
    for c in containers.iter().filter(|c| c.kind != Kind::DriverNone) {
        match docker::served_logs(&c.name) {
            Ok(s) => served.push((c.name.clone(), s)),
            Err(e) => harness_errors.push(e),
        }
    }
    // Drain: wait (bounded) until everything served was captured.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = served.iter().any(|(name, s)| {
            verify::tally(&agent.out_dir, name, s)
                .map(|t| t.captured < t.served)
                .unwrap_or(true)
        });
        if !pending || Instant::now() > drain_deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let out_dir = agent.out_dir.clone();
    let (shutdown_ok, shutdown_s) = agent.terminate();

    let mut tally = verify::Tally::default();
    for (name, s) in &served {
        match verify::tally(&out_dir, name, s) {
            Ok(t) => {
                if t.lost + t.duplicated + t.out_of_order > 0 {
                    harness_errors.push(format!(
                        "{name}: lost {} duplicated {} out of order {}",
                        t.lost, t.duplicated, t.out_of_order
                    ));
                }
                tally.add(t);
            }
            Err(e) => harness_errors.push(e),
        }
    }
    let mut churn_tally = verify::Tally::default();
    for c in &churned {
        match verify::tally(&out_dir, &c.name, &c.served) {
            Ok(t) => churn_tally.add(t),
            Err(e) => harness_errors.push(e),
        }
    }

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let verdict = report::evaluate(
        &report::Inputs {
            command,
            commit,
            containers: containers.len(),
            churn_containers: churned.len(),
            duration_s: d,
            rotation_s: args.rotation.as_secs_f64(),
            warmup_s: warmup,
            samples: &samples,
            rotations,
            errors,
            tally,
            churn_tally,
            shutdown_ok,
            shutdown_s,
            harness_errors,
        },
        &report::Criteria {
            max_task_growth_per_min: args.max_task_growth,
            max_fd_growth_per_min: args.max_fd_growth,
            max_rss_growth_mib_per_10min: args.max_rss_growth,
        },
    );
    std::fs::write(out.join("samples.csv"), csv).map_err(|e| e.to_string())?;
    let title = format!(
        "log-capturer soak: {} containers, D={:.0}s, R={:.0}s",
        containers.len(),
        d,
        args.rotation.as_secs_f64()
    );
    let mut text = verdict.text;
    match chart::draw(&out.join("chart.png"), &samples, &title, warmup) {
        Ok(()) => text.push_str("\n![tasks, FDs, RSS and rotations over time](chart.png)\n"),
        Err(e) => text.push_str(&format!("\n(chart not drawn: {e})\n")),
    }
    std::fs::write(out.join("report.md"), &text).map_err(|e| e.to_string())?;
    println!("{text}");
    println!("report, samples.csv and chart.png in {}", out.display());
    Ok(verdict.passed)
}
