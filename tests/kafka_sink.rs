//! The Kafka sink's worker under faults, in-process, against librdkafka's mock cluster (the real
//! Kafka protocol on loopback) and read back with a real consumer: every line exactly once and
//! in order per container, acknowledged to the ledger only when delivered, buffered or
//! dead-lettered — through request errors, leader changes, outages, restarts, shutdowns
//! without room, and with no thread left behind. Lines that become dead letters (too large,
//! refused): `kafka_sink_dead_letters.rs`.
//!
//! The tests run one at a time (`serial`): one counts threads, and a loaded 2-core CI machine
//! should not run several clusters at once.

#[path = "support/kafka_worker.rs"]
mod kafka_worker;

use kafka_worker::{
    Acks, CONTAINERS, LONG, Rig, TOPIC, check_exactly_once, cluster, config, consume, expected,
    outage_config, serial, serially, total,
};
use log_capturer::config::{ByteSize, KafkaEncoding};
use log_capturer_testkit::kafka::KafkaMock;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::BTreeMap;
use std::time::Duration;

/// (1) Live: 3 containers × 5 000 lines → every line once, in order per key, every delivery
/// acknowledged, and the metrics agree.
#[test]
fn live_every_line_once_in_order_and_acknowledged() {
    serially(async {
        let (mock, dir) = cluster(3);
        let mut cfg = config(&mock);
        // The NDJSON record (the default), read back through its `message`.
        cfg.encoding = KafkaEncoding::Ndjson;
        let mut rig = Rig::start(dir.path(), cfg, Acks::Live);
        rig.send_many(&CONTAINERS, 5_000, 100).await;
        rig.wait(LONG, "every line acknowledged", Rig::all_acked)
            .await;
        let sent = rig.sent_lines();
        assert_eq!(total(&sent), 15_000);
        let got = consume(&mock, 15_000, LONG).await;
        check_exactly_once(&got, &expected(&sent)).unwrap();
        assert_eq!(rig.ledger.unacknowledged(), 0);
        assert_eq!(rig.buffer.pending().0, 0, "nothing buffered");
        assert_eq!(rig.dead_letters.pending().0, 0, "nothing dead-lettered");
        rig.stop(LONG).await;
        let kafka = [("sink", "kafka")];
        for (name, want) in [
            ("log_capturer_sink_lines_total", 15_000.0),
            ("log_capturer_kafka_messages_produced_total", 15_000.0),
            ("log_capturer_kafka_messages_acknowledged_total", 15_000.0),
            ("log_capturer_sink_batches_total", 150.0),
            ("log_capturer_kafka_messages_retried_total", 0.0),
            ("log_capturer_kafka_messages_possible_duplicates_total", 0.0),
            ("log_capturer_kafka_messages_failed_total", 0.0),
            ("log_capturer_kafka_messages_in_flight", 0.0),
            ("log_capturer_dead_letters_total", 0.0),
        ] {
            let labels: &[(&str, &str)] = if name.contains("_kafka_") {
                &[]
            } else {
                &kafka
            };
            assert_eq!(rig.metric(name, labels), want, "{name}");
        }
    });
}

/// (2) Retriable produce errors on the first requests: retried by the idempotent producer,
/// still exactly once and in order, nothing dead-lettered.
#[test]
fn retriable_produce_errors_still_exactly_once() {
    serially(async {
        let (mock, dir) = cluster(3);
        let errors = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ];
        mock.with(move |c| c.request_errors(RDKafkaApiKey::Produce, &errors));
        let mut rig = Rig::start(dir.path(), config(&mock), Acks::Audit);
        rig.send_many(&CONTAINERS, 2_000, 50).await;
        // librdkafka retried them itself: the worker saw no failure and spilled nothing.
        exactly_once_without_failures(&mut rig, &mock, "retriable_produce_errors").await;
        assert_eq!(rig.buffer.pending().0, 0, "nothing left in the buffer");
    });
}

/// (3) The partitions' leaders move to other brokers mid-stream: exactly once, in order.
#[test]
fn leader_change_mid_stream() {
    serially(async {
        let mock = KafkaMock::start(3);
        mock.with(|c| c.create_topic(TOPIC, 3, 3)).expect("topic");
        let dir = tempfile::tempdir().expect("tempdir");
        // Slow brokers and small requests: the producer is mid-stream when the leaders move.
        mock.with(|c| c.broker_round_trip_time(-1, Duration::from_millis(20)))
            .expect("rtt");
        let mut cfg = config(&mock);
        cfg.batch.max_messages = 100;
        let mut rig = Rig::start(dir.path(), cfg, Acks::Audit);
        for leader in [2, 3, 1] {
            rig.send_many(&CONTAINERS, 1_000, 50).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            mock.with(move |c| (0..3).try_for_each(|p| c.partition_leader(TOPIC, p, Some(leader))))
                .expect("partition leader");
        }
        rig.send_many(&CONTAINERS, 1_000, 50).await;
        // The producer followed the leaders itself: no failure reached the worker, no spill.
        exactly_once_without_failures(&mut rig, &mock, "leader_change").await;
    });
}

/// The end of (2) and (3) (an [`Acks::Audit`] rig): every line read back once, in order; the
/// worker stopped and each batch acknowledged by it once; nothing dead-lettered; no failure
/// reached the worker, and the broker acknowledged every line.
async fn exactly_once_without_failures(rig: &mut Rig, mock: &KafkaMock, test: &str) {
    let sent = rig.sent_lines();
    let got = consume(mock, total(&sent), LONG).await;
    check_exactly_once(&got, &expected(&sent)).unwrap();
    rig.stop(LONG).await;
    rig.print_metrics(test);
    rig.audit_acks().unwrap();
    assert_eq!(rig.dead_letters.pending().0, 0, "nothing dead-lettered");
    assert_eq!(
        rig.metric("log_capturer_kafka_messages_failed_total", &[]),
        0.0
    );
    assert_eq!(
        rig.metric("log_capturer_kafka_messages_acknowledged_total", &[]),
        total(&sent) as f64
    );
}

/// (4) Every broker down for longer than `buffer.spill_after` while lines keep coming: they go
/// to the buffer and are acknowledged while Kafka is down; brokers up → replayed, in order,
/// before the lines that came after; the buffer empties.
#[test]
fn outage_spills_acknowledges_and_replays() {
    serially(async {
        let (mock, dir) = cluster(3);
        let mut rig = Rig::start(dir.path(), outage_config(&mock), Acks::Live);
        rig.send_many(&CONTAINERS, 500, 100).await;
        rig.wait(LONG, "the lines before the outage", Rig::all_acked)
            .await;
        mock.down(-1);
        // Lines keep coming for ~2 s, twice spill_after.
        for _ in 0..10 {
            rig.send_many(&CONTAINERS, 100, 100).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        rig.wait(LONG, "the outage's lines in the buffer", |r| {
            r.buffer.pending().0 > 0
        })
        .await;
        rig.wait(
            LONG,
            "lines acknowledged while Kafka is down",
            Rig::all_acked,
        )
        .await;
        let buffered: usize = rig.buffer_records().iter().map(|(_, m)| m.len()).sum();
        assert!(buffered > 0, "messages in the buffer");
        assert!(
            rig.metric("log_capturer_buffer_bytes", &[("sink", "kafka")]) > 0.0,
            "the buffer gauge shows it"
        );
        mock.up(-1);
        // Lines after the outage queue behind the buffer.
        rig.send_many(&CONTAINERS, 500, 100).await;
        // librdkafka reconnects with a back-off of up to 10 s (`reconnect.backoff.max.ms`).
        rig.wait(LONG, "the buffer empty", |r| r.buffer.pending().0 == 0)
            .await;
        rig.wait(LONG, "every line acknowledged", Rig::all_acked)
            .await;
        let sent = rig.sent_lines();
        let got = consume(&mock, total(&sent), LONG).await;
        check_exactly_once(&got, &expected(&sent)).unwrap();
        rig.stop(LONG).await;
        rig.print_metrics("outage");
        assert_eq!(rig.dead_letters.pending().0, 0, "nothing dead-lettered");
    });
}

/// (5) Worker A spills during an outage and is shut down with the brokers still down; worker B
/// on the same state directory, brokers back, replays: exactly once, in order, and each
/// worker acknowledged each of its batches exactly once.
#[test]
fn restart_across_an_outage_replays_the_buffer() {
    serially(async {
        let (mock, dir) = cluster(3);
        let mut a = Rig::start(dir.path(), outage_config(&mock), Acks::Audit);
        a.send_many(&CONTAINERS, 500, 100).await;
        let before = consume(&mock, 1_500, LONG).await;
        assert_eq!(before.len(), 1_500, "the lines before the outage");
        mock.down(-1);
        a.send_many(&CONTAINERS, 1_000, 100).await;
        a.wait(LONG, "A spills to the buffer", |r| r.buffer.pending().0 > 0)
            .await;
        a.stop(LONG).await;
        a.audit_acks().expect("worker A's acknowledgements");
        let sent_a = a.sent_lines();
        let in_buffer: usize = a.buffer_records().iter().map(|(_, m)| m.len()).sum();
        assert_eq!(
            in_buffer, 3_000,
            "what A could not deliver is in the buffer"
        );
        drop(a);

        mock.up(-1);
        let mut b = Rig::start(dir.path(), outage_config(&mock), Acks::Audit);
        // B's own lines continue each container after A's.
        for _ in 0..5 {
            for c in CONTAINERS {
                let (name, after) = (c.to_string(), sent_a[c]);
                b.send_with(c, 100, move |i| kafka_worker::line(&name, after + i))
                    .await;
            }
        }
        let mut sent = sent_a.clone();
        for n in sent.values_mut() {
            *n += 500;
        }
        b.wait(LONG, "the buffer replayed", |r| r.buffer.pending().0 == 0)
            .await;
        let got = consume(&mock, total(&sent), LONG).await;
        check_exactly_once(&got, &expected(&sent)).unwrap();
        b.stop(LONG).await;
        b.print_metrics("restart, worker B");
        b.audit_acks().expect("worker B's acknowledgements");
    });
}

/// (7) Shutdown with every broker down and no room in the buffer: nothing is acknowledged that
/// was not delivered or stored; at `abandon` the worker exits promptly and acknowledges
/// nothing more.
#[test]
fn shutdown_without_room_acknowledges_only_what_is_kept() {
    serially(async {
        let (mock, dir) = cluster(3);
        let mut cfg = outage_config(&mock);
        cfg.buffer.segment_bytes = ByteSize(4096);
        cfg.buffer.max_bytes = ByteSize(8192);
        let mut rig = Rig::start(dir.path(), cfg, Acks::Live);
        rig.send_many(&CONTAINERS, 100, 100).await;
        rig.wait(LONG, "the lines before the outage", Rig::all_acked)
            .await;
        mock.down(-1);
        rig.send_many(&CONTAINERS, 1_000, 50).await;
        // Past spill_after: the buffer fills up (8 KiB of ~70 KiB).
        tokio::time::sleep(Duration::from_secs(3)).await;
        rig.shutdown.cancel();
        rig.close_input();
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Brokers down and the buffer full for 2 s: nothing is moving when `abandon` comes.
        let acked: BTreeMap<String, usize> = CONTAINERS
            .iter()
            .map(|c| (c.to_string(), rig.acked_lines(c)))
            .collect();
        rig.abandon.cancel();
        rig.join(Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for c in CONTAINERS {
            assert_eq!(
                rig.acked_lines(c),
                acked[c],
                "{c}: acknowledged after abandon"
            );
        }
        let sent = rig.sent_lines();
        eprintln!(
            "shutdown without room: acknowledged {acked:?} of {sent:?}, buffer {:?}",
            rig.buffer.pending()
        );
        rig.print_metrics("shutdown without room");
        assert!(
            total(&acked) < total(&sent),
            "without room, not everything can be acknowledged ({acked:?} of {sent:?})"
        );
        // What is kept: the buffer, the dead letters, and what Kafka has.
        mock.up(-1);
        let delivered = consume(&mock, total(&sent), Duration::from_secs(10)).await;
        let mut kept: std::collections::HashSet<String> = delivered
            .iter()
            .map(|c| kafka_worker::text(&c.value))
            .collect();
        for (_, messages) in rig
            .buffer_records()
            .iter()
            .chain(&rig.dead_letter_records())
        {
            kept.extend(messages.iter().map(|m| kafka_worker::text(&m.value)));
        }
        for (c, &n) in &acked {
            let lost: Vec<usize> = (1..=n)
                .filter(|&i| !kept.contains(&kafka_worker::line(c, i)))
                .collect();
            assert!(
                lost.is_empty(),
                "{c}: {} lines acknowledged but neither delivered nor stored (first {:?}); acked through {n}",
                lost.len(),
                lost.first()
            );
        }
    });
}

/// (8) The worker's resources: while it runs, librdkafka's threads exist; once `run` returned
/// (after a normal shutdown, and after one during an outage), they are gone.
#[test]
fn producer_threads_are_joined_at_exit() {
    let _serial = serial();
    let (mock, dir) = cluster(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_millis(100))
        .enable_all()
        .build()
        .expect("runtime");
    let settle = |baseline: usize| {
        let start = std::time::Instant::now();
        while kafka_worker::threads() > baseline && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(100));
        }
        kafka_worker::threads()
    };
    runtime.block_on(async {
        // The runtime's own threads up, blocking threads gone.
        tokio::task::spawn_blocking(|| ()).await.expect("warm");
    });
    std::thread::sleep(Duration::from_millis(500));
    let baseline = kafka_worker::threads();
    for outage in [false, true] {
        let during = runtime.block_on(async {
            let mut rig = Rig::start(dir.path(), outage_config(&mock), Acks::Live);
            rig.send_many(&CONTAINERS, 200, 100).await;
            rig.wait(LONG, "delivered", Rig::all_acked).await;
            let during = kafka_worker::threads();
            if outage {
                mock.down(-1);
                rig.send_many(&CONTAINERS, 200, 100).await;
                rig.wait(LONG, "spilled", |r| r.buffer.pending().0 > 0)
                    .await;
            }
            rig.stop(LONG).await;
            during
        });
        assert!(
            during > baseline,
            "the producer's threads are visible while it runs ({during} vs {baseline})"
        );
        let after = settle(baseline);
        assert_eq!(
            after, baseline,
            "threads after the worker exited (outage: {outage})"
        );
        if outage {
            mock.up(-1);
        }
    }
}
