//! The agent under measurement: the release binary as a real process, its `/metrics`, and its
//! CPU and memory from `/proc`.

use log_capturer_testkit as testkit;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Agent {
    child: Child,
    http: String,
    pub started: Instant,
}

pub struct AgentConfig<'a> {
    pub docker_host: Option<String>,
    /// `null`, `file`, or a whole entry of `sinks:` in YAML, indented by two spaces and ending
    /// in a newline (e.g. `  kafka:\n    brokers: […]\n`).
    pub sink: &'a str,
    pub rotation: &'a str,
    pub include_label: Option<&'a str>,
    /// `sinks.file.fsync` (always, interval, never); None: the agent's default.
    pub fsync: Option<&'a str>,
    /// The `processing:` section (YAML, starting with `processing:`); None: no pipelines.
    pub processing: Option<&'a str>,
    /// More top-level sections (`sources:`, `docker:`), appended as is; empty: none.
    pub extra: &'a str,
}

impl Agent {
    pub fn start(binary: &Path, dir: &Path, c: AgentConfig) -> Result<Agent, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let http = format!(
            "127.0.0.1:{}",
            testkit::free_port().map_err(|e| e.to_string())?
        );
        let sink = match c.sink {
            "file" => format!(
                "  file:\n    path: {}/{{container_name}}.log\n{}",
                dir.join("out").display(),
                c.fsync
                    .map(|f| format!("    fsync: {f}\n"))
                    .unwrap_or_default()
            ),
            yaml if yaml.contains('\n') => yaml.to_string(),
            _ => "  discard: {}\n".to_string(),
        };
        let include = c
            .include_label
            .map(|l| format!("  include:\n    labels: [\"{l}\"]\n"))
            .unwrap_or_default();
        let config = format!(
            "capture:\n  rotation_interval: {}\n  initial_position: beginning\n{include}\
             sinks:\n{sink}checkpoint:\n  state_dir: {}\nhttp:\n  listen: {http}\nlog:\n  level: warn\n{}{}",
            c.rotation,
            dir.join("state").display(),
            c.processing.unwrap_or_default(),
            c.extra
        );
        let path = dir.join("agent.yaml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("agent.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(binary);
        cmd.args(["run", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        match &c.docker_host {
            Some(h) => cmd.env("DOCKER_HOST", h),
            None => cmd.env_remove("DOCKER_HOST"),
        };
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut agent = Agent {
            child,
            http,
            started,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent.get("/ready").map(|(s, _)| s) != Some(200) {
            if let Ok(Some(status)) = agent.child.try_wait() {
                return Err(format!(
                    "agent exited with {status} before ready (see {})",
                    dir.join("agent.log").display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "agent not ready in 60 s (see {})",
                    dir.join("agent.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        testkit::http_get(&self.http, path)
    }

    pub fn metrics(&self) -> HashMap<String, f64> {
        testkit::metrics(&self.http).unwrap_or_default()
    }

    pub fn metric(&self, key: &str) -> f64 {
        self.metrics().get(key).copied().unwrap_or(0.0)
    }

    /// Polls `key` until it reaches `target`; returns the elapsed time since start.
    pub fn wait_metric(
        &self,
        key: &str,
        target: f64,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.metric(key) >= target {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{key} stayed below {target} for {timeout:?} (now {})",
                    self.metric(key)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM; returns how long the exit took.
    pub fn terminate(mut self) -> Result<Duration, String> {
        let t = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = t + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() {
                    Ok(t.elapsed())
                } else {
                    Err(format!("agent exited with {status}"))
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("agent did not exit within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent_binary(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    let path = match explicit {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("log-capturer"),
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release --workspace` first or pass --agent",
            path.display()
        ))
    }
}
