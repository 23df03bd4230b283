//! `dlq … --sink kafka`: the Kafka sink's dead letters (`<state_dir>/dlq/kafka`, records of
//! [`store::encode_record`](crate::sinks::kafka::store::encode_record): a header with the reason and the messages).
//!
//! `replay` produces every message again with a producer made from `sinks.kafka` (acks all,
//! idempotent) and waits for each delivery report: a record whose messages were all
//! acknowledged is removed; messages refused again are kept as a new record with the new
//! reason; when the brokers cannot be reached (no report within `sinks.kafka.timeout`) the
//! replay stops and the record stays (nothing is lost; messages of that record the broker did
//! acknowledge are sent again by the next replay). A record that cannot be decoded is skipped
//! with a warning and kept (counted in the summary line).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::{DeadLetters, DlqError, Summary, parse_id};
use crate::config::{Config, KafkaSinkConfig};
use crate::docker::timestamp::format_rfc3339_nanos;
use crate::sinks::kafka::store::{decode_record, encode_record};
use crate::sinks::kafka::{self, Message};

fn sink(config: &Config) -> Result<&KafkaSinkConfig, DlqError> {
    config.sinks.kafka.as_ref().ok_or(DlqError::NoKafkaSink)
}

fn open(config: &Config) -> Result<DeadLetters, DlqError> {
    let kafka_config = sink(config)?;
    DeadLetters::open(
        config,
        kafka::dlq_dir(&config.checkpoint.state_dir),
        kafka::dlq_options(kafka_config),
    )
}

pub fn list(config: &Config) -> Result<(), DlqError> {
    open(config)?.list("messages", |bytes| {
        decode_record(bytes).map(|(h, _)| Summary {
            written_ns: h.written_ns,
            count: h.messages,
            reason: h.reason,
        })
    })
}

/// Every message of one dead letter: `topic=… key="…" <value as text>` (`key=-`: none).
pub fn show(config: &Config, id: &str) -> Result<(), DlqError> {
    let wanted = parse_id(id)?;
    let bytes = open(config)?.find(wanted, id)?;
    let (header, messages) = decode_record(&bytes)?;
    println!("reason:   {}", header.reason.clone().unwrap_or_default());
    println!("written:  {}", format_rfc3339_nanos(header.written_ns));
    println!("messages: {}", header.messages);
    for m in &messages {
        let key = match &m.key {
            Some(k) => format!("{:?}", String::from_utf8_lossy(k)),
            None => "-".to_string(),
        };
        println!(
            "topic={} key={key} {}",
            m.topic,
            String::from_utf8_lossy(&m.value)
        );
    }
    Ok(())
}

pub fn purge(config: &Config) -> Result<(), DlqError> {
    open(config)?.purge()
}

/// Delivery reports by message index.
#[derive(Default)]
struct Reports(Mutex<Vec<(usize, Result<(), KafkaError>)>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let r = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, r));
    }
}

/// What became of one record's messages.
enum Outcome {
    /// Every message acknowledged or refused (refused: index and why).
    Done { refused: Vec<(usize, String)> },
    /// The brokers did not answer: the record stays.
    Unreachable(String),
}

/// Whether a failed delivery means "no broker took it" (stop, keep) rather than a refusal.
fn unreachable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::PurgeQueue
                | RDKafkaErrorCode::PurgeInflight
                | RDKafkaErrorCode::Fatal
        )
    )
}

/// The replay producer: `sinks.kafka`'s client, with acks all and idempotence whatever the
/// config says, and a message time-out so an unreachable cluster ends the replay.
fn producer(config: &KafkaSinkConfig) -> Result<(BaseProducer<Reports>, Duration), DlqError> {
    let mut c = kafka::client_config::client_config(config)?;
    let give_up = config
        .timeout
        .0
        .max(config.batch.linger.0 + Duration::from_secs(1));
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", give_up.as_millis().to_string());
    let producer = c
        .create_with_context(Reports::default())
        .map_err(DlqError::Producer)?;
    Ok((producer, give_up))
}

fn produce(
    producer: &BaseProducer<Reports>,
    give_up: Duration,
    max_bytes: u64,
    messages: &[Message],
) -> Outcome {
    let mut refused = Vec::new();
    let mut sent = 0;
    producer
        .context()
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    for (i, m) in messages.iter().enumerate() {
        if m.value.len() as u64 > max_bytes {
            refused.push((
                i,
                format!(
                    "message of {} bytes is over message_max_bytes ({max_bytes})",
                    m.value.len()
                ),
            ));
            continue;
        }
        loop {
            let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&m.topic, i)
                .payload(m.value.as_slice());
            if let Some(k) = &m.key {
                record = record.key(&k[..]);
            }
            match producer.send(record) {
                Ok(()) => {
                    sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    refused.push((i, e.to_string()));
                    break;
                }
            }
        }
    }
    // librdkafka reports every message by `message.timeout.ms`; the margin covers the rest.
    let deadline = Instant::now() + give_up + Duration::from_secs(10);
    loop {
        let reports = std::mem::take(
            &mut *producer
                .context()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (i, r) in reports {
            sent -= 1;
            match r {
                Ok(()) => {}
                Err(e) if unreachable(&e) => {
                    let _ = producer.flush(Duration::from_secs(1));
                    return Outcome::Unreachable(e.to_string());
                }
                Err(e) => refused.push((i, e.to_string())),
            }
        }
        if sent == 0 {
            refused.sort_by_key(|(i, _)| *i);
            return Outcome::Done { refused };
        }
        if Instant::now() >= deadline {
            return Outcome::Unreachable(format!(
                "no delivery report within {}s",
                (give_up + Duration::from_secs(10)).as_secs()
            ));
        }
        producer.poll(Duration::from_millis(50));
    }
}

/// Produces every dead letter again (see the module doc).
pub fn replay(config: &Config) -> Result<(), DlqError> {
    let dead_letters = open(config)?;
    let store = &dead_letters.store;
    let kafka_config = sink(config)?;
    let (producer, give_up) = producer(kafka_config)?;
    let total = store.lock().pending_records();
    let (mut delivered, mut refused_again, mut unreadable) = (0usize, 0usize, 0usize);
    for _ in 0..total {
        let Some((id, bytes)) = store.lock().peek()? else {
            break;
        };
        let messages = match decode_record(&bytes) {
            Ok((_, messages)) => messages,
            Err(e) => {
                // One unreadable record must not stop the others: it is kept as it is (moved
                // to the end) for `show`/`purge`, and the replay goes on.
                eprintln!("warning: dead letter {id} is unreadable ({e}); kept, skipped");
                unreadable += 1;
                store.lock().append(&bytes)?;
                store.lock().consume(id)?;
                continue;
            }
        };
        match produce(
            &producer,
            give_up,
            kafka_config.message_max_bytes.0,
            &messages,
        ) {
            Outcome::Done { refused } => {
                delivered += messages.len() - refused.len();
                refused_again += refused.len();
                if let Some((_, reason)) = refused.first() {
                    let kept: Vec<Message> =
                        refused.iter().map(|(i, _)| messages[*i].clone()).collect();
                    store
                        .lock()
                        .append(&encode_record(Some(reason.clone()), &kept))?;
                }
            }
            Outcome::Unreachable(e) => {
                println!(
                    "replayed {delivered} messages, refused again {refused_again}; stopped: {e}"
                );
                return Err(DlqError::KafkaNotAccepting(e));
            }
        }
        store.lock().consume(id)?;
    }
    if unreadable > 0 {
        println!(
            "replayed {delivered} messages, refused again {refused_again} (kept), skipped \
             {unreadable} unreadable records (kept)"
        );
    } else {
        println!("replayed {delivered} messages, refused again {refused_again} (kept)");
    }
    Ok(())
}
