//! The agent itself as a container on the real dockerd, as the README's "Running in Docker"
//! says to run it: the image of the Dockerfile (built here by scripts/build-agent-image with
//! `docker import`, since no registry is reachable), a non-root user given the socket's group
//! with --group-add, the socket mounted read-only, checkpoints in a named volume, a read-only
//! root filesystem without capabilities (as deploy/docker-compose.yml runs it),
//! `--network none` (it only talks to the socket), NDJSON on stdout read with `docker logs`.
//! It must capture every line of the other containers exactly once, across a `docker stop` /
//! `docker start` of itself (resuming from the volume), and never its own lines, although its
//! container matches the include filter: it must find its own container id and say so.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::docker::{Containers, docker};
use support::release::fresh_release_binary;
use support::wait_until;

const LINES: usize = 300;

/// The binary to put in the image: `LC_AGENT_BINARY`, else the release binary when it is at
/// least as new as every source file (`bash scripts/test` builds it before the tests), else
/// the test build of the same sources.
fn agent_binary() -> PathBuf {
    if let Some(explicit) = std::env::var_os("LC_AGENT_BINARY") {
        return PathBuf::from(explicit);
    }
    fresh_release_binary().unwrap_or_else(|| {
        let test_build = PathBuf::from(env!("CARGO_BIN_EXE_log-capturer"));
        println!(
            "target/release/log-capturer is missing or older than the sources: the image gets \
             the test build {} (same code, unoptimised)",
            test_build.display()
        );
        test_build
    })
}

/// The agent's image, container and state volume; all removed on drop.
struct AgentContainer {
    image: String,
    name: String,
    volume: String,
}

impl AgentContainer {
    fn logs(&self) -> (String, String) {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .expect("docker logs");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Records on the agent's stdout, by container name → messages in order.
    fn records(&self) -> (Vec<serde_json::Value>, BTreeMap<String, Vec<String>>) {
        let (stdout, _) = self.logs();
        let records: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON {l:?}: {e}")))
            .collect();
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &records {
            by_name
                .entry(r["container_name"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(r["message"].as_str().unwrap_or_default().to_string());
        }
        (records, by_name)
    }

    fn exit_code(&self) -> String {
        docker(&["inspect", "--format", "{{.State.ExitCode}}", &self.name])
    }
}

impl Drop for AgentContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume])
            .output();
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.image])
            .output();
    }
}

fn lines_script(prefix: &str) -> String {
    format!(
        "i=1; while [ $i -le {LINES} ]; do echo \"{prefix} $i\"; i=$((i+1)); done; exec sleep 3600"
    )
}

fn expected(prefix: &str) -> Vec<String> {
    (1..=LINES).map(|i| format!("{prefix} {i}")).collect()
}

#[test]
fn the_agent_as_a_container_captures_the_others_exactly_and_never_itself() {
    let mut containers = Containers::new("container");
    let pid = std::process::id();
    let agent = AgentContainer {
        image: format!("lc-agent-test:{pid}"),
        name: format!("lc-agent-{pid}"),
        volume: format!("lc-agent-state-{pid}"),
    };
    let binary = agent_binary();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-agent-image");
    let built = Command::new("bash")
        .arg(script)
        .arg(&agent.image)
        .arg(&binary)
        .output()
        .expect("run scripts/build-agent-image");
    assert!(
        built.status.success(),
        "scripts/build-agent-image failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    println!("image {} from {}", agent.image, binary.display());
    let user = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        &agent.image,
    ]);
    assert_eq!(
        user, "10001:10001",
        "the image must run as the non-root user"
    );
    docker(&["volume", "create", &agent.volume]);

    let a = containers.name("a");
    let b = containers.name("b");
    containers.run("a", &["--network", "none"], &lines_script("a"));
    containers.run("b", &["--network", "none"], &lines_script("b"));

    // The test's include filter, so other tests' containers stay out; the agent's own
    // container carries the same label, so only its own-id detection keeps it out.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "capture:\n{}  initial_position: beginning\n\
             sinks:\n  stdout: {{}}\n\
             pipeline:\n  flush_interval: 50ms\n\
             checkpoint:\n  state_dir: /var/lib/log-capturer\n  interval: 1s\n\
             http:\n  listen: 0.0.0.0:8001\n",
            containers.include_yaml()
        ),
    )
    .expect("config");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod config");
    let socket_gid = std::fs::metadata("/var/run/docker.sock")
        .expect("/var/run/docker.sock")
        .gid()
        .to_string();
    let config_mount = format!("{}:/etc/log-capturer/config.yaml:ro", config.display());
    let state_mount = format!("{}:/var/lib/log-capturer", agent.volume);
    let agent_id = docker(&[
        "run",
        "-d",
        "--name",
        &agent.name,
        "--label",
        &containers.label,
        "--network",
        "none",
        // As deploy/docker-compose.yml runs it.
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--group-add",
        &socket_gid,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock:ro",
        "-v",
        &state_mount,
        "-v",
        &config_mount,
        &agent.image,
    ]);

    let complete = |names: &[&str], agent: &AgentContainer| {
        let (_, by_name) = agent.records();
        names
            .iter()
            .all(|n| by_name.get(*n).is_some_and(|m| m.len() >= LINES))
    };
    let captured = wait_until(Duration::from_secs(120), || complete(&[&a, &b], &agent));
    assert!(
        captured,
        "the agent did not capture both containers; its log:\n{}",
        agent.logs().1
    );
    let (_, stderr) = agent.logs();
    let announced = stderr.lines().any(|l| {
        l.contains("running in a container; it is never captured") && l.contains(&agent_id)
    });
    assert!(
        announced,
        "the agent did not report its own container id {agent_id}; log:\n{stderr}"
    );

    // The image's health check (Dockerfile HEALTHCHECK, compose healthcheck): the binary asks
    // its own status API; `docker` fails the test on a non-zero exit.
    let status = docker(&[
        "exec",
        &agent.name,
        "/usr/local/bin/log-capturer",
        "status",
        "--url",
        "http://127.0.0.1:8001",
    ]);
    assert!(
        status.contains(&a) && status.contains(&b),
        "status:\n{status}"
    );

    // Stop (SIGTERM: clean, exit 0) and start again: the checkpoints in the volume carry over.
    docker(&["stop", "--time", "30", &agent.name]);
    assert_eq!(agent.exit_code(), "0", "log:\n{}", agent.logs().1);
    let c = containers.name("c");
    containers.run("c", &["--network", "none"], &lines_script("c"));
    docker(&["start", &agent.name]);
    let captured = wait_until(Duration::from_secs(120), || complete(&[&c], &agent));
    assert!(
        captured,
        "the restarted agent did not capture the new container; its log:\n{}",
        agent.logs().1
    );
    docker(&["stop", "--time", "30", &agent.name]);
    assert_eq!(agent.exit_code(), "0", "log:\n{}", agent.logs().1);

    let (records, by_name) = agent.records();
    let own: Vec<_> = records
        .iter()
        .filter(|r| r["container_id"].as_str() == Some(agent_id.as_str()))
        .collect();
    assert!(own.is_empty(), "the agent captured itself: {own:?}");
    let names: Vec<&String> = by_name.keys().collect();
    assert_eq!(names, [&a, &b, &c], "captured containers");
    assert_eq!(by_name[&a], expected("a"), "container a");
    assert_eq!(
        by_name[&b],
        expected("b"),
        "container b (after the restart too)"
    );
    assert_eq!(by_name[&c], expected("c"), "container c");
    for name in [&a, &b, &c] {
        let served = docker(&["logs", name]);
        assert_eq!(
            served.lines().collect::<Vec<_>>(),
            by_name[name],
            "against docker logs {name}"
        );
    }
    println!(
        "agent container {agent_id}: {} records, {LINES} per container, none of its own",
        records.len()
    );
}
