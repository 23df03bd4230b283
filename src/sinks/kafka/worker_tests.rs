//! The Kafka worker against librdkafka's mock cluster (a real Kafka protocol server), read
//! back with a real consumer. The set-up is in `worker_test_support.rs`.

use super::test_support::*;
use super::*;
use crate::config::HumanDuration;

/// Every line once, in order, and the ledger acknowledges each delivery once the broker did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_path_delivers_each_line_once_and_acknowledges() {
    let (mock, _dir, mut h) = setup(no_spill);
    let task = h.start();
    for seq in 0..20u64 {
        let d = h.delivery(seq + 1, seq as i64 * 50 + 1, 50, None).await;
        h.send(d);
    }
    assert!(
        h.wait_acked(1000, Duration::from_secs(20)).await,
        "acknowledged up to {}",
        h.acked()
    );
    assert_eq!(h.ledger.unacknowledged(), 0);
    let got = read_back(&mock, 1000).await;
    assert_eq!(got, (1..=1000).collect::<Vec<i64>>());
    assert_eq!(
        h.counter("log_capturer_kafka_messages_acknowledged_total"),
        1000
    );
    assert_eq!(
        h.counter("log_capturer_kafka_messages_produced_total"),
        1000
    );
    assert_eq!(h.buffer.pending().0, 0);
    h.stop(task).await;
}

/// A line over `message_max_bytes` is a dead letter (never produced) and the lines around it
/// are delivered; the delivery is acknowledged once the dead letter is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_line_is_a_dead_letter_and_delivery_goes_on() {
    let (mock, _dir, mut h) = setup(|c| {
        no_spill(c);
        c.message_max_bytes = crate::config::ByteSize(1000);
    });
    let task = h.start();
    let d = h.delivery(1, 1, 10, Some((5, 5000))).await;
    h.send(d);
    let d = h.delivery(2, 11, 10, None).await;
    h.send(d);
    assert!(
        h.wait_acked(20, Duration::from_secs(20)).await,
        "acknowledged up to {}",
        h.acked()
    );
    let got = read_back(&mock, 19).await;
    let want: Vec<i64> = (1..=20).filter(|&t| t != 5).collect();
    assert_eq!(got, want);
    let records = h.dead_letters.lock().records().expect("dlq records");
    assert_eq!(records.len(), 1);
    let (header, msgs) = super::super::store::decode_record(&records[0].1).expect("decode");
    assert_eq!(msgs[0].value.len(), 5000);
    let reason = header.reason.unwrap_or_default();
    assert!(
        reason.contains("5000") && reason.contains("1000"),
        "{reason}"
    );
    assert_eq!(
        h.counter("log_capturer_dead_letters_total{sink=\"kafka\",reason=\"too_large\"}"),
        1
    );
    h.stop(task).await;
}

/// Brokers down: after `spill_after` without a delivery, what was outstanding goes to the
/// buffer (and is acknowledged), new lines queue behind it; brokers back: the buffer is
/// replayed and every line reaches the topic once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_spills_to_the_buffer_and_replays_in_order() {
    let (mock, _dir, mut h) = setup(|_| {});
    let task = h.start();
    let d = h.delivery(1, 1, 100, None).await;
    h.send(d);
    assert!(h.wait_acked(100, Duration::from_secs(20)).await, "live");
    mock.down(-1);
    for seq in 2..=4u64 {
        let d = h.delivery(seq, (seq as i64 - 1) * 100 + 1, 100, None).await;
        h.send(d);
    }
    assert!(
        h.wait_acked(400, Duration::from_secs(20)).await,
        "spilled lines acknowledged; acked up to {}",
        h.acked()
    );
    assert!(
        h.buffer.pending().0 > 0,
        "the buffer holds the spilled lines"
    );
    assert!(h.counter("log_capturer_kafka_messages_failed_total{reason=\"timeout\"}") >= 1);
    // While the buffer holds records, new lines go behind them.
    let d = h.delivery(5, 401, 100, None).await;
    h.send(d);
    assert!(
        h.wait_acked(500, Duration::from_secs(20)).await,
        "queued behind"
    );
    mock.up(-1);
    assert!(
        h.wait_buffer(|n| n == 0, Duration::from_secs(30)).await,
        "buffer replayed"
    );
    let got = read_back(&mock, 500).await;
    assert_eq!(got, (1..=500).collect::<Vec<i64>>(), "once each, in order");
    assert!(h.counter("log_capturer_kafka_messages_retried_total") >= 400);
    h.stop(task).await;
}

/// A worker started on the stores an earlier one spilled into replays them first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_what_an_earlier_worker_buffered() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    mock.down(-1);
    {
        let mut h = harness(dir.path(), config(&mock, |_| {}));
        let task = h.start();
        for seq in 1..=3u64 {
            let d = h.delivery(seq, (seq as i64 - 1) * 100 + 1, 100, None).await;
            h.send(d);
        }
        assert!(
            h.wait_acked(300, Duration::from_secs(20)).await,
            "spilled; acked up to {}",
            h.acked()
        );
        h.stop(task).await;
        assert!(h.buffer.pending().0 > 0);
    }
    mock.up(-1);
    let mut h = harness(dir.path(), config(&mock, |_| {}));
    let task = h.start();
    assert!(
        h.wait_buffer(|n| n == 0, Duration::from_secs(30)).await,
        "replayed after the restart"
    );
    let d = h.delivery(4, 301, 100, None).await;
    h.send(d);
    assert!(
        h.wait_acked(400, Duration::from_secs(20)).await,
        "live again"
    );
    let got = read_back(&mock, 400).await;
    assert_eq!(got, (1..=400).collect::<Vec<i64>>());
    h.stop(task).await;
}

/// Shutdown with brokers down: after the grace, what is in memory goes to the buffer and is
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_brokers_down_spills_after_the_grace() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    // spill_after longer than the test: only the drain can spill.
    let mut h = harness(
        dir.path(),
        config(&mock, |c| {
            c.buffer.spill_after = HumanDuration(Duration::from_secs(600))
        }),
    );
    mock.down(-1);
    let task = h.start();
    let d = h.delivery(1, 1, 50, None).await;
    h.send(d);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop(task).await;
    assert_eq!(h.acked(), 50, "drained into the buffer");
    assert_eq!(h.ledger.unacknowledged(), 0);
    let n = stored_messages(&h.buffer);
    assert_eq!(n, 50);
}

/// At `abandon` the worker stops where it is: nothing acknowledged or buffered afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_acknowledges_and_buffers_nothing_more() {
    let (mock, _dir, mut h) = setup(|_| {});
    mock.down(-1);
    let d = h.delivery(1, 1, 50, None).await;
    h.send(d);
    // Healthy at the shutdown: the drain grants the 2 s grace, abandoned within it.
    h.shutdown.cancel();
    let task = h.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.abandon.cancel();
    h.tx = None;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the worker ends once abandoned")
        .expect("worker");
    assert_eq!(h.ledger.unacknowledged(), 1, "nothing acknowledged");
    assert_eq!(h.buffer.pending().0, 0, "nothing buffered");
}

#[path = "worker_refusal_tests.rs"]
mod refusal;
#[path = "worker_replay_tests.rs"]
mod replay;

/// A fatal producer error (the idempotent producer's id refused): the producer is recreated
/// and every line is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_error_recreates_the_producer() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (mock, _dir, mut h) = setup(no_spill);
    inject(
        &mock,
        RDKafkaApiKey::InitProducerId,
        vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let task = h.start();
    let d = h.delivery(1, 1, 100, None).await;
    h.send(d);
    assert!(
        h.wait_acked(100, Duration::from_secs(25)).await,
        "acked up to {}: {}",
        h.acked(),
        h.metrics.render()
    );
    assert_eq!(read_back(&mock, 100).await, (1..=100).collect::<Vec<i64>>());
    assert!(h.counter("log_capturer_sink_failures_total{sink=\"kafka\",reason=\"fatal\"}") >= 1);
    h.stop(task).await;
}

#[path = "worker_fault_tests.rs"]
mod faults;
