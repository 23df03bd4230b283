//! The worker's librdkafka producer: a `ThreadedProducer` (its own polling thread) whose
//! context turns delivery reports, fatal errors and statistics into [`Event`]s on a channel the
//! worker reads. Each message carries a token (the worker's slot number) as its opaque.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::statistics::Statistics;
use tokio::sync::mpsc;
use tracing::warn;

use super::super::encode::Message;
use crate::observability::kafka_metrics::{BrokerLabels, KafkaMetrics};

/// What the producer's thread tells the worker.
pub(super) enum Event {
    Report(Report),
    /// librdkafka reported an error: the worker checks whether the producer is in a fatal
    /// state (e.g. the idempotent producer's id or sequence broke) and must be recreated.
    Error,
}

pub(super) struct Report {
    pub token: u64,
    /// The partition it went to (-1: none assigned).
    pub partition: i32,
    pub result: Result<(), Failure>,
}

pub(super) struct Failure {
    pub code: RDKafkaErrorCode,
    pub text: String,
    /// librdkafka's `rd_kafka_message_status` said the broker may already have it.
    pub possibly_persisted: bool,
}

impl Failure {
    /// The message was taken back by a purge (not refused): it is spilled or produced again.
    pub fn is_purge(&self) -> bool {
        matches!(
            self.code,
            RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
        )
    }

    /// A refusal that no retry can change: the message becomes a dead letter. The broker's:
    /// the message (or its batch) is too large or malformed, the topic is invalid or not ours
    /// to write; librdkafka's own: too large for `message.max.bytes`, bad message, unknown
    /// partition, bad argument. Everything else (connection, leader, time-out, throttling,
    /// out-of-order/epoch errors the idempotent producer handles) is retried — an unknown
    /// topic too (`UnknownTopicOrPartition`, `UnknownTopic`): during a metadata gap or while a
    /// topic is being created it is transient, and dead-lettering it would send a whole
    /// topic's traffic to the dead letters; it is spilled and produced again instead.
    pub fn is_permanent(&self) -> bool {
        use RDKafkaErrorCode as E;
        matches!(
            self.code,
            E::MessageSizeTooLarge
                | E::InvalidMessageSize
                | E::InvalidMessage
                | E::InvalidRecord
                | E::MessageBatchTooLarge
                | E::InvalidTopic
                | E::TopicAuthorizationFailed
                | E::UnsupportedForMessageFormat
                | E::BadMessage
                | E::UnknownPartition
                | E::InvalidArgument
        )
    }
}

pub(super) struct Context {
    tx: mpsc::UnboundedSender<Event>,
    metrics: KafkaMetrics,
    /// Brokers with an RTT series: a broker that left the cluster has its series removed.
    rtt_brokers: Mutex<BTreeSet<String>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut seen = BTreeSet::new();
        for broker in statistics.brokers.values() {
            // Bootstrap entries (-1) are not brokers of the cluster.
            if broker.nodeid < 0 {
                continue;
            }
            if let Some(rtt) = &broker.rtt {
                let broker = broker.nodeid.to_string();
                self.metrics
                    .broker_rtt_seconds
                    .get_or_create(&BrokerLabels {
                        broker: broker.clone(),
                    })
                    .set(rtt.avg as f64 / 1e6);
                seen.insert(broker);
            }
        }
        let mut known = match self.rtt_brokers.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for gone in known.difference(&seen) {
            self.metrics.broker_rtt_seconds.remove(&BrokerLabels {
                broker: gone.clone(),
            });
        }
        *known = seen;
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A fatal error comes as an error event with its underlying code (e.g.
        // ClusterAuthorizationFailed); the worker asks the producer whether it is fatal.
        warn!(sink = "kafka", error = %error, "librdkafka: {reason}");
        let _ = self.tx.send(Event::Error);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        use rdkafka::Message as _;
        let partition = match result {
            Ok(m) | Err((_, m)) => m.partition(),
        };
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, m)) => {
                // SAFETY: `m` is the message of this delivery report, valid for the call.
                let status = unsafe { rdkafka::bindings::rd_kafka_message_status(m.ptr()) };
                let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                Err(Failure {
                    code,
                    text: e.to_string(),
                    possibly_persisted: status
                        != rdkafka::bindings::rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED,
                })
            }
        };
        let _ = self.tx.send(Event::Report(Report {
            token: token as u64,
            partition,
            result,
        }));
    }
}

/// Why a message could not be queued.
pub(super) enum Refused {
    /// librdkafka's queue is full: wait for delivery reports, then again.
    QueueFull,
    /// The producer is in a fatal state (or not usable): nothing can be produced until it is
    /// recreated; the message is not at fault and waits.
    Fatal(String),
    /// The topic is unknown for now (metadata gap, topic being created): not the message's
    /// fault; produced again later (spilled, or the replay backs off).
    Retry(String),
    /// It can never be produced (e.g. an invalid topic name): a dead letter.
    Permanent(String),
}

/// The worker's producer. Creating and destroying a librdkafka client can block (it starts,
/// then joins, its threads): both happen on a blocking thread, never on the async runtime.
pub(super) struct KafkaProducer {
    /// None only once closed or dropped.
    inner: Option<Arc<ThreadedProducer<Context>>>,
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(inner))),
                Err(_) => drop(inner),
            }
        }
    }
}

/// The properties the worker sets on top of the sink's client config.
pub(super) fn worker_config(client: &ClientConfig) -> ClientConfig {
    let mut c = client.clone();
    // librdkafka retries without limit; the worker decides when to spill.
    c.set("message.timeout.ms", "0");
    // The pipeline's byte budget bounds memory; librdkafka's own limits only get in the way.
    c.set("queue.buffering.max.messages", "10000000");
    c.set("queue.buffering.max.kbytes", "2097151");
    c.set("statistics.interval.ms", "5000");
    c
}

/// The producer could not be made (the worker retries with a back-off).
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error(transparent)]
    Create(rdkafka::error::KafkaError),
    #[error("producer creation thread: {0}")]
    Thread(tokio::task::JoinError),
}

impl KafkaProducer {
    pub async fn create(
        client: &ClientConfig,
        tx: mpsc::UnboundedSender<Event>,
        metrics: KafkaMetrics,
    ) -> Result<KafkaProducer, ProducerError> {
        let config = worker_config(client);
        let inner = tokio::task::spawn_blocking(move || {
            let producer = ThreadedProducer::from_config_and_context(
                &config,
                Context {
                    tx,
                    metrics,
                    rtt_brokers: Mutex::new(BTreeSet::new()),
                },
            )
            .map_err(ProducerError::Create)?;
            let inner = Arc::new(producer);
            #[cfg(test)]
            test_hook::register(&config, &inner);
            Ok::<_, ProducerError>(inner)
        })
        .await
        .map_err(ProducerError::Thread)??;
        Ok(KafkaProducer { inner: Some(inner) })
    }

    fn inner(&self) -> Option<&ThreadedProducer<Context>> {
        self.inner.as_deref()
    }

    pub fn send(&self, token: u64, m: &Message) -> Result<(), Refused> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&m.topic, token as usize).payload(&m.value[..]);
        if let Some(key) = &m.key {
            record = record.key(&key[..]);
        }
        let Some(inner) = self.inner() else {
            return Err(Refused::Fatal("the producer is closed".into()));
        };
        match inner.send(record) {
            Ok(()) => Ok(()),
            Err((e, _)) => match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::QueueFull) => Err(Refused::QueueFull),
                // After a fatal error librdkafka refuses every new message with `Fatal`.
                Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::State) => {
                    Err(Refused::Fatal(e.to_string()))
                }
                Some(
                    RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition,
                ) => Err(Refused::Retry(e.to_string())),
                _ => Err(Refused::Permanent(e.to_string())),
            },
        }
    }

    /// The producer's fatal error, if it has one.
    pub fn fatal_error(&self) -> Option<String> {
        self.inner()?
            .client()
            .fatal_error()
            .map(|(code, text)| format!("{code:?}: {text}"))
    }

    /// Takes back what librdkafka has not sent yet (never what is in flight: a request on the
    /// wire may still be written, and producing it again would duplicate it). Each comes back
    /// as a delivery report with `PurgeQueue`.
    /// Non-blocking: the worker's loop runs on the async runtime (the broker threads' queues
    /// are purged in the background; their reports come as usual).
    pub fn purge_queue(&self) {
        if let Some(p) = self.inner() {
            p.purge(PurgeConfig::default().queue().non_blocking());
        }
    }

    /// Takes back everything, what is in flight too (it may already be written: possible
    /// duplicates). For a fatal error or a drain whose broker stopped answering.
    pub fn purge_all(&self) {
        if let Some(p) = self.inner() {
            p.purge(PurgeConfig::default().queue().inflight().non_blocking());
        }
    }

    /// Purges and destroys the producer on a blocking thread (destroying it waits for its
    /// threads), and waits for that.
    pub async fn close(mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            inner.purge(PurgeConfig::default().queue().inflight());
            // Gives the purge reports a moment to go out; nobody reads them any more.
            let _ = inner.flush(Duration::from_millis(100));
            drop(inner);
        })
        .await;
    }
}

/// Tests reach a worker's producer by its `client.id` to raise a fatal error in it.
#[cfg(test)]
pub(super) mod test_hook {
    use super::{Context, ThreadedProducer};
    use rdkafka::ClientConfig;
    use rdkafka::producer::Producer as _;
    use std::sync::{Arc, Mutex, Weak};

    type Entry = (String, Weak<ThreadedProducer<Context>>);
    static PRODUCERS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

    pub fn register(config: &ClientConfig, p: &Arc<ThreadedProducer<Context>>) {
        if let Some(id) = config.get("client.id") {
            let mut all = PRODUCERS.lock().expect("registry");
            all.retain(|(_, w)| w.strong_count() > 0);
            all.push((id.to_string(), Arc::downgrade(p)));
        }
    }

    /// Raises a fatal error (as the idempotent producer would) in the live producer of
    /// `client_id`; false if there is none.
    pub fn fatal_error(client_id: &str) -> bool {
        let all = PRODUCERS.lock().expect("registry");
        let Some(p) = all
            .iter()
            .rev()
            .filter(|(id, _)| id == client_id)
            .find_map(|(_, w)| w.upgrade())
        else {
            return false;
        };
        let reason = c"test: fatal error";
        // SAFETY: the handle is alive (we hold the producer); the reason is a C string.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                p.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            )
        };
        true
    }
}
