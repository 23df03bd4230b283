//! The status API (`/api/v1/containers`, `/api/v1/sinks`, `/api/v1/config`), the per-container
//! lag metric and `log-capturer status`, end to end: real dockerd, the real agent binary.
//! Every assertion is on counts, cursors and exit codes, never on how long something took.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::agent::{Agent, AgentOptions};
use support::docker::{Containers, docker};
use support::loki::{LokiReceiver, Mode};
use support::tempdir;
use support::wait_until;

const WAIT: Duration = Duration::from_secs(60);

fn get_json(agent: &Agent, path: &str) -> Value {
    let (status, body) = agent
        .get(path)
        .unwrap_or_else(|| panic!("{path}: no answer; log:\n{}", agent.log()));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

/// The element named `name` of the array at `path`, if listed.
fn find(agent: &Agent, path: &str, name: &str) -> Option<Value> {
    get_json(agent, path)
        .as_array()
        .expect("an array")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

fn container(agent: &Agent, name: &str) -> Option<Value> {
    find(agent, "/api/v1/containers", name)
}

fn sink(agent: &Agent, name: &str) -> Option<Value> {
    find(agent, "/api/v1/sinks", name)
}

/// `log-capturer status ARGS`: (exit code, stdout, stderr).
fn status_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .arg("status")
        .args(args)
        .output()
        .expect("run log-capturer status");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The checkpoint file of a container, once written.
fn checkpoint(agent: &Agent, id: &str) -> Option<Value> {
    let path = agent
        .dir
        .join("state")
        .join("checkpoints")
        .join(format!("{id}.json"));
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn lag_series(agent: &Agent, name: &str) -> Option<f64> {
    agent
        .metrics()
        .get(&format!(
            "log_capturer_container_lag_seconds{{container_name=\"{name}\"}}"
        ))
        .copied()
}

fn print_lines(prefix: &str, n: usize) -> String {
    format!("i=1; while [ $i -le {n} ]; do echo {prefix}-$i; i=$((i+1)); done; exec sleep 3600")
}

/// Two containers write lines: once acknowledged, each is listed with its exact line count,
/// nothing pending and lag 0, and its acknowledged cursor is the checkpoint. A removed one
/// disappears from the JSON and from the lag metric. `log-capturer status` exits 0.
#[test]
fn containers_are_listed_with_exact_counts_and_acknowledged_cursors() {
    let mut containers = Containers::new("status-c");
    let dir = tempdir();
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            capture: containers.include_yaml(),
            ..AgentOptions::default()
        },
    );
    let (a, b) = (containers.name("sa"), containers.name("sb"));
    let id_a = containers.run("sa", &["--network", "none"], &print_lines("a", 300));
    let id_b = containers.run("sb", &["--network", "none"], &print_lines("b", 120));

    let settled = |name: &str, n: u64| {
        container(&agent, name).is_some_and(|c| c["lines"] == n && c["pending"] == false)
    };
    assert!(
        wait_until(WAIT, || settled(&a, 300) && settled(&b, 120)),
        "containers not settled: {:#}; log:\n{}",
        get_json(&agent, "/api/v1/containers"),
        agent.log()
    );
    assert_eq!(agent.records(&a).len(), 300);
    for (name, id) in [(&a, &id_a), (&b, &id_b)] {
        let c = container(&agent, name).expect("listed");
        assert_eq!(c["id"], id.as_str());
        assert_eq!(c["image"], support::docker::IMAGE);
        assert_eq!(c["state"], "running");
        assert_eq!(c["lag_seconds"], 0.0, "{c:#}");
        assert_eq!(c["errors"], 0, "{c:#}");
        assert_eq!(c["acknowledged"], c["delivered"], "{c:#}");
        assert!(c["stream_open_since"].is_string(), "{c:#}");
        assert_eq!(c["rotation_overdue"], false, "{c:#}");
        assert!(c["pipeline"].is_null(), "no pipeline applies: {c:#}");
        // The last acknowledged line is the last line the container wrote.
        let last = c["acknowledged"]["last_line_ns"].as_i64().expect("a line");
        let records = agent.records(name);
        let newest = records.last().expect("records")["timestamp"]
            .as_str()
            .expect("timestamp")
            .to_string();
        assert_eq!(c["acknowledged"]["last_line"], newest.as_str(), "{c:#}");
        assert!(last > 0);
        // The acknowledged cursor is what the checkpoint holds (written within its interval).
        let same = wait_until(WAIT, || {
            checkpoint(&agent, id).is_some_and(|f| {
                f["timestamp_ns"] == c["acknowledged"]["timestamp_ns"]
                    && f["count"] == c["acknowledged"]["count"]
                    && f["streams"] == c["acknowledged"]["streams"]
            })
        });
        assert!(
            same,
            "checkpoint {:?} != acknowledged {:#}",
            checkpoint(&agent, id),
            c["acknowledged"]
        );
        assert_eq!(lag_series(&agent, name), Some(0.0));
    }
    assert_eq!(
        sink(&agent, "file").map(|s| s["failing"].clone()),
        Some(Value::Bool(false))
    );

    let url = format!("http://{}", agent.http);
    let (code, out, err) = status_cli(&["--url", &url]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(&a) && out.contains(&b), "{out}");
    assert!(out.contains("\nhealthy\n"), "{out}");
    // The same through the agent's config file (its http.listen), as raw JSON.
    let config = agent.config_path().display().to_string();
    let (code, out, err) = status_cli(&["-c", &config, "--json"]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    let lines: Vec<(String, u64)> = report["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["lines"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(lines.contains(&(a.clone(), 300)) && lines.contains(&(b.clone(), 120)));

    // Removed: gone from the JSON and from the lag metric.
    docker(&["rm", "-f", &b]);
    let gone = wait_until(WAIT, || {
        container(&agent, &b).is_none() && lag_series(&agent, &b).is_none()
    });
    assert!(gone, "{b} still listed; log:\n{}", agent.log());
    assert!(container(&agent, &a).is_some());
    assert_eq!(lag_series(&agent, &a), Some(0.0));
}

/// A Loki sink answering 500: `/api/v1/sinks` shows it failing, the container's lines stay
/// pending with a lag, `log-capturer status` exits 1 and names the sink; once Loki accepts
/// again, all is delivered and the status exits 0. `/api/v1/config` shows no password.
#[test]
fn a_failing_sink_makes_status_fail_and_the_config_is_redacted() {
    let rx = LokiReceiver::start();
    rx.set_mode(Mode::Status {
        code: 500,
        retry_after: None,
        body: "ingester down".to_string(),
    });
    let mut containers = Containers::new("status-l");
    let dir = tempdir();
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            capture: containers.include_yaml(),
            // Never spilled to the on-disk buffer during the test: the lines stay pending.
            sinks: format!(
                "  loki:\n    url: {}\n    basic_auth: {{ username: agent, password: pw-s3cret-9 }}\n    \
                 batch:\n      max_wait: 100ms\n    retry:\n      initial: 100ms\n      max: 1s\n    \
                 buffer:\n      spill_after: 1h\n",
                rx.push_url()
            ),
            ..AgentOptions::default()
        },
    );

    let config = get_json(&agent, "/api/v1/config");
    let text = config.to_string();
    assert!(!text.contains("pw-s3cret-9"), "{text}");
    assert_eq!(config["sinks"]["loki"]["basic_auth"]["password"], "***");
    assert_eq!(config["sinks"]["loki"]["basic_auth"]["username"], "agent");
    assert_eq!(config["sinks"]["loki"]["url"], rx.push_url().as_str());

    let name = containers.name("sl");
    containers.run("sl", &["--network", "none"], &print_lines("l", 50));
    let failing = wait_until(WAIT, || {
        sink(&agent, "loki").is_some_and(|s| s["failing"] == true)
            && container(&agent, &name).is_some_and(|c| c["lines"] == 50)
    });
    assert!(failing, "loki not failing; log:\n{}", agent.log());
    let s = sink(&agent, "loki").expect("loki");
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("5xx")),
        "{s:#}"
    );
    assert!(s["failing_since"].is_string() && s["failures"].as_u64() >= Some(1));
    assert!(s["in_flight_batches"].as_u64() >= Some(1), "{s:#}");
    assert!(s["queue_bytes"].as_u64() > Some(0), "{s:#}");
    assert_eq!(s["buffered_records"], 0, "{s:#}");
    assert_eq!(s["dead_letters"], 0, "{s:#}");
    let c = container(&agent, &name).expect("listed");
    assert_eq!(c["pending"], true, "{c:#}");
    assert!(c["lag_seconds"].as_f64() > Some(0.0), "{c:#}");
    assert_ne!(c["acknowledged"], c["delivered"], "{c:#}");
    assert!(lag_series(&agent, &name) > Some(0.0));

    let url = format!("http://{}", agent.http);
    let (code, out, err) = status_cli(&["--url", &url]);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("\nPROBLEMS\nsink loki failing since"), "{out}");
    assert!(out.contains(&name), "{out}");

    rx.set_mode(Mode::Accept);
    let recovered = wait_until(WAIT, || {
        sink(&agent, "loki").is_some_and(|s| s["failing"] == false && s["in_flight_batches"] == 0)
            && container(&agent, &name).is_some_and(|c| c["pending"] == false)
    });
    assert!(recovered, "not recovered; log:\n{}", agent.log());
    assert_eq!(rx.lines().len(), 50);
    let c = container(&agent, &name).expect("listed");
    assert_eq!(c["lag_seconds"], 0.0, "{c:#}");
    let (code, out, err) = status_cli(&["--url", &url]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
}

/// Nothing answers at the address: the "no status" code, distinct from "unhealthy".
#[test]
fn status_without_an_agent_exits_3() {
    let port = log_capturer_testkit::free_port().expect("port");
    let (code, out, err) = status_cli(&["--url", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, Some(3), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("cannot get the agent's status"), "{err}");
}
