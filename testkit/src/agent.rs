//! The agent as a real process, driven the way an operator drives it: started with a config
//! file, watched through `/ready` and `/metrics`, stopped with SIGTERM or SIGKILL, started
//! again on the same config. Every wait is bounded; nothing here panics on what the agent does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a stopped agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// Seconds from the stop request (or the wait) to the exit.
    pub millis: u64,
    /// It did not exit within the time-out and was SIGKILLed by the harness.
    pub timed_out: bool,
}

impl Exit {
    fn from(status: ExitStatus, started: Instant, timed_out: bool) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        Exit {
            code: status.code(),
            signal: status.signal(),
            millis: started.elapsed().as_millis() as u64,
            timed_out,
        }
    }

    pub fn seconds(&self) -> f64 {
        self.millis as f64 / 1000.0
    }

    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit {c}")?,
            (None, Some(s)) => write!(f, "signal {s}")?,
            _ => write!(f, "unknown exit")?,
        }
        if self.timed_out {
            write!(f, " (killed after the time-out)")?;
        }
        write!(f, " after {:.1} s", self.seconds())
    }
}

/// One agent: its binary, config file, working directory (stderr goes to `dir/agent.log`,
/// appended across restarts) and HTTP address.
pub struct AgentProcess {
    binary: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    pub http: String,
    docker_host: Option<String>,
    child: Option<Child>,
}

impl AgentProcess {
    pub fn new(
        binary: &Path,
        config: &Path,
        dir: &Path,
        http: &str,
        docker_host: Option<String>,
    ) -> AgentProcess {
        AgentProcess {
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
            dir: dir.to_path_buf(),
            http: http.to_string(),
            docker_host,
            child: None,
        }
    }

    /// Spawns the agent and waits up to `ready_within` for `/ready`.
    pub fn start(&mut self, ready_within: Duration) -> Result<(), String> {
        self.spawn()?;
        self.wait_ready(ready_within)
    }

    /// Spawns the process without waiting for anything.
    pub fn spawn(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("the agent is already running".into());
        }
        let log_path = self.log_path();
        let log = crate::open_append(&log_path)?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["run", "-c"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env_remove("RUST_LOG");
        match &self.docker_host {
            Some(h) => cmd.env("DOCKER_HOST", h),
            None => cmd.env_remove("DOCKER_HOST"),
        };
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits for `/ready` (200); fails early when the process exits.
    pub fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if self.get("/ready").is_some_and(|(s, _)| s == 200) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "the agent exited before it was ready ({status}); see {}",
                    self.log_path().display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent was not ready within {} s; see {}",
                    within.as_secs(),
                    self.log_path().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Everything the agent wrote to stderr so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::http_get(&self.http, path)
    }

    /// The whole exposition; empty when the agent does not answer.
    pub fn metrics(&self) -> HashMap<String, f64> {
        crate::metrics(&self.http).unwrap_or_default()
    }

    /// The sum of every series of one metric (all label sets); 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        crate::sum_prefix(&self.metrics(), name)
    }

    /// SIGTERM, then waits up to `within` for the exit (SIGKILL after that).
    pub fn terminate(&mut self, within: Duration) -> Result<Exit, String> {
        self.signal("TERM")?;
        self.wait_exit(within)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<Exit, String> {
        self.signal("KILL")?;
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits up to `within` for the process to exit by itself (SIGKILL after that).
    pub fn wait_exit(&mut self, within: Duration) -> Result<Exit, String> {
        let started = Instant::now();
        let mut child = self.child.take().ok_or("the agent is not running")?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Exit::from(status, started, false)),
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for the agent: {e}")),
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let status = child
                    .wait()
                    .map_err(|e| format!("waiting for the agent: {e}"))?;
                return Ok(Exit::from(status, started, true));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) -> Result<(), String> {
        let pid = self.pid().ok_or("the agent is not running")?;
        crate::send_signal(pid, sig)
    }
}

impl Drop for AgentProcess {
    /// An agent is never left running behind a harness that failed half-way.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
