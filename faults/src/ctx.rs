//! What every scenario gets: where the agent binary is, a directory of its own, a prefix that
//! names (and labels) everything it creates, and the helpers scenarios share: the agent as a
//! process, containers from the test image, the daemon's logs as ground truth, and line
//! accounting.

// The helpers are a toolkit for every scenario file; not every build uses each one of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log_capturer_testkit::agent::{AgentProcess, Exit};
use log_capturer_testkit::docker::{self, Served};
use log_capturer_testkit::verify::{self, Tally};

/// The image every scenario container runs (busybox: `sh`, `seq`, `printf`, `head`, `usleep`).
pub const IMAGE: &str = "lc-test:busybox";

pub struct Ctx {
    pub agent_binary: PathBuf,
    /// This scenario's own directory (agents, configs, outputs).
    pub out_dir: PathBuf,
    /// Unique per run (`lcf-<pid>`): container names start with it and carry `lcf=<prefix>`.
    pub prefix: String,
    /// `DOCKER_HOST` for the agent; `None`: the local socket.
    pub docker_host: Option<String>,
    /// The reduced (CI) version of the scenario.
    pub quick: bool,
}

/// Extra YAML for an agent's config; each part is appended where it belongs.
#[derive(Clone, Debug, Default)]
pub struct AgentYaml {
    /// Keys under `capture:`, indented by 2 spaces (e.g. `"  rotation_interval: 1s\n"`).
    pub capture: String,
    /// Keys under `checkpoint:` besides `state_dir`, indented by 2 spaces.
    pub checkpoint: String,
    /// Keys under `pipeline:`, indented by 2 spaces.
    pub pipeline: String,
    /// More sinks beside the file sink, indented by 2 spaces (e.g. `"  loki:\n    url: ..."`).
    pub sinks: String,
    /// Keys under `http:` besides `listen`, indented by 2 spaces.
    pub http: String,
    /// Whole top-level sections (e.g. `"log:\n  level: debug\n"`).
    pub top: String,
    /// Another agent's state directory instead of `dir/state`.
    pub state_dir: Option<PathBuf>,
}

/// One agent: config in `dir/agent.yaml`, file sink under `dir/out`, state in `dir/state`,
/// stderr in `dir/agent.log`.
pub struct Agent {
    pub process: AgentProcess,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

impl Ctx {
    /// The label every container of this run carries.
    pub fn label(&self) -> String {
        format!("lcf={}", self.prefix)
    }

    /// A fresh directory `out_dir/<name>` with a config for an agent that captures this run's
    /// containers from the beginning; not started yet.
    pub fn agent(&self, name: &str, yaml: &AgentYaml) -> Result<Agent, String> {
        let dir = self.out_dir.join(name);
        if dir.exists() {
            return Err(format!("{} exists already", dir.display()));
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = log_capturer_testkit::free_port().map_err(|e| format!("free port: {e}"))?;
        let http = format!("127.0.0.1:{port}");
        let state_dir = yaml.state_dir.clone().unwrap_or_else(|| dir.join("state"));
        let config = format!(
            "capture:\n  initial_position: beginning\n  include:\n    labels: [\"{label}\"]\n{capture}\
             sinks:\n  file:\n    path: {out}/{{container_name}}.log\n    idle_close: 2s\n{sinks}\
             pipeline:\n  flush_interval: 50ms\n{pipeline}\
             checkpoint:\n  state_dir: {state}\n{checkpoint}\
             http:\n  listen: {http}\n{http_keys}{top}",
            label = self.label(),
            capture = yaml.capture,
            out = dir.join("out").display(),
            pipeline = yaml.pipeline,
            sinks = yaml.sinks,
            http_keys = yaml.http,
            state = state_dir.display(),
            checkpoint = yaml.checkpoint,
            top = yaml.top,
        );
        let config_path = dir.join("agent.yaml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let process = AgentProcess::new(
            &self.agent_binary,
            &config_path,
            &dir,
            &http,
            self.docker_host.clone(),
        );
        Ok(Agent {
            process,
            dir,
            config: config_path,
            state_dir,
        })
    }

    /// The config, started and ready.
    pub fn start_agent(&self, name: &str, yaml: &AgentYaml) -> Result<Agent, String> {
        let mut agent = self.agent(name, yaml)?;
        agent.start()?;
        Ok(agent)
    }

    /// `docker run -d` of the test image under `<prefix>-<suffix>`, with `--network none`,
    /// this run's label, `extra` docker options and `sh -c script`; returns the name.
    pub fn run_container(
        &self,
        suffix: &str,
        extra: &[&str],
        script: &str,
    ) -> Result<String, String> {
        self.run_container_with(docker::docker, suffix, extra, script)
    }

    /// `run_container` through `docker` (the CLI against some daemon).
    pub fn run_container_with(
        &self,
        docker: impl Fn(&[&str]) -> Result<String, String>,
        suffix: &str,
        extra: &[&str],
        script: &str,
    ) -> Result<String, String> {
        let name = format!("{}-{suffix}", self.prefix);
        let label = self.label();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "--label",
            &label,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        docker(&args)?;
        Ok(name)
    }

    /// Waits (bounded) until a container has exited; its exit code.
    pub fn wait_exited(&self, name: &str, within: Duration) -> Result<i64, String> {
        let deadline = Instant::now() + within;
        loop {
            let state = docker::docker(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
                name,
            ])?;
            if let Some(code) = state.strip_prefix("exited ") {
                return code
                    .trim()
                    .parse()
                    .map_err(|e| format!("{name}: exit code {code:?}: {e}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} still {state} after {} s", within.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The daemon's own view (`docker logs --timestamps`), per stream.
    pub fn served(&self, name: &str) -> Result<Served, String> {
        docker::served_logs(name)
    }

    /// Removes every container of this run (also after a failure); how many there were.
    pub fn remove_containers(&self) -> Result<usize, String> {
        docker::remove_labelled(&self.label())
    }
}

impl Agent {
    /// Starts (or starts again, on the same config, state and output) and waits for `/ready`.
    pub fn start(&mut self) -> Result<(), String> {
        self.process.start(Duration::from_secs(60))
    }

    /// SIGTERM, and the exit within `within` (killed after it: `timed_out`).
    pub fn terminate(&mut self, within: Duration) -> Result<Exit, String> {
        self.process.terminate(within)
    }

    pub fn kill(&mut self) -> Result<Exit, String> {
        self.process.kill()
    }

    /// Sum of every series of a Prometheus metric.
    pub fn metric(&self, name: &str) -> f64 {
        self.process.metric(name)
    }

    /// The agent's stderr (every run of it).
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// The file sink's NDJSON for one container, parsed (empty when nothing was written).
    pub fn records(&self, container: &str) -> Result<Vec<serde_json::Value>, String> {
        read_ndjson(&self.out_dir().join(format!("{container}.log")))
    }

    /// The messages written for a container: (stdout and tty, stderr).
    pub fn messages(&self, container: &str) -> Result<(Vec<String>, Vec<String>), String> {
        verify::captured(&self.out_dir(), container)
    }

    /// Polls (bounded) until the agent wrote at least `lines` records for `container`.
    pub fn wait_records(&self, container: &str, lines: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let (out, err) = self.messages(container).unwrap_or_default();
            if out.len() + err.len() >= lines {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Every line of an NDJSON file, parsed; a missing file is empty, a bad line an error.
pub fn read_ndjson(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| format!("{}:{}: bad record: {e}", path.display(), i + 1))
        })
        .collect()
}

/// `<tag> 1` … `<tag> n`: the lines a numbered container prints.
pub fn numbered(tag: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{tag} {i}")).collect()
}

/// Lost, duplicated and out-of-order lines of `captured` against `expected` (both in order).
pub fn verify(expected: &[String], captured: &[String]) -> Tally {
    verify::compare(expected, captured)
}
