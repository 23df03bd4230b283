//! The Prometheus side of the agent, checked with the tools operators use:
//! - the real agent's `/metrics`, in both formats `Accept` chooses between, passes
//!   `promtool check metrics` (the 0.0.4 answer; promtool reads no other) and the OpenMetrics
//!   answer carries exactly the same samples;
//! - `deploy/prometheus/alerts.yml` passes `promtool check rules` and its unit tests
//!   (`deploy/prometheus/alerts_test.yml`, an input series for every alert, firing and not);
//! - every metric name that the dashboard (`deploy/grafana/log-capturer.json`) and the rules
//!   reference is exported by the real agent.
//!
//! promtool comes with Debian's `prometheus` package, which `scripts/test` installs: a
//! missing promtool fails these tests, it does not skip them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::Containers;
use support::loki::LokiReceiver;
use support::wait_until;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(ROOT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not runnable ({e}): install Debian's `prometheus` package (scripts/test does)")
        });
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to promtool");
    }
    drop(input);
    let out = child.wait_with_output().expect("promtool output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// GET `/metrics` with an `Accept` header; the Content-Type and the body.
fn scrape(addr: &str, accept: Option<&str>) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET /metrics HTTP/1.0\r\nHost: t\r\n{accept}\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .expect("a Content-Type");
    (content_type, body.to_string())
}

/// Answers of the real agent (against the real dockerd, one container writing, a Loki sink
/// delivering), taken once for every test of this file.
struct Scrapes {
    default: (String, String),
    text: (String, String),
    prometheus: (String, String),
}

const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn scrapes() -> &'static Scrapes {
    static SCRAPES: OnceLock<Scrapes> = OnceLock::new();
    SCRAPES.get_or_init(|| {
        let rx = LokiReceiver::start();
        let mut containers = Containers::new("bundle");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut agent = Agent::start(
            dir.path(),
            AgentOptions {
                capture: format!("{}  rotation_interval: 1s\n", containers.include_yaml()),
                sinks: format!(
                    "  loki:\n    url: {}\n    batch:\n      max_wait: 200ms\n",
                    rx.push_url()
                ),
                ..AgentOptions::default()
            },
        );
        let name = containers.name("bundle");
        containers.run(
            "bundle",
            &["--network", "none"],
            "i=0; while true; do i=$((i+1)); echo line-$i; usleep 100000; done",
        );
        // Per-container families appear with the first line and the first rotation; the
        // latency histogram with the first Loki delivery.
        let rotated =
            format!("log_capturer_container_stream_rotations_total{{container_name=\"{name}\"}}");
        let collected = format!("log_capturer_collected_bytes_total{{container_name=\"{name}\"}}");
        let ready = wait_until(Duration::from_secs(60), || {
            let m = agent.metrics();
            [
                rotated.as_str(),
                collected.as_str(),
                "log_capturer_sink_send_latency_seconds_count{sink=\"loki\"}",
            ]
            .iter()
            .all(|k| m.get(*k).is_some_and(|v| *v >= 1.0))
        });
        assert!(
            ready,
            "no rotation, line or Loki delivery; log:\n{}",
            agent.log()
        );
        let scrapes = Scrapes {
            default: scrape(&agent.http, None),
            text: scrape(&agent.http, Some("text/plain")),
            prometheus: scrape(&agent.http, Some(PROMETHEUS_ACCEPT)),
        };
        let status = agent.terminate();
        assert!(
            status.success(),
            "agent exit: {status:?}; log:\n{}",
            agent.log()
        );
        containers.remove_all();
        scrapes
    })
}

/// `name{labels}` → value of every sample, and the families `# TYPE` names.
fn parse(exposition: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut samples = BTreeMap::new();
    let mut families = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap_or_default().to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let split = line.rfind(' ').expect("a value");
            samples.insert(line[..split].to_string(), line[split + 1..].to_string());
        }
    }
    (samples, families)
}

#[test]
fn metrics_pass_promtool_in_the_text_format_and_openmetrics_carries_the_same_samples() {
    let s = scrapes();
    for (what, (content_type, body)) in [("no Accept", &s.default), ("text/plain", &s.text)] {
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{what}"
        );
        assert!(
            !body.contains("# EOF") && !body.contains("# UNIT"),
            "{what}:\n{body}"
        );
        let (ok, out) = promtool(&["check", "metrics"], Some(body));
        assert!(
            ok && out.trim().is_empty(),
            "promtool check metrics ({what}):\n{out}\n{body}"
        );
        for family in [
            "# TYPE log_capturer_logs_collected_total counter",
            "# TYPE log_capturer_build_info gauge",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(body.contains(family), "{family} missing ({what}):\n{body}");
        }
    }

    let (content_type, om) = &s.prometheus;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        om.ends_with("# EOF\n"),
        "OpenMetrics must end with # EOF:\n{om}"
    );
    assert!(
        om.contains("# TYPE log_capturer_logs_collected counter\n"),
        "{om}"
    );
    assert!(om.contains("# UNIT process_cpu_seconds seconds\n"), "{om}");
    assert!(om.contains("# TYPE log_capturer_build info\n"), "{om}");
    // The same samples, bar those that changed between the scrapes (counters, gauges of
    // time and resources): compare names and labels, and values of the constant ones.
    let (om_samples, _) = parse(om);
    let (text_samples, _) = parse(&s.text.1);
    let keys = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(keys(&om_samples), keys(&text_samples), "sample sets differ");
    let build = om_samples
        .iter()
        .find(|(k, _)| k.starts_with("log_capturer_build_info{"))
        .expect("build_info");
    assert_eq!(build.1, "1");
    assert!(
        build.0.contains("version=\"0.1.0\"")
            || build
                .0
                .contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{}",
        build.0
    );
    assert!(
        !build.0.contains("commit=\"\"") && !build.0.contains("rustc=\"\""),
        "{}",
        build.0
    );
    // Counters with a failure reason exist at 0 before any failure.
    for key in [
        "log_capturer_container_stream_errors_total{reason=\"read\"}",
        "log_capturer_sink_failures_total{sink=\"loki\",reason=\"5xx\"}",
        "log_capturer_sink_failures_total{sink=\"file\",reason=\"io\"}",
        "log_capturer_dead_letters_total{sink=\"loki\",reason=\"400\"}",
        "log_capturer_buffer_errors_total{sink=\"loki\",reason=\"append\"}",
        "log_capturer_http_connections_closed_total{reason=\"over_limit\"}",
        "log_capturer_docker_unreachable_total",
    ] {
        assert_eq!(
            text_samples.get(key).map(String::as_str),
            Some("0"),
            "{key}"
        );
    }
}

#[test]
fn alert_rules_pass_promtool_check_rules() {
    let (ok, out) = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"], None);
    assert!(ok, "promtool check rules:\n{out}");
}

#[test]
fn alert_rules_unit_tests_cover_every_alert() {
    let (ok, out) = promtool(
        &["test", "rules", "deploy/prometheus/alerts_test.yml"],
        None,
    );
    assert!(ok, "promtool test rules:\n{out}");
    let rules = std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/alerts.yml"))
        .expect("alerts.yml");
    let tests = std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/alerts_test.yml"))
        .expect("alerts_test.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for alert in alerts {
        // A firing case: an alert_rule_test with exp_labels for it.
        let cases: Vec<&str> = tests
            .split("alertname: ")
            .skip(1)
            .filter(|c| c.lines().next().map(str::trim) == Some(alert))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_labels")),
            "no firing test case for {alert}"
        );
    }
}

/// Metric names in PromQL text (`log_capturer_*`, `process_*`): label names and values are
/// inside braces, which are skipped.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut depth = 0usize;
    let mut token = String::new();
    let mut flush = |token: &mut String, depth: usize| {
        if depth == 0 && (token.starts_with("log_capturer_") || token.starts_with("process_")) {
            names.insert(token.clone());
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
            continue;
        }
        flush(&mut token, depth);
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    flush(&mut token, depth);
    names
}

/// The PromQL of every dashboard target (`expr`) and templating query.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/grafana/log-capturer.json"))
        .expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if let ("expr" | "query", serde_json::Value::String(q)) = (k.as_str(), v) {
                        out.push(q.clone());
                    } else if let ("query", serde_json::Value::Object(q)) = (k.as_str(), v)
                        && let Some(serde_json::Value::String(q)) = q.get("query")
                    {
                        out.push(q.clone());
                    } else {
                        walk(v, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&json, &mut out);
    out
}

#[test]
fn every_metric_the_dashboard_and_rules_reference_is_exported() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "dashboard targets: {}", queries.len());
    let mut wanted = BTreeSet::new();
    for q in &queries {
        wanted.extend(referenced_names(q));
    }
    let dashboard_count = wanted.len();
    let rules = std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/alerts.yml"))
        .expect("alerts.yml");
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        // Only PromQL: the expr lines and their continuation lines, not annotations.
        let line = line.trim();
        if line.starts_with("summary:") || line.starts_with("description:") {
            continue;
        }
        wanted.extend(referenced_names(line));
    }
    assert!(
        dashboard_count >= 15 && wanted.len() > dashboard_count / 2,
        "{wanted:?}"
    );

    let (samples, families) = parse(&scrapes().text.1);
    let exported: BTreeSet<String> = samples
        .keys()
        .map(|k| k.split('{').next().unwrap_or_default().to_string())
        .chain(families)
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "referenced but not exported: {missing:?}\nexported: {exported:?}"
    );
}

/// Every dashboard query is valid PromQL: with Grafana's variables replaced, they are
/// checked by `promtool check rules` as recording rules.
#[test]
fn dashboard_queries_are_valid_promql() {
    let queries = dashboard_queries();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        // A variable's `label_values(SELECTOR, label)`: Grafana's, not PromQL; check the
        // selector.
        let q = match q.strip_prefix("label_values(") {
            Some(rest) => rest.rsplit_once(',').map_or(rest, |(selector, _)| selector),
            None => q.as_str(),
        };
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&q).expect("quote");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard_rules.yml");
    std::fs::write(&path, rules).expect("write rules");
    let (ok, out) = promtool(&["check", "rules", &path.display().to_string()], None);
    assert!(ok, "dashboard queries:\n{out}");
    assert!(
        out.contains(&format!("{} rules found", queries.len())),
        "{out}"
    );
}
