//! The command line as operators meet it, through the real binary: argument order and help
//! texts, config errors printed once and naming the file, log level aliases, per-host
//! overrides (`--state-dir`, `LOG_CAPTURER_*`), host-name listen addresses, colours, and the
//! start-up summary.

mod support;

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

/// Spawns `run` with stderr into `dir/stderr` and the Docker endpoint unreachable (the agent
/// then warns and retries, and keeps running).
fn spawn_unreachable(dir: &Path, envs: &[(&str, &str)], config: &Path) -> Child {
    let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    let mut c = cmd();
    c.arg("run")
        .arg("-c")
        .arg(config)
        .env(
            "LOG_CAPTURER_DOCKER_HOST",
            "unix:///nonexistent/docker.sock",
        )
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().expect("spawn")
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `warning` (and RUST_LOG=warning) used to be read as a target: every line was silenced.
#[test]
fn log_level_warning_shows_warnings_and_hides_info() {
    for (level, env) in [("warning", None), ("info", Some(("RUST_LOG", "WARNING")))] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("c.yaml");
        write(
            &config,
            &format!(
                "sinks:\n  discard: {{}}\ncheckpoint:\n  state_dir: {}\n\
                 http:\n  listen: \"\"\nlog:\n  level: {level}\n",
                dir.path().join("state").display()
            ),
        );
        let child = spawn_unreachable(dir.path(), &env.into_iter().collect::<Vec<_>>(), &config);
        let read = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        let warned = wait_until(Duration::from_secs(30), || {
            read().contains("Docker engine not reachable")
        });
        stop(child);
        let log = read();
        assert!(warned, "{level} {env:?}: no warning logged:\n{log}");
        assert!(
            !log.contains(" INFO "),
            "{level} {env:?}: info shown:\n{log}"
        );
    }
}

#[test]
fn log_level_that_is_no_level_is_refused_naming_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = loki_config(dir.path());
    let bad = dir.path().join("bad.yaml");
    write(&bad, "log:\n  level: verbose\n");
    let (code, _, err) = output(cmd().arg("validate").arg("-c").arg(&bad));
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with(&format!(
            "error: {}: log.level: \"verbose\": ",
            bad.display()
        )),
        "{err}"
    );
    for var in ["RUST_LOG", "LOG_CAPTURER_LOG_LEVEL"] {
        let (code, _, err) = output(cmd().args(["run", "-c"]).arg(&config).env(var, "verbose"));
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.starts_with(&format!("error: {var}: log.level: \"verbose\": ")),
            "{err}"
        );
    }
}

#[test]
fn environment_overrides_are_validated_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = loki_config(dir.path());
    for (var, value, key) in [
        ("LOG_CAPTURER_HTTP_LISTEN", "nope", "http.listen"),
        ("LOG_CAPTURER_DOCKER_HOST", "ftp://x", "docker.host"),
    ] {
        for sub in ["run", "validate"] {
            let (code, _, err) = output(cmd().args([sub, "-c"]).arg(&config).env(var, value));
            assert_eq!(code, Some(2), "{sub} {err}");
            assert!(
                err.starts_with(&format!("error: {var}: {key}: ")),
                "{sub}: {err}"
            );
        }
    }
    // A host name that does not resolve is refused when the listener is bound.
    let (code, _, err) = output(
        cmd()
            .args(["run", "-c"])
            .arg(&config)
            .env("LOG_CAPTURER_HTTP_LISTEN", "no-such-host.invalid:8001"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("http.listen no-such-host.invalid:8001: cannot resolve"),
        "{err}"
    );
}

/// `LOG_CAPTURER_*` set the state directory, the listen address (a host name) and the Docker
/// endpoint over the file's; `--state-dir` beats the variable.
#[test]
fn environment_overrides_the_file_and_the_flag_overrides_the_environment() {
    let engine = FakeEngine::start(Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.yaml");
    // The file's values would all fail: the overrides must win.
    write(
        &config,
        "sinks:\n  discard: {}\ncheckpoint:\n  state_dir: /sys/not-here\n\
         http:\n  listen: \"127.0.0.1:1\"\ndocker:\n  host: unix:///nonexistent.sock\n",
    );
    let env_state = dir.path().join("env-state");
    let flag_state = dir.path().join("flag-state");
    for flag in [false, true] {
        let port = log_capturer_testkit::free_port().expect("port");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr");
        let mut c = cmd();
        c.args(["run", "-c"]).arg(&config);
        if flag {
            c.arg("--state-dir").arg(&flag_state);
        }
        let mut child = c
            .env("LOG_CAPTURER_STATE_DIR", &env_state)
            .env("LOG_CAPTURER_HTTP_LISTEN", format!("localhost:{port}"))
            .env("LOG_CAPTURER_DOCKER_HOST", engine.docker_host())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn");
        let addr = format!("127.0.0.1:{port}");
        let ready = wait_until(Duration::from_secs(60), || {
            log_capturer_testkit::http_get(&addr, "/ready").is_some_and(|(s, _)| s == 200)
        });
        let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let status = child.wait().expect("wait");
        assert!(ready, "not ready on localhost:{port}:\n{log}");
        assert_eq!(status.code(), Some(0), "{log}");
        let used = if flag { &flag_state } else { &env_state };
        assert!(
            used.join("lock").exists(),
            "flag={flag}: state not in {used:?}"
        );
        assert!(
            log.contains("from=LOG_CAPTURER_HTTP_LISTEN"),
            "override not logged:\n{log}"
        );
    }
}

/// Colours only on a terminal, and never with NO_COLOR (to a file: `lifecycle.rs`'s
/// `diagnostics_to_a_file_have_no_ansi_escapes`). `script` gives the agent a terminal.
#[test]
fn colours_on_a_terminal_unless_no_color() {
    let run = |no_color: bool| {
        let line = format!(
            "{} {BIN} run --state-dir /sys/log-capturer-cli-test",
            if no_color {
                "env NO_COLOR=1"
            } else {
                "env -u NO_COLOR"
            }
        );
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("LOG_CAPTURER_HTTP_LISTEN")
            .env_remove("LOG_CAPTURER_LOG_LEVEL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = run(false);
    assert!(coloured.contains("agent failed to start"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = run(true);
    assert!(plain.contains("agent failed to start"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour despite NO_COLOR: {plain:?}"
    );
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
