//! A Kafka cluster for tests and benchmarks: librdkafka's mock cluster (a real Kafka protocol
//! server on loopback, with fault injection), and a consumer that reads a topic back.
//!
//! librdkafka's `MockCluster` is not `Send`; [`KafkaMock`] keeps it on a thread of its own and
//! runs operations there ([`KafkaMock::with`]), so a test can hold it anywhere (async tests
//! included). Dropping the `KafkaMock` stops the cluster and joins the thread.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
pub use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};

pub type Cluster = MockCluster<'static, DefaultProducerContext>;
type Op = Box<dyn FnOnce(&Cluster) + Send>;

pub struct KafkaMock {
    bootstrap: String,
    ops: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaMock {
    /// A cluster of `brokers` brokers (ids 1..=brokers).
    pub fn start(brokers: i32) -> KafkaMock {
        let (ops_tx, ops_rx) = mpsc::channel::<Op>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let cluster = match MockCluster::new(brokers) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
            for op in ops_rx {
                op(&cluster);
            }
        });
        let bootstrap = ready_rx
            .recv()
            .expect("mock cluster thread")
            .expect("mock cluster");
        KafkaMock {
            bootstrap,
            ops: Some(ops_tx),
            thread: Some(thread),
        }
    }

    /// `host:port,host:port,…` for `sinks.kafka.brokers` / `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The brokers as a list (`sinks.kafka.brokers`).
    pub fn brokers(&self) -> Vec<String> {
        self.bootstrap.split(',').map(str::to_string).collect()
    }

    /// Runs `op` on the cluster's thread and returns its result.
    pub fn with<T: Send + 'static>(&self, op: impl FnOnce(&Cluster) -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let op: Op = Box::new(move |c| {
            let _ = tx.send(op(c));
        });
        self.ops
            .as_ref()
            .expect("cluster running")
            .send(op)
            .expect("cluster thread alive");
        rx.recv().expect("cluster op result")
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let topic = topic.to_string();
        self.with(move |c| c.create_topic(&topic, partitions, 1))
            .expect("create topic");
    }

    /// Every broker down (-1) or one; connections are cut and refused until `up`.
    pub fn down(&self, broker: i32) {
        self.with(move |c| c.broker_down(broker))
            .expect("broker down");
    }

    pub fn up(&self, broker: i32) {
        self.with(move |c| c.broker_up(broker)).expect("broker up");
    }
}

impl Drop for KafkaMock {
    fn drop(&mut self) {
        drop(self.ops.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Reads `topic` from the beginning of every partition until `want` messages were read and
/// every partition was read up to its high watermark (so a duplicate after the `want`th
/// message is read too: exactly-once checks see it), or nothing new came for `idle`, or
/// `deadline` passed. Messages in partition order (offsets ascending within a partition).
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    want: usize,
    idle: Duration,
    deadline: Duration,
) -> Result<Vec<Consumed>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "log-capturer-testkit")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .ok_or_else(|| format!("no topic {topic}"))?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&list).map_err(|e| format!("assign: {e}"))?;
    // How many messages the partitions hold (high - low watermark summed), fetched when `want`
    // is reached and again whenever that many were read.
    let stored = |consumer: &BaseConsumer| -> Result<usize, String> {
        let mut total = 0;
        for p in 0..partitions as i32 {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
            total += usize::try_from(high - low).unwrap_or(0);
        }
        Ok(total)
    };
    let mut by_partition: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
    let (start, mut last) = (Instant::now(), Instant::now());
    let mut got = 0;
    let mut target = want;
    let mut checked = false;
    while last.elapsed() < idle && start.elapsed() < deadline {
        if got >= target {
            if checked {
                break;
            }
            target = target.max(stored(&consumer)?);
            checked = true;
            continue;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                by_partition
                    .entry(m.partition())
                    .or_default()
                    .push(Consumed {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                got += 1;
                // More may have come since the watermarks were fetched.
                checked = false;
                last = Instant::now();
            }
            Some(Err(e)) => return Err(format!("consume {topic}: {e}")),
            None => {}
        }
    }
    let mut out: Vec<Consumed> = by_partition.into_values().flatten().collect();
    out.sort_by_key(|c| (c.partition, c.offset));
    Ok(out)
}
