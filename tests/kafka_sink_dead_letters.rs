//! The Kafka sink's worker and dead letters, in-process against librdkafka's mock cluster
//! (see `kafka_sink.rs` for the rest of its faults): a line too large, or refused by the
//! broker for good, is one dead letter and delivery goes on; a refusal mid-stream delivers or
//! dead-letters each line once. The tests run one at a time (`serial`).

#[path = "support/kafka_worker.rs"]
mod kafka_worker;

use kafka_worker::{
    Acks, CONTAINERS, LONG, Rig, check_exactly_once, cluster, config, consume, serially, total,
};
use log_capturer::config::ByteSize;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::BTreeMap;

/// (6a) A line larger than `message_max_bytes` is never produced: one dead letter, and the
/// lines after it are delivered.
#[test]
fn oversized_line_is_a_dead_letter_and_delivery_goes_on() {
    serially(async {
        let (mock, dir) = cluster(3);
        let mut cfg = config(&mock);
        cfg.message_max_bytes = ByteSize(10_000);
        let mut rig = Rig::start(dir.path(), cfg, Acks::Audit);
        let big = "x".repeat(20_000);
        rig.send("c1", 100).await;
        // Line 105 of a batch of 10 is too large.
        let big_line = big.clone();
        rig.send_with("c1", 10, move |i| {
            if i == 105 {
                big_line.clone()
            } else {
                kafka_worker::line("c1", i)
            }
        })
        .await;
        rig.send("c1", 100).await;
        let mut want: Vec<String> = (1..=210).map(|i| kafka_worker::line("c1", i)).collect();
        want.remove(104);
        let got = consume(&mock, want.len(), LONG).await;
        check_exactly_once(&got, &BTreeMap::from([("c1".to_string(), want)])).unwrap();
        rig.stop(LONG).await;
        rig.audit_acks().unwrap();
        let dead = rig.dead_letter_records();
        let messages: Vec<_> = dead.iter().flat_map(|(_, m)| m.iter()).collect();
        assert_eq!(messages.len(), 1, "one dead letter: {dead:?}");
        assert_eq!(messages[0].value, big.as_bytes());
        assert_eq!(messages[0].key.as_deref(), Some(&b"c1"[..]));
        assert!(dead[0].0.is_some(), "the dead letter says why");
        assert_eq!(rig.buffer.pending().0, 0);
    });
}

/// (6b) The broker refuses a record for good (MSG_SIZE_TOO_LARGE, INVALID_RECORD), also when
/// produced again alone: it becomes a dead letter, is not retried forever, and the lines after
/// it are delivered.
#[test]
fn broker_refusals_are_dead_letters_and_delivery_goes_on() {
    serially(async {
        let (mock, dir) = cluster(1);
        let mut rig = Rig::start(dir.path(), config(&mock), Acks::Live);
        rig.send("c1", 10).await;
        rig.wait(LONG, "the first lines", Rig::all_acked).await;
        let mut refused = Vec::new();
        for err in [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD,
        ] {
            // The next produce request (this one line) is refused, and so is the line produced
            // again alone.
            mock.with(move |c| c.request_errors(RDKafkaApiKey::Produce, &[err, err]));
            rig.send("c1", 1).await;
            refused.push(kafka_worker::line("c1", rig.sent_lines()["c1"]));
            rig.wait(LONG, "the refused line done with", Rig::all_acked)
                .await;
            rig.send("c1", 10).await;
            rig.wait(LONG, "the lines after it", Rig::all_acked).await;
        }
        let want: Vec<String> = (1..=rig.sent_lines()["c1"])
            .map(|i| kafka_worker::line("c1", i))
            .filter(|l| !refused.contains(l))
            .collect();
        let got = consume(&mock, want.len(), LONG).await;
        check_exactly_once(&got, &BTreeMap::from([("c1".to_string(), want)])).unwrap();
        rig.stop(LONG).await;
        let dead = rig.dead_letter_lines();
        assert_eq!(dead, refused, "each refused line is one dead letter");
        assert!(
            rig.dead_letter_records()
                .iter()
                .all(|(why, _)| why.is_some()),
            "dead letters say why"
        );
    });
}

/// (6c) A refusal while a stream is in flight: the broker refuses a whole produce request
/// (librdkafka fails the request's batch as one). Each of its messages is produced again alone,
/// unless a later message of its partition (a request already in flight) was delivered first:
/// then it is a dead letter, as producing it again would break the order. So at most the
/// refused request's messages are dead letters. Each line is delivered once or dead-lettered
/// once — never both, never lost — and what is delivered stays in order.
#[test]
fn refusal_mid_stream_each_line_delivered_or_dead_lettered_once() {
    serially(async {
        let (mock, dir) = cluster(3);
        let mut cfg = config(&mock);
        cfg.batch.max_messages = 200;
        let mut rig = Rig::start(dir.path(), cfg, Acks::Audit);
        rig.send_many(&CONTAINERS, 500, 50).await;
        mock.with(|c| {
            c.request_errors(
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
            )
        });
        rig.send_many(&CONTAINERS, 1_500, 50).await;
        let sent = rig.sent_lines();
        let got = consume(&mock, total(&sent), LONG).await;
        rig.stop(LONG).await;
        rig.audit_acks().unwrap();
        let dead = rig.dead_letter_lines();
        eprintln!(
            "refusal mid-stream: {} delivered, {} dead letters",
            got.len(),
            dead.len()
        );
        // One request carries at most `batch.max_messages` per partition.
        assert!(
            dead.len() <= 200 * 3,
            "at most the refused request's messages: {}",
            dead.len()
        );
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        for l in got.iter().map(|c| kafka_worker::text(&c.value)).chain(dead) {
            *seen.entry(l).or_default() += 1;
        }
        for (c, &n) in &sent {
            for i in 1..=n {
                let l = kafka_worker::line(c, i);
                assert_eq!(
                    seen.get(&l),
                    Some(&1),
                    "{l}: delivered or dead-lettered once"
                );
            }
        }
        assert_eq!(seen.len(), total(&sent), "nothing else");
        // Delivered lines keep their order within the key.
        let mut expect = BTreeMap::new();
        for c in CONTAINERS {
            let lines: Vec<String> = got
                .iter()
                .filter(|m| m.key.as_deref() == Some(c.as_bytes()))
                .map(|m| kafka_worker::text(&m.value))
                .collect();
            let mut sorted = lines.clone();
            sorted.sort();
            assert_eq!(lines, sorted, "{c}: delivered in order");
            expect.insert(c.to_string(), sorted);
        }
        check_exactly_once(&got, &expect).unwrap();
    });
}
