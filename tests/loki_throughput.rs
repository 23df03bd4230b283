//! End-to-end throughput, fake Engine API → agent → Loki test receiver. A benchmark: it prints
//! figures and asserts only that every line arrived. Run it on purpose, in release:
//! `cargo test --release --test loki_throughput -- --ignored --nocapture`

mod support;

use std::time::{Duration, Instant};

use support::agent::{Agent, AgentOptions};
use support::fake_engine::{BASE_NS, Container, FakeEngine, Line, LogsPlan};
use support::loki::LokiReceiver;
use support::wait_until;

#[test]
#[ignore = "benchmark: run with --ignored --nocapture, preferably --release"]
fn fake_engine_to_loki_lines_per_second() {
    let containers = 10;
    let per_container = 50_000;
    let base = BASE_NS + 1_000_000_000;
    let mut bytes = 0usize;
    let engine = FakeEngine::start(
        (0..containers)
            .map(|c| {
                let lines: Vec<Line> = (0..per_container)
                    .map(|i| {
                        let text = format!(
                            "10.0.{c}.1 - - \"GET /api/v1/items/{i} HTTP/1.1\" 200 {} \"-\" \"bench/1.0\" rt=0.{i:03}",
                            i * 7
                        );
                        bytes += text.len();
                        Line::stdout(base + i as i64 * 1000, text)
                    })
                    .collect();
                Container::new(&format!("bench-{c}"), lines, vec![LogsPlan::Follow])
            })
            .collect(),
    );
    let rx = LokiReceiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let total = containers * per_container;
    let started = Instant::now();
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            docker_host: Some(engine.docker_host()),
            capture: "  initial_position: beginning\n".to_string(),
            file_sink: false,
            sinks: format!(
                "  loki:\n    url: {}\n    batch:\n      max_entries: 5000\n      max_wait: 100ms\n",
                rx.push_url()
            ),
            ..AgentOptions::default()
        },
    );
    let done = wait_until(Duration::from_secs(300), || rx.entries().len() >= total);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        done,
        "only {} of {total} lines; log:\n{}",
        rx.entries().len(),
        agent.log()
    );
    println!(
        "fake engine → loki: {total} lines ({:.1} MB) in {elapsed:.2} s = {:.0} lines/s, {:.1} MB/s \
         (includes agent start; {} push requests)",
        bytes as f64 / 1e6,
        total as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed,
        rx.requests().len()
    );
}
