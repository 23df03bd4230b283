//! The Kafka sink's own metric families (`log_capturer_kafka_*`). The shared sink families
//! (`log_capturer_sink_*`, `buffer_*`, `dead_letters_total`) carry `sink="kafka"`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::metrics::ReasonLabels;

/// Reasons of `log_capturer_sink_failures_total{sink="kafka"}` and of
/// `log_capturer_kafka_messages_failed_total`:
/// - `too_large`: value over `message_max_bytes` (never produced; a dead letter);
/// - `rejected`: the broker refused it for good (a dead letter);
/// - `purged`: taken back from librdkafka's queue to be spilled or produced again;
/// - `timeout`: a message had no delivery report for `buffer.spill_after` (→ spill); the
///   messages counted are those outstanding at the spill (the spill events are
///   `log_capturer_sink_failures_total{reason="timeout"}`);
/// - `error`: another delivery error (the message is spilled and produced again);
/// - `fatal`: the producer hit a fatal error (it is recreated);
/// - `dead_letter`: the dead-letter store could not take a message (retried);
/// - `producer`: the producer could not be created (retried; a sink failure, no message), or
///   it refused a message because it is in a fatal state (the message waits for the
///   recreated producer).
pub const KAFKA_SINK_FAILURE_REASONS: &[&str] = super::reasons::KafkaSinkFailureReason::LABELS;

/// Reasons of `log_capturer_dead_letters_total{sink="kafka"}`.
pub const KAFKA_DEAD_LETTER_REASONS: &[&str] = super::reasons::KafkaDeadLetterReason::LABELS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    /// The broker's node id (bounded by the cluster's brokers).
    pub broker: String,
}

#[derive(Clone)]
pub struct KafkaMetrics {
    pub produced: Counter,
    pub acknowledged: Counter,
    /// Produced again: from the on-disk buffer, or after a failure (fatal error).
    pub retried: Counter,
    /// Messages sent again that the broker may already have (librdkafka said "possibly
    /// persisted"): each may be a duplicate downstream.
    pub possible_duplicates: Counter,
    pub failed: Family<ReasonLabels, Counter>,
    pub in_flight: Gauge,
    /// Produce call → delivery report.
    pub delivery_seconds: Histogram,
    pub broker_rtt_seconds: Family<BrokerLabels, Gauge<f64, AtomicU64>>,
}

impl Default for KafkaMetrics {
    fn default() -> Self {
        KafkaMetrics {
            produced: Counter::default(),
            acknowledged: Counter::default(),
            retried: Counter::default(),
            possible_duplicates: Counter::default(),
            failed: Family::default(),
            in_flight: Gauge::default(),
            delivery_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            broker_rtt_seconds: Family::default(),
        }
    }
}

impl KafkaMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "log_capturer_kafka_messages_produced",
            "Messages handed to the Kafka producer (live and replayed)",
            self.produced.clone(),
        );
        r.register(
            "log_capturer_kafka_messages_acknowledged",
            "Messages the Kafka brokers acknowledged (delivery report without error)",
            self.acknowledged.clone(),
        );
        r.register(
            "log_capturer_kafka_messages_retried",
            "Messages produced again: replayed from the on-disk buffer or after a producer failure",
            self.retried.clone(),
        );
        r.register(
            "log_capturer_kafka_messages_possible_duplicates",
            "Messages produced again although the broker may already have them",
            self.possible_duplicates.clone(),
        );
        r.register(
            "log_capturer_kafka_messages_failed",
            "Kafka messages that failed, by reason",
            self.failed.clone(),
        );
        r.register(
            "log_capturer_kafka_messages_in_flight",
            "Messages produced and waiting for their delivery report",
            self.in_flight.clone(),
        );
        r.register(
            "log_capturer_kafka_delivery_seconds",
            "Time from producing a message to its delivery report",
            self.delivery_seconds.clone(),
        );
        r.register(
            "log_capturer_kafka_broker_rtt_seconds",
            "Average request round-trip time per broker (librdkafka statistics)",
            self.broker_rtt_seconds.clone(),
        );
    }

    /// The reason series at 0 (called when the worker starts).
    pub fn init(&self) {
        for &reason in KAFKA_SINK_FAILURE_REASONS {
            let _ = self.failed.get_or_create(&ReasonLabels { reason });
        }
        self.in_flight.set(0);
    }
}
