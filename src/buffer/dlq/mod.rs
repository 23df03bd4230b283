//! `log-capturer dlq list | show | replay | purge`: the dead letters of a network sink — the
//! Loki sink's (batches Loki rejected with 400 or 413, kept with its answer, see [`loki`]) or
//! the Kafka sink's (messages the broker refused or larger than `message_max_bytes`, see
//! [`kafka`]). `--sink` chooses; without it, the only network sink configured. These commands
//! take the state directory's lock, so they run while the agent is stopped.
//!
//! This module holds what both sinks share (opening the store, `list`, finding a record for
//! `show`, `purge`); each sink's module decodes its own records and replays them.

use std::path::PathBuf;

use crate::buffer::{RecordId, SharedStore, StoreOptions};
use crate::config::Config;
use crate::docker::timestamp::format_rfc3339_nanos;
use crate::state_lock::StateLock;

mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod loki;

pub use error::DlqError;
pub use loki::decode_entries;

/// Whose dead letters (`--sink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqSink {
    Loki,
    Kafka,
}

/// The sink a command is about: `wanted`, or the only network sink of the config.
pub fn which(config: &Config, wanted: Option<DlqSink>) -> Result<DlqSink, DlqError> {
    let (loki, kafka) = (config.sinks.loki.is_some(), config.sinks.kafka.is_some());
    match wanted {
        Some(DlqSink::Kafka) if !kafka => Err(DlqError::NoKafkaDeadLetters),
        Some(sink) => Ok(sink),
        None if loki && kafka => Err(DlqError::TwoNetworkSinks),
        None if kafka => Ok(DlqSink::Kafka),
        None => Ok(DlqSink::Loki),
    }
}

#[cfg(feature = "kafka")]
macro_rules! dispatch {
    ($config:expr, $sink:expr, $loki:expr, $kafka:expr) => {
        match which($config, $sink)? {
            DlqSink::Loki => $loki,
            DlqSink::Kafka => $kafka,
        }
    };
}

#[cfg(not(feature = "kafka"))]
macro_rules! dispatch {
    ($config:expr, $sink:expr, $loki:expr, $kafka:expr) => {
        match which($config, $sink)? {
            DlqSink::Loki => $loki,
            DlqSink::Kafka => Err(DlqError::KafkaNotBuilt),
        }
    };
}

pub fn list(config: &Config, sink: Option<DlqSink>) -> Result<(), DlqError> {
    dispatch!(config, sink, loki::list(config), kafka::list(config))
}

pub fn show(config: &Config, sink: Option<DlqSink>, id: &str) -> Result<(), DlqError> {
    dispatch!(
        config,
        sink,
        loki::show(config, id),
        kafka::show(config, id)
    )
}

pub fn purge(config: &Config, sink: Option<DlqSink>) -> Result<(), DlqError> {
    dispatch!(config, sink, loki::purge(config), kafka::purge(config))
}

pub async fn replay(config: &Config, sink: Option<DlqSink>) -> Result<(), DlqError> {
    dispatch!(
        config,
        sink,
        loki::replay(config).await,
        kafka::replay(config)
    )
}

/// One sink's dead-letter store, open under the state directory's lock (held while this
/// lives).
struct DeadLetters {
    store: SharedStore,
    _lock: StateLock,
}

/// What `list` prints of one record.
struct Summary {
    written_ns: i64,
    /// Entries (Loki) or messages (Kafka).
    count: usize,
    reason: Option<String>,
}

impl DeadLetters {
    /// Takes the state directory's lock and opens the store in `dir`; what the open found torn
    /// or corrupt is printed as warnings.
    fn open(config: &Config, dir: PathBuf, options: StoreOptions) -> Result<Self, DlqError> {
        let lock = StateLock::acquire(&config.checkpoint.state_dir).map_err(DlqError::Lock)?;
        let (store, report) = match SharedStore::open(&dir, options) {
            Ok(opened) => opened,
            Err(source) => return Err(DlqError::Open { dir, source }),
        };
        for p in report.problems {
            eprintln!("warning: {p}");
        }
        Ok(DeadLetters { store, _lock: lock })
    }

    /// Prints one line per record: id, when it was written, how many entries or messages
    /// (`count_title`, right-aligned to its width) and the reason (its first 200 characters).
    fn list<E: std::fmt::Display>(
        &self,
        count_title: &str,
        summary: impl Fn(&[u8]) -> Result<Summary, E>,
    ) -> Result<(), DlqError> {
        let records = self.store.lock().records()?;
        if records.is_empty() {
            println!("no dead letters");
            return Ok(());
        }
        let width = count_title.len();
        println!(
            "{:<24} {:<30} {count_title:>width$}  reason",
            "id", "written"
        );
        for (id, bytes) in records {
            match summary(&bytes) {
                Ok(s) => println!(
                    "{:<24} {:<30} {:>width$}  {}",
                    id.to_string(),
                    format_rfc3339_nanos(s.written_ns),
                    s.count,
                    s.reason
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
                Err(e) => println!("{id:<24} (unreadable record: {e})"),
            }
        }
        Ok(())
    }

    /// The record `id` (already parsed as `wanted`), for `show`.
    fn find(&self, wanted: RecordId, id: &str) -> Result<Vec<u8>, DlqError> {
        let records = self.store.lock().records()?;
        let (_, bytes) = records
            .into_iter()
            .find(|(rid, _)| *rid == wanted)
            .ok_or_else(|| DlqError::NotFound { id: id.to_owned() })?;
        Ok(bytes)
    }

    fn purge(&self) -> Result<(), DlqError> {
        let n = self.store.lock().pending_records();
        self.store.lock().purge()?;
        println!("purged {n} dead letters");
        Ok(())
    }
}

/// A record id as `show` takes it.
fn parse_id(id: &str) -> Result<RecordId, DlqError> {
    Ok(id.parse()?)
}
