//! A dockerd the suite owns, for the faults that restart or kill the daemon (scenarios 3, 4)
//! or need its debug log (9). The host's daemon is shared and is never touched.
//!
//! How it is started, and why:
//! - its own `--host unix://…/docker.sock`, `--data-root`, `--exec-root` and `--pidfile`,
//!   so nothing is shared with the host's daemon. The socket and the exec root live under a
//!   short directory of their own in /tmp (`lcfd-<pid>-<n>`): containerd refuses socket paths
//!   over 104 bytes, which a scenario directory under `target/` easily exceeds;
//! - no `--containerd`: like the host's daemon (Debian's docker.io 20.10 runs its own
//!   containerd under `<exec-root>/containerd`), it starts a managed containerd of its own
//!   under its exec root. That containerd goes down with it (SIGTERM or SIGKILL), while the
//!   containers' shims live on; the next start brings up a new containerd that adopts them, so
//!   `--live-restore` keeps containers running across a restart and a kill (checked here);
//! - `--bridge none --iptables=false --ip-masq=false`, inside a network namespace of its own
//!   (`unshare --net`): a daemon started with `--bridge none` deletes the host's `docker0`
//!   bridge, which the host's daemon uses; in its own namespace it can only delete its own.
//!   Every container runs with `--network none` anyway;
//! - `--debug`: the API requests it serves are logged ("Calling GET /v1.41/..."), which is how
//!   scenario 9 counts the agent's requests for one container.
//!
//! Every wait is bounded. `Drop` removes every container, stops the daemon and deletes its
//! directory (keeping its log as `<dir>.log`), also after a failure half-way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::counted;
use crate::ctx::{Agent, Ctx, IMAGE};
use log_capturer_testkit::docker;
use log_capturer_testkit::verify::Tally;

/// How long a start (socket answering) or a stop may take before it counts as failed.
const START_WITHIN: Duration = Duration::from_secs(60);
const STOP_WITHIN: Duration = Duration::from_secs(40);

pub struct Daemon {
    /// Data root, log, pidfile: under the scenario's directory.
    dir: PathBuf,
    /// Socket and exec root: under a short path of its own in /tmp, since containerd's
    /// sockets there must fit a unix address (104 bytes for its debug socket).
    run: PathBuf,
    live_restore: bool,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon under `dir` (created) and loads the test image into it.
    pub fn start(dir: &Path, live_restore: bool) -> Result<Daemon, String> {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = std::env::temp_dir().join(format!("lcfd-{}-{seq}", std::process::id()));
        for d in [dir, &run] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut daemon = Daemon {
            dir: dir.to_path_buf(),
            run,
            live_restore,
            child: None,
        };
        daemon.spawn()?;
        daemon.load_image()?;
        Ok(daemon)
    }

    pub fn socket(&self) -> PathBuf {
        self.run.join("docker.sock")
    }

    /// The endpoint as the agent and `docker -H` take it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The scenario's context, with its agents pointed at this daemon (`DOCKER_HOST`).
    pub fn ctx_for(&self, ctx: &Ctx) -> Ctx {
        Ctx {
            agent_binary: ctx.agent_binary.clone(),
            out_dir: ctx.out_dir.clone(),
            prefix: ctx.prefix.clone(),
            docker_host: Some(self.host()),
            quick: ctx.quick,
        }
    }

    /// The daemon's own log (every run of it, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the daemon process (again, on the same data) and waits until it answers.
    pub fn spawn(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("the suite's dockerd is already running".into());
        }
        let log_path = self.log_path();
        let log = log_capturer_testkit::open_append(&log_path)?;
        let d = &self.dir;
        let mut cmd = Command::new("unshare");
        // `unshare --net` without `--fork` execs dockerd itself: the child *is* the daemon, so
        // its signals and its exit are ours to send and see.
        cmd.args(["--net", "--", "dockerd"])
            .arg(format!("--host={}", self.host()))
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", self.run.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("docker.pid").display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--debug",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("dockerd log: {e}"))?)
            .stderr(log);
        if self.live_restore {
            cmd.arg("--live-restore");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start dockerd (unshare --net dockerd): {e}"))?;
        self.child = Some(child);
        self.wait_answering(START_WITHIN)
    }

    // Same loop as testkit's AgentProcess::wait_ready; kept apart: another probe, pace and
    // texts, and a shared one would need the probe and the child borrowed from one `&mut self`.
    /// Polls `docker version` until the daemon answers; fails early if it exited.
    fn wait_answering(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "the suite's dockerd exited at start ({status}); see {}",
                    self.log_path().display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the suite's dockerd did not answer within {} s; see {}",
                    within.as_secs(),
                    self.log_path().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM (an orderly restart's first half) and the exit, bounded.
    pub fn terminate(&mut self) -> Result<(), String> {
        self.signal_and_reap("TERM", STOP_WITHIN)
    }

    /// SIGKILL and the exit.
    pub fn kill(&mut self) -> Result<(), String> {
        self.signal_and_reap("KILL", Duration::from_secs(10))
    }

    fn signal_and_reap(&mut self, sig: &str, within: Duration) -> Result<(), String> {
        let mut child = self
            .child
            .take()
            .ok_or("the suite's dockerd is not running")?;
        log_capturer_testkit::send_signal(child.id(), sig)?;
        let deadline = Instant::now() + within;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the suite's dockerd did not exit within {} s of SIGTERM (killed)",
                        within.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("waiting for dockerd: {e}")),
            }
        }
        // Its managed containerd follows it; wait for that too, so that the next start does
        // not meet a stale one still holding the socket.
        self.wait_containerd_gone(Duration::from_secs(20));
        Ok(())
    }

    /// Pids of the containerd this daemon manages (found by its config path).
    fn containerd_pids(&self) -> Vec<u32> {
        let needle = self
            .dir
            .join("exec")
            .join("containerd")
            .display()
            .to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                cmdline.starts_with("containerd ") && cmdline.contains(&needle)
            })
            .collect()
    }

    fn wait_containerd_gone(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.containerd_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `docker -H <this daemon> ARGS`: stdout on success, the error text otherwise.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        docker::docker_at(Some(&self.host()), args)
    }

    /// `docker save IMAGE | docker -H … load`: the host daemon's test image, here.
    fn load_image(&self) -> Result<(), String> {
        let script = format!(
            "docker save {IMAGE} | docker -H '{}' load",
            self.host().replace('\'', "")
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .env_remove("DOCKER_HOST")
            .output()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "loading {IMAGE} into the suite's dockerd: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `docker run -d` of the test image here, named `<prefix>-<suffix>`, with `--network
    /// none`, the run's label, `extra` options and `sh -c script`; returns the name.
    pub fn run_container(
        &self,
        ctx: &Ctx,
        suffix: &str,
        extra: &[&str],
        script: &str,
    ) -> Result<String, String> {
        ctx.run_container_with(|args| self.docker(args), suffix, extra, script)
    }

    /// The container's id (full).
    pub fn id(&self, name: &str) -> Result<String, String> {
        self.docker(&["inspect", "--format", "{{.Id}}", name])
    }

    /// `running`, `exited`, `restarting`, ...
    pub fn status(&self, name: &str) -> Result<String, String> {
        self.docker(&["inspect", "--format", "{{.State.Status}}", name])
    }

    /// The daemon's own view of a container's log, per stream (stdout, stderr), in order.
    pub fn served(&self, name: &str) -> Result<(Vec<String>, Vec<String>), String> {
        let served = docker::served_logs_at(Some(&self.host()), name)?;
        Ok((served.stdout, served.stderr))
    }

    /// How many stdout lines each container has served so far.
    pub fn served_counts(&self, names: &[String]) -> Vec<usize> {
        names
            .iter()
            .map(|n| self.served(n).map(|(o, _)| o.len()).unwrap_or(0))
            .collect()
    }

    /// The end of the dockerd scenarios: waits (bounded, 300 s each) until the daemon served
    /// every container's last counted line (`tag_of(i)` is the tag of `names[i]`), then (120 s)
    /// until the agent wrote as many, and accounts them.
    pub fn account_to_the_end(
        &self,
        agent: &Agent,
        names: &[String],
        tag_of: impl Fn(usize) -> String,
        lines: usize,
    ) -> Result<Tally, String> {
        for (i, n) in names.iter().enumerate() {
            let last = counted::last_line(&tag_of(i), lines);
            self.wait_served(n, Duration::from_secs(300), |out| {
                out.last().is_some_and(|l| *l == last)
            })?;
        }
        counted::wait_all(agent, names, |n| self.served(n), Duration::from_secs(120))?;
        counted::account(agent, names, |n| self.served(n))
    }

    /// Polls (bounded) until `done(stdout lines)` holds for the served log of `name`.
    pub fn wait_served(
        &self,
        name: &str,
        within: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((out, _)) = self.served(name)
                && done(&out)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let last = self.served(name).map(|(o, _)| o.last().cloned());
                return Err(format!(
                    "{name}: its log did not reach the expected point within {} s (last line \
                     {last:?}, status {:?})",
                    within.as_secs(),
                    self.status(name)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every container of this daemon, removed.
    pub fn remove_all(&self) -> Result<(), String> {
        let ids = self.docker(&["ps", "-aq"])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            self.docker(&args)?;
        }
        Ok(())
    }

    /// How many API requests for the logs of container `id` the daemon's debug log shows.
    pub fn log_requests(&self, id: &str) -> usize {
        let needle = format!("/containers/{id}/logs");
        self.log()
            .lines()
            .filter(|l| l.contains("Calling GET") && l.contains(&needle))
            .count()
    }
}

impl Drop for Daemon {
    /// Containers, daemon, containerd and files: nothing is left behind.
    fn drop(&mut self) {
        if self.child.is_none() && self.dir.join("data").exists() {
            // Stopped or killed by a scenario and not started again: start it to remove what
            // it holds (with live-restore, containers run on without it).
            let _ = self.spawn();
        }
        if self.child.is_some() {
            let _ = self.remove_all();
            let _ = self.terminate();
        }
        // A containerd left behind (a daemon that failed to stop) is ours to end.
        for pid in self.containerd_pids() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        // Mounts of the data and exec roots (overlay layers, shm, netns) are gone once the
        // daemon stopped; a lazy unmount of what may remain before deleting the trees.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let roots = [
                self.dir.display().to_string(),
                self.run.display().to_string(),
            ];
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| roots.iter().any(|r| m.starts_with(r.as_str())))
                .collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.run);
        // The daemon's log is kept next to where its directory was, for the report.
        let _ = std::fs::rename(self.log_path(), self.dir.with_extension("log"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a daemon started, gone after a scenario left it stopped half-way with a
    /// container running under live-restore: processes, mounts, files.
    #[test]
    #[ignore = "starts a second dockerd (root, docker.io installed): run with --ignored"]
    fn drop_cleans_up_after_a_stop_half_way() {
        let base = std::env::temp_dir().join(format!("lcf-daemon-test-{}", std::process::id()));
        let dir = base.join("d");
        let ctx = Ctx {
            agent_binary: PathBuf::new(),
            out_dir: base.clone(),
            prefix: format!("lcf-dt-{}", std::process::id()),
            docker_host: None,
            quick: true,
        };
        let mut daemon = Daemon::start(&dir, true).expect("start");
        daemon
            .run_container(&ctx, "c", &[], "while true; do sleep 1; done")
            .expect("run");
        daemon.terminate().expect("stop");
        let run = daemon.run.clone();
        let shims = || -> usize {
            let needle = run.display().to_string();
            std::fs::read_dir("/proc")
                .map(|d| {
                    d.flatten()
                        .filter(|e| {
                            std::fs::read(e.path().join("cmdline"))
                                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        assert!(
            shims() > 0,
            "live-restore keeps the container's shim running"
        );
        drop(daemon);
        assert_eq!(shims(), 0, "no process of the daemon's left");
        let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
        for root in [&dir, &run] {
            assert!(
                !mounts.contains(&root.display().to_string()),
                "no mount left"
            );
        }
        assert!(!dir.exists(), "its directory is gone");
        assert!(!run.exists(), "its exec root is gone");
        assert!(dir.with_extension("log").is_file(), "its log is kept");
        let _ = std::fs::remove_dir_all(&base);
    }
}
