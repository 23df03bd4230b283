//! The agent under test, as a real process.

use log_capturer_testkit as testkit;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::wait_until;

pub struct AgentOptions {
    /// Extra `capture:` keys, indented by 2 spaces (e.g. "  rotation_interval: 1s\n").
    pub capture: String,
    /// `DOCKER_HOST` for the agent; None: the local socket.
    pub docker_host: Option<String>,
    pub checkpoint_interval: &'static str,
    /// Extra `sinks:` entries, indented by 2 spaces (the file sink is always there).
    pub sinks: String,
    /// Extra `pipeline:` keys, indented by 2 spaces.
    pub pipeline: String,
    /// The keys of a top-level `processing:` section, indented by 2 spaces (none if empty).
    pub processing: String,
    /// The keys of a top-level `sources:` section, indented by 2 spaces (none if empty).
    pub sources: String,
    /// The NDJSON file sink under `dir/out` (on by default). A host file's records land in
    /// `out/<path with / as %2F>.log` (its `container_name` is its path).
    pub file_sink: bool,
    /// Run the agent under this open-files limit (soft and hard), via `prlimit`.
    pub fd_limit: Option<u64>,
    /// `log.level` (a tracing filter).
    pub log_level: &'static str,
    /// Extra `docker:` keys, indented by 2 spaces.
    pub docker: String,
    /// Extra environment for the agent (the `DOCKER_TLS*`, `DOCKER_CERT_PATH` and
    /// `DOCKER_API_VERSION` of the test process are never passed on).
    pub env: Vec<(String, String)>,
    /// A command (and its arguments) that runs the agent, e.g. `setpriv --reuid 65534`.
    pub wrapper: Vec<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            capture: String::new(),
            docker_host: None,
            checkpoint_interval: "1s",
            sinks: String::new(),
            pipeline: String::new(),
            processing: String::new(),
            sources: String::new(),
            file_sink: true,
            fd_limit: None,
            log_level: "log_capturer=debug,info",
            docker: String::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }
}

pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    pub http: String,
    options_config: PathBuf,
    docker_host: Option<String>,
    fd_limit: Option<u64>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
}

fn free_port() -> u16 {
    testkit::free_port().expect("free port")
}

impl Agent {
    /// Writes a config into `dir` (file sink under `dir/out`, state under `dir/state`) and
    /// starts the agent; waits until `/ready`.
    pub fn start(dir: &Path, options: AgentOptions) -> Agent {
        let agent = Agent::start_unready(dir, options);
        agent.wait_ready();
        agent
    }

    /// Like `start`, but returns as soon as the process is spawned, ready or not (e.g. while
    /// no Docker engine answers).
    pub fn start_unready(dir: &Path, options: AgentOptions) -> Agent {
        std::fs::create_dir_all(dir).expect("agent dir");
        let http = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "{docker}capture:\n{capture}\
             sinks:\n{file}{sinks}\
             pipeline:\n  flush_interval: 50ms\n{pipeline}{processing}{sources}\
             checkpoint:\n  state_dir: {state}\n  interval: {ci}\n\
             http:\n  listen: {http}\n\
             log:\n  level: {log_level}\n",
            capture = options.capture,
            docker = if options.docker.is_empty() {
                String::new()
            } else {
                format!("docker:\n{}", options.docker)
            },
            state = dir.join("state").display(),
            ci = options.checkpoint_interval,
            sinks = options.sinks,
            file = if options.file_sink {
                format!(
                    "  file:\n    path: {}/{{container_name}}.log\n    idle_close: 1s\n",
                    dir.join("out").display()
                )
            } else {
                String::new()
            },
            pipeline = options.pipeline,
            processing = if options.processing.is_empty() {
                String::new()
            } else {
                format!("processing:\n{}", options.processing)
            },
            sources = if options.sources.is_empty() {
                String::new()
            } else {
                format!("sources:\n{}", options.sources)
            },
            log_level = options.log_level,
        );
        let path = dir.join("config.yaml");
        std::fs::write(&path, config).expect("write config");
        let mut agent = Agent {
            child: None,
            dir: dir.to_path_buf(),
            http,
            options_config: path,
            docker_host: options.docker_host,
            fd_limit: options.fd_limit,
            env: options.env,
            wrapper: options.wrapper,
        };
        agent.spawn_process();
        agent
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_ready();
    }

    fn spawn_process(&mut self) {
        self.child = Some(self.spawn_child(Stdio::null()));
    }

    /// Spawns the agent process with the options it was started with: stdout to `stdout`,
    /// stderr appended to `agent.log`.
    fn spawn_child(&self, stdout: Stdio) -> std::process::Child {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("agent log");
        let binary = env!("CARGO_BIN_EXE_log-capturer");
        // prlimit sets the limit and execs the agent: same process, same pid.
        let mut cmd = match (self.fd_limit, self.wrapper.split_first()) {
            (Some(n), _) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(binary);
                c
            }
            (None, Some((program, args))) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            (None, None) => Command::new(binary),
        };
        cmd.arg("run")
            .arg("-c")
            .arg(&self.options_config)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env_remove("RUST_LOG");
        match &self.docker_host {
            Some(h) => cmd.env("DOCKER_HOST", h),
            None => cmd.env_remove("DOCKER_HOST"),
        };
        for name in [
            "DOCKER_TLS_VERIFY",
            "DOCKER_TLS",
            "DOCKER_CERT_PATH",
            "DOCKER_API_VERSION",
        ] {
            cmd.env_remove(name);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.spawn().expect("spawn agent")
    }

    /// Waits (up to 60 s) for `/ready`; panics with the agent's log otherwise.
    pub fn wait_ready(&self) {
        let ready = wait_until(Duration::from_secs(60), || {
            self.get("/ready").is_some_and(|(status, _)| status == 200)
        });
        assert!(ready, "agent not ready; log:\n{}", self.log());
    }

    /// Starts the same agent again (same config, state and output).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "agent still running");
        self.spawn();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Minimal HTTP/1.0 GET; None when the agent does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        testkit::http_get(&self.http, path)
    }

    /// Every sample of the exposition: `name{labels}` → value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        testkit::metrics(&self.http).expect("metrics")
    }

    pub fn metric(&self, key: &str) -> f64 {
        self.metrics().get(key).copied().unwrap_or(0.0)
    }

    /// Like `metric`, but `None` when the agent does not answer (e.g. at its FD limit, where
    /// accepting the request can fail for a while).
    pub fn try_metric(&self, key: &str) -> Option<f64> {
        let all = testkit::metrics(&self.http)?;
        Some(all.get(key).copied().unwrap_or(0.0))
    }

    /// (tasks alive, open FDs) from the agent's own metrics (-1 when missing).
    pub fn resources(&self) -> (f64, f64) {
        let m = self.metrics();
        (
            m.get("log_capturer_tasks_alive").copied().unwrap_or(-1.0),
            m.get("log_capturer_file_descriptors_open")
                .copied()
                .unwrap_or(-1.0),
        )
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    pub fn kill(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait_exit()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (up to 30 s) for the agent to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.exit_within_or_panic(Duration::from_secs(30), "")
    }

    /// Waits up to `within` for the exit; otherwise kills the agent and fails the test.
    fn exit_within_or_panic(&mut self, within: Duration, after: &str) -> ExitStatus {
        match self.wait_exit_within(within) {
            Some(status) => status,
            None => {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                panic!(
                    "agent did not exit within {within:?}{after}; log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Sends SIGHUP (reload the config).
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Minimal HTTP/1.0 request without body (e.g. `POST /-/reload`); None when the agent
    /// does not answer. A reload answers after the pipeline drained: generous timeout.
    pub fn request(&self, method: &str, path: &str) -> Option<(u16, String)> {
        testkit::http_request(&self.http, method, path, Duration::from_secs(120))
    }

    /// The config file the agent runs with (for `log-capturer dlq -c`).
    pub fn config_path(&self) -> &Path {
        &self.options_config
    }

    pub fn out_file(&self, container_name: &str) -> PathBuf {
        self.dir.join("out").join(format!("{container_name}.log"))
    }

    /// Records written for a container, parsed. A last line without its newline is one the
    /// agent is writing right now (a write-out can end inside a record): it is left for the
    /// next look, not parsed.
    pub fn records(&self, container_name: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.out_file(container_name)).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON {l:?}: {e}")))
            .collect()
    }

    /// The `message` of each record.
    pub fn messages(&self, container_name: &str) -> Vec<String> {
        self.records(container_name)
            .iter()
            .map(|r| r["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The messages of one stream (`stdout`, `stderr`) of a container's records.
    pub fn stream_messages(&self, container_name: &str, stream: &str) -> Vec<String> {
        self.records(container_name)
            .iter()
            .filter(|r| r["stream"] == stream)
            .map(|r| r["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agent {
    /// Like `start`, but the agent's stdout is a pipe returned to the caller (who may leave
    /// it unread: the stdout sink then blocks once the pipe is full).
    pub fn start_with_stdout_pipe(
        dir: &Path,
        options: AgentOptions,
    ) -> (Agent, std::process::ChildStdout) {
        // `start_unready` writes the config and spawns a process with stdout to /dev/null:
        // that one is killed at once and whatever it may have left (state, log) removed, so
        // the agent under test starts from scratch with its stdout on the pipe.
        let mut agent = Agent::start_unready(dir, options);
        if let Some(mut first) = agent.child.take() {
            let _ = first.kill();
            let _ = first.wait();
        }
        let _ = std::fs::remove_dir_all(dir.join("state"));
        let _ = std::fs::remove_file(dir.join("agent.log"));
        let stdout = agent.spawn_process_with_piped_stdout();
        agent.wait_ready();
        (agent, stdout)
    }

    fn spawn_process_with_piped_stdout(&mut self) -> std::process::ChildStdout {
        let mut child = self.spawn_child(Stdio::piped());
        let stdout = child.stdout.take().expect("stdout pipe");
        self.child = Some(child);
        stdout
    }

    /// Starts the same agent again (same config and state) with its stdout on a new pipe;
    /// waits until `/ready`.
    pub fn restart_with_stdout_pipe(&mut self) -> std::process::ChildStdout {
        assert!(self.child.is_none(), "agent still running");
        let stdout = self.spawn_process_with_piped_stdout();
        self.wait_ready();
        stdout
    }

    /// Sends SIGTERM and waits (up to 60 s) for the exit.
    pub fn terminate_within_60s(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.exit_within_or_panic(Duration::from_secs(60), " of SIGTERM")
    }
}

/// Options for the agent on a fake Engine API (`engine`): every container read from its first
/// line, then the `capture` lines (YAML under `capture:`, or empty); the other options default.
pub fn fake_engine_options(engine: &super::fake_engine::FakeEngine, capture: &str) -> AgentOptions {
    AgentOptions {
        docker_host: Some(engine.docker_host()),
        capture: format!("  initial_position: beginning\n{capture}"),
        ..AgentOptions::default()
    }
}

/// The agent on a fake Engine API (`engine`), reading every container from its first line and
/// writing only to `sinks` (a YAML `sinks:` body; no file sink).
pub fn start_on_fake_engine(
    dir: &Path,
    engine: &super::fake_engine::FakeEngine,
    sinks: &str,
) -> Agent {
    Agent::start(
        dir,
        AgentOptions {
            file_sink: false,
            sinks: sinks.to_string(),
            ..fake_engine_options(engine, "")
        },
    )
}
