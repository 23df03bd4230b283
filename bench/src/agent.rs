//! The agent under measurement: the release binary as a real process, its `/metrics`, and its
//! CPU and memory from `/proc`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
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
    pub sink: &'a str,
    pub rotation: &'a str,
    pub include_label: Option<&'a str>,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

impl Agent {
    pub fn start(binary: &Path, dir: &Path, c: AgentConfig) -> Result<Agent, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let http = format!("127.0.0.1:{}", free_port()?);
        let sink = match c.sink {
            "file" => format!(
                "  file:\n    path: {}/{{container_name}}.log\n",
                dir.join("out").display()
            ),
            _ => "  discard: {}\n".to_string(),
        };
        let include = c
            .include_label
            .map(|l| format!("  include:\n    labels: [\"{l}\"]\n"))
            .unwrap_or_default();
        let config = format!(
            "capture:\n  rotation_interval: {}\n  initial_position: beginning\n{include}\
             sinks:\n{sink}checkpoint:\n  state_dir: {}\nhttp:\n  listen: {http}\nlog:\n  level: warn\n",
            c.rotation,
            dir.join("state").display()
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
        let agent = Agent {
            child,
            http,
            started,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent.get("/ready").map(|(s, _)| s) != Some(200) {
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
        let mut s = TcpStream::connect(&self.http).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
    }

    pub fn metrics(&self) -> HashMap<String, f64> {
        let body = self.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
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

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Clock ticks per second (asked of `getconf` once per process).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
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
