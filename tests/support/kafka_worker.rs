//! Drives the Kafka sink's worker in-process against the testkit's mock cluster: deliveries
//! registered in a real ledger over a real checkpoint store, the buffer and dead-letter stores
//! in a state directory, the worker's metrics — and checks of what came out.
//!
//! Two ways of watching acknowledgements:
//! - [`Acks::Live`]: a ledger of one sink; the checkpoint follows the worker's acknowledgements
//!   as they come ([`Rig::acked_lines`]).
//! - [`Acks::Audit`]: a ledger of two sinks, the second being this harness. The checkpoint
//!   cannot move until the harness completes a batch too, so after the worker has exited,
//!   [`Rig::audit_acks`] completes each batch in order and checks that the worker had
//!   completed it exactly once (not at all: the checkpoint stays; twice: it had moved before).

#![allow(dead_code)]

#[path = "kafka_worker/checks.rs"]
mod checks;

// Each test file uses a part of these.
#[allow(unused_imports)]
pub use checks::{check_exactly_once, consume, expected, metric};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log_capturer::buffer::SharedStore;
use log_capturer::capture::Cursor;
use log_capturer::checkpoint::CheckpointStore;
use log_capturer::config::{HumanDuration, KafkaEncoding, KafkaSinkConfig};
use log_capturer::observability::metrics::Metrics;
use log_capturer::observability::status::SinkStatus;
use log_capturer::pipeline::{
    AckLedger, Batch, ContainerMeta, Delivery, LogLine, QueueBudget, StreamKind,
};
use log_capturer::sinks::kafka::{self, KafkaWorker, Message};
use log_capturer_testkit::kafka::KafkaMock;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TOPIC: &str = "logs";
/// The containers most tests send from (one key, so one partition, each).
pub const CONTAINERS: [&str; 3] = ["c1", "c2", "c3"];
/// How long a test waits for what should come.
pub const LONG: Duration = Duration::from_secs(30);

/// Lines of every container.
pub fn total(sent: &BTreeMap<String, usize>) -> usize {
    sent.values().sum()
}

/// The tests of a file run one at a time: they count this process's threads, and a loaded
/// 2-core CI machine should not run several mock clusters at once.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    match LOCK.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Runs `test` on a runtime of its own (two workers), one test at a time (see [`serial`]).
pub fn serially(test: impl std::future::Future<Output = ()>) {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(test);
}

/// A mock cluster of one broker with [`TOPIC`] in `partitions` partitions, and a state
/// directory for a [`Rig`].
pub fn cluster(partitions: i32) -> (KafkaMock, tempfile::TempDir) {
    let mock = KafkaMock::start(1);
    mock.create_topic(TOPIC, partitions);
    (mock, tempfile::tempdir().expect("tempdir"))
}

/// Threads of this process.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// A sink config for `mock`: raw values (the line itself), fast retries, no fsync (tests, not
/// crashes). `buffer.spill_after` stays at its default (10 s): on a loaded machine a debug
/// build's first acknowledgement can take over a second, and a test of the live path must not
/// spill by accident; the outage tests set it to 1 s ([`outage_config`]).
pub fn config(mock: &KafkaMock) -> KafkaSinkConfig {
    let mut c = KafkaSinkConfig {
        brokers: mock.brokers(),
        topic: TOPIC.to_string(),
        encoding: KafkaEncoding::Raw,
        ..KafkaSinkConfig::default()
    };
    c.retry.initial = HumanDuration(Duration::from_millis(50));
    c.retry.max = HumanDuration(Duration::from_millis(500));
    c.buffer.fsync = log_capturer::config::FsyncMode::Never;
    c
}

/// [`config`] with `buffer.spill_after` 1 s, for the outage tests.
pub fn outage_config(mock: &KafkaMock) -> KafkaSinkConfig {
    let mut c = config(mock);
    c.buffer.spill_after = HumanDuration(Duration::from_secs(1));
    c
}

/// The text of line `i` of `container` (also its Kafka value with raw encoding).
pub fn line(container: &str, i: usize) -> String {
    format!("{container} line {i:06}")
}

/// A consumed value back to the line: the value itself (raw) or the record's `message`
/// (NDJSON).
pub fn text(value: &[u8]) -> String {
    if value.first() == Some(&b'{')
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(value)
        && let Some(m) = v.get("message").and_then(|m| m.as_str())
    {
        return m.to_string();
    }
    String::from_utf8_lossy(value).into_owned()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    Live,
    Audit,
}

struct Sent {
    seq: u64,
    /// The container's last line number in this batch (its cursor is `cursor(last)`).
    last: usize,
}

fn cursor(last: usize) -> Cursor {
    Cursor::legacy(last as i64, last as u64)
}

/// One run of the worker over a state directory.
pub struct Rig {
    pub metrics: Arc<Metrics>,
    pub checkpoints: Arc<CheckpointStore>,
    pub ledger: Arc<AckLedger>,
    pub budget: QueueBudget,
    pub buffer: SharedStore,
    pub dead_letters: SharedStore,
    pub shutdown: CancellationToken,
    pub abandon: CancellationToken,
    pub status: Arc<SinkStatus>,
    pub config: KafkaSinkConfig,
    tx: Option<mpsc::UnboundedSender<Arc<Delivery>>>,
    task: Option<JoinHandle<()>>,
    metas: HashMap<String, Arc<ContainerMeta>>,
    sent: BTreeMap<String, Vec<Sent>>,
    next_line: HashMap<String, usize>,
    seq: u64,
    acks: Acks,
}

impl Rig {
    /// Opens the stores under `state` and starts a worker (call from a tokio runtime).
    pub fn start(state: &Path, config: KafkaSinkConfig, acks: Acks) -> Rig {
        let metrics = Arc::new(Metrics::new());
        let checkpoints =
            Arc::new(CheckpointStore::open(state, Arc::clone(&metrics)).expect("checkpoints"));
        let (buffer, _) =
            SharedStore::open(&kafka::buffer_dir(state), kafka::buffer_options(&config))
                .expect("buffer store");
        let (dead_letters, _) =
            SharedStore::open(&kafka::dlq_dir(state), kafka::dlq_options(&config))
                .expect("dlq store");
        let sinks = match acks {
            Acks::Live => 1,
            Acks::Audit => 2,
        };
        let ledger = Arc::new(AckLedger::new(sinks, Arc::clone(&checkpoints)));
        let (tx, input) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let abandon = CancellationToken::new();
        let status = Arc::new(SinkStatus::new(kafka::SINK, true));
        let worker = KafkaWorker {
            input,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(&metrics),
            encoder: kafka::MessageEncoder::new(&config).expect("encoder"),
            client: kafka::client_config::client_config(&config).expect("client config"),
            buffer: buffer.clone(),
            dead_letters: dead_letters.clone(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            abandon: abandon.clone(),
            status: Arc::clone(&status),
        };
        let task = tokio::spawn(worker.run());
        Rig {
            budget: QueueBudget::new(256 << 20, Arc::clone(&metrics)),
            metrics,
            checkpoints,
            ledger,
            buffer,
            dead_letters,
            shutdown,
            abandon,
            status,
            config,
            tx: Some(tx),
            task: Some(task),
            metas: HashMap::new(),
            sent: BTreeMap::new(),
            next_line: HashMap::new(),
            seq: 0,
            acks,
        }
    }

    fn meta(&mut self, container: &str) -> Arc<ContainerMeta> {
        let meta = self.metas.entry(container.to_string()).or_insert_with(|| {
            Arc::new(ContainerMeta::new(
                container.to_string(),
                format!("{container}-name"),
                "img".to_string(),
                None,
                None,
            ))
        });
        Arc::clone(meta)
    }

    /// Hands the worker one delivery of `container`'s next `lines`, each from `text(i)` where
    /// `i` is the line's number in the container (1, 2, …).
    pub async fn send_with(
        &mut self,
        container: &str,
        lines: usize,
        text: impl Fn(usize) -> String,
    ) {
        let first = *self.next_line.get(container).unwrap_or(&1);
        let last = first + lines - 1;
        let lines: Vec<LogLine> = (first..=last)
            .map(|i| LogLine {
                ts_ns: i as i64,
                stream: StreamKind::Stdout,
                message: Bytes::from(text(i)),
                truncated: false,
                extra: None,
            })
            .collect();
        let bytes: usize = lines.iter().map(|l| l.message.len()).sum();
        let permit = self
            .budget
            .acquire(self.budget.charge(lines.len(), bytes), lines.len())
            .await
            .expect("budget");
        let batch = Batch {
            container: self.meta(container),
            lines,
            position: cursor(last).into(),
        };
        let mut delivery = Delivery::new(batch, permit);
        self.seq += 1;
        delivery.seq = self.seq;
        self.checkpoints.init(container, Cursor::at(0));
        self.ledger.register(container, self.seq, cursor(last));
        self.sent
            .entry(container.to_string())
            .or_default()
            .push(Sent {
                seq: self.seq,
                last,
            });
        self.next_line.insert(container.to_string(), last + 1);
        let tx = self.tx.as_ref().expect("input open");
        tx.send(Arc::new(delivery)).expect("worker input");
    }

    /// `container`'s next `lines` lines ([`line`]) in one delivery.
    pub async fn send(&mut self, container: &str, lines: usize) {
        let c = container.to_string();
        self.send_with(container, lines, move |i| line(&c, i)).await;
    }

    /// `total` lines of each container, `per_batch` per delivery, containers interleaved.
    pub async fn send_many(&mut self, containers: &[&str], total: usize, per_batch: usize) {
        let mut left = total;
        while left > 0 {
            let n = left.min(per_batch);
            for c in containers {
                self.send(c, n).await;
            }
            left -= n;
        }
    }

    /// Lines sent so far per container.
    pub fn sent_lines(&self) -> BTreeMap<String, usize> {
        self.next_line
            .iter()
            .map(|(c, n)| (c.clone(), n - 1))
            .collect()
    }

    /// How many of `container`'s lines the checkpoint covers (live acknowledgements).
    pub fn acked_lines(&self, container: &str) -> usize {
        let Some(at) = self.checkpoints.get(container) else {
            return 0;
        };
        self.sent
            .get(container)
            .and_then(|sent| sent.iter().rev().find(|s| cursor(s.last) == at))
            .map_or(0, |s| s.last)
    }

    /// Whether every line sent so far is acknowledged (live acknowledgements).
    pub fn all_acked(&self) -> bool {
        self.sent_lines()
            .iter()
            .all(|(c, &n)| self.acked_lines(c) == n)
    }

    /// Waits (up to `timeout`) until `check(self)` holds.
    pub async fn wait(&self, timeout: Duration, what: &str, check: impl Fn(&Rig) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; acked {:?} of {:?}, buffer {:?}, dlq {:?}",
                self.sent_lines()
                    .keys()
                    .map(|c| (c.clone(), self.acked_lines(c)))
                    .collect::<Vec<_>>(),
                self.sent_lines(),
                self.buffer.pending(),
                self.dead_letters.pending(),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes the worker's input without cancelling anything.
    pub fn close_input(&mut self) {
        self.tx = None;
    }

    /// Waits (up to `timeout`) for the worker to exit; panics if it does not.
    pub async fn join(&mut self, timeout: Duration) {
        let task = self.task.take().expect("worker running");
        match tokio::time::timeout(timeout, task).await {
            Ok(r) => r.expect("worker task panicked"),
            Err(_) => panic!("the worker did not exit within {timeout:?}"),
        }
    }

    /// Shutdown (the worker drains) and waits for it to exit.
    pub async fn stop(&mut self, timeout: Duration) {
        self.shutdown.cancel();
        self.close_input();
        self.join(timeout).await;
    }

    /// After the worker exited ([`Acks::Audit`]): every batch was completed by the worker
    /// exactly once. Completes them (as the second sink), so the checkpoint ends at the last.
    pub fn audit_acks(&self) -> Result<(), String> {
        assert!(self.acks == Acks::Audit, "audit needs Acks::Audit");
        assert!(self.task.is_none(), "audit after the worker exited");
        let mut problems = Vec::new();
        for (c, sent) in &self.sent {
            let mut before = 0;
            for s in sent {
                let at = self.checkpoints.get(c);
                if at != Some(cursor(before)) && !(before == 0 && at == Some(Cursor::at(0))) {
                    problems.push(format!(
                        "{c}: batch seq {} (lines {}..={}) acknowledged twice by the worker",
                        s.seq,
                        before + 1,
                        s.last
                    ));
                    break;
                }
                self.ledger.acknowledge(c, s.seq);
                if self.checkpoints.get(c) != Some(cursor(s.last)) {
                    problems.push(format!(
                        "{c}: batch seq {} (lines {}..={}) not acknowledged by the worker",
                        s.seq,
                        before + 1,
                        s.last
                    ));
                    break;
                }
                before = s.last;
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Every record of the dead-letter store, decoded.
    pub fn dead_letter_records(&self) -> Vec<(Option<String>, Vec<Message>)> {
        store_records(&self.dead_letters)
    }

    /// The line of each dead-letter message, in store order.
    pub fn dead_letter_lines(&self) -> Vec<String> {
        self.dead_letter_records()
            .iter()
            .flat_map(|(_, m)| m.iter().map(|m| text(&m.value)))
            .collect()
    }

    /// Every record of the buffer, decoded.
    pub fn buffer_records(&self) -> Vec<(Option<String>, Vec<Message>)> {
        store_records(&self.buffer)
    }

    /// Prints the sink's counters that are not 0 (run with `--nocapture` to see them).
    pub fn print_metrics(&self, test: &str) {
        let text = self.metrics.render();
        let shown: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.contains("kafka") && !l.contains("_bucket") && !l.ends_with(" 0"))
            .collect();
        eprintln!("{test}: {}", shown.join("; "));
    }

    /// The sum of the samples of metric `name` (as exported, e.g.
    /// `log_capturer_sink_lines_total`) whose labels include every `labels` pair.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics.render(), name, labels)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // A failed test must not leave a producer running behind the next test's back.
        self.abandon.cancel();
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn store_records(store: &SharedStore) -> Vec<(Option<String>, Vec<Message>)> {
    let records = store.lock().records().expect("store records");
    records
        .into_iter()
        .map(|(_, bytes)| {
            let (header, messages) =
                kafka::store::decode_record(&bytes).expect("decodable store record");
            assert_eq!(header.messages, messages.len());
            (header.reason, messages)
        })
        .collect()
}
