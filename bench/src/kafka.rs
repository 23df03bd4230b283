//! `kafka`: the firehose (fake Engine API, 10 containers of 100 B lines) → the release agent's
//! Kafka sink → librdkafka's mock cluster (`KafkaMock`, a real Kafka protocol server on
//! loopback, run inside this process), with `compression: lz4` and `zstd` and the sink's
//! defaults otherwise (`acks: all`, idempotent producer, key = container id, linger 5 ms).
//!
//! Throughput is the line count over the time from spawning the agent until the broker has
//! acknowledged every line (`log_capturer_kafka_messages_acknowledged_total`, which the worker
//! counts from delivery reports), start-up included, as in `firehose`. Then the runner checks
//! that the count stays exactly at the line count, stops the agent, reads the topic back with a
//! consumer (`consume_all`) and checks every container's lines in what the mock kept (its key,
//! consecutive item numbers up to its last line). CPU is the agent's user + sys per million
//! lines; the runner's own CPU (the mock brokers, the fake engine, the metric polls) is shown
//! beside it, since it shares the machine's two cores with the agent.
//!
//! A fresh mock cluster per run. It keeps only the last 5 MiB of each partition (see `verify`),
//! so its memory stays small whatever the run's size.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentConfig};
use crate::runlog::RunLog;
use crate::{Row, dir_ready, fake_engine, kafka_producer, median};
use log_capturer::config::KafkaCompression;
use log_capturer_testkit::kafka::{KafkaMock, consume_all};
use log_capturer_testkit::{cpu_seconds, status_field, sum_prefix};

const CONTAINERS: usize = 10;
const LINE_BYTES: usize = 100;
const TOPIC: &str = "logs";
const PARTITIONS: i32 = 6;
const BROKERS: i32 = 3;
const ACKED: &str = "log_capturer_kafka_messages_acknowledged_total";
const TARGET: f64 = 500_000.0;

pub fn scenario(
    binary: &Path,
    out: &Path,
    runs: usize,
    quick: bool,
    log: &RunLog,
) -> Result<Vec<Row>, String> {
    let total = if quick { 200_000 } else { 1_500_000 };
    let per = total / CONTAINERS;
    let (body, _) = fake_engine::frames(per, LINE_BYTES);
    let mut rows = Vec::new();
    for compression in ["lz4", "zstd"] {
        let case = format!(
            "{CONTAINERS} containers, {LINE_BYTES} B lines → kafka ({compression}, acks all, \
             {BROKERS} mock brokers, {PARTITIONS} partitions)"
        );
        let (mut rate, mut cpu, mut own, mut rss) = (vec![], vec![], vec![], vec![]);
        let (mut base_rate, mut base_cpu) = (vec![], vec![]);
        for run in 0..runs {
            let base = baseline(per, compression)?;
            log.record(
                "kafka",
                &format!("librdkafka producer alone → mock ({compression})"),
                run,
                &format!(
                    "{:.0} messages/s, runner (producer + mock brokers) {:.3} CPU-s per M",
                    base.rate, base.cpu
                ),
            );
            base_rate.push(base.rate);
            base_cpu.push(base.cpu);
            let dir = dir_ready(&out.join(format!("kafka-{compression}-{run}")))?;
            let r = one_run(binary, &dir, &body, per, compression)?;
            log.record(
                "kafka",
                &case,
                run,
                &format!(
                    "{:.0} lines/s, agent {:.3} CPU-s per M lines, runner (mock brokers + fake \
                     engine) {:.3} CPU-s per M lines, peak RSS {:.0} MiB, kept tail read back: {} lines, in order, none missing or twice, every key up to its last line",
                    r.rate, r.cpu, r.own_cpu, r.rss, r.read_back
                ),
            );
            rate.push(r.rate);
            cpu.push(r.cpu);
            own.push(r.own_cpu);
            rss.push(r.rss);
            let _ = std::fs::remove_dir_all(dir.join("state"));
        }
        let min = rate.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rate.iter().copied().fold(0.0, f64::max);
        rows.push(Row::new(
            "kafka",
            &case,
            "throughput to broker ack",
            "lines/s",
            median(rate),
            Some((">=", TARGET)),
        ));
        rows.push(Row::new(
            "kafka",
            &case,
            "throughput, slowest run",
            "lines/s",
            min,
            None,
        ));
        rows.push(Row::new(
            "kafka",
            &case,
            "throughput, fastest run",
            "lines/s",
            max,
            None,
        ));
        rows.push(Row::new(
            "kafka",
            &case,
            "agent CPU per million lines",
            "s",
            median(cpu),
            None,
        ));
        rows.push(Row::new(
            "kafka",
            &case,
            "runner CPU per million lines (mock brokers, fake engine)",
            "s",
            median(own),
            None,
        ));
        rows.push(Row::new(
            "kafka",
            &case,
            "peak RSS",
            "MiB",
            median(rss),
            None,
        ));
        rows.push(Row::new(
            "kafka",
            &case,
            "ceiling: librdkafka producer alone in the runner → mock",
            "msgs/s",
            median(base_rate),
            None,
        ));
        rows.push(Row::new(
            "kafka",
            &case,
            "ceiling: producer + mock brokers CPU per million messages",
            "s",
            median(base_cpu),
            None,
        ));
        eprintln!("bench: kafka {compression} done");
    }
    Ok(rows)
}

/// librdkafka's producer alone against a fresh mock cluster (see `kafka_producer`).
fn baseline(per: usize, compression: &str) -> Result<kafka_producer::Baseline, String> {
    let codec = match compression {
        "lz4" => KafkaCompression::Lz4,
        _ => KafkaCompression::Zstd,
    };
    let mock = KafkaMock::start(BROKERS);
    mock.create_topic(TOPIC, PARTITIONS);
    kafka_producer::run(&mock, TOPIC, CONTAINERS, per, codec)
}

struct RunResult {
    rate: f64,
    cpu: f64,
    own_cpu: f64,
    rss: f64,
    read_back: usize,
}

fn one_run(
    binary: &Path,
    dir: &Path,
    body: &[u8],
    per: usize,
    compression: &str,
) -> Result<RunResult, String> {
    let total = per * CONTAINERS;
    let mock = KafkaMock::start(BROKERS);
    mock.create_topic(TOPIC, PARTITIONS);
    let sink = format!(
        "  kafka:\n    brokers: [{}]\n    topic: {TOPIC}\n    compression: {compression}\n",
        mock.brokers()
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let engine = fake_engine::FakeEngine::start(dir, CONTAINERS, Some(body.to_vec()))?;
    let own0 = cpu_seconds(std::process::id());
    let agent = Agent::start(
        binary,
        dir,
        AgentConfig {
            docker_host: Some(engine.docker_host()),
            sink: &sink,
            rotation: "1h",
            include_label: None,
            fsync: None,
            processing: None,
            extra: "",
        },
    )?;
    let took = wait_acked(&agent, total, dir)?;
    let cpu = cpu_seconds(agent.pid()) / (total as f64 / 1e6);
    let own_cpu = (cpu_seconds(std::process::id()) - own0) / (total as f64 / 1e6);
    let rss = status_field(agent.pid(), "VmHWM:") / 1024.0;
    // Nothing acknowledged twice.
    std::thread::sleep(Duration::from_millis(500));
    let acked = sum_prefix(&agent.metrics(), ACKED);
    agent.terminate()?;
    engine.stop();
    if acked != total as f64 {
        return Err(format!(
            "kafka: {ACKED} = {acked} after the run, {total} lines were sent"
        ));
    }
    let read_back = verify(&mock, per)?;
    Ok(RunResult {
        rate: total as f64 / took.as_secs_f64(),
        cpu,
        own_cpu,
        rss,
        read_back,
    })
}

/// Waits until the broker acknowledged `total` lines; the time since the agent was spawned.
fn wait_acked(agent: &Agent, total: usize, dir: &Path) -> Result<Duration, String> {
    let deadline = Instant::now() + Duration::from_secs(60 + total as u64 / 20_000);
    loop {
        let m = agent.metrics();
        if sum_prefix(&m, ACKED) >= total as f64 {
            return Ok(agent.started.elapsed());
        }
        if Instant::now() > deadline {
            let sunk = sum_prefix(&m, "log_capturer_sink_lines_total{sink=\"kafka\"}");
            return Err(format!(
                "kafka: {ACKED} stayed below {total} (now {}, sink lines {sunk}; agent log: {})",
                sum_prefix(&m, ACKED),
                dir.join("agent.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the topic back. The mock brokers keep only the last 5 MiB (or 100 000 batches) of
/// each partition (librdkafka's `rdkafka_mock.c`, not configurable), so what can be checked is
/// the kept tail: for every container, its lines there are consecutive (nothing lost, nothing
/// twice) and end with its last line. That nothing was lost
/// before the tail is the acknowledged count's to show. Returns the number of messages read.
fn verify(mock: &KafkaMock, per: usize) -> Result<usize, String> {
    let total = per * CONTAINERS;
    // One more than sent: a duplicate would be read, not cut off at `total`.
    let got = consume_all(
        mock.bootstrap_servers(),
        TOPIC,
        total + 1,
        Duration::from_secs(5),
        Duration::from_secs(120 + total as u64 / 10_000),
    )?;
    if got.len() > total {
        return Err(format!(
            "kafka: read {} messages back from {TOPIC}, only {total} lines were sent",
            got.len()
        ));
    }
    // Key → last item number.
    let mut last: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    for m in &got {
        let key = m.key.as_deref().unwrap_or_default();
        let item = item_number(&m.value).ok_or_else(|| {
            format!(
                "kafka: a message without an item number: {}",
                String::from_utf8_lossy(&m.value)
            )
        })?;
        match last.get_mut(key) {
            Some(prev) if item != *prev + 1 => {
                return Err(format!(
                    "kafka: partition {} offset {}: item {item} after item {prev} of the same key",
                    m.partition, m.offset
                ));
            }
            Some(prev) => *prev = item,
            None => {
                last.insert(key.to_vec(), item);
            }
        }
    }
    // A container whose lines all lie before the kept tail of its partition (it finished
    // early, others went on) is not read back at all.
    if last.is_empty() || last.len() > CONTAINERS || last.values().any(|&l| l != per - 1) {
        return Err(format!(
            "kafka: {} keys read back, last items {:?}; {CONTAINERS} containers of {per} lines \
             were sent (each key's last item must be {})",
            last.len(),
            last.values().collect::<Vec<_>>(),
            per - 1
        ));
    }
    Ok(got.len())
}

/// `i` of the firehose line `GET /api/v1/items/{i} …` inside a message value.
fn item_number(value: &[u8]) -> Option<usize> {
    const AT: &[u8] = b"/api/v1/items/";
    let start = value.windows(AT.len()).position(|w| w == AT)? + AT.len();
    let digits = value[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&value[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_numbers_are_found_in_records() {
        let v = br#"{"message":"GET /api/v1/items/1234 HTTP/1.1 200 rt=0.01 xx"}"#;
        assert_eq!(item_number(v), Some(1234));
        assert_eq!(item_number(b"no item here"), None);
    }
}
