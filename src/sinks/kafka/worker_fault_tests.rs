//! The worker under faults: fatal producer errors, one partition stuck, a full buffer or a
//! silent broker at shutdown.

use super::*;
use log_capturer_testkit::kafka::{KafkaMock, consume_all};

/// A fatal producer error while a backlog is being produced: the messages librdkafka refuses
/// (`Fatal`) wait for the new producer instead of becoming dead letters, and what was in
/// flight gets its real outcome (not purged and produced again): every line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_error_during_a_backlog_loses_and_duplicates_nothing() {
    let (mock, _dir, mut h) = setup(no_spill);
    let id = "kfix-fatal-backlog";
    if let Some(w) = h.worker.as_mut() {
        w.client.set("client.id", id);
    }
    let task = h.start();
    let last = send_many(&h, 1, 1, 100, 0).await;
    assert!(h.wait_acked(last, Duration::from_secs(20)).await, "warm");
    let last = send_many(&h, 2, 20, 2000, last).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        super::producer::test_hook::fatal_error(id),
        "the worker's producer"
    );
    assert!(
        h.wait_acked(last, Duration::from_secs(60)).await,
        "acked up to {} of {last}: {}",
        h.acked(),
        h.metrics.render()
    );
    assert_eq!(h.dead_letters.pending().0, 0, "no dead letters");
    assert!(h.counter("log_capturer_sink_failures_total{sink=\"kafka\",reason=\"fatal\"}") >= 1);
    let got = read_back(&mock, last as usize).await;
    assert_eq!(got.len(), last as usize, "every line once");
    assert_eq!(got, (1..=last).collect::<Vec<i64>>());
    h.stop(task).await;
}

/// CRC-32 (IEEE), librdkafka's default partitioner's hash (`consistent_random`).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A container id whose key lands in `partition` of `partitions`.
fn container_for(partition: u32, partitions: u32) -> String {
    (0..)
        .map(|i| format!("ctr{i}"))
        .find(|id| crc32(id.as_bytes()) % partitions == partition)
        .expect("some id")
}

/// Ten lines for each of two containers.
async fn round(h: &Harness, (a, b): (&str, &str), seq: &mut u64, (ta, tb): (&mut i64, &mut i64)) {
    *seq += 1;
    let d = h.delivery_of(a, *seq, *ta + 1, 10).await;
    h.send(d);
    let d = h.delivery_of(b, *seq, *tb + 1, 10).await;
    h.send(d);
    *ta += 10;
    *tb += 10;
}

/// One partition's leader stops (the other broker still answers): the stuck partition's
/// messages spill to the buffer after `spill_after` even though the other partition keeps
/// acknowledging, and once the broker is back every line is in the topic once, in order per
/// partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stuck_partition_spills_while_the_other_delivers() {
    let mock = KafkaMock::start(2);
    mock.with(|c| {
        c.create_topic(TOPIC, 2, 1).expect("topic");
        c.partition_leader(TOPIC, 0, Some(1)).expect("leader 0");
        c.partition_leader(TOPIC, 1, Some(2)).expect("leader 1");
    });
    let (a, b) = (container_for(0, 2), container_for(1, 2));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(
        dir.path(),
        config(&mock, |c| {
            c.buffer.spill_after = HumanDuration(Duration::from_secs(3));
        }),
    );
    let task = h.start();
    // a: stamps 1.., b: 1_000_001..
    let (mut ta, mut tb, mut seq) = (0i64, 1_000_000i64, 0u64);
    round(&h, (&a, &b), &mut seq, (&mut ta, &mut tb)).await;
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while (h.acked_of(&a), h.acked_of(&b)) != (ta, tb) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((h.acked_of(&a), h.acked_of(&b)), (ta, tb), "warm");
    mock.down(2);
    let stuck_from = tb;
    // Keep both partitions busy for 12 s (spill_after is 3 s): the other partition's reports
    // must not hold the stuck one's spill back.
    let mut a_moved = false;
    for _ in 0..60 {
        round(&h, (&a, &b), &mut seq, (&mut ta, &mut tb)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        a_moved |= h.acked_of(&a) > 20 && h.buffer.pending().0 == 0;
    }
    assert!(a_moved, "the other partition delivered while one was stuck");
    assert!(
        h.acked_of(&b) > stuck_from + 200,
        "the stuck partition's lines reached the buffer while the other delivered: acked {} of {tb}",
        h.acked_of(&b),
    );
    assert!(h.buffer.pending().0 > 0, "spilled");
    assert!(h.counter("log_capturer_kafka_messages_failed_total{reason=\"timeout\"}") >= 1);
    mock.up(2);
    let until = std::time::Instant::now() + Duration::from_secs(40);
    while (h.acked_of(&a), h.acked_of(&b), h.buffer.pending().0) != (ta, tb, 0)
        && std::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (h.acked_of(&a), h.acked_of(&b), h.buffer.pending().0),
        (ta, tb, 0)
    );
    let want = (ta + tb - 1_000_000) as usize;
    let bootstrap = mock.bootstrap_servers().to_string();
    let got = tokio::task::spawn_blocking(move || {
        consume_all(
            &bootstrap,
            TOPIC,
            want + 1,
            Duration::from_secs(2),
            Duration::from_secs(20),
        )
    })
    .await
    .expect("consumer thread")
    .expect("consume");
    let stamps = |p: i32| -> Vec<i64> {
        got.iter()
            .filter(|c| c.partition == p)
            .map(|c| {
                let v = String::from_utf8_lossy(&c.value);
                v.trim_start_matches("line ").parse().unwrap_or(-1)
            })
            .collect()
    };
    assert_eq!(stamps(0), (1..=ta).collect::<Vec<i64>>(), "partition 0");
    assert_eq!(
        stamps(1),
        (1_000_001..=tb).collect::<Vec<i64>>(),
        "partition 1"
    );
    assert_eq!(h.dead_letters.pending().0, 0);
    h.stop(task).await;
}

/// Shutdown with the brokers down and the buffer full: the drain stops at once (the lines
/// that do not fit stay unacknowledged, read again after the restart) instead of waiting for
/// `abandon`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_buffer_full_ends_without_abandon() {
    let (mock, _dir, mut h) = setup(|c| {
        c.buffer.max_bytes = crate::config::ByteSize(8 * 1024);
        c.buffer.segment_bytes = crate::config::ByteSize(4 * 1024);
    });
    mock.down(-1);
    let task = h.start();
    let mut last = 0;
    let mut seq = 0;
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while h.counter("log_capturer_buffer_full_total{sink=\"kafka\"}") == 0
        && std::time::Instant::now() < until
    {
        seq += 1;
        last = send_many(&h, seq, 1, 100, last).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        h.counter("log_capturer_buffer_full_total{sink=\"kafka\"}") > 0,
        "{}",
        h.metrics.render()
    );
    let held = h.buffer.pending().0;
    send_many(&h, seq + 1, 1, 100, last).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop_within(
        task,
        Duration::from_secs(10),
        "the worker ends without abandon",
    )
    .await;
    assert!(
        h.ledger.unacknowledged() > 0,
        "what did not fit is not acknowledged"
    );
    assert_eq!(h.buffer.pending().0, held, "the buffer holds what it held");
}

/// Shutdown while the broker holds produce requests without answering: after the grace what
/// is in flight is purged (possibly persisted: counted) and buffered, so the drain ends long
/// before `abandon` and every line is acknowledged via the buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_silent_broker_buffers_what_is_in_flight() {
    let (mock, _dir, mut h) = setup(|c| {
        no_spill(c);
        c.timeout = HumanDuration(Duration::from_secs(120));
    });
    let task = h.start();
    let last = send_many(&h, 1, 1, 50, 0).await;
    assert!(h.wait_acked(last, Duration::from_secs(20)).await, "warm");
    mock.with(|c| c.broker_round_trip_time(1, Duration::from_secs(60)))
        .expect("rtt");
    let last = send_many(&h, 2, 1, 50, last).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.stop_within(
        task,
        Duration::from_secs(10),
        "the worker ends without abandon",
    )
    .await;
    assert_eq!(h.acked(), last, "acknowledged via the buffer");
    assert_eq!(h.ledger.unacknowledged(), 0);
    let n = stored_messages(&h.buffer);
    assert_eq!(n, 50, "the in-flight lines are in the buffer");
    assert!(h.counter("log_capturer_kafka_messages_possible_duplicates_total") >= 1);
}

/// `abandon` while the drain's buffer append waits for the store: the append completes, and
/// its lines are acknowledged (not read again on top of the buffered copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_completing_after_abandon_is_acknowledged() {
    let (mock, _dir, mut h) = setup(no_spill);
    mock.down(-1);
    let task = h.start();
    let last = send_many(&h, 1, 1, 50, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let buffer = h.buffer.clone();
    let holder = std::thread::spawn(move || {
        let _guard = buffer.lock();
        let _ = locked_tx.send(());
        let _ = release_rx.recv();
    });
    locked_rx.recv().expect("locked");
    h.shutdown.cancel();
    h.tx = None;
    // The grace (2 s), the purge, then the append waits for the lock.
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.abandon.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(release_tx);
    holder.join().expect("holder");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the worker ends")
        .expect("worker");
    let n = stored_messages(&h.buffer);
    assert_eq!(n, 50, "the append completed");
    assert_eq!(h.acked(), last, "and its lines are acknowledged");
}

/// The topic is unknown to the cluster's metadata for a while (a metadata gap): librdkafka
/// fails the messages (`UnknownTopic`) after `topic.metadata.propagation.max.ms`; they are
/// retried (spilled, produced again), not dead-lettered; every line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_for_a_while_is_retried_not_dead_lettered() {
    use rdkafka::types::RDKafkaRespErr;
    let (mock, _dir, mut h) = setup(|_| {});
    if let Some(w) = h.worker.as_mut() {
        w.client.set("topic.metadata.propagation.max.ms", "10");
        w.client.set("allow.auto.create.topics", "false");
        w.client.set("topic.metadata.refresh.interval.ms", "200");
    }
    mock.with(|c| {
        c.topic_error(
            TOPIC,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
    })
    .expect("topic error");
    let task = h.start();
    let last = send_many(&h, 1, 1, 5, 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    mock.with(|c| c.topic_error(TOPIC, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR))
        .expect("topic error");
    assert!(
        h.wait_acked(last, Duration::from_secs(30)).await,
        "acked up to {}: {}",
        h.acked(),
        h.metrics.render()
    );
    assert_eq!(h.dead_letters.pending().0, 0, "no dead letters");
    assert_eq!(read_back(&mock, 5).await, (1..=5).collect::<Vec<i64>>());
    h.stop(task).await;
}
