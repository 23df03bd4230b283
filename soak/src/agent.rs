//! The agent under soak: the release binary as a real process, sampled through `/metrics` and
//! `/proc/<pid>`.

use log_capturer_testkit::agent::AgentProcess;
use log_capturer_testkit::{self as testkit, sum_prefix};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Agent {
    process: AgentProcess,
    pub out_dir: PathBuf,
}

pub fn write_config(
    dir: &Path,
    label: &str,
    rotation: Duration,
    http: &str,
) -> std::io::Result<PathBuf> {
    let config = format!(
        "capture:\n  rotation_interval: {}ms\n  initial_position: beginning\n  include:\n    labels: [\"{label}\"]\n\
         sinks:\n  file:\n    path: {}/{{container_name}}.log\n    idle_close: 5s\n\
         checkpoint:\n  state_dir: {}\n\
         http:\n  listen: {http}\n",
        rotation.as_millis(),
        dir.join("out").display(),
        dir.join("state").display(),
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, config)?;
    Ok(path)
}

impl Agent {
    pub fn start(binary: &Path, config: &Path, dir: &Path, http: String) -> Result<Agent, String> {
        let mut process = AgentProcess::new(binary, config, dir, &http, None);
        process.start(Duration::from_secs(60))?;
        Ok(Agent {
            process,
            out_dir: dir.join("out"),
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    pub fn metrics(&self) -> HashMap<String, f64> {
        self.process.metrics()
    }

    /// SIGTERM, then wait for the exit; returns (exit ok, seconds it took).
    pub fn terminate(mut self) -> (bool, f64) {
        match self.process.terminate(Duration::from_secs(60)) {
            Ok(exit) => (exit.success(), exit.seconds()),
            Err(_) => (false, 0.0),
        }
    }
}

/// One observation of the agent.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub t: f64,
    pub tasks: f64,
    pub fds: f64,
    pub rss_mib: f64,
    pub threads: f64,
    pub streams_active: f64,
    pub rotations: f64,
    pub lines: f64,
    pub errors: f64,
}

impl Sample {
    pub const CSV_HEADER: &'static str = "elapsed_s,tasks_alive,fds_open,rss_mib,threads,streams_active,rotations_total,lines_collected_total,stream_errors_total";

    pub fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{:.2},{},{},{},{},{}",
            self.t,
            self.tasks,
            self.fds,
            self.rss_mib,
            self.threads,
            self.streams_active,
            self.rotations,
            self.lines,
            self.errors
        )
    }
}

pub fn sample(agent: &Agent, t: f64) -> Sample {
    let m = agent.metrics();
    let pid = agent.pid();
    Sample {
        t,
        tasks: m.get("log_capturer_tasks_alive").copied().unwrap_or(0.0),
        fds: testkit::open_fds(pid),
        rss_mib: testkit::status_field(pid, "VmRSS:") / 1024.0,
        threads: testkit::status_field(pid, "Threads:"),
        streams_active: m
            .get("log_capturer_container_streams_active")
            .copied()
            .unwrap_or(0.0),
        rotations: sum_prefix(&m, "log_capturer_container_stream_rotations_total"),
        lines: sum_prefix(&m, "log_capturer_logs_collected_total"),
        errors: sum_prefix(&m, "log_capturer_container_stream_errors_total"),
    }
}
