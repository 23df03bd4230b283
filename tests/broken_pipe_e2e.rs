//! `log-capturer run | head -2` on the real dockerd: once the reader of the stdout sink's pipe
//! has exited, every write fails with `EPIPE`, for good. The agent must stop by itself (not
//! retry forever), say so in one line, exit with code 3 (a stop that left lines
//! unacknowledged), and keep its checkpoint at what was written before the break, so that the
//! next start writes exactly the lines after it.

mod support;

use std::io::{BufRead, BufReader};
use std::process::ChildStdout;
use std::sync::mpsc;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::{Containers, docker};

/// Exit code of a stop that left something behind (README, "Quick start").
const EXIT_INCOMPLETE: i32 = 3;
const LINES: usize = 200;

/// Reads NDJSON records from the agent's stdout on a thread until `stop` says so (or the pipe
/// ends), then drops its end of the pipe: the reader exits, as `head` does.
fn reader(
    stdout: ChildStdout,
    stop: impl Fn(&[String]) -> bool + Send + 'static,
) -> mpsc::Receiver<Vec<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut messages = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        while !stop(&messages) {
            match lines.next() {
                Some(Ok(line)) => {
                    let v: serde_json::Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("bad NDJSON {line:?}: {e}"));
                    messages.push(v["message"].as_str().unwrap_or_default().to_string());
                }
                _ => break,
            }
        }
        drop(lines); // closes the read end of the pipe
        let _ = tx.send(messages);
    });
    rx
}

#[test]
fn a_closed_stdout_stops_the_agent_and_the_restart_resumes_after_what_was_written() {
    let mut containers = Containers::new("broken-pipe");
    // Two lines, then wait for /tmp/go (created with `docker exec` once the reader has gone),
    // then the rest: so the break falls exactly after line 2.
    let script = format!(
        "echo 'line 1'; echo 'line 2'; \
         while [ ! -f /tmp/go ]; do sleep 0.1; done; \
         i=3; while [ $i -le {LINES} ]; do echo \"line $i\"; i=$((i+1)); done; \
         exec sleep 3600"
    );
    let name = containers.name("writer");
    containers.run("writer", &["--network", "none"], &script);

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut agent, stdout) = Agent::start_with_stdout_pipe(
        dir.path(),
        AgentOptions {
            capture: format!(
                "{}  initial_position: beginning\n",
                containers.include_yaml()
            ),
            file_sink: false,
            sinks: "  stdout: {}\n".to_string(),
            ..AgentOptions::default()
        },
    );

    // `head -2`.
    let first = reader(stdout, |got| got.len() == 2)
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no two lines on stdout; log:\n{}", agent.log()));
    assert_eq!(first, ["line 1", "line 2"]);

    docker(&["exec", &name, "touch", "/tmp/go"]);
    let status = agent.wait_exit_within(Duration::from_secs(60));
    let log = agent.log();
    let status = status.unwrap_or_else(|| {
        panic!("the agent did not stop after its stdout was closed; log:\n{log}")
    });
    assert_eq!(
        status.code(),
        Some(EXIT_INCOMPLETE),
        "exit status {status}; log:\n{log}"
    );
    assert_eq!(
        log.matches("output closed for good").count(),
        1,
        "the closed output must be reported once; log:\n{log}"
    );
    assert!(
        !log.contains("retry_in"),
        "a closed stdout must not be retried; log:\n{log}"
    );

    // The restart writes exactly the lines after the acknowledged ones: none lost, none again.
    let stdout = agent.restart_with_stdout_pipe();
    let rest = reader(stdout, |got| {
        got.last().is_some_and(|m| m == &format!("line {LINES}"))
    });
    let rest = match rest.recv_timeout(Duration::from_secs(60)) {
        Ok(rest) => rest,
        Err(_) => panic!(
            "the restart did not write line {LINES}; log:\n{}",
            agent.log()
        ),
    };
    let status = agent.terminate_within_60s();
    let expected: Vec<String> = (3..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(rest, expected, "log:\n{}", agent.log());
    // This reader went away too, but after the last line: nothing was left to write, so
    // the SIGTERM stop is clean.
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());

    // Against the container's own lines.
    let served = docker(&["logs", &name]);
    let mut all = first;
    all.extend(rest);
    assert_eq!(served.lines().collect::<Vec<_>>(), all);
}
