//! The Loki sink over HTTPS: fake Engine API → the real agent binary → a TLS-terminating
//! proxy (tests/support/tls_proxy.rs, certificates made by rcgen at test time) → the Loki
//! test receiver. Private CA, unknown CA, `insecure_skip_verify`, mutual TLS, bad PEM paths.
//!
//! The parties are made by `set_up`; each test starts its agent itself, so the TLS keys it
//! sets are read in one place.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::agent::{Agent, start_on_fake_engine};
use support::fake_engine::{BASE_NS, Container, FakeEngine, Line, LogsPlan};
use support::loki::LokiReceiver;
use support::tempdir;
use support::tls_proxy::{Certs, TlsProxy, TlsProxyOptions};
use support::wait_until;

/// Lines the fake engine holds for the one container.
const LINES: usize = 20;
const CONNECT_FAILURES: &str = r#"log_capturer_sink_failures_total{sink="loki",reason="connect"}"#;

fn expected(name: &str) -> Vec<String> {
    (1..=LINES).map(|i| format!("{name} line {i}")).collect()
}

/// A fake engine with one running container `name` holding `LINES` numbered lines.
fn engine(name: &str) -> FakeEngine {
    let lines = expected(name)
        .into_iter()
        .enumerate()
        .map(|(i, text)| Line::stdout(BASE_NS + 1_000_000_000 + i as i64 * 1_000, text))
        .collect();
    FakeEngine::start(vec![Container::new(name, lines, vec![LogsPlan::Follow])])
}

fn upstream(rx: &LokiReceiver) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], rx.port()))
}

/// One test's parties: fresh certificates (under `dir/certs`), the fake engine with container
/// `name`, the Loki receiver and the TLS proxy in front of it with `proxy_options`. (Fields
/// drop in this order: the directory last.)
struct Parties {
    proxy: TlsProxy,
    rx: LokiReceiver,
    fe: FakeEngine,
    certs: Certs,
    dir: tempfile::TempDir,
}

fn set_up(name: &str, proxy_options: fn(&Certs) -> TlsProxyOptions) -> Parties {
    let dir = tempdir();
    let certs = Certs::generate(&dir.path().join("certs"));
    let fe = engine(name);
    let rx = LokiReceiver::start();
    let proxy = TlsProxy::start(upstream(&rx), proxy_options(&certs));
    Parties {
        proxy,
        rx,
        fe,
        certs,
        dir,
    }
}

impl Parties {
    /// The agent, its state under `dir/<state>`, pushing to `url` with the `tls` keys.
    fn start_agent(&self, state: &str, url: &str, tls: &str) -> Agent {
        start_on_fake_engine(&self.dir.path().join(state), &self.fe, &loki_sink(url, tls))
    }
}

/// The `sinks:` entry: Loki at `url` with short batching and retries and `tls` (keys
/// indented by 6 spaces, or empty).
fn loki_sink(url: &str, tls: &str) -> String {
    let tls = if tls.is_empty() {
        String::new()
    } else {
        format!("    tls:\n{tls}")
    };
    format!(
        "  loki:\n    url: {url}\n    batch:\n      max_wait: 200ms\n    retry:\n      initial: 200ms\n      max: 1s\n{tls}"
    )
}

/// Waits for every line, then a little more for duplicates, and checks each arrived once.
fn assert_all_lines_once(rx: &LokiReceiver, name: &str, agent: &Agent, proxy: &TlsProxy) {
    let arrived = wait_until(Duration::from_secs(30), || rx.entries().len() >= LINES);
    assert!(
        arrived,
        "{} of {LINES} lines reached Loki; proxy: {:?}; log:\n{}",
        rx.entries().len(),
        proxy.stats(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut got: Vec<String> = rx
        .entries()
        .into_iter()
        .filter(|e| e.labels.get("container_name").map(String::as_str) == Some(name))
        .map(|e| e.line)
        .collect();
    got.sort_by_key(|l| l.rsplit(' ').next().and_then(|n| n.parse::<usize>().ok()));
    assert_eq!(got, expected(name), "every line exactly once");
    assert_eq!(rx.entries().len(), LINES, "nothing else arrived");
}

/// Checks, for ~5 s after the agent started, that nothing reaches Loki while pushes fail to
/// connect; and that the agent stays healthy.
fn assert_nothing_sent(rx: &LokiReceiver, agent: &Agent, proxy: &TlsProxy, started: Instant) {
    let failed = wait_until(Duration::from_secs(20), || {
        agent.metric(CONNECT_FAILURES) >= 1.0 && !proxy.handshake_errors().is_empty()
    });
    assert!(
        failed,
        "no connect failure counted ({} = {}) or no failed handshake ({:?}); log:\n{}",
        CONNECT_FAILURES,
        agent.metric(CONNECT_FAILURES),
        proxy.stats(),
        agent.log()
    );
    if let Some(rest) = Duration::from_secs(5).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    assert!(
        rx.entries().is_empty() && rx.requests().is_empty(),
        "Loki received {} entries in {} requests",
        rx.entries().len(),
        rx.requests().len()
    );
    assert_eq!(rx.connections(), 0, "no connection reached the receiver");
    let stats = proxy.stats();
    assert_eq!(stats.handshakes_ok, 0, "{stats:?}");
    assert!(
        agent.metric(CONNECT_FAILURES) >= 1.0,
        "{CONNECT_FAILURES} = {}",
        agent.metric(CONNECT_FAILURES)
    );
    let health = agent.get("/health");
    assert_eq!(
        health.as_ref().map(|(status, _)| *status),
        Some(200),
        "/health: {health:?}; log:\n{}",
        agent.log()
    );
}

#[test]
fn ca_file_trusts_a_private_ca() {
    let name = "tls-ca";
    let p = set_up(name, Certs::server_options);
    // By name: the certificate's DNS SAN is checked.
    let agent = p.start_agent(
        "agent",
        &p.proxy.push_url("localhost"),
        &format!("      ca_file: {}\n", p.certs.ca_file.display()),
    );
    assert_all_lines_once(&p.rx, name, &agent, &p.proxy);
    let stats = p.proxy.stats();
    assert!(stats.handshakes_ok >= 1, "{stats:?}");
    assert!(stats.handshake_errors.is_empty(), "{stats:?}");
}

#[test]
fn unknown_ca_is_refused_and_nothing_is_sent() {
    let p = set_up("tls-unknown", Certs::server_options);
    let started = Instant::now();
    let agent = p.start_agent("agent", &p.proxy.push_url("localhost"), "");
    assert_nothing_sent(&p.rx, &agent, &p.proxy, started);
    let errors = p.proxy.handshake_errors();
    assert!(
        errors.iter().all(|e| e.contains("alert")),
        "the agent aborts the handshake with an alert: {errors:?}"
    );
    let log = agent.log();
    assert!(
        log.contains("UnknownIssuer") || log.contains("unknown issuer"),
        "the agent logs why: {log}"
    );
}

#[test]
fn insecure_skip_verify_accepts_any_certificate_and_warns() {
    let name = "tls-insecure";
    let p = set_up(name, Certs::server_options);
    let agent = p.start_agent(
        "agent",
        &p.proxy.push_url("127.0.0.1"),
        "      insecure_skip_verify: true\n",
    );
    assert_all_lines_once(&p.rx, name, &agent, &p.proxy);
    let log = agent.log();
    let warning = log
        .lines()
        .find(|l| l.contains("insecure_skip_verify"))
        .unwrap_or_else(|| panic!("no insecure_skip_verify warning; log:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
}

#[test]
fn mutual_tls_client_certificate() {
    let name = "tls-mutual";
    let p = set_up(name, Certs::mutual_options);
    // By IP address: the certificate's IP SAN is checked.
    let url = p.proxy.push_url("127.0.0.1");
    let ca = format!("      ca_file: {}\n", p.certs.ca_file.display());

    let mut with_cert = p.start_agent(
        "with-cert",
        &url,
        &format!(
            "{ca}      cert_file: {}\n      key_file: {}\n",
            p.certs.client_cert_file.display(),
            p.certs.client_key_file.display()
        ),
    );
    assert_all_lines_once(&p.rx, name, &with_cert, &p.proxy);
    let stats = p.proxy.stats();
    assert!(stats.handshakes_ok >= 1, "{stats:?}");
    assert!(stats.handshake_errors.is_empty(), "{stats:?}");
    assert!(with_cert.terminate().success(), "{}", with_cert.log());
    drop(with_cert);

    p.rx.clear();
    let ok_before = p.proxy.handshakes_ok();
    let started = Instant::now();
    let without_cert = p.start_agent("without-cert", &url, &ca);
    // Like `assert_nothing_sent`, but the proxy already completed handshakes for `with_cert`.
    let failed = wait_until(Duration::from_secs(20), || {
        without_cert.metric(CONNECT_FAILURES) >= 1.0 && !p.proxy.handshake_errors().is_empty()
    });
    assert!(
        failed,
        "no connect failure counted or no failed handshake ({:?}); log:\n{}",
        p.proxy.stats(),
        without_cert.log()
    );
    if let Some(rest) = Duration::from_secs(5).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    assert!(
        p.rx.entries().is_empty(),
        "Loki received {} entries without a client certificate",
        p.rx.entries().len()
    );
    let stats = p.proxy.stats();
    assert_eq!(stats.handshakes_ok, ok_before, "{stats:?}");
    assert!(
        stats
            .handshake_errors
            .iter()
            .all(|e| e.to_lowercase().contains("certificate")),
        "the proxy refuses for want of a client certificate: {stats:?}"
    );
    assert_eq!(
        without_cert.get("/health").map(|(status, _)| status),
        Some(200)
    );
}

/// Runs `log-capturer run -c CONFIG` (a Loki sink with a missing `ca_file`) and expects it to
/// exit non-zero within 20 s, naming the key on stderr.
fn assert_exits_naming_ca_file(dir: &Path, docker_host: &str) {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "sinks:\n  loki:\n    url: https://127.0.0.1:1/loki/api/v1/push\n    tls:\n      ca_file: /nonexistent.pem\n\
             checkpoint:\n  state_dir: {}\n\
             http:\n  listen: \"\"\n\
             docker:\n  host: {docker_host}\n",
            dir.join("state").display()
        ),
    )
    .expect("write config");
    let stderr_path = dir.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .env_remove("RUST_LOG")
        .env_remove("DOCKER_HOST")
        .spawn()
        .expect("spawn agent");
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("still running after 20 s; stderr:\n{stderr}"));
    assert!(!status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("sinks.loki.tls.ca_file") && stderr.contains("/nonexistent.pem"),
        "stderr names the key and the path:\n{stderr}"
    );
}

#[test]
fn bad_pem_paths_are_reported_at_start() {
    let dir = tempdir();
    assert_exits_naming_ca_file(dir.path(), "unix:///nonexistent.sock");
}

#[test]
fn bad_pem_paths_are_reported_once_docker_answers() {
    let dir = tempdir();
    let fe = engine("tls-badpem");
    assert_exits_naming_ca_file(dir.path(), &fe.docker_host());
}
