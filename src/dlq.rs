//! `log-capturer dlq list | show | replay | purge`: the dead letters of a network sink — the
//! Loki sink's (batches Loki rejected with 400 or 413, kept with its answer) or the Kafka
//! sink's (messages the broker refused or larger than `message_max_bytes`, see
//! [`kafka`]). `--sink` chooses; without it, the only network sink configured. These commands
//! take the state directory's lock, so they run while the agent is stopped.

use std::io::Read;

use crate::buffer::RecordId;
use crate::config::Config;
use crate::docker::timestamp::format_rfc3339_nanos;
use crate::sinks::loki::proto::PushRequest;
use crate::sinks::loki::store::{RecordHeader, SharedStore, decode_record, encode_record};
use crate::sinks::loki::{self, LokiClient, SendError};
use crate::state_lock::StateLock;

#[cfg(feature = "kafka")]
#[path = "dlq_kafka.rs"]
pub mod kafka;

/// Whose dead letters (`--sink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqSink {
    Loki,
    Kafka,
}

/// The sink a command is about: `wanted`, or the only network sink of the config.
pub fn which(config: &Config, wanted: Option<DlqSink>) -> Result<DlqSink, String> {
    let (loki, kafka) = (config.sinks.loki.is_some(), config.sinks.kafka.is_some());
    match wanted {
        Some(DlqSink::Kafka) if !kafka => {
            Err("the config has no sinks.kafka: there are no Kafka dead letters to manage".into())
        }
        Some(sink) => Ok(sink),
        None if loki && kafka => Err(
            "the config has two network sinks, sinks.loki and sinks.kafka: choose whose dead \
             letters with --sink loki or --sink kafka"
                .into(),
        ),
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
            DlqSink::Kafka => Err("this build has no Kafka sink".to_string()),
        }
    };
}

pub fn list(config: &Config, sink: Option<DlqSink>) -> Result<(), String> {
    dispatch!(config, sink, list_loki(config), kafka::list(config))
}

pub fn show(config: &Config, sink: Option<DlqSink>, id: &str) -> Result<(), String> {
    dispatch!(config, sink, show_loki(config, id), kafka::show(config, id))
}

pub fn purge(config: &Config, sink: Option<DlqSink>) -> Result<(), String> {
    dispatch!(config, sink, purge_loki(config), kafka::purge(config))
}

pub async fn replay(config: &Config, sink: Option<DlqSink>) -> Result<(), String> {
    dispatch!(
        config,
        sink,
        replay_loki(config).await,
        kafka::replay(config)
    )
}

fn open(config: &Config) -> Result<(SharedStore, StateLock), String> {
    let loki = config
        .sinks
        .loki
        .as_ref()
        .ok_or("the config has no sinks.loki: there are no dead letters to manage")?;
    let lock = StateLock::acquire(&config.checkpoint.state_dir)?;
    let dir = loki::dlq_dir(&config.checkpoint.state_dir);
    let (store, report) = SharedStore::open(&dir, loki::dlq_options(loki))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for p in report.problems {
        eprintln!("warning: {p}");
    }
    Ok((store, lock))
}

fn list_loki(config: &Config) -> Result<(), String> {
    let (store, _lock) = open(config)?;
    let records = store.lock().records().map_err(|e| e.to_string())?;
    if records.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    println!("{:<24} {:<30} {:>7}  reason", "id", "written", "entries");
    for (id, bytes) in records {
        match decode_record(&bytes) {
            Ok((h, _)) => println!(
                "{:<24} {:<30} {:>7}  {}",
                id.to_string(),
                format_rfc3339_nanos(h.written_ns),
                h.entries,
                h.reason
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

fn show_loki(config: &Config, id: &str) -> Result<(), String> {
    let wanted: RecordId = id.parse().map_err(|e| format!("{e}"))?;
    let (store, _lock) = open(config)?;
    let records = store.lock().records().map_err(|e| e.to_string())?;
    let (_, bytes) = records
        .into_iter()
        .find(|(rid, _)| *rid == wanted)
        .ok_or_else(|| format!("no dead letter {id} (see `dlq list`)"))?;
    let (header, body) = decode_record(&bytes)?;
    println!("reason:  {}", header.reason.clone().unwrap_or_default());
    println!("written: {}", format_rfc3339_nanos(header.written_ns));
    println!("entries: {}", header.entries);
    if let Some(tenant) = &header.tenant {
        println!("tenant:  {tenant}");
    }
    for (labels, ts, line) in decode_entries(&header, &body)? {
        println!("{} {labels} {line}", format_rfc3339_nanos(ts));
    }
    Ok(())
}

/// The entries of a stored body: (labels, timestamp ns, line).
pub fn decode_entries(
    header: &RecordHeader,
    body: &[u8],
) -> Result<Vec<(String, i64, String)>, String> {
    if header.content_type == "application/json" {
        let raw = if header.content_encoding.is_some() {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip: {e}"))?;
            out
        } else {
            body.to_vec()
        };
        let v: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| format!("json: {e}"))?;
        let mut out = Vec::new();
        for s in v["streams"].as_array().into_iter().flatten() {
            let labels = s["stream"].to_string();
            for e in s["values"].as_array().into_iter().flatten() {
                let ts = e[0].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
                out.push((
                    labels.clone(),
                    ts,
                    e[1].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        return Ok(out);
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    let request: PushRequest =
        prost::Message::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    Ok(request
        .streams
        .into_iter()
        .flat_map(|s| {
            let labels = s.labels;
            s.entries.into_iter().map(move |e| {
                (
                    labels.clone(),
                    e.timestamp.map(|t| t.to_nanos()).unwrap_or(0),
                    e.line,
                )
            })
        })
        .collect())
}

fn purge_loki(config: &Config) -> Result<(), String> {
    let (store, _lock) = open(config)?;
    let n = store.lock().pending_records();
    store.lock().purge().map_err(|e| e.to_string())?;
    println!("purged {n} dead letters");
    Ok(())
}

/// Sends every dead letter to Loki again. Accepted ones are removed; ones rejected again stay,
/// with the new reason; a connection problem stops the replay (nothing is lost).
async fn replay_loki(config: &Config) -> Result<(), String> {
    let (store, _lock) = open(config)?;
    let loki_config = config.sinks.loki.as_ref().ok_or("no sinks.loki")?;
    let client = LokiClient::new(loki_config)?;
    let total = store.lock().pending_records();
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..total {
        let Some((id, bytes)) = store.lock().peek().map_err(|e| e.to_string())? else {
            break;
        };
        let (header, body) = decode_record(&bytes)?;
        let batch = header.to_batch(body);
        match client.send(&batch).await {
            Ok(()) => accepted += 1,
            Err(SendError::Rejected { status, body }) => {
                rejected += 1;
                let again = RecordHeader::for_batch(&batch, Some(format!("{status}: {body}")));
                store
                    .lock()
                    .append(&encode_record(&again, &batch.body))
                    .map_err(|e| e.to_string())?;
            }
            Err(e) => {
                println!("replayed {accepted}, rejected again {rejected}; stopped: {e}");
                return Err(format!("Loki is not accepting: {e}"));
            }
        }
        store.lock().consume(id).map_err(|e| e.to_string())?;
    }
    println!("replayed {accepted}, rejected again {rejected} (kept)");
    Ok(())
}
