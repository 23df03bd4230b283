//! Containers on the real dockerd, created with the `docker` CLI from an image built by
//! `docker import` of a busybox-static root filesystem (no registry needed).

use std::process::Command;
use std::sync::Once;

use super::agent::{Agent, AgentOptions};

pub const IMAGE: &str = "lc-test:busybox";

/// Runs `docker ARGS`; returns stdout, panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes sure dockerd answers and the test image exists.
pub fn ensure_ready() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        let ok = info.as_ref().is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "no reachable dockerd: run `bash scripts/test`, which installs and starts one"
        );
        let have = Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output();
        if !have.is_ok_and(|o| o.status.success()) {
            let status = Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/build-test-image"
                ))
                .status()
                .expect("run scripts/build-test-image");
            assert!(status.success(), "building the test image failed");
        }
    });
}

/// Containers created by one test, all carrying its label; removed on drop.
pub struct Containers {
    pub label: String,
    names: Vec<String>,
}

impl Containers {
    pub fn new(test: &str) -> Containers {
        ensure_ready();
        let label = format!("lc.test={test}-{}", std::process::id());
        Containers {
            label,
            names: Vec::new(),
        }
    }

    /// The filter that selects exactly this test's containers.
    pub fn include_yaml(&self) -> String {
        format!("  include:\n    labels: [\"{}\"]\n", self.label)
    }

    /// A unique container name for this test.
    pub fn name(&self, short: &str) -> String {
        format!("{short}-{}", std::process::id())
    }

    /// `docker run -d` with the test label; returns the container id.
    pub fn run(&mut self, short: &str, extra: &[&str], script: &str) -> String {
        let name = self.name(short);
        let mut args = vec!["run", "-d", "--name", &name, "--label", &self.label];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        let id = docker(&args);
        self.names.push(name);
        id
    }

    /// `docker create` with the test label (not started); returns the container id.
    pub fn create(&mut self, short: &str, extra: &[&str], script: &str) -> String {
        let name = self.name(short);
        let mut args = vec!["create", "--name", &name, "--label", &self.label];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        let id = docker(&args);
        self.names.push(name);
        id
    }

    pub fn remove_all(&mut self) {
        for name in self.names.drain(..) {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// A container script printing `prefix1 ..= prefixN`, one line every `pause_us` µs, then
/// staying up (`exec sleep 3600`) until the test removes it.
pub fn printer(prefix: &str, n: usize, pause_us: u32) -> String {
    format!("{}; exec sleep 3600", printing_loop(prefix, n, pause_us))
}

/// Like `printer`, but the container exits (status 0) after the last line.
pub fn printer_then_exit(prefix: &str, n: usize, pause_us: u32) -> String {
    format!("{}; exit 0", printing_loop(prefix, n, pause_us))
}

fn printing_loop(prefix: &str, n: usize, pause_us: u32) -> String {
    format!("i=1; while [ $i -le {n} ]; do echo {prefix}$i; usleep {pause_us}; i=$((i+1)); done")
}

/// Agent options that capture only `containers` (by their label), with `extra_capture` keys
/// added to the `capture` section.
pub fn options_for(containers: &Containers, extra_capture: &str) -> AgentOptions {
    AgentOptions {
        capture: format!("{}{}", containers.include_yaml(), extra_capture),
        ..AgentOptions::default()
    }
}

/// The usual start of a docker test: its containers (labelled for `test`), a fresh state
/// directory, and the agent capturing only those containers with `options_for(extra_capture)`.
/// Keep the directory bound (`_dir`) for as long as the agent runs.
pub fn start_agent_for(test: &str, extra_capture: &str) -> (Containers, tempfile::TempDir, Agent) {
    let containers = Containers::new(test);
    let dir = super::tempdir();
    let agent = Agent::start(dir.path(), options_for(&containers, extra_capture));
    (containers, dir, agent)
}
