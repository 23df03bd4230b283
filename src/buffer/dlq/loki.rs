//! `dlq … --sink loki`: the Loki sink's dead letters (`<state_dir>/dlq/loki`, records of
//! [`store::encode_record`](crate::sinks::loki::store::encode_record): a header with Loki's
//! answer and the push body as it was sent).

use std::io::Read;

use super::{DeadLetters, DlqError, Summary, parse_id};
use crate::config::Config;
use crate::docker::timestamp::format_rfc3339_nanos;
use crate::sinks::loki::proto::PushRequest;
use crate::sinks::loki::store::{RecordHeader, decode_record, encode_record};
use crate::sinks::loki::{self, LokiClient, SendError};

// `open` and `list` look like the Kafka module's on purpose: each names its own config
// section, directory and record format; the work they share is `DeadLetters`.
fn open(config: &Config) -> Result<DeadLetters, DlqError> {
    let loki = config
        .sinks
        .loki
        .as_ref()
        .ok_or(DlqError::NoLokiDeadLetters)?;
    DeadLetters::open(
        config,
        loki::dlq_dir(&config.checkpoint.state_dir),
        loki::dlq_options(loki),
    )
}

pub fn list(config: &Config) -> Result<(), DlqError> {
    open(config)?.list("entries", |bytes| {
        decode_record(bytes).map(|(h, _)| Summary {
            written_ns: h.written_ns,
            count: h.entries,
            reason: h.reason,
        })
    })
}

/// One dead letter: its header, then every entry as `<time> <labels> <line>`.
pub fn show(config: &Config, id: &str) -> Result<(), DlqError> {
    let wanted = parse_id(id)?;
    let bytes = open(config)?.find(wanted, id)?;
    let (header, body) = decode_record(&bytes).map_err(DlqError::LokiRecord)?;
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
) -> Result<Vec<(String, i64, String)>, DlqError> {
    if header.content_type == "application/json" {
        let raw = if header.content_encoding.is_some() {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(DlqError::Gzip)?;
            out
        } else {
            body.to_vec()
        };
        let v: serde_json::Value = serde_json::from_slice(&raw)?;
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
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    let request: PushRequest = prost::Message::decode(raw.as_slice())?;
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

pub fn purge(config: &Config) -> Result<(), DlqError> {
    open(config)?.purge()
}

/// Sends every dead letter to Loki again. Accepted ones are removed; ones rejected again stay,
/// with the new reason; a connection problem stops the replay (nothing is lost).
pub async fn replay(config: &Config) -> Result<(), DlqError> {
    let dead_letters = open(config)?;
    let store = &dead_letters.store;
    let loki_config = config.sinks.loki.as_ref().ok_or(DlqError::NoLokiSink)?;
    let client = LokiClient::new(loki_config).map_err(DlqError::LokiClient)?;
    let total = store.lock().pending_records();
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..total {
        let Some((id, bytes)) = store.lock().peek()? else {
            break;
        };
        let (header, body) = decode_record(&bytes).map_err(DlqError::LokiRecord)?;
        let batch = header.to_batch(body);
        match client.send(&batch).await {
            Ok(()) => accepted += 1,
            Err(SendError::Rejected { status, body }) => {
                rejected += 1;
                let again = RecordHeader::for_batch(&batch, Some(format!("{status}: {body}")));
                store.lock().append(&encode_record(&again, &batch.body))?;
            }
            Err(e) => {
                println!("replayed {accepted}, rejected again {rejected}; stopped: {e}");
                return Err(DlqError::LokiNotAccepting(e));
            }
        }
        store.lock().consume(id)?;
    }
    println!("replayed {accepted}, rejected again {rejected} (kept)");
    Ok(())
}
