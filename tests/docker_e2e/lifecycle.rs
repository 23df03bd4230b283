//! Containers and the daemon around the agent: log driver none, stop / start / rename /
//! remove, initial position, a failing sink, `DOCKER_HOST=tcp://`, fast writers that exit.

use super::*;

#[test]
fn log_driver_none_is_reported_and_agent_stays_healthy() {
    let (mut containers, _dir, agent) = start_agent_for("none", "");
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
    let (mut containers, dir, agent) = start_agent_for("life", "  rotation_interval: 2s\n");
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
fn failing_sink_pauses_capture_and_loses_nothing() {
    let mut containers = Containers::new("sinkfail");
    let dir = tempdir();
    // The output directory cannot be created while a plain file sits at its path.
    std::fs::write(dir.path().join("out"), b"in the way").expect("blocker");
    let agent = Agent::start(dir.path(), options_for(&containers, ""));
    let name = containers.name("sinkfail");
    containers.run("sinkfail", &[], &printer("f-", 300, 5000));
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
            ..options_for(&containers, "  rotation_interval: 1s\n")
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
fn fast_writers_that_exit_are_read_to_the_last_line() {
    let (mut containers, _dir, agent) = start_agent_for("fastexit", "");
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
