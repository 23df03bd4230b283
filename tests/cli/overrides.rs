//! Log levels and their aliases, `LOG_CAPTURER_*` and `--state-dir` overrides, colours: an
//! agent that runs with the Docker endpoint unreachable, and what it prints.

use super::*;

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
