//! End-to-end tests against a real dockerd (started by `scripts/test` when none runs), with
//! the real agent binary as a process. Every test selects only its own containers by label.
//!
//! Rotation and long lines are here; `docker_e2e/` holds the `restarts` and `lifecycle` tests
//! (modules of this one test binary).

mod support;

#[path = "docker_e2e/lifecycle.rs"]
mod lifecycle;
#[path = "docker_e2e/restarts.rs"]
mod restarts;

use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::{
    Containers, docker, options_for, printer, printer_then_exit, start_agent_for,
};
use support::tempdir;
use support::{assert_sequence, wait_until};

#[test]
fn idle_rotation_continuity() {
    let (mut containers, _dir, agent) = start_agent_for("idle", "  rotation_interval: 1s\n");
    // Baseline: agent ready, no container of ours yet. Other tests' containers starting on
    // the same daemon make the agent open short-lived sockets (inspect), which only ever add to
    // the counts: the baseline is the lowest of several samples.
    let mut baseline = agent.resources();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        let (t, f) = agent.resources();
        baseline = (baseline.0.min(t), baseline.1.min(f));
    }

    let names: Vec<String> = (0..5)
        .map(|i| containers.name(&format!("idle{i}")))
        .collect();
    for i in 0..5 {
        containers.run(
            &format!("idle{i}"),
            &[],
            "i=1; while [ $i -le 100 ]; do echo idle-$i; i=$((i+1)); done; exec sleep 3600",
        );
    }
    let all_in = wait_until(Duration::from_secs(30), || {
        names.iter().all(|n| agent.records(n).len() >= 100)
    });
    assert!(all_in, "lines did not arrive; log:\n{}", agent.log());
    // Now every stream is idle: keep rotating for ~12 s. Rotation must not leak: the task and
    // FD counts in the middle and at the end of the idle window are the same.
    std::thread::sleep(Duration::from_secs(3));
    let idle_start = agent.resources();
    std::thread::sleep(Duration::from_secs(9));
    let idle_end = agent.resources();
    assert_eq!(
        idle_start, idle_end,
        "(tasks, fds) changed while idle streams rotated"
    );
    let metrics = agent.metrics();
    let mut rotations = Vec::new();
    for n in &names {
        let r = metrics
            .get(&format!(
                "log_capturer_container_stream_rotations_total{{container_name=\"{n}\"}}"
            ))
            .copied()
            .unwrap_or(0.0);
        rotations.push(r);
        assert!(
            r >= 10.0,
            "{n} rotated {r} times in ~12 s idle (expected >= 10)"
        );
        assert_sequence(&agent.messages(n), "idle-", 100, n);
    }
    let busy = idle_end;
    containers.remove_all();
    // Streams end, tasks and FDs (sockets, output files after idle_close) return to baseline.
    let mut last = (0.0, 0.0);
    let back = wait_until(Duration::from_secs(30), || {
        last = agent.resources();
        last == baseline && agent.metric("log_capturer_container_streams_active") == 0.0
    });
    assert!(
        back,
        "resources not back at baseline: baseline (tasks, fds) {baseline:?}, with 5 streams {busy:?}, after removal {last:?}"
    );
    println!(
        "idle_rotation_continuity: rotations per container {rotations:?}; (tasks, fds) baseline {baseline:?}, with 5 idle streams {busy:?}, after removal {last:?}"
    );
}

#[test]
fn rotation_under_load_keeps_every_line_in_order() {
    let (mut containers, _dir, agent) = start_agent_for("load", "  rotation_interval: 1s\n");
    let name = containers.name("load");
    let n = 6000;
    containers.run("load", &[], &printer("seq-", n, 1000));
    let done = wait_until(Duration::from_secs(120), || agent.records(&name).len() >= n);
    assert!(
        done,
        "only {} of {n} lines; log:\n{}",
        agent.records(&name).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2)); // would reveal late duplicates
    assert_sequence(&agent.messages(&name), "seq-", n, "under load");
    let rotations = agent.metric(&format!(
        "log_capturer_container_stream_rotations_total{{container_name=\"{name}\"}}"
    ));
    assert!(
        rotations >= 3.0,
        "only {rotations} rotations while printing"
    );
    println!("rotation_under_load: {n} lines exactly once in order across {rotations} rotations");
}

#[test]
fn short_lived_tty_stderr_long_line() {
    let (mut containers, _dir, agent) = start_agent_for("shapes", "");
    let rm_name = containers.name("rm");
    // Lives about a second: a container that exits within milliseconds is already marked for
    // removal when its start event arrives, and the daemon refuses its logs (409).
    containers.run("rm", &["--rm"], "echo one; echo two; echo three; sleep 1");
    let tty_name = containers.name("tty");
    containers.run("tty", &["-t"], "echo tty-a; echo tty-b; exec sleep 3600");
    let err_name = containers.name("err");
    containers.run("err", &[], "echo out-1; echo err-1 >&2; exec sleep 3600");
    let long_name = containers.name("long");
    containers.run(
        "long",
        &[],
        "echo before; head -c 40000 /dev/zero | tr '\\0' L; echo; echo after; exec sleep 3600",
    );
    let got = wait_until(Duration::from_secs(30), || {
        agent.records(&rm_name).len() >= 3
            && agent.records(&tty_name).len() >= 2
            && agent.records(&err_name).len() >= 2
            && agent.records(&long_name).len() >= 3
    });
    assert!(got, "not all records arrived; log:\n{}", agent.log());
    std::thread::sleep(Duration::from_secs(1));

    assert_eq!(
        agent.messages(&rm_name),
        ["one", "two", "three"],
        "--rm container"
    );

    let tty = agent.records(&tty_name);
    assert_eq!(
        agent.messages(&tty_name),
        ["tty-a", "tty-b"],
        "TTY lines, \\r\\n stripped"
    );
    assert!(tty.iter().all(|r| r["stream"] == "tty"));

    let err = agent.records(&err_name);
    assert_eq!(err.len(), 2);
    let by_msg = |m: &str| {
        err.iter()
            .find(|r| r["message"] == m)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by_msg("out-1")["stream"], "stdout");
    assert_eq!(by_msg("err-1")["stream"], "stderr");

    let long = agent.records(&long_name);
    assert_eq!(long.len(), 3, "a 40 000-byte line must be one record");
    let line = long[1]["message"].as_str().unwrap_or_default();
    assert_eq!(line.len(), 40_000);
    assert!(line.bytes().all(|b| b == b'L'));
    assert!(long[1].get("truncated").is_none());
    // Record shape.
    let r = &long[0];
    assert_eq!(r["container_name"], long_name.as_str());
    assert_eq!(r["image"], "lc-test:busybox");
    assert_eq!(r["container_id"].as_str().map(str::len), Some(64));
    assert_eq!(r["timestamp"].as_str().map(str::len), Some(30));
}

#[test]
fn tty_long_line_is_one_record() {
    let (mut containers, _dir, agent) = start_agent_for("ttylong", "");
    let name = containers.name("ttylong");
    containers.run(
        "ttylong",
        &["-t"],
        "echo before; head -c 40000 /dev/zero | tr '\\0' T; echo; echo after; exec sleep 3600",
    );
    assert!(wait_until(Duration::from_secs(30), || agent
        .records(&name)
        .len()
        >= 3));
    std::thread::sleep(Duration::from_millis(500));
    let msgs = agent.messages(&name);
    assert_eq!(
        msgs.len(),
        3,
        "{:?}",
        msgs.iter().map(String::len).collect::<Vec<_>>()
    );
    assert_eq!(msgs[1].len(), 40_000);
}

#[test]
fn truncates_beyond_max_line_bytes() {
    let (mut containers, _dir, agent) = start_agent_for("trunc", "  max_line_bytes: 20KiB\n");
    let name = containers.name("trunc");
    containers.run(
        "trunc",
        &[],
        "head -c 50000 /dev/zero | tr '\\0' T; echo; echo next; exec sleep 3600",
    );
    assert!(wait_until(Duration::from_secs(30), || agent
        .records(&name)
        .len()
        >= 2));
    let recs = agent.records(&name);
    assert_eq!(recs[0]["message"].as_str().map(str::len), Some(20 * 1024));
    assert_eq!(recs[0]["truncated"], true);
    assert_eq!(recs[1]["message"], "next");
    assert!(agent.metric("log_capturer_lines_truncated_total") >= 1.0);
}
