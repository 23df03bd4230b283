//! The command line as operators meet it, through the real binary: argument order and help
//! texts, config errors printed once and naming the file, log level aliases, per-host
//! overrides (`--state-dir`, `LOG_CAPTURER_*`), host-name listen addresses, colours, and the
//! start-up summary.
//!
//! The log level, override and colour tests are in `cli/overrides.rs` (a module of this one
//! test binary).

mod support;

#[path = "cli/overrides.rs"]
mod overrides;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::fake_engine::{Container, FakeEngine, Line, LogsPlan, container_id};
use support::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_log-capturer");

/// The binary with none of the variables that change its behaviour inherited from the test's
/// environment.
fn cmd() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(Stdio::null());
    for var in [
        "RUST_LOG",
        "NO_COLOR",
        "DOCKER_HOST",
        "LOG_CAPTURER_STATE_DIR",
        "LOG_CAPTURER_HTTP_LISTEN",
        "LOG_CAPTURER_DOCKER_HOST",
        "LOG_CAPTURER_LOG_LEVEL",
    ] {
        c.env_remove(var);
    }
    c
}

/// Runs `c` to its end (killed, and the test failed, after 60 s: a command that should
/// have refused to start did not) and returns its exit code, stdout and stderr.
fn output(c: &mut Command) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = c
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("run the binary");
    let mut status = None;
    let ended = wait_until(Duration::from_secs(60), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        ended,
        "{c:?} still running after 60 s; stderr:\n{}",
        read(&err)
    );
    (status.and_then(|s| s.code()), read(&out), read(&err))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

/// A config with a Loki sink (so `dlq` has a store) and its state under `dir/state`.
fn loki_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("config.yaml");
    write(
        &path,
        &format!(
            "sinks:\n  loki:\n    url: http://127.0.0.1:9/loki/api/v1/push\n\
             checkpoint:\n  state_dir: {}\nhttp:\n  listen: \"\"\n",
            dir.join("state").display()
        ),
    );
    path
}

#[test]
fn dlq_takes_the_config_before_or_after_the_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = loki_config(dir.path());
    let after = output(cmd().args(["dlq", "list", "-c"]).arg(&config));
    let before = output(cmd().args(["dlq", "-c"]).arg(&config).arg("list"));
    assert_eq!(after.0, Some(0), "dlq list -c FILE: {after:?}");
    assert_eq!(before.0, Some(0), "dlq -c FILE list: {before:?}");
    assert_eq!(after.1, "no dead letters\n");
    assert_eq!(before.1, after.1);

    // --state-dir works after the action too, and beats the file's state_dir.
    let other = dir.path().join("other-state");
    let (code, _, err) = output(
        cmd()
            .args(["dlq", "list", "-c"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&other),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(other.join("lock").exists(), "--state-dir not used");

    let (code, _, err) = output(cmd().args(["dlq", "list"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("dlq needs -c FILE"), "{err}");
}

/// Every argument of every subcommand has a help text, and `--help` gives the overrides.
#[test]
fn every_argument_has_a_help_text() {
    for sub in [
        &["run"][..],
        &["validate"],
        &["dlq"],
        &["dlq", "list"],
        &["dlq", "show"],
    ] {
        let (code, help, err) = output(cmd().args(sub).arg("--help"));
        assert_eq!(code, Some(0), "{sub:?}: {err}");
        let mut section = "";
        for line in help.lines() {
            if line.ends_with(':') && !line.starts_with(' ') {
                section = line;
                continue;
            }
            if !matches!(section, "Options:" | "Arguments:") || line.trim().is_empty() {
                continue;
            }
            // `  -c, --config <FILE>    Config file ...`: the text after the name.
            let described = line
                .trim_start()
                .split_once("  ")
                .is_some_and(|(_, text)| !text.trim().is_empty());
            assert!(described, "{sub:?}: no help text in {line:?}\n{help}");
        }
    }
    let (_, help, _) = output(cmd().args(["run", "--help"]));
    for text in [
        "--config <FILE>",
        "--state-dir <DIR>",
        "LOG_CAPTURER_STATE_DIR",
        "LOG_CAPTURER_HTTP_LISTEN",
        "LOG_CAPTURER_DOCKER_HOST",
        "LOG_CAPTURER_LOG_LEVEL",
        "flag > environment > config file > default",
    ] {
        assert!(help.contains(text), "run --help lacks {text:?}:\n{help}");
    }
}

#[test]
fn config_errors_name_the_file_and_say_error_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    write(&path, "capture:\n  rotation_interval: 5x\n");
    let (code, out, err) = output(cmd().arg("validate").arg("-c").arg(&path));
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(out, "");
    assert_eq!(err.matches("error").count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: {}: capture.rotation_interval: ",
            path.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("--> {}:2:22", path.display())),
        "{err}"
    );
    assert!(!err.contains("<input>"), "{err}");
    // `run` prints it the same way, once, before any logging.
    let (code, _, run_err) = output(cmd().arg("run").arg("-c").arg(&path));
    assert_eq!(code, Some(2));
    assert_eq!(run_err, err);
}

/// A start-up failure is printed once, and an unwritable state directory names the key and
/// the ways to choose another.
#[test]
fn startup_error_is_printed_once_and_names_the_state_dir_key() {
    // sysfs refuses mkdir even to root (EPERM).
    let (code, out, err) = output(
        cmd()
            .args(["run", "--state-dir", "/sys/log-capturer-cli-test"])
            .env("LOG_CAPTURER_HTTP_LISTEN", "127.0.0.1:0"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err.matches("checkpoint.state_dir /sys/log-capturer-cli-test: ")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("agent failed to start").count(), 1, "{err}");
    assert!(
        err.contains("--state-dir DIR or LOG_CAPTURER_STATE_DIR=DIR"),
        "{err}"
    );
    assert!(!err.contains("\nerror: "), "printed twice: {err}");
}

/// The reported case: a non-root user on the default config (state in /var/lib).
#[test]
fn non_root_on_the_default_config_is_told_how_to_move_the_state() {
    let copy = tempfile::tempdir().expect("tempdir");
    let mut c = if rustix::process::geteuid().is_root() {
        let as_nobody = |bin: &Path| {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin);
            c
        };
        // The build directory may be closed to other users (e.g. under /root): then run a
        // copy that `nobody` can reach.
        let reachable = as_nobody(Path::new(BIN))
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if reachable {
            as_nobody(Path::new(BIN))
        } else {
            use std::os::unix::fs::PermissionsExt;
            let bin = copy.path().join("log-capturer");
            std::fs::copy(BIN, &bin).expect("copy the binary");
            std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            as_nobody(&bin)
        }
    } else {
        Command::new(BIN)
    };
    c.arg("run")
        .stdin(Stdio::null())
        .env_remove("LOG_CAPTURER_STATE_DIR")
        .env_remove("RUST_LOG")
        .env("LOG_CAPTURER_HTTP_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1");
    let (code, _, err) = output(&mut c);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("checkpoint.state_dir /var/lib/log-capturer: "),
        "{err}"
    );
    assert!(err.contains("LOG_CAPTURER_STATE_DIR"), "{err}");
    assert_eq!(err.matches("agent failed to start").count(), 1, "{err}");
}

fn lines(name: &str, n: usize) -> Vec<Line> {
    // 2026-11-30T14:19:00Z and on: the summary and start lines must show these as times.
    (0..n)
        .map(|i| Line::stdout(1_796_048_340_000_000_000 + i as i64, format!("{name} {i}")))
        .collect()
}

/// One summary line after the first listing (counts, sinks, state directory); the
/// per-container start lines of that listing are at debug level, a container found later is
/// announced at info, with its `since` as a time.
#[test]
fn startup_prints_one_summary_line() {
    let engine = FakeEngine::start(vec![
        Container::new("cli-a", lines("cli-a", 3), vec![LogsPlan::Follow]),
        Container::new("cli-b", lines("cli-b", 3), vec![LogsPlan::Follow]),
        Container::new("cli-other", lines("cli-other", 3), vec![LogsPlan::Follow]),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || {
        AgentOptions {
        docker_host: Some(engine.docker_host()),
        capture: "  initial_position: beginning\n  include:\n    names: [\"cli-a\", \"cli-b\", \"cli-late\"]\n"
            .to_string(),
        log_level: "info",
        ..AgentOptions::default()
    }
    };
    let mut agent = Agent::start(dir.path(), options());
    let summary = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("first container listing done"))
            .map(str::to_string)
            .collect()
    };
    let got = wait_until(Duration::from_secs(30), || {
        agent.messages("cli-a").len() == 3 && agent.messages("cli-b").len() == 3
    });
    assert!(got, "lines not captured; log:\n{}", agent.log());
    let log = agent.log();
    let first = summary(&log);
    assert_eq!(first.len(), 1, "{log}");
    for field in [
        "capturing 2 of 3 containers",
        "containers=3",
        "running=3",
        "capturing=2",
        "resumed_from_checkpoint=0",
        "not_selected=1",
        "sinks=file",
        &format!("state_dir={}", dir.path().join("state").display()),
    ] {
        assert!(first[0].contains(field), "{field:?} not in {}", first[0]);
    }
    assert!(
        !log.contains("capturing container"),
        "per-container lines at info:\n{log}"
    );

    // Found after the first listing: announced, with a readable since.
    let late = Container::new("cli-late", lines("cli-late", 1), vec![LogsPlan::Follow]);
    let late_id = container_id("cli-late");
    engine.add(late);
    engine.send_start(&late_id, "cli-late");
    let announced = wait_until(Duration::from_secs(30), || {
        agent
            .log()
            .lines()
            .any(|l| l.contains("capturing container") && l.contains("container=cli-late"))
    });
    assert!(announced, "{}", agent.log());
    let line = agent
        .log()
        .lines()
        .find(|l| l.contains("capturing container"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("since=start of log"), "{line}");
    assert!(line.contains("since_ns=0"), "{line}");

    // A restart resumes the three from their checkpoints; at debug level, the start lines
    // show where, as times.
    assert_eq!(agent.terminate().code(), Some(0), "{}", agent.log());
    std::fs::write(dir.path().join("agent.log"), "").expect("truncate log");
    let config = std::fs::read_to_string(agent.config_path()).expect("config");
    let debug = config.replace("level: info", "level: log_capturer=debug,info");
    assert_ne!(config, debug);
    std::fs::write(agent.config_path(), debug).expect("config");
    agent.restart();
    let summarised = wait_until(Duration::from_secs(30), || {
        !summary(&agent.log()).is_empty()
    });
    assert!(summarised, "{}", agent.log());
    let again = summary(&agent.log());
    assert!(
        again[0].contains("resumed_from_checkpoint=3") && again[0].contains("capturing=3"),
        "{}",
        again[0]
    );
    let log = agent.log();
    let start_a = log
        .lines()
        .find(|l| l.contains("capturing container") && l.contains("container=cli-a"))
        .unwrap_or_default();
    // Its lines are stamped 2026-11-30T14:19:00Z and on; it resumes at or before them
    // (by at most the cursor's reorder slack, 1 s).
    assert!(
        start_a.contains("since=2026-11-30T14:18:59.") && start_a.contains("since_ns=17960483"),
        "{log}"
    );
    assert!(start_a.contains(" DEBUG "), "{start_a}");
    let _ = agent.terminate();
}
