//! Broker refusals: librdkafka fails every message of a refused produce request, so each is
//! produced again alone; only one refused alone is a dead letter.

use super::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// The dead-letter store's messages (as line timestamps) and their reasons.
fn dead_letters(h: &Harness) -> Vec<(i64, String)> {
    let records = h.dead_letters.lock().records().expect("dlq records");
    let mut out = Vec::new();
    for (_, bytes) in &records {
        let (header, msgs) = super::super::super::store::decode_record(bytes).expect("decode");
        for m in msgs {
            let v = String::from_utf8_lossy(&m.value).into_owned();
            let ts = v.trim_start_matches("line ").parse().unwrap_or(-1);
            out.push((ts, header.reason.clone().unwrap_or_default()));
        }
    }
    out
}

/// One refused request carrying 200 messages: none of them is a dead letter (each produced
/// again alone is accepted); every line delivered once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_does_not_dead_letter_its_batch() {
    let (mock, _dir, mut h) = setup(no_spill);
    inject(
        &mock,
        RDKafkaApiKey::Produce,
        vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );
    let task = h.start();
    let d = h.delivery(1, 1, 200, None).await;
    h.send(d);
    assert!(
        h.wait_acked(200, Duration::from_secs(30)).await,
        "acknowledged; up to {}",
        h.acked()
    );
    assert!(
        h.counter("log_capturer_kafka_messages_failed_total{reason=\"rejected\"}") >= 1,
        "the request was refused"
    );
    assert_eq!(dead_letters(&h), Vec::new(), "no dead letter");
    let d = h.delivery(2, 201, 5, None).await;
    h.send(d);
    assert!(h.wait_acked(205, Duration::from_secs(20)).await, "later");
    assert_eq!(read_back(&mock, 205).await, (1..=205).collect::<Vec<i64>>());
    h.stop(task).await;
}

/// Refused again when alone: that message is a dead letter for good (no loop), with the
/// broker's reason; every other line is delivered once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_alone_is_a_dead_letter() {
    let (mock, _dir, mut h) = setup(no_spill);
    let task = h.start();
    // Connected first, so that the next request carries the whole delivery.
    let d = h.delivery(1, 1, 1, None).await;
    h.send(d);
    assert!(h.wait_acked(1, Duration::from_secs(20)).await, "first");
    let invalid = RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD;
    inject(&mock, RDKafkaApiKey::Produce, vec![invalid, invalid]);
    let d = h.delivery(2, 2, 200, None).await;
    h.send(d);
    assert!(
        h.wait_acked(201, Duration::from_secs(30)).await,
        "acknowledged; up to {}",
        h.acked()
    );
    let dead = dead_letters(&h);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, 2, "the first refused alone");
    assert!(dead[0].1.contains("InvalidRecord"), "{dead:?}");
    assert_eq!(
        h.counter("log_capturer_dead_letters_total{sink=\"kafka\",reason=\"rejected\"}"),
        1
    );
    let want: Vec<i64> = (1..=201).filter(|&t| t != 2).collect();
    assert_eq!(read_back(&mock, want.len()).await, want);
    h.stop(task).await;
}
