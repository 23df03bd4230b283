//! The ceiling of the `kafka` scenario: librdkafka's producer alone, in the runner, against the
//! same mock cluster with the sink's client settings (`client_config` of a `sinks.kafka` with
//! the given compression: acks all, idempotent, linger 5 ms, 10 000 messages / 1 MiB batches),
//! producing NDJSON records shaped like the agent's, keyed by container id. No agent, no
//! capture, no encoding: what is left is librdkafka's own cost and the mock brokers'.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use log_capturer::config::{KafkaCompression, KafkaSinkConfig};
use log_capturer::sinks::kafka::client_config::client_config;
use log_capturer_testkit::kafka::KafkaMock;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

/// Counts delivery reports without error.
struct Acks(Arc<AtomicUsize>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result
            && m.offset() >= 0
        {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub struct Baseline {
    pub rate: f64,
    /// The runner's CPU (producer + mock brokers) per million messages.
    pub cpu: f64,
}

/// Produces `containers × per` records to `topic` of `mock`; returns once every one is
/// acknowledged.
pub fn run(
    mock: &KafkaMock,
    topic: &str,
    containers: usize,
    per: usize,
    compression: KafkaCompression,
) -> Result<Baseline, String> {
    let config = KafkaSinkConfig {
        brokers: mock.brokers(),
        compression,
        ..KafkaSinkConfig::default()
    };
    let acked = Arc::new(AtomicUsize::new(0));
    let producer: ThreadedProducer<Acks> = client_config(&config)
        .map_err(|e| e.to_string())?
        .create_with_context(Acks(Arc::clone(&acked)))
        .map_err(|e| format!("producer: {e}"))?;
    let ids: Vec<String> = (0..containers).map(|i| format!("{:064x}", i + 1)).collect();
    let total = containers * per;
    let cpu0 = log_capturer_testkit::cpu_seconds(std::process::id());
    let t0 = Instant::now();
    let mut value = String::new();
    for i in 0..per {
        for (c, id) in ids.iter().enumerate() {
            value.clear();
            value.push_str(&format!(
                r#"{{"timestamp":"2026-12-01T10:00:00.{:09}Z","container_id":"{id}","container_name":"bench-{c}","image":"lc-bench:latest","stream":"stdout","message":"GET /api/v1/items/{i} HTTP/1.1 200 rt=0.0{} "#,
                i % 1_000_000_000,
                i % 97
            ));
            // 303 B in all, as the agent's NDJSON record of a 100 B line from the fake engine.
            while value.len() < 301 {
                value.push('x');
            }
            value.push_str("\"}");
            let mut record = BaseRecord::to(topic)
                .key(id.as_str())
                .payload(value.as_str());
            // The local queue is bounded (queue.buffering.max.*): wait for room.
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        if t0.elapsed() > Duration::from_secs(300) {
                            return Err(format!("produce: {e}"));
                        }
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("flush: {e}"))?;
    let took = t0.elapsed().as_secs_f64();
    let cpu = log_capturer_testkit::cpu_seconds(std::process::id()) - cpu0;
    let n = acked.load(Ordering::Relaxed);
    if n != total {
        return Err(format!("producer baseline: {n} of {total} acknowledged"));
    }
    Ok(Baseline {
        rate: total as f64 / took,
        cpu: cpu / (total as f64 / 1e6),
    })
}
