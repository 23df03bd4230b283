//! The worker's librdkafka producer: a `ThreadedProducer` (its own polling thread) whose
//! context turns delivery reports, fatal errors and statistics into [`Event`]s on a channel the
//! worker reads. Each message carries a token (the worker's slot number) as its opaque.

use std::sync::Arc;
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
    /// the message (or its batch) is too large or malformed, the topic is invalid, unknown or
    /// not ours to write; librdkafka's own: too large for `message.max.bytes`, bad message,
    /// unknown topic or partition, bad argument. Everything else (connection, leader, time-out,
    /// throttling, out-of-order/epoch errors the idempotent producer handles) is retried.
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
                | E::UnknownTopicOrPartition
                | E::UnsupportedForMessageFormat
                | E::BadMessage
                | E::UnknownTopic
                | E::UnknownPartition
                | E::InvalidArgument
        )
    }
}

pub(super) struct Context {
    tx: mpsc::UnboundedSender<Event>,
    metrics: KafkaMetrics,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        for broker in statistics.brokers.values() {
            // Bootstrap entries (-1) are not brokers of the cluster.
            if broker.nodeid < 0 {
                continue;
            }
            if let Some(rtt) = &broker.rtt {
                self.metrics
                    .broker_rtt_seconds
                    .get_or_create(&BrokerLabels {
                        broker: broker.nodeid.to_string(),
                    })
                    .set(rtt.avg as f64 / 1e6);
            }
        }
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
    /// It can never be produced (e.g. an invalid topic name): a dead letter.
    Permanent(String),
}

pub(super) struct KafkaProducer {
    inner: Arc<ThreadedProducer<Context>>,
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

impl KafkaProducer {
    pub fn create(
        client: &ClientConfig,
        tx: mpsc::UnboundedSender<Event>,
        metrics: KafkaMetrics,
    ) -> Result<KafkaProducer, String> {
        let config = worker_config(client);
        let producer = ThreadedProducer::from_config_and_context(&config, Context { tx, metrics })
            .map_err(|e| e.to_string())?;
        Ok(KafkaProducer {
            inner: Arc::new(producer),
        })
    }

    pub fn send(&self, token: u64, m: &Message) -> Result<(), Refused> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&m.topic, token as usize).payload(&m.value[..]);
        if let Some(key) = &m.key {
            record = record.key(&key[..]);
        }
        match self.inner.send(record) {
            Ok(()) => Ok(()),
            Err((e, _)) => match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::QueueFull) => Err(Refused::QueueFull),
                _ => Err(Refused::Permanent(e.to_string())),
            },
        }
    }

    /// The producer's fatal error, if it has one.
    pub fn fatal_error(&self) -> Option<String> {
        self.inner
            .client()
            .fatal_error()
            .map(|(code, text)| format!("{code:?}: {text}"))
    }

    /// Takes back what librdkafka has not sent yet (never what is in flight: a request on the
    /// wire may still be written, and producing it again would duplicate it). Each comes back
    /// as a delivery report with `PurgeQueue`.
    pub fn purge_queue(&self) {
        self.inner.purge(PurgeConfig::default().queue());
    }

    /// Takes back everything (a fatal error: the producer is dropped anyway).
    pub fn purge_all(&self) {
        self.inner.purge(PurgeConfig::default().queue().inflight());
    }

    /// Purges and destroys the producer on a blocking thread (destroying it waits for its
    /// threads), and waits for that.
    pub async fn close(self) {
        let inner = self.inner;
        let _ = tokio::task::spawn_blocking(move || {
            inner.purge(PurgeConfig::default().queue().inflight());
            // Gives the purge reports a moment to go out; nobody reads them any more.
            let _ = inner.flush(Duration::from_millis(100));
            drop(inner);
        })
        .await;
    }
}
