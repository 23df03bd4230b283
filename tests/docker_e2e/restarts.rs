//! Across agent restarts and stops: a restart or SIGKILL mid-stream, containers that run,
//! exit or start while the agent is down, a first run, a corrupt checkpoint.

use super::*;

#[test]
fn restart_mid_stream_loses_and_duplicates_nothing() {
    let (mut containers, _dir, mut agent) = start_agent_for("restart", "  rotation_interval: 2s\n");
    let name = containers.name("restart");
    let n = 6000;
    containers.run("restart", &[], &printer("r-", n, 1000));
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
fn sigkill_then_restart_loses_nothing() {
    let (mut containers, _dir, mut agent) = start_agent_for("sigkill", "  rotation_interval: 2s\n");
    let name = containers.name("sigkill");
    let n = 5000;
    containers.run("sigkill", &[], &printer("k-", n, 1000));
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
fn container_that_exits_while_the_agent_is_down_is_drained_after_restart() {
    let (mut containers, _dir, mut agent) = start_agent_for("exitdown", "");
    let name = containers.name("exitdown");
    let n = 3000;
    containers.run("exitdown", &[], &printer_then_exit("x-", n, 1000));
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
    let agent = Agent::start(dir.path(), options_for(&containers, ""));

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
    let mut agent = Agent::start(dir.path(), options_for(&containers, ""));
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
    let (mut containers, dir, mut agent) = start_agent_for("corruptcp", "");
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
