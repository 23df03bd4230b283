//! The real agent against a fake Docker Engine (tests/support/fake_engine.rs), for faults a real
//! daemon cannot be made to show on demand: a stream that never sends anything, a connection
//! reset in the middle of a frame, log drivers that cannot be read, containers being removed,
//! an events stream that drops, a daemon that is not there yet.
//!
//! The tests are grouped in `fake_engine/` (modules of this one test binary): `streams`,
//! `daemon`, `gone`; the containers whose logs cannot be read, and the helpers, stay here.

mod support;

use std::time::{Duration, Instant};

use support::agent::{Agent, AgentOptions, fake_engine_options};
use support::fake_engine::{BASE_NS, Container, FakeEngine, Line, LogsPlan, now_ns, stamp};
use support::wait_until;

#[path = "fake_engine/daemon.rs"]
mod daemon;
#[path = "fake_engine/gone.rs"]
mod gone;
#[path = "fake_engine/streams.rs"]
mod streams;

/// `count` stdout lines "<prefix> NNN", `per_stamp` of them sharing each timestamp
/// (1 ms apart, from BASE + 1 s).
fn numbered_lines(prefix: &str, count: usize, per_stamp: usize) -> Vec<Line> {
    (0..count)
        .map(|i| {
            let ts = BASE_NS + 1_000_000_000 + (i / per_stamp) as i64 * 1_000_000;
            Line::stdout(ts, format!("{prefix} {:03}", i + 1))
        })
        .collect()
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines.iter().map(|l| l.text.clone()).collect()
}

/// Lines of the agent's diagnostics at WARN level that mention `needle`.
fn warnings_mentioning(agent: &Agent, needle: &str) -> Vec<String> {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn assert_healthy(agent: &Agent) {
    let health = agent.get("/health");
    assert!(
        health.as_ref().is_some_and(|(status, _)| *status == 200),
        "/health answered {health:?}; log:\n{}",
        agent.log()
    );
}

fn assert_clean_exit(agent: &mut Agent) {
    let status = agent.terminate();
    assert!(
        status.success(),
        "agent exited with {status}; log:\n{}",
        agent.log()
    );
}

/// `--log-driver none` answers 501: warn once, count the container unreadable, do not retry —
/// until the container starts again.
#[test]
fn log_driver_none_501_warns_once_and_does_not_retry() {
    let nolog = Container::new(
        "nolog",
        Vec::new(),
        vec![LogsPlan::Status(
            501,
            "configured logging driver does not support reading".into(),
        )],
    );
    let id = nolog.id.clone();
    let engine = FakeEngine::start(vec![nolog]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));

    let unreadable = wait_until(Duration::from_secs(10), || {
        agent.metric("log_capturer_containers_unreadable") == 1.0
    });
    assert!(
        unreadable,
        "containers_unreadable never 1; log:\n{}",
        agent.log()
    );
    // Time for retries to show, if there were any (the back-off starts at 500 ms).
    std::thread::sleep(Duration::from_secs(3));
    let stats = engine.logs_stats(&id);
    assert_eq!(stats.requests, 1, "501 must not be retried: {stats:?}");
    assert_eq!(agent.metric("log_capturer_containers_unreadable"), 1.0);
    assert_eq!(
        agent.metric(
            r#"log_capturer_container_stream_errors_total{reason="unreadable_log_driver"}"#
        ),
        1.0
    );
    let warnings = warnings_mentioning(&agent, "nolog");
    assert_eq!(
        warnings.len(),
        1,
        "expected one warning about nolog: {warnings:#?}"
    );
    assert_healthy(&agent);
    let released = wait_until(Duration::from_secs(5), || engine.logs_stats(&id).open == 0);
    assert!(
        released,
        "the 501 answer's connection was not closed: {:?}",
        engine.logs_stats(&id)
    );

    // The container starts again: one new attempt.
    assert!(
        engine.events_open() >= 1,
        "the agent follows no events stream"
    );
    engine.send_start(&id, "nolog");
    let retried = wait_until(Duration::from_secs(10), || {
        engine.logs_stats(&id).requests >= 2
    });
    assert!(
        retried,
        "no logs request after a start event; log:\n{}",
        agent.log()
    );
    let counted = wait_until(Duration::from_secs(5), || {
        agent
            .metric(r#"log_capturer_container_stream_errors_total{reason="unreadable_log_driver"}"#)
            == 2.0
    });
    assert!(counted, "second 501 not counted; log:\n{}", agent.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        engine.logs_stats(&id).requests,
        2,
        "{:?}",
        engine.logs_stats(&id)
    );
    assert_eq!(
        agent.metric("log_capturer_containers_unreadable"),
        1.0,
        "one container, counted once"
    );
    assert_healthy(&agent);
    assert_clean_exit(&mut agent);
}

/// Found in review: a container removed right after it exits (`docker run --rm`) lost its
/// last multiline group — still open at the first end of stream, and the reopen that would
/// have served it again answered 409. A clean end of stream now ends the open groups.
#[test]
fn the_last_multiline_group_of_a_removed_container_is_delivered() {
    let s = 1_000_000_000;
    let lines = vec![
        Line::stdout(BASE_NS + s, "S0 starting"),
        Line::stdout(BASE_NS + 2 * s, "S1 Exception: boom"),
        Line::stdout(BASE_NS + 2 * s + 1_000, "\tat a.b(C.java:1)"),
    ];
    let mut job = Container::new(
        "rmjob",
        lines,
        vec![
            LogsPlan::End,
            LogsPlan::Status(409, "removal of container in progress".into()),
        ],
    );
    job.running = false;
    let id = job.id.clone();
    let engine = FakeEngine::start(vec![job]);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = AgentOptions {
        processing: "  pipelines:\n    - name: traces\n      stages:\n        - multiline: { start: '^S', flush_after: 1h }\n".to_string(),
        ..fake_engine_options(&engine, "")
    };
    let agent = Agent::start(dir.path(), options);
    engine.send_start(&id, "rmjob");
    let expected = ["S0 starting", "S1 Exception: boom\n\tat a.b(C.java:1)"];
    let done = wait_until(Duration::from_secs(30), || {
        agent.messages("rmjob").len() >= expected.len()
    });
    assert!(
        done,
        "records: {:?}\nlog:\n{}",
        agent.messages("rmjob"),
        agent.log()
    );
    assert_eq!(agent.messages("rmjob"), expected, "log:\n{}", agent.log());
}
