//! `daemon-cpu`: what the whole host spends per container line, on the real local dockerd, with
//! the agent in `docker.capture: api` and in `json_file` mode (issue 13), beside a baseline
//! with no agent at all (dockerd only writing the json log).
//!
//! K containers (`lc-test:busybox`, `--network none`, names `lcbench-…`) each print N lines of
//! 100 B as fast as busybox `awk` writes them, then sleep (so their containerd shims stay
//! alive to be measured; they are removed at the end). The containers are created before the
//! window; the window opens with `docker start` of all of them and closes when the agent's null
//! sink has counted every line (baseline: when every json log holds every line). Over it:
//! agent, dockerd, containerd and shim CPU from `/proc/<pid>/stat`. Each run starts a fresh
//! agent with a fresh state dir; the modes are interleaved run by run so that the machine's
//! load, shared with other builds, falls on all of them alike. dockerd's own background CPU
//! (other users of the daemon) is sampled for 1 s before each window and printed beside it.
//!
//! Fails (non-zero exit) when the agent has not counted every line within 600 s, or counts
//! more lines than were printed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentConfig};
use crate::runlog::RunLog;
use crate::{Row, median};
use log_capturer_testkit::docker::docker;
use log_capturer_testkit::{cpu_seconds, sum_prefix};

const SINK_LINES: &str = "log_capturer_sink_lines_total{sink=\"null\"}";
const MODES: [&str; 3] = ["none", "api", "json_file"];
const TIMEOUT: Duration = Duration::from_secs(600);
/// Host CPU per line of a file-tailing agent (Fluent Bit `tail` on the json logs) with the
/// daemon writing, measured earlier on this machine (issue 13); not re-run here.
const FLUENT_BIT_US_PER_LINE: f64 = 6.5;

/// One window's figures.
#[derive(Clone, Copy, Default)]
struct Sample {
    window: f64,
    agent: f64,
    dockerd: f64,
    /// containerd and the containers' shims.
    shims: f64,
    /// dockerd CPU-s per second before the window (its other users).
    background: f64,
}

/// Removes the containers it names however the run ends.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let mut rm = vec!["rm", "-f"];
            rm.extend(self.0.iter().map(String::as_str));
            let _ = docker(&rm);
        }
    }
}

fn pid_of(name: &str) -> Result<u32, String> {
    let o = Command::new("pgrep")
        .args(["-xo", name])
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("no {name} process found"))
}

/// CPU of the containerd shims serving `ids` (found by `-id <id>` on their command line).
fn shims_cpu(ids: &[String]) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut sum = 0.0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_shim = args
            .first()
            .is_some_and(|a| String::from_utf8_lossy(a).contains("containerd-shim"));
        let serves = args
            .windows(2)
            .any(|w| w[0] == b"-id" && ids.iter().any(|id| id.as_bytes() == w[1]));
        if is_shim && serves {
            sum += cpu_seconds(pid);
        }
    }
    sum
}

/// Counts the lines of a json log as it grows (baseline: no agent to count them).
struct LineCount {
    path: PathBuf,
    file: Option<std::fs::File>,
    lines: usize,
}

impl LineCount {
    fn poll(&mut self, buf: &mut [u8]) {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        if let Some(f) = &mut self.file {
            while let Ok(n) = f.read(buf) {
                if n == 0 {
                    break;
                }
                self.lines += buf[..n].iter().filter(|b| **b == b'\n').count();
            }
        }
    }
}

fn command(per: usize) -> String {
    // 9 digits, a space, 89 zeros and the newline: 100 B a line.
    format!(
        r#"awk 'BEGIN{{p=sprintf("%089d",0); for(i=0;i<{per};i++) printf "%09d %s\n", i, p}}'; exec sleep 3600"#
    )
}

struct Setup<'a> {
    binary: &'a Path,
    out: &'a Path,
    root: String,
    dockerd: u32,
    containerd: u32,
    per: usize,
}

fn measure(s: &Setup, k: usize, mode: &str, run: usize) -> Result<Sample, String> {
    let tag = format!("{}-{k}-{mode}-{run}", std::process::id());
    let label = format!("lc.bench=cpu-{tag}");
    let mut containers = Containers(Vec::new());
    let mut ids = Vec::new();
    let cmd = command(s.per);
    for i in 0..k {
        let name = format!("lcbench-cpu-{tag}-{i}");
        // Same options as tests/json_file_e2e.rs's `docker run --rm -d`; kept: `create`, started
        // later, and the argument list is the whole of it.
        let id = docker(&[
            "create",
            "--network",
            "none",
            "--name",
            &name,
            "--label",
            &label,
            "lc-test:busybox",
            "sh",
            "-c",
            &cmd,
        ])?;
        containers.0.push(name);
        ids.push(id);
    }
    let total = k * s.per;
    let what = format!("daemon-cpu {mode}, {k} × {} lines", s.per);
    let dir = s.out.join(format!("daemon-cpu-{k}-{mode}-{run}"));
    let extra = format!("docker:\n  capture: {mode}\n");
    let agent = if mode == "none" {
        None
    } else {
        Some(Agent::start(
            s.binary,
            &dir,
            AgentConfig {
                docker_host: None,
                sink: "null",
                rotation: "1h",
                include_label: Some(&label),
                fsync: None,
                processing: None,
                extra: &extra,
            },
        )?)
    };
    let b0 = cpu_seconds(s.dockerd);
    std::thread::sleep(Duration::from_secs(1));
    let background = cpu_seconds(s.dockerd) - b0;

    let d0 = cpu_seconds(s.dockerd);
    let c0 = cpu_seconds(s.containerd);
    let a0 = agent.as_ref().map(|a| cpu_seconds(a.pid())).unwrap_or(0.0);
    let t0 = Instant::now();
    let mut start = vec!["start"];
    start.extend(containers.0.iter().map(String::as_str));
    docker(&start)?;
    match &agent {
        Some(a) => {
            a.wait_metric(SINK_LINES, total as f64, TIMEOUT)
                .map_err(|e| {
                    format!(
                        "{what}: the agent did not read every line: {e} (agent log: {})",
                        dir.join("agent.log").display()
                    )
                })?;
        }
        None => {
            let mut logs: Vec<LineCount> = ids
                .iter()
                .map(|id| LineCount {
                    path: PathBuf::from(format!("{}/containers/{id}/{id}-json.log", s.root)),
                    file: None,
                    lines: 0,
                })
                .collect();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                logs.iter_mut().for_each(|l| l.poll(&mut buf));
                let n: usize = logs.iter().map(|l| l.lines).sum();
                if n >= total {
                    break;
                }
                if t0.elapsed() > TIMEOUT {
                    return Err(format!(
                        "{what}: the json logs hold {n} of {total} lines after {TIMEOUT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let window = t0.elapsed().as_secs_f64();
    let sample = Sample {
        window,
        agent: agent.as_ref().map(|a| cpu_seconds(a.pid())).unwrap_or(0.0) - a0,
        dockerd: cpu_seconds(s.dockerd) - d0,
        shims: cpu_seconds(s.containerd) - c0 + shims_cpu(&ids),
        background,
    };
    if let Some(a) = agent {
        if mode == "json_file" {
            // The lines must have come from the files, not from an API fallback.
            let m = a.metrics();
            let read = sum_prefix(&m, "log_capturer_json_file_bytes_read");
            let fallbacks = sum_prefix(&m, "log_capturer_json_file_fallbacks");
            if read <= 0.0 || fallbacks > 0.0 {
                return Err(format!(
                    "{what}: json_file mode not in effect ({read} bytes read from json logs, \
                     {fallbacks} containers fell back to the API; agent log: {})",
                    dir.join("agent.log").display()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let seen = a.metric(SINK_LINES);
        if seen != total as f64 {
            return Err(format!(
                "{what}: the sink counted {seen} lines, {total} were printed (duplicates)"
            ));
        }
        a.terminate()?;
    }
    drop(containers);
    let _ = std::fs::remove_dir_all(dir.join("state"));
    Ok(sample)
}

// The entry point every scenario shares (alike on purpose, see main.rs).
pub fn scenario(
    binary: &Path,
    out: &Path,
    runs: usize,
    quick: bool,
    log: &RunLog,
) -> Result<Vec<Row>, String> {
    docker(&["image", "inspect", "lc-test:busybox"]).map_err(|_| {
        "test image lc-test:busybox missing: run scripts/build-test-image (needs a running dockerd)".to_string()
    })?;
    let setup = Setup {
        binary,
        out,
        root: docker(&["info", "-f", "{{.DockerRootDir}}"])?,
        dockerd: pid_of("dockerd")?,
        containerd: pid_of("containerd")?,
        per: if quick { 20_000 } else { 200_000 },
    };
    let mut rows = Vec::new();
    for k in [2usize, 10] {
        let lines = (k * setup.per) as f64;
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); MODES.len()];
        for run in 0..runs {
            for (m, mode) in MODES.iter().enumerate() {
                let s = measure(&setup, k, mode, run)?;
                log.record(
                    "daemon-cpu",
                    &format!("{k} × {} lines, {mode}", setup.per),
                    run,
                    &format!(
                        "window {:.2} s; CPU-s agent {:.2}, dockerd {:.2}, containerd+shims {:.2}; \
                         host (agent + dockerd) {:.2} µs/line; dockerd background {:.2} CPU-s/s",
                        s.window,
                        s.agent,
                        s.dockerd,
                        s.shims,
                        1e6 * (s.agent + s.dockerd) / lines,
                        s.background
                    ),
                );
                samples[m].push(s);
            }
        }
        let med = |m: usize, f: fn(&Sample) -> f64| median(samples[m].iter().map(f).collect());
        let host_us = |m: usize| {
            median(
                samples[m]
                    .iter()
                    .map(|s| 1e6 * (s.agent + s.dockerd) / lines)
                    .collect(),
            )
        };
        for (m, mode) in MODES.iter().enumerate() {
            let case = format!("{k} × {} lines, agent: {mode}", setup.per);
            rows.push(Row::new(
                "daemon-cpu",
                &case,
                "window",
                "s",
                med(m, |s| s.window),
                None,
            ));
            if *mode != "none" {
                rows.push(Row::new(
                    "daemon-cpu",
                    &case,
                    "agent CPU",
                    "s",
                    med(m, |s| s.agent),
                    None,
                ));
            }
            rows.push(Row::new(
                "daemon-cpu",
                &case,
                "dockerd CPU",
                "s",
                med(m, |s| s.dockerd),
                None,
            ));
            rows.push(Row::new(
                "daemon-cpu",
                &case,
                "containerd + shims CPU",
                "s",
                med(m, |s| s.shims),
                None,
            ));
            let target = (*mode == "json_file").then_some(("<=", FLUENT_BIT_US_PER_LINE));
            rows.push(Row::new(
                "daemon-cpu",
                &case,
                "host CPU (agent + dockerd) per line",
                "µs",
                host_us(m),
                target,
            ));
        }
        let (none, api, json) = (host_us(0), host_us(1), host_us(2));
        // dockerd writing the json log is paid in every mode: the lowest ratio any agent
        // could reach is the no-agent baseline over api mode.
        rows.push(Row::new(
            "daemon-cpu",
            &format!("{k} × {} lines", setup.per),
            "host CPU per line, no agent / api (floor of the ratio)",
            "×",
            if api > 0.0 { none / api } else { 0.0 },
            None,
        ));
        rows.push(Row::new(
            "daemon-cpu",
            &format!("{k} × {} lines", setup.per),
            "host CPU per line, json_file / api",
            "×",
            if api > 0.0 { json / api } else { 0.0 },
            Some(("<=", 0.25)),
        ));
        eprintln!("bench: daemon-cpu {k} done");
    }
    Ok(rows)
}
