//! The set-up shared by the worker's tests (`worker_tests.rs` and the files it includes): a
//! worker over real stores and checkpoints in a temporary directory, librdkafka's mock cluster
//! (a real Kafka protocol server), deliveries registered in a real ledger, and read-back with a
//! real consumer. (`src/` cannot use `tests/support/kafka_worker.rs`: this is its in-crate
//! counterpart, which can also reach the worker's private parts.)

use super::*;
use crate::capture::Cursor;
use crate::checkpoint::CheckpointStore;
use crate::config::{HumanDuration, KafkaEncoding};
use crate::pipeline::{Batch, ContainerMeta, LogLine, QueueBudget, StreamKind};
use bytes::Bytes;
use log_capturer_testkit::kafka::{KafkaMock, consume_all};
use std::path::Path;

pub(super) const TOPIC: &str = "logs";

pub(super) struct Harness {
    pub(super) worker: Option<KafkaWorker>,
    pub(super) ledger: Arc<AckLedger>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shutdown: CancellationToken,
    pub(super) abandon: CancellationToken,
    pub(super) buffer: SharedStore,
    pub(super) dead_letters: SharedStore,
    pub(super) tx: Option<mpsc::UnboundedSender<Arc<Delivery>>>,
    checkpoints: Arc<CheckpointStore>,
    budget: QueueBudget,
}

pub(super) fn config(
    mock: &KafkaMock,
    tweak: impl FnOnce(&mut KafkaSinkConfig),
) -> KafkaSinkConfig {
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
pub(super) fn no_spill(c: &mut KafkaSinkConfig) {
    c.buffer.spill_after = HumanDuration(Duration::from_secs(600));
}

/// A worker on the stores (and checkpoints) in `dir`.
pub(super) fn harness(dir: &Path, config: KafkaSinkConfig) -> Harness {
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
    pub(super) fn start(&mut self) -> tokio::task::JoinHandle<()> {
        let worker = self.worker.take().expect("worker not started");
        tokio::spawn(worker.run())
    }

    pub(super) fn send(&self, d: Arc<Delivery>) {
        self.tx.as_ref().expect("input open").send(d).expect("send");
    }

    /// Shutdown token, input closed; the worker must end within 30 s.
    pub(super) async fn stop(&mut self, task: tokio::task::JoinHandle<()>) {
        self.stop_within(task, Duration::from_secs(30), "the worker ends")
            .await;
    }

    /// Shutdown token, input closed; the worker must end `within` (else panics with `what`).
    pub(super) async fn stop_within(
        &mut self,
        task: tokio::task::JoinHandle<()>,
        within: Duration,
        what: &str,
    ) {
        self.shutdown.cancel();
        self.tx = None;
        tokio::time::timeout(within, task)
            .await
            .expect(what)
            .expect("worker");
    }

    /// Delivery `seq` of container c1: lines stamped `first..first+n`, valued
    /// `line <ts>` (or `fill` bytes for the line stamped `big`).
    pub(super) async fn delivery(
        &self,
        seq: u64,
        first: i64,
        n: usize,
        big: Option<(i64, usize)>,
    ) -> Arc<Delivery> {
        self.delivery_with("c1", seq, first, n, big).await
    }

    /// Delivery `seq` of `container`: lines stamped `first..first+n`.
    pub(super) async fn delivery_of(
        &self,
        container: &str,
        seq: u64,
        first: i64,
        n: usize,
    ) -> Arc<Delivery> {
        self.delivery_with(container, seq, first, n, None).await
    }

    // The Loki worker's tests build deliveries alike (`loki/worker.rs`): each sink's tests
    // keep their own, as their lines differ (Loki's take an edit, these a large line).
    async fn delivery_with(
        &self,
        container: &str,
        seq: u64,
        first: i64,
        n: usize,
        big: Option<(i64, usize)>,
    ) -> Arc<Delivery> {
        let meta = Arc::new(ContainerMeta::new(
            container.into(),
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
        if self.checkpoints.get(container).is_none() {
            self.checkpoints.init(container, Cursor::at(0));
        }
        self.ledger.register(container, seq, cursor);
        Arc::new(d)
    }

    /// The checkpoint of c1 (stdout timestamp).
    pub(super) fn acked(&self) -> i64 {
        self.acked_of("c1")
    }

    pub(super) fn acked_of(&self, container: &str) -> i64 {
        self.checkpoints
            .get(container)
            .map_or(0, |c| c.streams.stdout.timestamp_ns)
    }

    pub(super) async fn wait_acked(&self, ts: i64, within: Duration) -> bool {
        wait_for(|| self.acked() == ts, within).await
    }

    pub(super) async fn wait_buffer(
        &self,
        records: impl Fn(u64) -> bool,
        within: Duration,
    ) -> bool {
        wait_for(|| records(self.buffer.pending().0), within).await
    }

    pub(super) fn counter(&self, name: &str) -> u64 {
        let text = self.metrics.render();
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

/// Polls `check` every 20 ms for up to `within`.
async fn wait_for(check: impl Fn() -> bool, within: Duration) -> bool {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The messages of every record of `store` (the buffer or the dead-letter store).
pub(super) fn stored_messages(store: &SharedStore) -> usize {
    let records = store.lock().records().expect("records");
    records
        .iter()
        .map(|(_, b)| {
            super::super::store::decode_record(b)
                .expect("decode")
                .1
                .len()
        })
        .sum()
}

/// The topic read back: line timestamps in partition order (one key: one partition). Reads
/// until nothing new comes for a while (one more than `want`), so duplicates show.
pub(super) async fn read_back(mock: &KafkaMock, want: usize) -> Vec<i64> {
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

/// The usual set-up: [`mock`], a state directory (keep it while the test runs), and a
/// worker on it with [`config`] changed by `tweak`.
pub(super) fn setup(
    tweak: impl FnOnce(&mut KafkaSinkConfig),
) -> (KafkaMock, tempfile::TempDir, Harness) {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let h = harness(dir.path(), config(&mock, tweak));
    (mock, dir, h)
}

/// A cluster of one broker with [`TOPIC`] in one partition.
pub(super) fn mock() -> KafkaMock {
    let mock = KafkaMock::start(1);
    mock.create_topic(TOPIC, 1);
    mock
}

pub(super) fn inject(
    mock: &KafkaMock,
    api: rdkafka::types::RDKafkaApiKey,
    errors: Vec<rdkafka::types::RDKafkaRespErr>,
) {
    mock.with(move |c| c.request_errors(api, &errors));
}

/// Sends deliveries `first_seq..` of `per` lines each, continuing the stamps after `after`.
pub(super) async fn send_many(
    h: &Harness,
    first_seq: u64,
    deliveries: u64,
    per: usize,
    after: i64,
) -> i64 {
    let mut ts = after;
    for k in 0..deliveries {
        let d = h.delivery(first_seq + k, ts + 1, per, None).await;
        h.send(d);
        ts += per as i64;
    }
    ts
}
