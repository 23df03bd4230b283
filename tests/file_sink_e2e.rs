//! The file sink against the real dockerd, with the real agent binary as a process: one
//! container's permanent failure, long names, end of stream and file-descriptor limits, a disk
//! that fills up before a SIGTERM, and the permission bits of what it creates.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::blocked_stdout::checkpoint;
use support::docker::{Containers, docker, printer, printer_then_exit};
use support::tempdir;
use support::{assert_sequence, wait_until};

/// The agent with only a file sink, configured by `file_keys` (indented by 4 spaces).
fn options(containers: &Containers, out: &Path, template: &str, file_keys: &str) -> AgentOptions {
    AgentOptions {
        capture: containers.include_yaml(),
        file_sink: false,
        sinks: format!(
            "  file:\n    path: {}/{template}\n{file_keys}",
            out.display()
        ),
        ..AgentOptions::default()
    }
}

/// The `message` of every record of an NDJSON file; panics on a line that is not one record.
/// A last line without its newline is still being written by the agent: it is left out (the
/// tests that care check the file's end themselves).
fn messages(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    support::ndjson_messages(&text, path)
}

/// Docker's timestamp of a container's first log line, in nanoseconds.
fn first_line_ns(id: &str) -> i64 {
    let out = docker(&["logs", "--timestamps", id]);
    let stamp = out
        .lines()
        .next()
        .and_then(|l| l.split(' ').next())
        .unwrap_or_default();
    log_capturer::docker::timestamp::parse_rfc3339_nanos(stamp.as_bytes())
        .unwrap_or_else(|| panic!("no timestamp in {stamp:?}"))
}

fn fds(agent: &Agent) -> f64 {
    agent.metric("log_capturer_file_descriptors_open")
}

/// Item 2: a 289-character name (Docker accepts it) used to make the path fail with
/// ENAMETOOLONG, and the writer retried that batch forever: every container's output froze.
#[test]
fn a_289_character_name_gets_a_bounded_file_and_nobody_waits() {
    let mut containers = Containers::new("longname");
    let dir = tempdir();
    let out = dir.path().join("out");
    let agent = Agent::start(
        dir.path(),
        options(&containers, &out, "{container_name}.log", ""),
    );
    let suffix = containers.name("");
    let long_short = "l".repeat(289 - suffix.len());
    let long_name = containers.name(&long_short);
    assert_eq!(long_name.len(), 289);
    let long_id = containers.run(&long_short, &[], &printer("long-", 200, 1000));
    std::thread::sleep(Duration::from_millis(500));
    let normal = containers.name("normal-long");
    containers.run("normal-long", &[], &printer("n-", 200, 1000));
    let normal_file = out.join(format!("{normal}.log"));
    let arrived = wait_until(Duration::from_secs(60), || {
        messages(&normal_file).len() >= 200
    });
    assert!(
        arrived,
        "the normal container's lines did not arrive; log:\n{}",
        agent.log()
    );
    let long_file = out.join(format!(
        "{}%~{}.log",
        &long_name[..255 - 4 - 14],
        &long_id[..12]
    ));
    let arrived = wait_until(Duration::from_secs(60), || {
        messages(&long_file).len() >= 200
    });
    let listing: Vec<String> = std::fs::read_dir(&out)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        arrived,
        "the long-named container's file {long_file:?} is not complete; files {listing:?}; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_sequence(&messages(&normal_file), "n-", 200, "normal container");
    assert_sequence(&messages(&long_file), "long-", 200, "289-character name");
    // Item 14: what the sink creates is not world-readable.
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&normal_file), 0o640, "file mode");
    assert_eq!(mode(&long_file), 0o640, "file mode");
    assert_eq!(mode(&out), 0o750, "directory mode");
    println!(
        "long name: {} bytes of file name for a 289-character container name; modes file {:o}, dir {:o}",
        long_file.file_name().map(|f| f.len()).unwrap_or(0),
        mode(&long_file),
        mode(&out)
    );
}

/// Item 2: a container whose output path fails for good (here a plain file sits where its
/// directory should be; EACCES behaves alike, but root ignores permissions) is held: the
/// others' lines all arrive, its checkpoint does not move past its unwritten lines, and after
/// the path is fixed and the agent restarted, its lines arrive exactly once.
#[test]
fn one_containers_permanent_failure_does_not_stall_the_others() {
    let mut containers = Containers::new("held");
    let dir = tempdir();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let blocked = containers.name("blocked");
    std::fs::write(out.join(&blocked), b"in the way").expect("blocker");
    let mut agent = Agent::start(
        dir.path(),
        options(&containers, &out, "{container_name}/out.log", ""),
    );
    let blocked_id = containers.run("blocked", &[], &printer("b-", 300, 2000));
    std::thread::sleep(Duration::from_millis(300));
    let normal = containers.name("normal");
    let normal_id = containers.run("normal", &[], &printer("n-", 300, 2000));
    let normal_file = out.join(&normal).join("out.log");
    let arrived = wait_until(Duration::from_secs(60), || {
        messages(&normal_file).len() >= 300
    });
    assert!(
        arrived,
        "{} of 300 lines of the normal container while the other one fails; log:\n{}",
        messages(&normal_file).len(),
        agent.log()
    );
    assert_sequence(&messages(&normal_file), "n-", 300, "normal container");
    let m = agent.metrics();
    let permanent = m
        .get("log_capturer_sink_failures_total{sink=\"file\",reason=\"permanent\"}")
        .copied()
        .unwrap_or(0.0);
    let held = m
        .get("log_capturer_sink_containers_held{sink=\"file\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(
        permanent >= 1.0 && held == 1.0,
        "permanent failures {permanent}, held {held}"
    );
    let warned = agent
        .log()
        .matches("cannot write this container's output")
        .count();
    assert_eq!(
        warned,
        1,
        "warned once per container; log:\n{}",
        agent.log()
    );
    // The normal container's checkpoint moved; the blocked one's stays before its first line.
    let first_blocked = first_line_ns(&blocked_id);
    let moved = wait_until(Duration::from_secs(20), || {
        checkpoint(&agent, &normal_id).is_some_and(|(ts, _)| ts > 0)
    });
    assert!(moved, "normal checkpoint never persisted");
    std::thread::sleep(Duration::from_secs(2)); // two checkpoint intervals
    let (ts, _) = checkpoint(&agent, &blocked_id).expect("blocked checkpoint");
    assert!(
        ts < first_blocked,
        "checkpoint {ts} moved past unwritten lines (first at {first_blocked})"
    );
    // Fix the path, restart: the held lines are read again and written once. A stop with a
    // held container is incomplete (exit code 3).
    let status = agent.terminate();
    assert_eq!(status.code(), Some(3), "exit {status:?}");
    std::fs::remove_file(out.join(&blocked)).expect("remove blocker");
    agent.restart();
    let blocked_file = out.join(&blocked).join("out.log");
    let arrived = wait_until(Duration::from_secs(60), || {
        messages(&blocked_file).len() >= 300
    });
    assert!(
        arrived,
        "held lines not written after restart; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_sequence(
        &messages(&blocked_file),
        "b-",
        300,
        "held container after restart",
    );
    assert_sequence(
        &messages(&normal_file),
        "n-",
        300,
        "normal container after restart",
    );
    println!(
        "held: normal container 300/300 while the other failed ({permanent} permanent failures); held lines 300/300 once after restart"
    );
}

/// Open FDs of the agent process, from /proc (works while the agent is short of FDs itself).
fn proc_fds(agent: &Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The lowest FD count over a second: other tests' containers on the same daemon make the
/// agent open short-lived sockets (inspect), which only ever add to it.
fn fd_baseline(agent: &Agent) -> f64 {
    (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            fds(agent)
        })
        .fold(f64::MAX, f64::min)
}

/// Item 20: the files of containers that exited and were removed used to stay open until
/// `idle_close` (FDs 18 → 318 after 300 containers). They close once their stream has drained.
#[test]
fn files_of_ended_containers_are_closed_and_fds_return_to_baseline() {
    let mut containers = Containers::new("churn");
    let dir = tempdir();
    let out = dir.path().join("out");
    let agent = Agent::start(
        dir.path(),
        options(
            &containers,
            &out,
            "{container_name}.log",
            "    idle_close: 1h\n",
        ),
    );
    let baseline = fd_baseline(&agent);
    let n = 30;
    let lines = 50;
    let names: Vec<String> = (0..n)
        .map(|i| containers.name(&format!("churn{i}")))
        .collect();
    for i in 0..n {
        containers.run(
            &format!("churn{i}"),
            &[],
            &printer_then_exit(&format!("c{i}-"), lines, 20_000),
        );
    }
    let all = wait_until(Duration::from_secs(120), || {
        names
            .iter()
            .all(|name| messages(&out.join(format!("{name}.log"))).len() >= lines)
    });
    assert!(all, "not every line arrived; log:\n{}", agent.log());
    let peak = fds(&agent);
    containers.remove_all();
    let mut last = 0.0;
    let back = wait_until(Duration::from_secs(60), || {
        last = fds(&agent);
        last <= baseline && agent.metric("log_capturer_file_sink_files_open") == 0.0
    });
    assert!(
        back,
        "FDs not back at baseline {baseline} (now {last}, files open {}) with idle_close 1h; log:\n{}",
        agent.metric("log_capturer_file_sink_files_open"),
        agent.log()
    );
    for (i, name) in names.iter().enumerate() {
        assert_sequence(
            &messages(&out.join(format!("{name}.log"))),
            &format!("c{i}-"),
            lines,
            name,
        );
    }
    println!(
        "churn: {n} containers × {lines} lines all arrived; FDs baseline {baseline}, after the last line {peak}, after removal {last}"
    );
}

/// Item 20: at the process's FD limit the sink closes its least recently used idle files and
/// opens again, instead of stalling (3 100 of 15 000 lines used to be lost at a hard limit of
/// 256). 40 containers are followed under a limit of 64 FDs: their sockets take most of it, so
/// when they all start printing at once their output files must take turns.
#[test]
fn at_the_fd_limit_idle_files_are_closed_and_no_line_is_lost() {
    let mut containers = Containers::new("fdlimit");
    let dir = tempdir();
    let out = dir.path().join("out");
    let limit = 64;
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            fd_limit: Some(limit),
            ..options(
                &containers,
                &out,
                "{container_name}.log",
                "    idle_close: 1h\n",
            )
        },
    );
    let n = 40;
    let lines = 200;
    let names: Vec<String> = (0..n).map(|i| containers.name(&format!("fd{i}"))).collect();
    // Every container waits for the same moment, so that all streams are open (each holds a
    // socket) before the first line needs a file.
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 30;
    for i in 0..n {
        let script = format!(
            "while [ $(date +%s) -lt {start_at} ]; do usleep 100000; done; {}",
            printer(&format!("f{i}-"), lines, 20_000)
        );
        containers.run(&format!("fd{i}"), &[], &script);
    }
    // At 64 FDs the agent may fail to accept a /metrics request for a moment (EMFILE).
    let streams = wait_until(Duration::from_secs(30), || {
        agent
            .try_metric("log_capturer_container_streams_active")
            .is_some_and(|v| v >= n as f64)
    });
    assert!(
        streams,
        "not every stream opened before the lines; log:\n{}",
        agent.log()
    );
    let mut most = 0;
    let all = wait_until(Duration::from_secs(180), || {
        most = most.max(proc_fds(&agent));
        names
            .iter()
            .all(|name| messages(&out.join(format!("{name}.log"))).len() >= lines)
    });
    let counts: Vec<usize> = names
        .iter()
        .map(|n| messages(&out.join(format!("{n}.log"))).len())
        .collect();
    assert!(
        all,
        "lines missing under an FD limit of {limit}: {counts:?}; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    for (i, name) in names.iter().enumerate() {
        assert_sequence(
            &messages(&out.join(format!("{name}.log"))),
            &format!("f{i}-"),
            lines,
            name,
        );
    }
    let fd_errors = agent.log().matches("Too many open files").count();
    println!(
        "fd limit {limit}: {n} containers × {lines} lines all arrived once; most FDs seen {most}; {fd_errors} log lines mention EMFILE"
    );
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A small tmpfs at `dir`, or None (with the reason printed) when mounting is not allowed.
fn small_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(dir).expect("mount point");
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
        Ok(o) => {
            println!(
                "SKIPPED: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            println!("SKIPPED: cannot run mount: {e}");
            None
        }
    }
}

/// Item 16: SIGTERM while the file sink's disk is full used to leave a torn NDJSON record (the
/// next run glued its first record onto it) and wrote 640 lines twice after the restart.
#[test]
fn sigterm_on_a_full_disk_leaves_whole_records_and_the_restart_writes_each_line_once() {
    let mut containers = Containers::new("diskfull");
    let dir = tempdir();
    let out = dir.path().join("out");
    let Some(_mount) = small_tmpfs(&out, "256k") else {
        return;
    };
    let mut agent = Agent::start(
        dir.path(),
        options(&containers, &out, "{container_name}.log", ""),
    );
    let name = containers.name("full");
    let n = 3000;
    let pad = "p".repeat(200);
    containers.run(
        "full",
        &[],
        &format!("i=1; while [ $i -le {n} ]; do echo d-$i {pad}; usleep 2000; i=$((i+1)); done; exec sleep 3600"),
    );
    let full = wait_until(Duration::from_secs(60), || {
        agent.metric("log_capturer_sink_errors_total{sink=\"file\"}") >= 2.0
    });
    assert!(full, "the disk never filled; log:\n{}", agent.log());
    let status = agent.terminate();
    // The sink gave up with lines unacknowledged (they are read again at the next start): an
    // incomplete stop, exit code 3.
    assert_eq!(status.code(), Some(3), "exit {status:?}");
    let file = out.join(format!("{name}.log"));
    let text = std::fs::read(&file).expect("output");
    assert!(
        !text.is_empty(),
        "nothing was acknowledged before the disk filled"
    );
    assert!(
        text.ends_with(b"\n"),
        "the file ends in a torn record: {:?}",
        String::from_utf8_lossy(&text[text.len().saturating_sub(80)..])
    );
    let strip = |m: Vec<String>| -> Vec<String> {
        m.into_iter()
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    let before = strip(messages(&file));
    assert_sequence(&before, "d-", before.len(), "after SIGTERM on a full disk");
    // More room, restart: every line exactly once, the earlier ones not again.
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&out)
        .status()
        .expect("mount");
    assert!(remount.success());
    agent.restart();
    let done = wait_until(Duration::from_secs(90), || messages(&file).len() >= n);
    assert!(
        done,
        "{} of {n} lines after the restart; log:\n{}",
        messages(&file).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_sequence(&strip(messages(&file)), "d-", n, "after the restart");
    println!(
        "disk full: {} whole records at SIGTERM, then all {n} exactly once after the restart",
        before.len()
    );
}
