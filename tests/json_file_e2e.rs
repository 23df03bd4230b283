//! End-to-end tests of `docker.capture: json_file` against the real dockerd, with the agent as
//! a process: exactness across Docker's own rotation (`max-size`/`max-file`) with long lines
//! on both streams and an agent restart; switching mode across restarts (api → json_file →
//! api); a burst of instant `--rm` containers; containers whose log driver is not json-file.
//!
//! The end of the exactness tests of both streams (wait, settle, check each in order) is
//! `assert_both_streams_exact`; the rotation test writes its own, for its long lines.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::{Containers, IMAGE, docker, printer_then_exit};
use support::tempdir;
use support::wait_until;

fn options(containers: &Containers, capture_mode: &str) -> AgentOptions {
    AgentOptions {
        capture: containers.include_yaml(),
        docker: format!("  capture: {capture_mode}\n"),
        ..AgentOptions::default()
    }
}

/// The first difference between two sequences, for a failure message.
fn first_difference(got: &[String], want: &[String]) -> String {
    let short = |s: &String| format!("{:?}/{}", &s[..s.len().min(12)], s.len());
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(i) => format!("at {i}: got {} want {}", short(&got[i]), short(&want[i])),
        None => format!("lengths: got {} want {}", got.len(), want.len()),
    }
}

fn running(name: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", name]) == "true"
}

fn long(prefix: char, i: usize) -> String {
    format!(
        "{prefix}{i:05}{}",
        if prefix == 'L' { "x" } else { "y" }.repeat(19_994)
    )
}

/// Lines over 16 KiB on both streams (Docker splits them into pieces that the agent merges),
/// written while Docker rotates the log every 64 KiB (about 40 rotations), and the agent
/// stopped (SIGTERM) and restarted in the middle: every line exactly once, in order, on each
/// stream.
#[test]
fn exact_across_docker_rotation_long_lines_and_a_restart() {
    let mut containers = Containers::new("lcjf-rotate");
    let dir = tempdir();
    let mut agent = Agent::start(dir.path(), options(&containers, "json_file"));
    let name = containers.name("lcjf-rotate");
    let n = 600;
    containers.run(
        "lcjf-rotate",
        &[
            "--network",
            "none",
            "--log-opt",
            "max-size=64k",
            "--log-opt",
            "max-file=10",
        ],
        &format!(
            "i=1; while [ $i -le {n} ]; do \
               if [ $((i % 10)) -eq 0 ]; then \
                 printf 'L%05d' $i; head -c 19994 /dev/zero | tr '\\0' x; echo; \
                 printf 'E%05d' $i >&2; head -c 19994 /dev/zero | tr '\\0' y >&2; echo >&2; \
               else echo out-$i; echo err-$i >&2; fi; \
               usleep 20000; i=$((i+1)); done"
        ),
    );
    assert!(
        wait_until(Duration::from_secs(60), || {
            agent.stream_messages(&name, "stdout").len() >= n / 4
        }),
        "no records; log:\n{}",
        agent.log()
    );
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status:?}");
    let at_stop = agent.records(&name).len();
    std::thread::sleep(Duration::from_secs(1));
    agent.restart();
    agent.wait_ready();
    let want_out: Vec<String> = (1..=n)
        .map(|i| {
            if i % 10 == 0 {
                long('L', i)
            } else {
                format!("out-{i}")
            }
        })
        .collect();
    let want_err: Vec<String> = (1..=n)
        .map(|i| {
            if i % 10 == 0 {
                long('E', i)
            } else {
                format!("err-{i}")
            }
        })
        .collect();
    let done = wait_until(Duration::from_secs(120), || {
        !running(&name)
            && agent.stream_messages(&name, "stdout").len() >= n
            && agent.stream_messages(&name, "stderr").len() >= n
    });
    std::thread::sleep(Duration::from_secs(2));
    let out = agent.stream_messages(&name, "stdout");
    let err = agent.stream_messages(&name, "stderr");
    let rotations = agent.metric("log_capturer_json_file_rotations_total");
    let rotated_files = std::fs::read_dir(
        std::path::Path::new(&docker(&["inspect", "-f", "{{.LogPath}}", &name]))
            .parent()
            .expect("log dir"),
    )
    .map(|d| d.count())
    .unwrap_or(0);
    assert!(
        out == want_out && err == want_err,
        "every line exactly once in order per stream (done: {done}); stdout {}, stderr {}; \
         {at_stop} records before the restart; agent log:\n{}",
        first_difference(&out, &want_out),
        first_difference(&err, &want_err),
        agent.log()
    );
    assert!(
        rotations >= 10.0,
        "Docker rotated the log only {rotations} times after the restart: not exercised"
    );
    println!(
        "json_file rotation: {n} stdout + {n} stderr lines (every 10th 20 000 B) exactly once; \
         {at_stop} records before the SIGTERM; {rotations} Docker rotations followed after the \
         restart; {rotated_files} entries in the container directory at the end"
    );
}

/// A restart in the other mode resumes at the same position: api → json_file → api, while a
/// container writes on both streams. Every line exactly once, in order.
#[test]
fn switching_mode_across_restarts_keeps_the_position() {
    let mut containers = Containers::new("lcjf-switch");
    let dir = tempdir();
    let mut agent = Agent::start(dir.path(), options(&containers, "api"));
    let name = containers.name("lcjf-switch");
    let n = 900;
    containers.run(
        "lcjf-switch",
        &["--network", "none"],
        &format!(
            "i=1; while [ $i -le {n} ]; do echo out-$i; echo err-$i >&2; usleep 10000; \
             i=$((i+1)); done"
        ),
    );
    let switch = |agent: &mut Agent, from: &str, to: &str, at_least: usize| {
        assert!(
            wait_until(Duration::from_secs(60), || {
                agent.stream_messages(&name, "stdout").len() >= at_least
            }),
            "records stopped at {} before switching to {to}; log:\n{}",
            agent.records(&name).len(),
            agent.log()
        );
        let status = agent.terminate();
        assert!(status.success(), "agent exit status {status:?}");
        let config = std::fs::read_to_string(agent.config_path()).expect("config");
        let switched = config.replace(&format!("capture: {from}"), &format!("capture: {to}"));
        assert_ne!(config, switched);
        std::fs::write(agent.config_path(), switched).expect("config");
        agent.restart();
        agent.wait_ready();
    };
    switch(&mut agent, "api", "json_file", n / 4);
    let at_json = agent.records(&name).len();
    switch(&mut agent, "json_file", "api", n / 2);
    let at_api = agent.records(&name).len();
    assert_both_streams_exact(&agent, &name, n, "");
    println!(
        "mode switch: {n} + {n} lines exactly once; api until {at_json} records, json_file \
         until {at_api}, then api"
    );
}

/// Starts `count` containers with `--rm`, each printing 20 lines and exiting at once, eight
/// `docker run` at a time; returns their names.
fn rm_burst(containers: &Containers, tag: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count)
        .map(|i| containers.name(&format!("lcjf-{tag}{i}")))
        .collect();
    let chunks: Vec<Vec<String>> = names
        .chunks(count.div_ceil(8))
        .map(<[String]>::to_vec)
        .collect();
    std::thread::scope(|s| {
        for chunk in chunks {
            let label = containers.label.clone();
            s.spawn(move || {
                for name in chunk {
                    let out = Command::new("docker")
                        .args([
                            "run",
                            "--rm",
                            "-d",
                            "--network",
                            "none",
                            "--name",
                            &name,
                            "--label",
                            &label,
                            IMAGE,
                            "sh",
                            "-c",
                            "i=1; while [ $i -le 20 ]; do echo line-$i; i=$((i+1)); done",
                        ])
                        .output()
                        .expect("docker run");
                    assert!(
                        out.status.success(),
                        "docker run {name}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
    });
    names
}

/// Lines captured per container (a complete container has 20).
fn captured(agent: &Agent, names: &[String]) -> HashMap<String, usize> {
    names
        .iter()
        .map(|n| (n.clone(), agent.messages(n).len()))
        .collect()
}

/// 200 `--rm` containers that print 20 lines and exit at once, started in a burst: in json_file
/// mode every one of the 4000 lines is captured (the log file is opened at the container's
/// start event, and the descriptor outlives the removal). The same burst in API mode, for
/// comparison (its figure is printed, not asserted).
#[test]
fn instant_rm_burst_is_captured_completely_in_json_file_mode() {
    let count = 200;
    let mut figures = Vec::new();
    for mode in ["json_file", "api"] {
        let containers = Containers::new(&format!("lcjf-burst-{mode}"));
        let dir = tempdir();
        let agent = Agent::start(dir.path(), options(&containers, mode));
        let tag = if mode == "api" { "a" } else { "j" };
        let names = rm_burst(&containers, tag, count);
        let gone_before_read = |agent: &Agent| {
            agent.metric("log_capturer_container_stream_errors_total{reason=\"gone_before_read\"}")
        };
        // Done when every line arrived. API mode cannot capture the whole burst: there, also
        // done once every container is complete or counted gone before read (rather than
        // waiting out the time-out, ~95 s of CI). One read of the output per poll.
        let complete = wait_until(Duration::from_secs(90), || {
            let per = captured(&agent, &names);
            let whole = per.values().filter(|n| **n == 20).count();
            per.values().sum::<usize>() >= count * 20
                || (mode == "api" && whole + gone_before_read(&agent) as usize >= count)
        });
        if !complete {
            // Let whatever is still in flight land before counting.
            std::thread::sleep(Duration::from_secs(5));
        }
        let per = captured(&agent, &names);
        let got = per.values().sum::<usize>();
        let partial: Vec<(&String, &usize)> =
            per.iter().filter(|(_, n)| **n != 0 && **n != 20).collect();
        let empty = per.values().filter(|n| **n == 0).count();
        let gone = gone_before_read(&agent);
        figures.push(format!(
            "{mode}: {got} of {} lines captured ({empty} containers with none; {gone} counted gone before read)",
            count * 20
        ));
        if mode == "json_file" {
            assert!(
                got == count * 20 && partial.is_empty(),
                "json_file mode: {got} of {} lines; partial containers {partial:?}; {empty} \
                 empty; agent log:\n{}",
                count * 20,
                agent.log()
            );
        }
    }
    println!(
        "--rm burst of {count} containers x 20 lines: {}",
        figures.join("; ")
    );
}

/// Containers whose log driver is not json-file are read through the Engine API, said (info
/// line naming the container and driver) and counted (`fallbacks_total{reason="log_driver"}`).
/// `local` can be read through the API: its lines arrive; `none` cannot.
#[test]
fn other_log_drivers_fall_back_to_the_api_and_are_reported() {
    let mut containers = Containers::new("lcjf-driver");
    let dir = tempdir();
    let agent = Agent::start(dir.path(), options(&containers, "json_file"));
    let key = "log_capturer_json_file_fallbacks_total{reason=\"log_driver\"}";
    assert_eq!(agent.metric(key), 0.0, "series exists at 0");
    let local = containers.name("lcjf-local");
    let none = containers.name("lcjf-none");
    containers.run(
        "lcjf-local",
        &["--network", "none", "--log-driver", "local"],
        "i=1; while [ $i -le 50 ]; do echo local-$i; i=$((i+1)); done; exec sleep 3600",
    );
    containers.run(
        "lcjf-none",
        &["--network", "none", "--log-driver", "none"],
        "echo never-seen; exec sleep 3600",
    );
    let reported = |driver: &str, name: &str| {
        agent
            .log()
            .lines()
            .any(|l| l.contains(name) && l.contains(driver) && l.contains("through the Engine API"))
    };
    let ok = wait_until(Duration::from_secs(60), || {
        agent.metric(key) >= 2.0
            && reported("local", &local)
            && reported("none", &none)
            && agent.messages(&local).len() >= 50
    });
    let msgs = agent.messages(&local);
    assert!(
        ok,
        "fallbacks {}; local lines {}; agent log:\n{}",
        agent.metric(key),
        msgs.len(),
        agent.log()
    );
    support::assert_sequence(&msgs, "local-", 50, "local driver read through the API");
    println!(
        "log driver fallback: {} containers fell back (local: 50 lines read through the API; none: reported)",
        agent.metric(key)
    );
}

/// Waits (up to 120 s) until container `name` has exited and written `n` lines on each
/// stream, lets 2 s pass, and checks stdout is `out-1 ..= out-n` and stderr `err-1 ..= err-n`,
/// each exactly once, in order. `context` starts the failure message.
#[track_caller]
fn assert_both_streams_exact(agent: &Agent, name: &str, n: usize, context: &str) {
    let done = wait_until(Duration::from_secs(120), || {
        !running(name) && agent.records(name).len() >= 2 * n
    });
    std::thread::sleep(Duration::from_secs(2));
    for (stream, prefix) in [("stdout", "out-"), ("stderr", "err-")] {
        let got = agent.stream_messages(name, stream);
        support::assert_sequence(
            &got,
            prefix,
            n,
            &format!(
                "{context}{stream} (done: {done}); agent log:\n{}",
                agent.log()
            ),
        );
    }
}

/// Docker's rotation with `max-size` and no `max-file` (one file kept: the daemon renames or
/// unlinks the log, or reopens it truncated, by version), and with `compress=true` (rotated
/// files gzipped): every line of both streams exactly once, in order, and rotations followed.
#[test]
fn exact_with_a_single_log_file_and_with_compressed_rotation() {
    for (tag, opts) in [
        ("lcjf-one", &["--log-opt", "max-size=16k"][..]),
        (
            "lcjf-gz",
            &[
                "--log-opt",
                "max-size=16k",
                "--log-opt",
                "max-file=3",
                "--log-opt",
                "compress=true",
            ][..],
        ),
    ] {
        let mut containers = Containers::new(tag);
        let dir = tempdir();
        let agent = Agent::start(dir.path(), options(&containers, "json_file"));
        let name = containers.name(tag);
        let n = 1500;
        let mut args = vec!["--network", "none"];
        args.extend_from_slice(opts);
        // About 200 KiB of log at ~15 KiB/s: a rotation about every second, each file read
        // (polled every 50 ms) long before the next rotation deletes it.
        containers.run(
            tag,
            &args,
            &format!(
                "i=1; while [ $i -le {n} ]; do echo out-$i; echo err-$i >&2; usleep 10000; \
                 i=$((i+1)); done"
            ),
        );
        assert_both_streams_exact(&agent, &name, n, &format!("{tag} "));
        let rotations = agent.metric("log_capturer_json_file_rotations_total");
        let truncations = agent.metric("log_capturer_json_file_truncations_total");
        assert!(
            rotations + truncations >= 5.0,
            "{tag}: Docker rotated only {rotations}+{truncations} times: not exercised"
        );
        println!(
            "{tag}: {n} + {n} lines exactly once; {rotations} rotations, {truncations} truncations followed"
        );
    }
}

/// `docker.containers_dir` names a readable directory without the containers' logs: a running
/// container's log is missing, and after 10 s it is read through the API instead
/// (`fallbacks_total{reason="log_file_missing"}`): every line exactly once.
#[test]
fn a_missing_log_file_falls_back_to_the_api() {
    let mut containers = Containers::new("lcjf-missing");
    let dir = tempdir();
    let empty = tempdir();
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            capture: containers.include_yaml(),
            docker: format!(
                "  capture: json_file\n  containers_dir: {}\n",
                empty.path().display()
            ),
            ..AgentOptions::default()
        },
    );
    let name = containers.name("lcjf-missing");
    let n = 300;
    containers.run(
        "lcjf-missing",
        &["--network", "none"],
        &printer_then_exit("out-", n, 50000),
    );
    let done = wait_until(Duration::from_secs(90), || {
        !running(&name) && agent.records(&name).len() >= n
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = agent.stream_messages(&name, "stdout");
    support::assert_sequence(
        &got,
        "out-",
        n,
        &format!("(done: {done}); agent log:\n{}", agent.log()),
    );
    let key = "log_capturer_json_file_fallbacks_total{reason=\"log_file_missing\"}";
    let fallbacks = agent.metric(key);
    assert!(fallbacks >= 1.0, "{key} = {fallbacks}");
    println!("missing log file: {n} lines exactly once through the API ({key} = {fallbacks})");
}
