//! End-to-end tests against a real dockerd (started by `scripts/test` when none runs), with
//! the real agent binary as a process. Every test selects only its own containers by label.

mod support;

use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::{Containers, docker};
use support::{assert_sequence, wait_until};

fn options(containers: &Containers, extra_capture: &str) -> AgentOptions {
    AgentOptions {
        capture: format!("{}{}", containers.include_yaml(), extra_capture),
        ..AgentOptions::default()
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn idle_rotation_continuity() {
    let mut containers = Containers::new("idle");
    let dir = tempdir();
    let agent = Agent::start(
        dir.path(),
        options(&containers, "  rotation_interval: 1s\n"),
    );
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
    let mut containers = Containers::new("load");
    let dir = tempdir();
    let agent = Agent::start(
        dir.path(),
        options(&containers, "  rotation_interval: 1s\n"),
    );
    let name = containers.name("load");
    let n = 6000;
    containers.run(
        "load",
        &[],
        &format!("i=1; while [ $i -le {n} ]; do echo seq-$i; usleep 1000; i=$((i+1)); done; exec sleep 3600"),
    );
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
fn restart_mid_stream_loses_and_duplicates_nothing() {
    let mut containers = Containers::new("restart");
    let dir = tempdir();
    let mut agent = Agent::start(
        dir.path(),
        options(&containers, "  rotation_interval: 2s\n"),
    );
    let name = containers.name("restart");
    let n = 6000;
    containers.run(
        "restart",
        &[],
        &format!("i=1; while [ $i -le {n} ]; do echo r-$i; usleep 1000; i=$((i+1)); done; exec sleep 3600"),
    );
    assert!(wait_until(Duration::from_secs(60), || agent
        .records(&name)
        .len()
        >= 500));
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status:?}");
    let at_stop = agent.records(&name).len();
    // The container keeps printing while the agent is down.
    std::thread::sleep(Duration::from_secs(2));
    agent.restart();
    let done = wait_until(Duration::from_secs(120), || agent.records(&name).len() >= n);
    assert!(
        done,
        "only {} of {n} lines after restart; log:\n{}",
        agent.records(&name).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_sequence(&agent.messages(&name), "r-", n, "across agent restart");
    assert!(at_stop < n, "the stop was not mid-stream");
    println!("restart: stopped after {at_stop} lines, all {n} exactly once after restart");
}

#[test]
fn short_lived_tty_stderr_long_line() {
    let mut containers = Containers::new("shapes");
    let dir = tempdir();
    let agent = Agent::start(dir.path(), options(&containers, ""));
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
    let mut containers = Containers::new("ttylong");
    let dir = tempdir();
    let agent = Agent::start(dir.path(), options(&containers, ""));
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
    let mut containers = Containers::new("trunc");
    let dir = tempdir();
    let agent = Agent::start(
        dir.path(),
        options(&containers, "  max_line_bytes: 20KiB\n"),
    );
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

#[test]
fn log_driver_none_is_reported_and_agent_stays_healthy() {
    let mut containers = Containers::new("none");
    let dir = tempdir();
    let agent = Agent::start(dir.path(), options(&containers, ""));
    let name = containers.name("none");
    containers.run(
        "none",
        &["--log-driver", "none"],
        "echo invisible; exec sleep 3600",
    );
    let ok_name = containers.name("ok");
    containers.run("ok", &[], "echo visible; exec sleep 3600");
    assert!(wait_until(Duration::from_secs(30), || {
        agent.metric("log_capturer_containers_unreadable") == 1.0
    }));
    assert!(wait_until(Duration::from_secs(30), || agent
        .records(&ok_name)
        .len()
        == 1));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        agent
            .metric("log_capturer_container_stream_errors_total{reason=\"unreadable_log_driver\"}"),
        1.0,
        "one error, no retry loop"
    );
    let warnings = agent
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&name))
        .count();
    assert_eq!(
        warnings,
        1,
        "exactly one warning for {name}:\n{}",
        agent.log()
    );
    assert_eq!(agent.get("/health").map(|r| r.0), Some(200));
    assert!(!Path::new(&agent.out_file(&name)).exists());
}

#[test]
fn stop_start_rename_remove() {
    let mut containers = Containers::new("life");
    let dir = tempdir();
    let agent = Agent::start(
        dir.path(),
        options(&containers, "  rotation_interval: 2s\n"),
    );
    let name = containers.name("life");
    let id = containers.run(
        "life",
        &[],
        // Each start prints two lines tagged with a run counter kept in the container's fs.
        "n=$(cat /tmp/runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/runs; echo run$n-a; echo run$n-b; exec sleep 3600",
    );
    assert!(wait_until(Duration::from_secs(30), || agent
        .records(&name)
        .len()
        >= 2));
    docker(&["stop", "-t", "1", &name]);
    docker(&["start", &name]);
    assert!(
        wait_until(Duration::from_secs(30), || agent.records(&name).len() >= 4),
        "no lines after restart; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(3)); // a rotation or two: still no duplicate
    assert_eq!(
        agent.messages(&name),
        ["run1-a", "run1-b", "run2-a", "run2-b"]
    );

    // Rename: later lines carry the new name (and so go to the new name's file).
    let new_name = format!("{name}-renamed");
    docker(&["rename", &name, &new_name]);
    std::thread::sleep(Duration::from_secs(1));
    docker(&["restart", "-t", "1", &new_name]);
    assert!(
        wait_until(Duration::from_secs(30), || agent.records(&new_name).len()
            >= 2),
        "no lines under the new name; log:\n{}",
        agent.log()
    );
    let renamed = agent.records(&new_name);
    assert_eq!(agent.messages(&new_name), ["run3-a", "run3-b"]);
    assert!(
        renamed
            .iter()
            .all(|r| r["container_name"] == new_name.as_str())
    );

    // Remove: the checkpoint is dropped and the container's metrics series go away.
    let checkpoint = dir.path().join(format!("state/checkpoints/{id}.json"));
    assert!(wait_until(Duration::from_secs(10), || checkpoint.exists()));
    docker(&["rm", "-f", &new_name]);
    assert!(
        wait_until(Duration::from_secs(15), || !checkpoint.exists()),
        "checkpoint of a removed container still there"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        !agent.metrics().keys().any(|k| k.contains(&new_name))
    }));
    assert_eq!(agent.metric("log_capturer_containers_tracked"), 0.0);
}

#[test]
fn initial_position_applies_only_to_containers_running_before_first_start() {
    let mut containers = Containers::new("initial");
    // The new lines come when the test says so (not after a fixed sleep that a slow agent
    // start on a loaded host could outlast).
    let script = "echo old-1; echo old-2; while [ ! -f /tmp/go ]; do usleep 100000; done; \
                  echo new-1; echo new-2; exec sleep 3600";
    let end_name = containers.name("from-end");
    containers.run("from-end", &[], script);
    let begin_name = containers.name("from-beginning");
    containers.run("from-beginning", &[], script);
    std::thread::sleep(Duration::from_secs(1)); // the old lines are written before any agent runs
    let end_dir = tempdir();
    let begin_dir = tempdir();
    let include_one = |name: &str, position: &str| AgentOptions {
        capture: format!("  include:\n    names: [\"{name}\"]\n  initial_position: {position}\n"),
        ..AgentOptions::default()
    };
    let end_agent = Agent::start(end_dir.path(), include_one(&end_name, "end"));
    let begin_agent = Agent::start(begin_dir.path(), include_one(&begin_name, "beginning"));
    for name in [&end_name, &begin_name] {
        docker(&["exec", name, "touch", "/tmp/go"]);
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            end_agent.records(&end_name).len() >= 2 && begin_agent.records(&begin_name).len() >= 4
        }),
        "end: {:?}, beginning: {:?}; end agent's log:\n{}",
        end_agent.messages(&end_name),
        begin_agent.messages(&begin_name),
        end_agent.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(end_agent.messages(&end_name), ["new-1", "new-2"]);
    assert_eq!(
        begin_agent.messages(&begin_name),
        ["old-1", "old-2", "new-1", "new-2"]
    );
}

#[test]
fn sigkill_then_restart_loses_nothing() {
    let mut containers = Containers::new("sigkill");
    let dir = tempdir();
    let mut agent = Agent::start(
        dir.path(),
        options(&containers, "  rotation_interval: 2s\n"),
    );
    let name = containers.name("sigkill");
    let n = 5000;
    containers.run(
        "sigkill",
        &[],
        &format!("i=1; while [ $i -le {n} ]; do echo k-$i; usleep 1000; i=$((i+1)); done; exec sleep 3600"),
    );
    assert!(wait_until(Duration::from_secs(60), || agent
        .records(&name)
        .len()
        >= 1500));
    agent.kill();
    let at_kill = agent.records(&name).len();
    agent.restart();
    assert!(
        wait_until(Duration::from_secs(120), || {
            agent.messages(&name).last().map(String::as_str) == Some(format!("k-{n}").as_str())
        }),
        "last line never arrived; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let messages = agent.messages(&name);
    // Before the kill: 1..at_kill in order. After it: one contiguous run s..=n that starts at
    // or before at_kill + 1 (a replay from the last checkpoint), so nothing is lost.
    let seq = |from: usize, to: usize| (from..=to).map(|i| format!("k-{i}")).collect::<Vec<_>>();
    assert_eq!(
        messages[..at_kill],
        seq(1, at_kill)[..],
        "lines before the kill"
    );
    let after = &messages[at_kill..];
    let first: usize = after
        .first()
        .and_then(|m| m.strip_prefix("k-"))
        .and_then(|v| v.parse().ok())
        .expect("lines after restart");
    assert!(
        first <= at_kill + 1,
        "gap: resumed at k-{first} after {at_kill} lines"
    );
    assert_eq!(
        after,
        &seq(first, n)[..],
        "after restart: one contiguous run to the end"
    );
    let replayed = at_kill + 1 - first;
    println!(
        "sigkill: {at_kill} lines before SIGKILL, {replayed} replayed after restart, none lost"
    );
}

#[test]
fn failing_sink_pauses_capture_and_loses_nothing() {
    let mut containers = Containers::new("sinkfail");
    let dir = tempdir();
    // The output directory cannot be created while a plain file sits at its path.
    std::fs::write(dir.path().join("out"), b"in the way").expect("blocker");
    let agent = Agent::start(dir.path(), options(&containers, ""));
    let name = containers.name("sinkfail");
    containers.run(
        "sinkfail",
        &[],
        "i=1; while [ $i -le 300 ]; do echo f-$i; usleep 5000; i=$((i+1)); done; exec sleep 3600",
    );
    assert!(wait_until(Duration::from_secs(30), || {
        agent.metric("log_capturer_sink_errors_total{sink=\"file\"}") >= 2.0
    }));
    std::fs::remove_file(dir.path().join("out")).expect("remove blocker");
    assert!(
        wait_until(Duration::from_secs(60), || agent.records(&name).len()
            >= 300),
        "lines did not arrive after the sink recovered; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_sequence(&agent.messages(&name), "f-", 300, "after sink recovery");
}

/// Forwards TCP connections on 127.0.0.1 to the local docker socket, so the agent can be
/// pointed at `DOCKER_HOST=tcp://…` against the real daemon.
fn tcp_to_docker_socket() -> String {
    use std::net::TcpListener;
    use std::os::unix::net::UnixStream;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(unix) = UnixStream::connect("/var/run/docker.sock") else {
                continue;
            };
            let (Ok(mut tcp_r), Ok(mut unix_w)) = (tcp.try_clone(), unix.try_clone()) else {
                continue;
            };
            let (mut tcp_w, mut unix_r) = (tcp, unix);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut tcp_r, &mut unix_w);
                let _ = unix_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut unix_r, &mut tcp_w);
                let _ = tcp_w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn docker_host_tcp_is_honoured() {
    let mut containers = Containers::new("tcp");
    let dir = tempdir();
    let addr = tcp_to_docker_socket();
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            docker_host: Some(format!("tcp://{addr}")),
            ..options(&containers, "  rotation_interval: 1s\n")
        },
    );
    assert!(
        agent.log().contains(&format!("tcp://{addr}")),
        "{}",
        agent.log()
    );
    let name = containers.name("tcp");
    containers.run("tcp", &[], "echo via-1; echo via-2; exec sleep 3600");
    assert!(wait_until(Duration::from_secs(30), || agent
        .records(&name)
        .len()
        >= 2));
    std::thread::sleep(Duration::from_secs(2)); // rotations over TCP: still exactly once
    assert_eq!(agent.messages(&name), ["via-1", "via-2"]);
}

#[test]
fn container_that_exits_while_the_agent_is_down_is_drained_after_restart() {
    let mut containers = Containers::new("exitdown");
    let dir = tempdir();
    let mut agent = Agent::start(dir.path(), options(&containers, ""));
    let name = containers.name("exitdown");
    let n = 3000;
    containers.run(
        "exitdown",
        &[],
        &format!("i=1; while [ $i -le {n} ]; do echo x-$i; usleep 1000; i=$((i+1)); done"),
    );
    assert!(wait_until(Duration::from_secs(60), || agent
        .records(&name)
        .len()
        >= 300));
    assert!(agent.terminate().success());
    let at_stop = agent.records(&name).len();
    // The container finishes and exits while no agent runs.
    docker(&["wait", &name]);
    agent.restart();
    let done = wait_until(Duration::from_secs(60), || agent.records(&name).len() >= n);
    assert!(
        done,
        "only {} of {n} lines; log:\n{}",
        agent.records(&name).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_sequence(
        &agent.messages(&name),
        "x-",
        n,
        "stopped while the agent was down",
    );
    println!("exit-while-down: {at_stop} lines before the stop, the rest drained after restart");
}

#[test]
fn fast_writers_that_exit_are_read_to_the_last_line() {
    let mut containers = Containers::new("fastexit");
    let dir = tempdir();
    let agent = Agent::start(dir.path(), options(&containers, ""));
    let n = 50_000;
    let names: Vec<String> = (0..8)
        .map(|i| containers.name(&format!("fastexit{i}")))
        .collect();
    // As fast as they can, then exit. Under load the daemon can end a follow stream before it
    // has sent every line; the agent must still read them all.
    for i in 0..8 {
        containers.run(&format!("fastexit{i}"), &[], &format!("seq 1 {n}"));
    }
    let done = wait_until(Duration::from_secs(180), || {
        names.iter().all(|name| agent.records(name).len() >= n)
    });
    let counts: Vec<usize> = names.iter().map(|name| agent.records(name).len()).collect();
    assert!(
        done,
        "lines per container {counts:?} of {n}; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    for name in &names {
        assert_sequence(&agent.messages(name), "", n, name);
    }
}

/// Fresh state_dir, default `initial_position: end`. Containers created (`docker create`, as
/// `docker compose up` does) before the agent's first run and started after it, and a stopped
/// container with old history started after it: `end` skips only what was written before the
/// agent first looked, so every line written after the start is read, even those written
/// before the `start` event is handled.
#[test]
fn containers_started_after_the_first_run_are_read_from_their_first_new_line() {
    let mut containers = Containers::new("startlater");
    let n = 20_000;
    let created: Vec<String> = (0..2)
        .map(|i| {
            let short = format!("created{i}");
            containers.create(&short, &["--network", "none"], &format!("seq 1 {n}"));
            containers.name(&short)
        })
        .collect();
    // Its first run (before the agent) writes history that `end` skips; its second run
    // writes the numbers.
    let history = containers.name("history");
    containers.run(
        "history",
        &["--network", "none"],
        &format!("if [ -f /tmp/ran ]; then seq 1 {n}; else touch /tmp/ran; echo old-history; fi"),
    );
    docker(&["wait", &history]);
    std::thread::sleep(Duration::from_secs(1)); // the history is older than the agent's start
    let dir = tempdir();
    let agent = Agent::start(dir.path(), options(&containers, ""));

    let all_names: Vec<&String> = created.iter().chain([&history]).collect();
    for name in &all_names {
        docker(&["start", name]);
    }
    let done = wait_until(Duration::from_secs(90), || {
        all_names.iter().all(|name| agent.records(name).len() >= n)
    });
    let counts: Vec<usize> = all_names
        .iter()
        .map(|name| agent.records(name).len())
        .collect();
    assert!(
        done,
        "lines per container {counts:?} of {n} (created x2, history); log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    for name in &all_names {
        assert_sequence(&agent.messages(name), "", n, name);
    }
}

/// A container that runs and exits entirely while the agent is down shows up in no event and
/// in no listing of running containers, and has no checkpoint: the agent finds it at start
/// (it ran after the previous run started watching) and reads it from its first line. Found
/// by the fault suite: before, 0 of its lines were read, ever.
#[test]
fn containers_that_ran_entirely_while_the_agent_was_down_are_read_after_restart() {
    let mut containers = Containers::new("randown");
    let net: &[&str] = &["--network", "none"];
    // Ran and exited before the agent ever looked: `initial_position: end` skips it.
    let before = containers.name("before");
    containers.run("before", net, "echo old-history");
    docker(&["wait", &before]);
    std::thread::sleep(Duration::from_secs(1));
    let dir = tempdir();
    let mut agent = Agent::start(dir.path(), options(&containers, ""));
    // Created (not started) while the agent runs: no event to act on, no checkpoint.
    let created = containers.name("created");
    containers.create("created", net, "seq 1 50");
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.terminate().success());

    let ran = containers.name("ran");
    containers.run("ran", net, "seq 1 50");
    docker(&["start", &created]);
    docker(&["wait", &ran]);
    docker(&["wait", &created]);
    agent.restart();
    let done = wait_until(Duration::from_secs(60), || {
        agent.records(&ran).len() >= 50 && agent.records(&created).len() >= 50
    });
    assert!(
        done,
        "ran {} and created {} of 50 lines; log:\n{}",
        agent.records(&ran).len(),
        agent.records(&created).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_sequence(&agent.messages(&ran), "", 50, &ran);
    assert_sequence(&agent.messages(&created), "", 50, &created);
    assert_eq!(agent.metric("log_capturer_containers_caught_up_total"), 2.0);
    assert!(
        agent.records(&before).is_empty(),
        "history before the first run was read"
    );
    assert!(agent.terminate().success());

    // They now hold checkpoints: the next run reads nothing of them again.
    agent.restart();
    agent.wait_ready();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.metric("log_capturer_containers_caught_up_total"), 0.0);
    assert_sequence(&agent.messages(&ran), "", 50, &ran);
    assert_sequence(&agent.messages(&created), "", 50, &created);
    assert!(agent.terminate().success());
}

/// A checkpoint found corrupt at start is set aside, and its container starts as if it had
/// none: from its first line (README, "Exact resume"), also when it is stopped. Found by the
/// fault suite (corrupt-checkpoints): a stopped container whose checkpoint was set aside was
/// never read, so what it wrote while the agent was down was lost.
#[test]
fn stopped_container_with_a_corrupt_checkpoint_is_read_from_its_first_line() {
    let mut containers = Containers::new("corruptcp");
    let dir = tempdir();
    let mut agent = Agent::start(dir.path(), options(&containers, ""));
    let name = containers.name("corruptcp");
    // Each run prints the next 100 numbers (the count survives `docker start`).
    containers.run(
        "corruptcp",
        &[],
        "n=$(cat /tmp/n 2>/dev/null || echo 0); end=$((n+100)); \
         while [ $n -lt $end ]; do n=$((n+1)); echo $n; done; echo $n > /tmp/n",
    );
    docker(&["wait", &name]);
    assert!(wait_until(Duration::from_secs(60), || agent
        .records(&name)
        .len()
        >= 100));
    assert!(agent.terminate().success());
    let id = docker(&["inspect", "--format", "{{.Id}}", &name]);
    let file = dir.path().join(format!("state/checkpoints/{id}.json"));
    assert!(file.is_file(), "no checkpoint {}", file.display());
    std::fs::write(&file, b"\x00garbage{").expect("corrupt the checkpoint");
    // The second run (101..200) happens while no agent runs.
    docker(&["start", &name]);
    docker(&["wait", &name]);
    agent.restart();
    let done = wait_until(Duration::from_secs(30), || {
        agent.records(&name).len() >= 300
    });
    let messages = agent.messages(&name);
    let expected: Vec<String> = (1..=100).chain(1..=200).map(|n| n.to_string()).collect();
    assert!(
        done && messages == expected,
        "{} lines, expected 1..100 then 1..200; log:\n{}",
        messages.len(),
        agent.log()
    );
    assert_eq!(agent.metric("log_capturer_checkpoint_corrupt_total"), 1.0);
    assert!(agent.terminate().success());
}
