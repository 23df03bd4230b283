//! The Loki sink end to end: real dockerd, the real agent binary, and the Loki-compatible test
//! receiver (tests/support/loki.rs) driven through outages, rejections and a SIGKILL.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use support::agent::{Agent, AgentOptions};
use support::docker::{Containers, printer};
use support::loki::{LokiReceiver, Mode};
use support::tempdir;
use support::wait_until;

/// Lines Loki accepted for one container, in arrival order.
fn received(rx: &LokiReceiver, container: &str) -> Vec<String> {
    rx.entries()
        .into_iter()
        .filter(|e| e.labels.get("container_name").map(String::as_str) == Some(container))
        .map(|e| e.line)
        .collect()
}

fn cli(agent: &Agent, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .arg("dlq")
        .arg("-c")
        .arg(agent.config_path())
        .args(args)
        .output()
        .expect("run log-capturer dlq");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn loki_sink(rx: &LokiReceiver, extra: &str) -> String {
    format!(
        "  loki:\n    url: {}\n    batch:\n      max_wait: 200ms\n    retry:\n      initial: 200ms\n      max: 2s\n{extra}",
        rx.push_url()
    )
}

/// Options for the agent capturing `containers`, writing to the file sink and to Loki at `rx`
/// (`extra`: more keys for `loki_sink`).
fn loki_options(containers: &Containers, rx: &LokiReceiver, extra: &str) -> AgentOptions {
    AgentOptions {
        capture: containers.include_yaml(),
        sinks: loki_sink(rx, extra),
        ..AgentOptions::default()
    }
}

#[test]
fn outage_503_then_down_delivers_every_line_once_in_order_within_budget() {
    let rx = LokiReceiver::start();
    let mut containers = Containers::new("lokiout");
    let dir = tempdir();
    let budget: f64 = 64.0 * 1024.0;
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            pipeline: "  queue_bytes: 64KiB\n".to_string(),
            ..loki_options(
                &containers,
                &rx,
                "    tenant: acme\n    buffer:\n      spill_after: 5s\n      fsync: never\n",
            )
        },
    );
    let name = containers.name("lokiout");
    let n = 2500;
    // ~500-byte lines, 50 per second: the 64 KiB budget fills within seconds of an outage.
    containers.run(
        "lokiout",
        &[],
        &format!(
            "pad=$(head -c 480 /dev/zero | tr '\\0' p); i=1; while [ $i -le {n} ]; do echo \"o-$i $pad\"; i=$((i+1)); usleep 20000; done; exec sleep 3600"
        ),
    );
    let mut max_queue = 0.0f64;
    let mut watch = |until: Instant| {
        while Instant::now() < until {
            max_queue = max_queue.max(agent.metric("log_capturer_queue_bytes"));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let t0 = Instant::now();
    watch(t0 + Duration::from_secs(5));
    rx.set_mode(Mode::Status {
        code: 503,
        retry_after: None,
        body: "ingester unavailable".to_string(),
    });
    watch(t0 + Duration::from_secs(25));
    rx.set_mode(Mode::Down);
    watch(t0 + Duration::from_secs(45));
    rx.set_mode(Mode::Accept);
    let all = wait_until(Duration::from_secs(120), || {
        max_queue = max_queue.max(agent.metric("log_capturer_queue_bytes"));
        received(&rx, &name).len() >= n
    });
    let got = received(&rx, &name);
    assert!(
        all,
        "only {} of {n} lines reached Loki; log:\n{}",
        got.len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let got: Vec<String> = received(&rx, &name)
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (1..=n).map(|i| format!("o-{i}")).collect();
    if got != expected {
        let set: HashSet<&String> = got.iter().collect();
        let missing = expected.iter().filter(|e| !set.contains(e)).count();
        panic!(
            "{} lines received for {n}: {missing} missing, {} duplicated or out of order",
            got.len(),
            got.len() + missing - n
        );
    }
    let m = agent.metrics();
    let metric = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert!(metric("log_capturer_sink_failures_total{sink=\"loki\",reason=\"5xx\"}") >= 1.0);
    assert!(metric("log_capturer_sink_failures_total{sink=\"loki\",reason=\"connect\"}") >= 1.0);
    assert!(metric("log_capturer_sink_retries_total{sink=\"loki\"}") >= 1.0);
    assert_eq!(metric("log_capturer_queue_budget_bytes"), budget);
    assert!(
        max_queue <= budget,
        "queue held {max_queue} bytes, budget {budget}"
    );
    assert!(max_queue > 0.0);
    assert!(
        rx.requests()
            .iter()
            .all(|r| r.tenant.as_deref() == Some("acme"))
    );
    // The file sink, fed by the same pipeline, got every line exactly once too.
    assert_eq!(agent.records(&name).len(), n);
    println!(
        "loki outage: {n} lines exactly once and in order through 20 s of 503 and 20 s down; \
         queue peak {max_queue} of {budget} bytes; 5xx failures {}, connect failures {}, retries {}, \
         batches {}",
        metric("log_capturer_sink_failures_total{sink=\"loki\",reason=\"5xx\"}"),
        metric("log_capturer_sink_failures_total{sink=\"loki\",reason=\"connect\"}"),
        metric("log_capturer_sink_retries_total{sink=\"loki\"}"),
        metric("log_capturer_sink_batches_total{sink=\"loki\"}"),
    );
}

#[test]
fn sigkill_with_buffered_batches_then_restart_delivers_everything() {
    let rx = LokiReceiver::start();
    rx.set_mode(Mode::Down);
    let mut containers = Containers::new("lokikill");
    let dir = tempdir();
    let mut agent = Agent::start(
        dir.path(),
        loki_options(&containers, &rx, "    buffer:\n      spill_after: 1s\n"),
    );
    let name = containers.name("lokikill");
    let n = 1000;
    containers.run("lokikill", &[], &printer("k-", n, 2000));
    // Everything captured and acknowledged by both sinks (Loki's share via its disk buffer).
    let acked = wait_until(Duration::from_secs(60), || {
        agent.records(&name).len() >= n
            && agent.metric("log_capturer_queue_lines") == 0.0
            && agent.metric("log_capturer_buffer_batches{sink=\"loki\"}") >= 1.0
    });
    assert!(acked, "lines not buffered; log:\n{}", agent.log());
    std::thread::sleep(Duration::from_millis(2500)); // > 2 checkpoint intervals
    let buffered = agent.metric("log_capturer_buffer_batches{sink=\"loki\"}");
    agent.kill();
    // A torn tail, as a crash in the middle of an append would leave: detected, reported,
    // skipped; everything before it is replayed.
    let segments = dir.path().join("state/buffer/loki");
    let last = std::fs::read_dir(&segments)
        .expect("buffer dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .expect("a segment");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .expect("segment");
        f.write_all(&[200, 1, 0, 0, 9, 9, 9, 9, 1, 2, 3])
            .expect("torn tail");
    }
    rx.set_mode(Mode::Accept);
    agent.restart();
    let all = wait_until(Duration::from_secs(60), || {
        received(&rx, &name).iter().collect::<HashSet<_>>().len() >= n
    });
    assert!(
        all,
        "after restart only {} lines; log:\n{}",
        received(&rx, &name).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let got = received(&rx, &name);
    let expected: Vec<String> = (1..=n).map(|i| format!("k-{i}")).collect();
    // Acknowledged and checkpointed before the kill: replayed from disk, never re-read.
    assert_eq!(
        got, expected,
        "every line once, in order, from the buffer of the killed agent"
    );
    println!(
        "loki sigkill: {buffered} buffered batches survived SIGKILL; {n} lines delivered once after restart"
    );
}

#[test]
fn rejected_batch_becomes_a_dead_letter_and_can_be_replayed() {
    let rx = LokiReceiver::start();
    rx.set_mode(Mode::Status {
        code: 400,
        retry_after: None,
        body: "entry too far behind".to_string(),
    });
    let mut containers = Containers::new("lokidlq");
    let dir = tempdir();
    let mut agent = Agent::start(dir.path(), loki_options(&containers, &rx, ""));
    let name = containers.name("lokidlq");
    containers.run(
        "lokidlq",
        &[],
        "echo first-1; echo first-2; echo first-3; sleep 4; echo second-1; echo second-2; exec sleep 3600",
    );
    assert!(wait_until(Duration::from_secs(30), || {
        agent.metric("log_capturer_dead_letters_total{sink=\"loki\",reason=\"400\"}") >= 1.0
    }));
    rx.set_mode(Mode::Accept);
    assert!(
        wait_until(Duration::from_secs(30), || received(&rx, &name).len() >= 2),
        "later batches not delivered; log:\n{}",
        agent.log()
    );
    assert_eq!(received(&rx, &name), ["second-1", "second-2"]);
    assert_eq!(
        agent.metric("log_capturer_dead_letters_total{sink=\"loki\",reason=\"400\"}"),
        1.0
    );
    assert!(agent.terminate().success());

    let (ok, list) = cli(&agent, &["list"]);
    assert!(ok, "{list}");
    assert!(list.contains("400: entry too far behind"), "{list}");
    let id = list
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a dead letter id")
        .to_string();
    let (ok, shown) = cli(&agent, &["show", &id]);
    assert!(
        ok && shown.contains("first-1") && shown.contains("first-3"),
        "{shown}"
    );
    let (ok, replayed) = cli(&agent, &["replay"]);
    assert!(ok && replayed.contains("replayed 1"), "{replayed}");
    let got: HashSet<String> = received(&rx, &name).into_iter().collect();
    for l in ["first-1", "first-2", "first-3", "second-1", "second-2"] {
        assert!(got.contains(l), "{l} missing after replay");
    }
    let (ok, list) = cli(&agent, &["list"]);
    assert!(ok && list.contains("no dead letters"), "{list}");
    let (ok, purged) = cli(&agent, &["purge"]);
    assert!(ok && purged.contains("purged 0"), "{purged}");
}

#[test]
fn json_gzip_auth_headers_labels_and_metadata() {
    let rx = LokiReceiver::start();
    let mut containers = Containers::new("lokijson");
    let dir = tempdir();
    // Kept alive for the duration of the test (dropping it stops the agent).
    let _agent = Agent::start(
        dir.path(),
        loki_options(
            &containers,
            &rx,
            "    encoding: json\n    gzip: true\n    basic_auth: { username: u, password: p }\n    headers: { X-Test: yes }\n    static_labels: { env: test }\n    host: node-7\n",
        ),
    );
    let name = containers.name("lokijson");
    let id = containers.run(
        "lokijson",
        &[],
        "echo out-1; echo err-1 >&2; exec sleep 3600",
    );
    assert!(wait_until(Duration::from_secs(30), || received(&rx, &name)
        .len()
        >= 2));
    let entries: Vec<_> = rx
        .entries()
        .into_iter()
        .filter(|e| e.labels.get("container_name") == Some(&name))
        .collect();
    let out = entries
        .iter()
        .find(|e| e.line == "out-1")
        .expect("stdout line");
    let err = entries
        .iter()
        .find(|e| e.line == "err-1")
        .expect("stderr line");
    assert_eq!(out.labels.get("stream").map(String::as_str), Some("stdout"));
    assert_eq!(err.labels.get("stream").map(String::as_str), Some("stderr"));
    assert_eq!(out.labels.get("env").map(String::as_str), Some("test"));
    assert_eq!(out.labels.get("host").map(String::as_str), Some("node-7"));
    assert!(
        !out.labels.contains_key("container_id"),
        "ids are not labels"
    );
    assert_eq!(out.metadata.get("container_id"), Some(&id));
    assert_eq!(
        out.metadata.get("image").map(String::as_str),
        Some("lc-test:busybox")
    );
    let req = rx
        .requests()
        .into_iter()
        .find(|r| r.status == 204)
        .expect("a request");
    assert!(req.content_type.starts_with("application/json"));
    assert_eq!(req.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(req.authorization.as_deref(), Some("Basic dTpw"));
    assert_eq!(req.header("x-test"), Some("yes"));
}
