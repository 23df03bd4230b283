//! The Kafka sink's worker.
//!
//! Issue 14 (helper: worker) writes this module; the contract it keeps:
//!
//! - **Acknowledgement.** A delivery is completed in the ledger (`ledger.complete(container,
//!   seq)`) only when every one of its lines is done: acknowledged by the broker (delivery
//!   report without error), durably in the on-disk buffer, or durably a dead letter.
//! - **Order.** Messages with the same key (one container by default) reach their partition in
//!   capture order: the idempotent producer keeps order across its own retries; while the
//!   buffer holds anything, new messages queue behind it (as in the Loki worker).
//! - **Retriable errors** (broker down, timeouts, leader changes) are retried without limit;
//!   after `buffer.spill_after` without progress, what librdkafka has not sent is purged
//!   and spilled to the buffer in capture order, replayed when brokers are back (also after a
//!   restart).
//! - **Permanent errors per message** (larger than `message_max_bytes`: never produced;
//!   refused by the broker as too large or invalid) → dead letters, and delivery goes on.
//! - **Shutdown** as the Loki worker: a short grace for what is in flight, the rest to the
//!   buffer; at `abandon`, nothing more is acknowledged.

use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::encode::MessageEncoder;
use crate::buffer::SharedStore;
use crate::config::KafkaSinkConfig;
use crate::observability::metrics::Metrics;
use crate::observability::status::SinkStatus;
use crate::pipeline::{AckLedger, Delivery};

pub struct KafkaWorker {
    pub input: mpsc::UnboundedReceiver<Arc<Delivery>>,
    pub ledger: Arc<AckLedger>,
    pub metrics: Arc<Metrics>,
    pub encoder: MessageEncoder,
    /// From [`super::client_config::client_config`]; the worker adds its own properties.
    pub client: rdkafka::ClientConfig,
    pub buffer: SharedStore,
    pub dead_letters: SharedStore,
    pub config: KafkaSinkConfig,
    pub shutdown: CancellationToken,
    /// Cancelled when `pipeline.shutdown_timeout` ran out: nothing is acknowledged, buffered
    /// or dead-lettered after it; the worker exits.
    pub abandon: CancellationToken,
    /// This sink's entry on the status board (`GET /api/v1/sinks`).
    pub status: Arc<SinkStatus>,
}

impl KafkaWorker {
    /// Runs until the input closes or the shutdown token is cancelled (then drains).
    pub async fn run(mut self) {
        // Skeleton: takes nothing and acknowledges nothing (the helper replaces it).
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                got = self.input.recv() => if got.is_none() { return },
            }
        }
    }
}
