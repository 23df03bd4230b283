//! The agent's lifecycle as a process: how it stops (the shutdown deadline, a failed final
//! checkpoint write) and what it refuses to start with. Log lines come from the fake Engine
//! API (tests/support/fake_engine.rs).

mod support;

use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use support::agent::{Agent, fake_engine_options};
use support::blocked_stdout::{BlockedStdout, checkpoint, line_ts};
use support::fake_engine::{Container, FakeEngine, Line, LogsPlan};
use support::wait_until;

/// Exit code of a stop that left something behind (README, "Quick start").
const EXIT_INCOMPLETE: i32 = 3;

/// A fake engine with one container, "quiet", that printed 5 lines and prints no more; and
/// that container's id.
fn engine_with_a_quiet_container() -> (FakeEngine, String) {
    let lines: Vec<Line> = (0..5)
        .map(|i| Line::stdout(line_ts(i), format!("hello {i}")))
        .collect();
    let quiet = Container::new("quiet", lines, vec![LogsPlan::Follow]);
    let id = quiet.id.clone();
    (FakeEngine::start(vec![quiet]), id)
}

#[track_caller]
fn assert_incomplete_stop(status: ExitStatus, log: &str) {
    assert_eq!(
        status.code(),
        Some(EXIT_INCOMPLETE),
        "exit status {status}; log:\n{log}"
    );
}

/// SIGTERM while the stdout sink is blocked for good (its stdout is a pipe nobody reads, and
/// it is full): the agent must still exit, after `pipeline.shutdown_timeout`, with exit code 3,
/// and its checkpoint must cover only lines that were really written to stdout, so the rest is
/// read again at the next start.
#[test]
fn shutdown_deadline_abandons_a_blocked_stdout() {
    let mut blocked = BlockedStdout::start();
    let status = blocked.agent.terminate_within_60s();
    let log = blocked.agent.log();
    assert_incomplete_stop(status, &log);
    assert!(
        log.contains("shutdown_timeout reached"),
        "abandoned work not reported; log:\n{log}"
    );
    blocked.assert_checkpoint_covers_only_what_was_written();
}

/// The last checkpoint write at shutdown fails (here a directory stands where the checkpoint's
/// temporary file goes, which fails for root too): the agent must say so and exit non-zero,
/// not log "checkpoints persisted" and exit 0.
#[test]
fn failed_final_checkpoint_write_exits_non_zero() {
    let (engine, id) = engine_with_a_quiet_container();
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join(format!("state/checkpoints/{id}.tmp"));
    std::fs::create_dir_all(&blocker).expect("directory in the temporary file's place");
    let mut agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));
    let delivered = wait_until(Duration::from_secs(30), || {
        agent.messages("quiet").len() == 5
            && agent.metric("log_capturer_checkpoint_errors_total") >= 1.0
    });
    assert!(
        delivered,
        "lines or checkpoint error missing; log:\n{}",
        agent.log()
    );

    let status = agent.terminate();
    let log = agent.log();
    assert_incomplete_stop(status, &log);
    assert!(
        log.contains("final checkpoint write failed"),
        "failure not reported; log:\n{log}"
    );
    assert!(
        !log.contains("checkpoints persisted; bye"),
        "reported as success; log:\n{log}"
    );
}

/// An empty config file (or one with only comments) is refused with exit code 2, instead of
/// running on the defaults (every container, the default state directory).
#[test]
fn empty_config_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [("empty.yaml", ""), ("comments.yaml", "# nothing here\n\n")] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        for command in ["validate", "run"] {
            let stderr_path = dir.path().join(format!("{name}.{command}.stderr"));
            let mut child = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
                .arg(command)
                .arg("-c")
                .arg(&path)
                .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
                .spawn()
                .expect("run the binary");
            let mut status = None;
            wait_until(Duration::from_secs(20), || {
                status = child.try_wait().ok().flatten();
                status.is_some()
            });
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let code = status.and_then(|s| s.code());
            assert_eq!(
                code,
                Some(2),
                "{command} {name} (None: still running): {stderr}"
            );
            assert!(
                stderr.contains("config file is empty"),
                "{command} {name}: {stderr}"
            );
        }
    }
}

/// SIGTERM while a sink keeps failing (the file sink's directory cannot be created): the
/// worker gives up on its batches, which stay unacknowledged. That stop is incomplete (exit 3),
/// not the clean stop exit 0 promises, and the checkpoint does not move past those lines.
#[test]
fn sink_failing_at_shutdown_is_an_incomplete_stop() {
    let (engine, id) = engine_with_a_quiet_container();
    let dir = tempfile::tempdir().expect("tempdir");
    // The file sink's output directory cannot be created while a plain file sits there.
    std::fs::write(dir.path().join("out"), b"in the way").expect("blocker");
    let mut agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));
    let failing = wait_until(Duration::from_secs(30), || {
        agent.metric("log_capturer_sink_errors_total{sink=\"file\"}") >= 2.0
    });
    assert!(failing, "the file sink did not fail; log:\n{}", agent.log());

    let status = agent.terminate();
    let log = agent.log();
    assert_incomplete_stop(status, &log);
    assert!(
        log.contains("not acknowledged by every sink"),
        "not reported; log:\n{log}"
    );
    let (ts, _) = checkpoint(&agent, &id).expect("checkpoint");
    assert!(ts < line_ts(0), "checkpoint moved past unwritten lines");
}

/// The agent's diagnostics on a stderr that is not a terminal (a file, journald, `docker
/// logs`) carry no ANSI colour codes. Found by the fault suite: every line of the agent's
/// log file was wrapped in escape sequences.
#[test]
fn diagnostics_to_a_file_have_no_ansi_escapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A state_dir that is a regular file: the agent logs why it cannot start, and exits 1.
    let state = dir.path().join("not-a-dir");
    std::fs::write(&state, "x").expect("write");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "sinks:\n  discard: {{}}\ncheckpoint:\n  state_dir: {}\nhttp:\n  listen: \"\"\n",
            state.display()
        ),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .args(["run", "-c"])
        .arg(&config)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("agent failed to start"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escapes in {stderr:?}");
}
