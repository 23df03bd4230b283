//! The sinks of a generation: prepared (clients and stores opened) before it starts, then
//! started and supervised.

use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::checkpoint::CheckpointStore;
use crate::config::Config;
use crate::config::LokiSinkConfig;
use crate::observability::metrics::Metrics;
use crate::observability::metrics::SinkLabels;
use crate::observability::status::StatusBoard;
use crate::pipeline::{AckLedger, Delivery, LocalSinkWorker, OutputClosed, WriterSettings};
use crate::sinks::loki::{self, Encoder, LokiClient, LokiWorker, store::SharedStore};
use crate::sinks::{FileSink, FileSinkSettings, NullSink, Sink, StdoutSink};
use tokio::task::JoinHandle;

use super::lock;

/// Batches in flight between capture and the router at most (the byte budget binds first).
pub(super) const QUEUE_CHANNEL_BATCHES: usize = 16 * 1024;

/// A sink worker; it ends with `OutputClosed` when its output is gone for good.
pub(super) type SinkWorkerHandle = JoinHandle<Result<(), OutputClosed>>;

pub(super) struct RunningSinks {
    pub(super) inputs: Vec<mpsc::UnboundedSender<Arc<Delivery>>>,
    /// Each worker with its sink's name.
    pub(super) workers: Vec<(&'static str, SinkWorkerHandle)>,
    pub(super) ledger: Arc<AckLedger>,
}

/// The Loki sink's client and on-disk stores, ready to run.
pub(super) struct PreparedLoki {
    pub(super) config: LokiSinkConfig,
    pub(super) client: LokiClient,
    pub(super) buffer: SharedStore,
    pub(super) dead_letters: SharedStore,
}

/// The network sinks' clients and stores, opened before a generation starts (a reload that
/// cannot open them keeps the previous config).
#[derive(Default)]
pub(super) struct PreparedSinks {
    pub(super) loki: Option<PreparedLoki>,
    #[cfg(feature = "kafka")]
    pub(super) kafka: Option<PreparedKafka>,
}

/// Why a network sink could not be prepared (the generation does not start; a reload keeps
/// the previous config).
#[derive(Debug, thiserror::Error)]
pub enum SinkSetupError {
    #[error(transparent)]
    Loki(#[from] loki::LokiSetupError),
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    KafkaClient(crate::sinks::kafka::KafkaConfigError),
    #[cfg(feature = "kafka")]
    #[error("sinks.kafka: {0}")]
    KafkaEncoder(#[source] crate::sinks::kafka::KafkaConfigError),
    /// A buffer or dead-letter store.
    #[error("cannot open {}: {source}", .dir.display())]
    OpenStore {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blocking task that opens the stores failed (panicked).
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

pub(super) async fn prepare_sinks(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<PreparedSinks, SinkSetupError> {
    let mut prepared = PreparedSinks::default();
    if let Some(loki) = &config.sinks.loki {
        prepared.loki = Some(prepare_loki(config, loki, metrics).await?);
    }
    #[cfg(feature = "kafka")]
    if let Some(kafka) = &config.sinks.kafka {
        prepared.kafka = Some(prepare_kafka(config, kafka, metrics).await?);
    }
    Ok(prepared)
}

#[cfg(feature = "kafka")]
pub(super) struct PreparedKafka {
    pub(super) config: crate::config::KafkaSinkConfig,
    pub(super) encoder: crate::sinks::kafka::MessageEncoder,
    pub(super) client: rdkafka::ClientConfig,
    pub(super) buffer: SharedStore,
    pub(super) dead_letters: SharedStore,
}

#[cfg(feature = "kafka")]
pub(super) async fn prepare_kafka(
    config: &Config,
    kafka: &crate::config::KafkaSinkConfig,
    metrics: &Arc<Metrics>,
) -> Result<PreparedKafka, SinkSetupError> {
    use crate::sinks::kafka;
    for (property, why) in kafka.weakening_properties() {
        warn!(%property, "sinks.kafka.properties: {why}");
    }
    for warning in kafka.security_warnings() {
        warn!("{warning}");
    }
    let client = kafka::client_config::checked_client_config(kafka)
        .await
        .map_err(SinkSetupError::KafkaClient)?;
    let encoder = kafka::MessageEncoder::new(kafka).map_err(SinkSetupError::KafkaEncoder)?;
    let state = config.checkpoint.state_dir.clone();
    let (buffer, dead_letters) = {
        let kafka_config = kafka.clone();
        let metrics = Arc::clone(metrics);
        tokio::task::spawn_blocking(move || {
            open_sink_stores(
                kafka::SINK,
                (
                    kafka::buffer_dir(&state),
                    kafka::buffer_options(&kafka_config),
                ),
                (kafka::dlq_dir(&state), kafka::dlq_options(&kafka_config)),
                &metrics,
            )
        })
        .await??
    };
    Ok(PreparedKafka {
        config: kafka.clone(),
        encoder,
        client,
        buffer,
        dead_letters,
    })
}

pub(super) async fn prepare_loki(
    config: &Config,
    loki: &LokiSinkConfig,
    metrics: &Arc<Metrics>,
) -> Result<PreparedLoki, SinkSetupError> {
    if loki.tls.insecure_skip_verify {
        warn!("sinks.loki.tls.insecure_skip_verify is set: Loki's certificate is NOT verified");
    }
    let client = LokiClient::new(loki)?;
    let state = config.checkpoint.state_dir.clone();
    let (buffer, dead_letters) = {
        let loki = loki.clone();
        let metrics = Arc::clone(metrics);
        tokio::task::spawn_blocking(move || open_loki_stores(&state, &loki, &metrics)).await??
    };
    Ok(PreparedLoki {
        config: loki.clone(),
        client,
        buffer,
        dead_letters,
    })
}

/// Starts one worker per configured sink. Each worker ends when its input closes.
pub(super) fn start_sinks(
    config: &Config,
    prepared: PreparedSinks,
    metrics: &Arc<Metrics>,
    checkpoints: &Arc<CheckpointStore>,
    status: &StatusBoard,
    shutdown: &CancellationToken,
    abandon: &CancellationToken,
) -> RunningSinks {
    let mut local: Vec<Box<dyn Sink>> = Vec::new();
    if config.sinks.stdout.is_some() {
        local.push(Box::new(StdoutSink::new()));
    }
    if let Some(file) = &config.sinks.file {
        // Validated with the config; an error here cannot happen after `Config::parse`.
        match FileSinkSettings::from_config(file) {
            Ok(settings) => local.push(Box::new(FileSink::new(settings, Arc::clone(metrics)))),
            Err(e) => tracing::error!(error = %e, "file sink not started"),
        }
    }
    if config.sinks.discard.is_some() {
        local.push(Box::new(NullSink));
    }
    let PreparedSinks {
        loki,
        #[cfg(feature = "kafka")]
        kafka,
    } = prepared;
    let mut names: Vec<&'static str> = local.iter().map(|s| s.name()).collect();
    if loki.is_some() {
        names.push("loki");
    }
    #[cfg(feature = "kafka")]
    if kafka.is_some() {
        names.push(crate::sinks::kafka::SINK);
    }
    let ledger = Arc::new(AckLedger::new(names.len(), Arc::clone(checkpoints)));
    for gone in ["stdout", "file", "null", "loki", "kafka"] {
        if !names.contains(&gone) {
            metrics.forget_sink_gauges(gone);
        }
    }
    status.retain_sinks(&names);
    let mut inputs = Vec::new();
    let mut workers = Vec::new();
    for sink in local {
        let name = sink.name();
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = LocalSinkWorker {
            sink,
            input: rx,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(metrics),
            settings: WriterSettings {
                flush_interval: config.pipeline.flush_interval.0,
                // Message bytes; a sink's encoding of them (NDJSON with the container's
                // metadata per line) is several times larger and is held until the flush.
                flush_bytes: 1024 * 1024,
                sync_bytes: (config.pipeline.queue_bytes.0 as usize / 4).min(4 * 1024 * 1024),
                held_retry: crate::pipeline::HELD_RETRY,
            },
            shutdown: shutdown.clone(),
            status: status.sink(name, false),
        };
        let runtime = tokio::runtime::Handle::current();
        workers.push((
            name,
            tokio::task::spawn_blocking(move || worker.run_blocking(runtime)),
        ));
        inputs.push(tx);
    }
    if let Some(loki) = loki {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = LokiWorker {
            input: rx,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(metrics),
            encoder: Encoder::new(&loki.config),
            client: loki.client,
            buffer: loki.buffer,
            dead_letters: loki.dead_letters,
            config: loki.config,
            shutdown: shutdown.clone(),
            abandon: abandon.clone(),
            status: status.sink("loki", true),
        };
        workers.push((
            "loki",
            tokio::spawn(async move {
                worker.run().await;
                Ok(())
            }),
        ));
        inputs.push(tx);
    }
    #[cfg(feature = "kafka")]
    if let Some(kafka) = kafka {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = crate::sinks::kafka::KafkaWorker {
            input: rx,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(metrics),
            encoder: kafka.encoder,
            client: kafka.client,
            buffer: kafka.buffer,
            dead_letters: kafka.dead_letters,
            config: kafka.config,
            shutdown: shutdown.clone(),
            abandon: abandon.clone(),
            status: status.sink(crate::sinks::kafka::SINK, true),
        };
        workers.push((
            crate::sinks::kafka::SINK,
            tokio::spawn(async move {
                worker.run().await;
                Ok(())
            }),
        ));
        inputs.push(tx);
    }
    RunningSinks {
        inputs,
        workers,
        ledger,
    }
}

pub(super) fn open_loki_stores(
    state_dir: &std::path::Path,
    config: &LokiSinkConfig,
    metrics: &Metrics,
) -> Result<(SharedStore, SharedStore), SinkSetupError> {
    open_sink_stores(
        "loki",
        (loki::buffer_dir(state_dir), loki::buffer_options(config)),
        (loki::dlq_dir(state_dir), loki::dlq_options(config)),
        metrics,
    )
}

/// Opens a network sink's buffer and dead-letter stores, counting what was found torn.
pub(super) fn open_sink_stores(
    sink: &'static str,
    buffer: (std::path::PathBuf, crate::buffer::StoreOptions),
    dlq: (std::path::PathBuf, crate::buffer::StoreOptions),
    metrics: &Metrics,
) -> Result<(SharedStore, SharedStore), SinkSetupError> {
    let open = |(dir, options): (std::path::PathBuf, crate::buffer::StoreOptions)| {
        let (store, report) =
            SharedStore::open(&dir, options).map_err(|source| SinkSetupError::OpenStore {
                dir: dir.clone(),
                source,
            })?;
        for problem in &report.problems {
            metrics
                .buffer_corrupt
                .get_or_create(&SinkLabels { sink })
                .inc();
            warn!(store = %dir.display(), %problem, "skipped torn or corrupt data");
        }
        if report.pending_records > 0 {
            info!(store = %dir.display(), records = report.pending_records, "records waiting from an earlier run");
        }
        Ok::<_, SinkSetupError>(store)
    };
    Ok((open(buffer)?, open(dlq)?))
}

/// Watches one sink worker until it ends. A worker ends only once its input has closed, that
/// is after capture stopped. One that panics or ends earlier can never acknowledge again: every
/// container's checkpoint would freeze (lines read after it would be written again after the
/// next restart) and capture would stall once the budget is spent. So the agent stops (exit 3)
/// and its orchestrator restarts it from what was acknowledged.
/// `stop` ends this generation (a reload or shutdown); `shutdown` stops the process.
pub(super) async fn supervise_sink_worker(
    name: &'static str,
    worker: SinkWorkerHandle,
    stop: CancellationToken,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    problems: Arc<Mutex<Vec<String>>>,
) {
    let result = worker.await;
    let what = match &result {
        Err(e) if e.is_panic() => format!("panicked ({e})"),
        // Aborted at `shutdown_timeout` (see `run_pipeline`): already counted as a problem.
        Err(e) if e.is_cancelled() && stop.is_cancelled() => return,
        Err(e) => format!("failed ({e})"),
        Ok(Err(closed)) => {
            // Not a worker failure: its output is gone (the worker logged why). Stop.
            lock(&problems).push(closed.to_string());
            shutdown.cancel();
            return;
        }
        Ok(Ok(())) if !stop.is_cancelled() => "ended while capture was running".to_string(),
        Ok(Ok(())) => return,
    };
    metrics
        .sink_worker_failures
        .get_or_create(&SinkLabels { sink: name })
        .inc();
    error!(
        sink = name,
        "sink worker {what}; what it has not acknowledged is read again at the next start; stopping the agent"
    );
    lock(&problems).push(format!("sink worker {name} {what}"));
    shutdown.cancel();
}
