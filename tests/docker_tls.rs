//! Connecting to Docker the way the Docker CLI does: TLS to a `tcp://` daemon (the
//! `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH` environment and the `docker.tls` keys) through a
//! TLS-terminating proxy in front of the real dockerd that requires a client certificate; the
//! hint when plain HTTP meets a TLS port; a wrong CA; `DOCKER_API_VERSION`; permission denied
//! on the socket.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::Containers;
use support::fake_engine::{BASE_NS, Container, FakeEngine, Line, LogsPlan};
use support::tempdir;
use support::tls_proxy::{Certs, TlsProxy};
use support::wait_until;

const DOCKER_SOCK: &str = "/var/run/docker.sock";
/// Lines per container: 100 written before the agent follows, the rest while it does, at a
/// rate where it pauses between reads (its sockets, TLS sessions included, parked meanwhile).
const LINES: usize = 3100;

/// A `DOCKER_CERT_PATH` directory (ca.pem, cert.pem, key.pem) with `ca` as the trusted CA and
/// the client certificate of `client`.
fn cert_path(dir: &Path, ca: &Certs, client: &Certs) -> PathBuf {
    std::fs::create_dir_all(dir).expect("cert dir");
    std::fs::copy(&ca.ca_file, dir.join("ca.pem")).expect("ca.pem");
    std::fs::copy(&client.client_cert_file, dir.join("cert.pem")).expect("cert.pem");
    std::fs::copy(&client.client_key_file, dir.join("key.pem")).expect("key.pem");
    dir.to_path_buf()
}

/// A proxy that requires a client certificate signed by `certs`' CA, in front of dockerd.
fn docker_proxy(certs: &Certs) -> TlsProxy {
    TlsProxy::start_unix(Path::new(DOCKER_SOCK), certs.mutual_options())
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs a container that writes `LINES` lines in two parts (the second while the agent
/// follows its stream, with reopens every second), and asserts the agent wrote exactly those
/// lines, once each, in order.
fn captures_exactly(
    short: &str,
    dir: &Path,
    containers: &mut Containers,
    options: AgentOptions,
    proxy: &TlsProxy,
) {
    let agent = Agent::start(dir, options);
    let first = 100;
    containers.run(
        short,
        &["--network", "none"],
        &format!(
            "i=1; while [ $i -le {first} ]; do echo {short}-$i; i=$((i+1)); done; sleep 2; \
             while [ $i -le {LINES} ]; do echo {short}-$i; usleep 1000; i=$((i+1)); done; \
             exec sleep 3600"
        ),
    );
    let name = containers.name(short);
    let all = wait_until(Duration::from_secs(90), || {
        agent.records(&name).len() >= LINES
    });
    assert!(
        all,
        "{} of {LINES} lines; log:\n{}",
        agent.records(&name).len(),
        agent.log()
    );
    // Two more rotations: nothing may be read twice.
    std::thread::sleep(Duration::from_secs(2));
    let expected: Vec<String> = (1..=LINES).map(|i| format!("{short}-{i}")).collect();
    assert_eq!(agent.messages(&name), expected, "log:\n{}", agent.log());
    assert!(
        proxy.handshakes_ok() >= 3,
        "every request goes through the TLS proxy; stats {:?}",
        proxy.stats()
    );
    assert!(
        proxy.handshake_errors().is_empty(),
        "handshake errors: {:?}",
        proxy.handshake_errors()
    );
    assert!(agent.log().contains("(TLS)"), "log:\n{}", agent.log());
}

#[test]
fn tls_from_the_environment_captures_a_container_exactly() {
    let dir = tempdir();
    let certs = Certs::generate(&dir.path().join("certs"));
    let cert_dir = cert_path(&dir.path().join("docker-certs"), &certs, &certs);
    let proxy = docker_proxy(&certs);
    let mut containers = Containers::new("tlsenv");
    let options = AgentOptions {
        capture: format!("{}  rotation_interval: 1s\n", containers.include_yaml()),
        docker_host: Some(format!("tcp://127.0.0.1:{}", proxy.port())),
        env: env(&[
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", cert_dir.to_str().expect("utf-8")),
        ]),
        ..AgentOptions::default()
    };
    captures_exactly(
        "tlsenv",
        &dir.path().join("agent"),
        &mut containers,
        options,
        &proxy,
    );
}

#[test]
fn tls_from_the_config_keys_captures_a_container_exactly() {
    let dir = tempdir();
    let certs = Certs::generate(&dir.path().join("certs"));
    let proxy = docker_proxy(&certs);
    let mut containers = Containers::new("tlscfg");
    // The environment points at a directory without certificates: the config wins.
    let options = AgentOptions {
        capture: format!("{}  rotation_interval: 1s\n", containers.include_yaml()),
        docker: format!(
            "  host: tcp://localhost:{}\n  tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\n    verify: true\n",
            proxy.port(),
            certs.ca_file.display(),
            certs.client_cert_file.display(),
            certs.client_key_file.display(),
        ),
        env: env(&[
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/nonexistent"),
        ]),
        ..AgentOptions::default()
    };
    captures_exactly(
        "tlscfg",
        &dir.path().join("agent"),
        &mut containers,
        options,
        &proxy,
    );
}

/// An agent on `docker_host` with `env`, retrying fast, not waited for.
fn start_retrying(dir: &Path, docker_host: String, env_pairs: &[(&str, &str)]) -> Agent {
    Agent::start_unready(
        dir,
        AgentOptions {
            docker_host: Some(docker_host),
            capture: "  retry_backoff_initial: 100ms\n  retry_backoff_max: 500ms\n".to_string(),
            env: env(env_pairs),
            ..AgentOptions::default()
        },
    )
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Waits until the agent has failed to reach Docker at least three times (it keeps retrying),
/// and checks it is still running and not ready.
fn wait_retrying(agent: &mut Agent) {
    let retried = wait_until(Duration::from_secs(60), || {
        count(&agent.log(), "Docker engine not reachable") >= 3
    });
    assert!(retried, "log:\n{}", agent.log());
    assert!(
        agent.wait_exit_within(Duration::ZERO).is_none(),
        "the agent gave up; log:\n{}",
        agent.log()
    );
    assert!(agent.get("/ready").is_some_and(|(status, _)| status != 200));
}

#[test]
fn plain_http_to_a_tls_port_says_so_and_keeps_retrying() {
    let dir = tempdir();
    let certs = Certs::generate(&dir.path().join("certs"));
    let proxy = docker_proxy(&certs);
    let mut agent = start_retrying(
        &dir.path().join("agent"),
        format!("tcp://127.0.0.1:{}", proxy.port()),
        &[],
    );
    wait_retrying(&mut agent);
    let log = agent.log();
    let warned = count(
        &log,
        "the daemon answered with TLS (this looks like a TLS port: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH",
    );
    assert!(warned >= 3, "every failure carries the hint; log:\n{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("ERROR") && l.contains("this looks like a TLS port"))
            .count(),
        1,
        "the hint once at error level; log:\n{log}"
    );
    assert!(
        !log.contains("connection closed before the response head"),
        "{log}"
    );
}

#[test]
fn a_wrong_ca_is_named_as_a_certificate_error() {
    let dir = tempdir();
    let certs = Certs::generate(&dir.path().join("certs"));
    let other = Certs::generate(&dir.path().join("other"));
    // Trusts another CA; the client certificate is the right one.
    let cert_dir = cert_path(&dir.path().join("docker-certs"), &other, &certs);
    let proxy = docker_proxy(&certs);
    let mut agent = start_retrying(
        &dir.path().join("agent"),
        format!("tcp://127.0.0.1:{}", proxy.port()),
        &[
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", cert_dir.to_str().expect("utf-8")),
        ],
    );
    wait_retrying(&mut agent);
    let log = agent.log();
    assert!(
        count(&log, "TLS handshake: invalid peer certificate") >= 3,
        "log:\n{log}"
    );
    assert_eq!(proxy.handshakes_ok(), 0);
    assert!(
        !proxy.handshake_errors().is_empty(),
        "the agent told the daemon why (an alert)"
    );
}

#[test]
fn docker_api_version_below_the_floor_is_a_startup_error() {
    let dir = tempdir();
    let engine = FakeEngine::start(Vec::new());
    let mut agent = start_retrying(
        dir.path(),
        engine.docker_host(),
        &[("DOCKER_API_VERSION", "1.40")],
    );
    let status = agent
        .wait_exit_within(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the agent did not exit; log:\n{}", agent.log()));
    assert_eq!(status.code(), Some(1), "exit {status}");
    let log = agent.log();
    assert!(
        log.contains(
            "DOCKER_API_VERSION=1.40 is older than the oldest Engine API the agent speaks (1.41"
        ),
        "log:\n{log}"
    );
    assert!(engine.requests().is_empty(), "{:?}", engine.requests());
}

#[test]
fn docker_api_version_is_used_in_every_request_path() {
    let dir = tempdir();
    let lines: Vec<Line> = (0..5)
        .map(|i| Line::stdout(BASE_NS + 1_000_000_000 + i * 1_000_000, format!("pin {i}")))
        .collect();
    let engine = FakeEngine::start(vec![Container::new(
        "pinned",
        lines,
        vec![LogsPlan::Follow],
    )]);
    // The engine offers a newer API; the pin wins.
    engine.set_api_version("1.45");
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            docker_host: Some(engine.docker_host()),
            capture: "  initial_position: beginning\n".to_string(),
            env: env(&[("DOCKER_API_VERSION", "1.41")]),
            ..AgentOptions::default()
        },
    );
    assert!(
        wait_until(Duration::from_secs(30), || agent.records("pinned").len()
            >= 5),
        "log:\n{}",
        agent.log()
    );
    let requests = engine.requests();
    let versioned: Vec<&String> = requests.iter().filter(|r| *r != "/version").collect();
    assert!(
        versioned
            .iter()
            .any(|r| r.starts_with("/v1.41/containers/json"))
            && versioned
                .iter()
                .any(|r| r.starts_with("/v1.41/containers/") && r.contains("/logs?")),
        "{requests:?}"
    );
    assert!(
        versioned.iter().all(|r| r.starts_with("/v1.41/")),
        "{requests:?}"
    );
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.contains("connected to Docker") && l.contains("v1.41")),
        "log:\n{log}"
    );
}

#[test]
fn docker_api_version_newer_than_the_engine_is_refused_with_retries() {
    let dir = tempdir();
    let engine = FakeEngine::start(Vec::new());
    let mut agent = start_retrying(
        dir.path(),
        engine.docker_host(),
        &[("DOCKER_API_VERSION", "1.44")],
    );
    wait_retrying(&mut agent);
    assert!(
        agent
            .log()
            .contains("DOCKER_API_VERSION=1.44 is newer than the engine's API 1.41"),
        "log:\n{}",
        agent.log()
    );
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn permission_denied_on_the_socket_is_explained_once() {
    // The agent runs as nobody (65534, no supplementary groups) against the real socket
    // (root:docker, 0660). Root would bypass the permission, hence setpriv.
    const NOBODY: &str = "65534";
    let setpriv = [
        "setpriv".to_string(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_string(),
    ];
    if !running_as_root() {
        eprintln!(
            "SKIP permission_denied_on_the_socket_is_explained_once: not root, cannot setpriv"
        );
        return;
    }
    let probe = Command::new(&setpriv[0])
        .args(&setpriv[1..])
        .args(["sh", "-c", &format!("test -w {DOCKER_SOCK}")])
        .status();
    match probe {
        Ok(s) if !s.success() => {}
        Ok(_) => {
            eprintln!(
                "SKIP permission_denied_on_the_socket_is_explained_once: {DOCKER_SOCK} is writable by uid {NOBODY}"
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIP permission_denied_on_the_socket_is_explained_once: setpriv: {e}");
            return;
        }
    }
    let dir = tempdir();
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    for d in [dir.path(), agent_dir.as_path()] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).expect("chown");
    }
    let mut agent = Agent::start_unready(
        &agent_dir,
        AgentOptions {
            docker_host: Some(format!("unix://{DOCKER_SOCK}")),
            capture: "  retry_backoff_initial: 100ms\n  retry_backoff_max: 500ms\n".to_string(),
            wrapper: setpriv.to_vec(),
            ..AgentOptions::default()
        },
    );
    wait_retrying(&mut agent);
    let log = agent.log();
    let hints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("permission denied on the Docker socket"))
        .collect();
    assert_eq!(hints.len(), 1, "the hint once; log:\n{log}");
    assert!(
        hints[0].contains("ERROR")
            && hints[0].contains(&format!(
                "permission denied on the Docker socket {DOCKER_SOCK}"
            ))
            && hints[0].contains("`docker` group"),
        "{}",
        hints[0]
    );
    assert!(count(&log, "Permission denied") >= 3, "log:\n{log}");
}
