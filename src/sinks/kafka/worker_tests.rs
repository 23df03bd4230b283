//! The Kafka worker against librdkafka's mock cluster (a real Kafka protocol server), read
//! back with a real consumer.

use super::*;
use crate::capture::Cursor;
use crate::checkpoint::CheckpointStore;
use crate::config::{HumanDuration, KafkaEncoding};
use crate::pipeline::{Batch, ContainerMeta, LogLine, QueueBudget, StreamKind};
use bytes::Bytes;
use log_capturer_testkit::kafka::{KafkaMock, consume_all};
use std::path::Path;

const TOPIC: &str = "logs";

struct Harness {
    worker: Option<KafkaWorker>,
    ledger: Arc<AckLedger>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    abandon: CancellationToken,
    buffer: SharedStore,
    dead_letters: SharedStore,
    tx: Option<mpsc::UnboundedSender<Arc<Delivery>>>,
    checkpoints: Arc<CheckpointStore>,
    budget: QueueBudget,
}

fn config(mock: &KafkaMock, tweak: impl FnOnce(&mut KafkaSinkConfig)) -> KafkaSinkConfig {
    let mut c = KafkaSinkConfig {
        brokers: mock.brokers(),
        topic: TOPIC.to_string(),
        encoding: KafkaEncoding::Raw,
        ..KafkaSinkConfig::default()
    };
    c.buffer.spill_after = HumanDuration(Duration::from_secs(1));
    c.retry.initial = HumanDuration(Duration::from_millis(100));
    c.retry.max = HumanDuration(Duration::from_millis(500));
    c.timeout = HumanDuration(Duration::from_secs(5));
    tweak(&mut c);
    c
}

/// No spill on a slow start (connecting, the idempotent producer's id) for tests of the
/// live path.
fn no_spill(c: &mut KafkaSinkConfig) {
    c.buffer.spill_after = HumanDuration(Duration::from_secs(600));
}

/// A worker on the stores (and checkpoints) in `dir`.
fn harness(dir: &Path, config: KafkaSinkConfig) -> Harness {
    let metrics = Arc::new(Metrics::new());
    let checkpoints =
        Arc::new(CheckpointStore::open(&dir.join("cp"), Arc::clone(&metrics)).expect("cp"));
    let (buffer, _) = SharedStore::open(&dir.join("buffer"), super::super::buffer_options(&config))
        .expect("buffer");
    let (dead_letters, _) =
        SharedStore::open(&dir.join("dlq"), super::super::dlq_options(&config)).expect("dlq");
    let (tx, input) = mpsc::unbounded_channel();
    let ledger = Arc::new(AckLedger::new(1, Arc::clone(&checkpoints)));
    let shutdown = CancellationToken::new();
    let abandon = CancellationToken::new();
    let worker = KafkaWorker {
        input,
        ledger: Arc::clone(&ledger),
        metrics: Arc::clone(&metrics),
        encoder: MessageEncoder::new(&config).expect("encoder"),
        client: super::super::client_config::client_config(&config).expect("client"),
        buffer: buffer.clone(),
        dead_letters: dead_letters.clone(),
        config,
        shutdown: shutdown.clone(),
        abandon: abandon.clone(),
        status: Arc::new(SinkStatus::new(SINK, true)),
    };
    Harness {
        worker: Some(worker),
        ledger,
        metrics: Arc::clone(&metrics),
        shutdown,
        abandon,
        buffer,
        dead_letters,
        tx: Some(tx),
        checkpoints,
        budget: QueueBudget::new(1 << 30, metrics),
    }
}

impl Harness {
    fn start(&mut self) -> tokio::task::JoinHandle<()> {
        let worker = self.worker.take().expect("worker not started");
        tokio::spawn(worker.run())
    }

    fn send(&self, d: Arc<Delivery>) {
        self.tx.as_ref().expect("input open").send(d).expect("send");
    }

    /// Shutdown token, input closed; the worker must end within 30 s.
    async fn stop(&mut self, task: tokio::task::JoinHandle<()>) {
        self.shutdown.cancel();
        self.tx = None;
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the worker ends")
            .expect("worker");
    }

    /// Delivery `seq` of container c1: lines stamped `first..first+n`, valued
    /// `line <ts>` (or `fill` bytes for the line stamped `big`).
    async fn delivery(
        &self,
        seq: u64,
        first: i64,
        n: usize,
        big: Option<(i64, usize)>,
    ) -> Arc<Delivery> {
        let meta = Arc::new(ContainerMeta::new(
            "c1".into(),
            "web".into(),
            "img".into(),
            None,
            None,
        ));
        let lines: Vec<LogLine> = (first..first + n as i64)
            .map(|ts| LogLine {
                ts_ns: ts,
                stream: StreamKind::Stdout,
                message: match big {
                    Some((at, len)) if at == ts => Bytes::from(vec![b'x'; len]),
                    _ => Bytes::from(format!("line {ts}")),
                },
                truncated: false,
                extra: None,
            })
            .collect();
        let last = first + n as i64 - 1;
        let cursor = Cursor::legacy(last, 1);
        let permit = self.budget.acquire(1, 1).await.expect("permit");
        let mut d = Delivery::new(
            Batch {
                container: meta,
                lines,
                position: cursor.into(),
            },
            permit,
        );
        d.seq = seq;
        if self.checkpoints.get("c1").is_none() {
            self.checkpoints.init("c1", Cursor::at(0));
        }
        self.ledger.register("c1", seq, cursor);
        Arc::new(d)
    }

    /// The checkpoint of c1 (stdout timestamp).
    fn acked(&self) -> i64 {
        self.checkpoints
            .get("c1")
            .map_or(0, |c| c.streams.stdout.timestamp_ns)
    }

    async fn wait_acked(&self, ts: i64, within: Duration) -> bool {
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            if self.acked() == ts {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn counter(&self, name: &str) -> u64 {
        let text = self.metrics.render();
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

/// The topic read back: line timestamps in partition order (one key: one partition). Reads
/// until nothing new comes for a while (one more than `want`), so duplicates show.
async fn read_back(mock: &KafkaMock, want: usize) -> Vec<i64> {
    let want = want + 1;
    let bootstrap = mock.bootstrap_servers().to_string();
    let got = tokio::task::spawn_blocking(move || {
        consume_all(
            &bootstrap,
            TOPIC,
            want,
            Duration::from_secs(2),
            Duration::from_secs(20),
        )
    })
    .await
    .expect("consumer thread")
    .expect("consume");
    got.iter()
        .map(|c| {
            let v = String::from_utf8_lossy(&c.value);
            v.trim_start_matches("line ").parse().unwrap_or(-1)
        })
        .collect()
}

fn mock() -> KafkaMock {
    let mock = KafkaMock::start(1);
    mock.create_topic(TOPIC, 1);
    mock
}

/// Every line once, in order, and the ledger acknowledges each delivery once the broker did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_path_delivers_each_line_once_and_acknowledges() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(dir.path(), config(&mock, no_spill));
    let task = h.start();
    for seq in 0..20u64 {
        let d = h.delivery(seq + 1, seq as i64 * 50 + 1, 50, None).await;
        h.send(d);
    }
    assert!(
        h.wait_acked(1000, Duration::from_secs(20)).await,
        "acknowledged up to {}",
        h.acked()
    );
    assert_eq!(h.ledger.unacknowledged(), 0);
    let got = read_back(&mock, 1000).await;
    assert_eq!(got, (1..=1000).collect::<Vec<i64>>());
    assert_eq!(
        h.counter("log_capturer_kafka_messages_acknowledged_total"),
        1000
    );
    assert_eq!(
        h.counter("log_capturer_kafka_messages_produced_total"),
        1000
    );
    assert_eq!(h.buffer.pending().0, 0);
    h.stop(task).await;
}

/// A line over `message_max_bytes` is a dead letter (never produced) and the lines around it
/// are delivered; the delivery is acknowledged once the dead letter is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_line_is_a_dead_letter_and_delivery_goes_on() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(
        dir.path(),
        config(&mock, |c| {
            no_spill(c);
            c.message_max_bytes = crate::config::ByteSize(1000);
        }),
    );
    let task = h.start();
    let d = h.delivery(1, 1, 10, Some((5, 5000))).await;
    h.send(d);
    let d = h.delivery(2, 11, 10, None).await;
    h.send(d);
    assert!(
        h.wait_acked(20, Duration::from_secs(20)).await,
        "acknowledged up to {}",
        h.acked()
    );
    let got = read_back(&mock, 19).await;
    let want: Vec<i64> = (1..=20).filter(|&t| t != 5).collect();
    assert_eq!(got, want);
    let records = h.dead_letters.lock().records().expect("dlq records");
    assert_eq!(records.len(), 1);
    let (header, msgs) = super::super::store::decode_record(&records[0].1).expect("decode");
    assert_eq!(msgs[0].value.len(), 5000);
    let reason = header.reason.unwrap_or_default();
    assert!(
        reason.contains("5000") && reason.contains("1000"),
        "{reason}"
    );
    assert_eq!(
        h.counter("log_capturer_dead_letters_total{sink=\"kafka\",reason=\"too_large\"}"),
        1
    );
    h.stop(task).await;
}

impl Harness {
    async fn wait_buffer(&self, records: impl Fn(u64) -> bool, within: Duration) -> bool {
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            if records(self.buffer.pending().0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// Brokers down: after `spill_after` without a delivery, what was outstanding goes to the
/// buffer (and is acknowledged), new lines queue behind it; brokers back: the buffer is
/// replayed and every line reaches the topic once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_spills_to_the_buffer_and_replays_in_order() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(dir.path(), config(&mock, |_| {}));
    let task = h.start();
    let d = h.delivery(1, 1, 100, None).await;
    h.send(d);
    assert!(h.wait_acked(100, Duration::from_secs(20)).await, "live");
    mock.down(-1);
    for seq in 2..=4u64 {
        let d = h.delivery(seq, (seq as i64 - 1) * 100 + 1, 100, None).await;
        h.send(d);
    }
    assert!(
        h.wait_acked(400, Duration::from_secs(20)).await,
        "spilled lines acknowledged; acked up to {}",
        h.acked()
    );
    assert!(
        h.buffer.pending().0 > 0,
        "the buffer holds the spilled lines"
    );
    assert!(h.counter("log_capturer_kafka_messages_failed_total{reason=\"timeout\"}") >= 1);
    // While the buffer holds records, new lines go behind them.
    let d = h.delivery(5, 401, 100, None).await;
    h.send(d);
    assert!(
        h.wait_acked(500, Duration::from_secs(20)).await,
        "queued behind"
    );
    mock.up(-1);
    assert!(
        h.wait_buffer(|n| n == 0, Duration::from_secs(30)).await,
        "buffer replayed"
    );
    let got = read_back(&mock, 500).await;
    assert_eq!(got, (1..=500).collect::<Vec<i64>>(), "once each, in order");
    assert!(h.counter("log_capturer_kafka_messages_retried_total") >= 400);
    h.stop(task).await;
}

/// A worker started on the stores an earlier one spilled into replays them first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_what_an_earlier_worker_buffered() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    mock.down(-1);
    {
        let mut h = harness(dir.path(), config(&mock, |_| {}));
        let task = h.start();
        for seq in 1..=3u64 {
            let d = h.delivery(seq, (seq as i64 - 1) * 100 + 1, 100, None).await;
            h.send(d);
        }
        assert!(
            h.wait_acked(300, Duration::from_secs(20)).await,
            "spilled; acked up to {}",
            h.acked()
        );
        h.stop(task).await;
        assert!(h.buffer.pending().0 > 0);
    }
    mock.up(-1);
    let mut h = harness(dir.path(), config(&mock, |_| {}));
    let task = h.start();
    assert!(
        h.wait_buffer(|n| n == 0, Duration::from_secs(30)).await,
        "replayed after the restart"
    );
    let d = h.delivery(4, 301, 100, None).await;
    h.send(d);
    assert!(
        h.wait_acked(400, Duration::from_secs(20)).await,
        "live again"
    );
    let got = read_back(&mock, 400).await;
    assert_eq!(got, (1..=400).collect::<Vec<i64>>());
    h.stop(task).await;
}

/// Shutdown with brokers down: after the grace, what is in memory goes to the buffer and is
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_brokers_down_spills_after_the_grace() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    // spill_after longer than the test: only the drain can spill.
    let mut h = harness(
        dir.path(),
        config(&mock, |c| {
            c.buffer.spill_after = HumanDuration(Duration::from_secs(600))
        }),
    );
    mock.down(-1);
    let task = h.start();
    let d = h.delivery(1, 1, 50, None).await;
    h.send(d);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop(task).await;
    assert_eq!(h.acked(), 50, "drained into the buffer");
    assert_eq!(h.ledger.unacknowledged(), 0);
    let records = h.buffer.lock().records().expect("records");
    let n: usize = records
        .iter()
        .map(|(_, b)| {
            super::super::store::decode_record(b)
                .expect("decode")
                .1
                .len()
        })
        .sum();
    assert_eq!(n, 50);
}

/// At `abandon` the worker stops where it is: nothing acknowledged or buffered afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_acknowledges_and_buffers_nothing_more() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(dir.path(), config(&mock, |_| {}));
    mock.down(-1);
    let d = h.delivery(1, 1, 50, None).await;
    h.send(d);
    // Healthy at the shutdown: the drain grants the 2 s grace, abandoned within it.
    h.shutdown.cancel();
    let task = h.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.abandon.cancel();
    h.tx = None;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the worker ends once abandoned")
        .expect("worker");
    assert_eq!(h.ledger.unacknowledged(), 1, "nothing acknowledged");
    assert_eq!(h.buffer.pending().0, 0, "nothing buffered");
}

#[path = "worker_refusal_tests.rs"]
mod refusal;
#[path = "worker_replay_tests.rs"]
mod replay;

fn inject(
    mock: &KafkaMock,
    api: rdkafka::types::RDKafkaApiKey,
    errors: Vec<rdkafka::types::RDKafkaRespErr>,
) {
    mock.with(move |c| c.request_errors(api, &errors));
}

/// A fatal producer error (the idempotent producer's id refused): the producer is recreated
/// and every line is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_error_recreates_the_producer() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(dir.path(), config(&mock, no_spill));
    inject(
        &mock,
        RDKafkaApiKey::InitProducerId,
        vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let task = h.start();
    let d = h.delivery(1, 1, 100, None).await;
    h.send(d);
    assert!(
        h.wait_acked(100, Duration::from_secs(25)).await,
        "acked up to {}: {}",
        h.acked(),
        h.metrics.render()
    );
    assert_eq!(read_back(&mock, 100).await, (1..=100).collect::<Vec<i64>>());
    assert!(h.counter("log_capturer_sink_failures_total{sink=\"kafka\",reason=\"fatal\"}") >= 1);
    h.stop(task).await;
}
