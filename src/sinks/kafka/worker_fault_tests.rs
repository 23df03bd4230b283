//! The worker under faults: fatal producer errors, one partition stuck, a full buffer or a
//! silent broker at shutdown.

use super::*;

/// Sends deliveries `first_seq..` of `per` lines each, continuing the stamps after `after`.
async fn send_many(h: &Harness, first_seq: u64, deliveries: u64, per: usize, after: i64) -> i64 {
    let mut ts = after;
    for k in 0..deliveries {
        let d = h.delivery(first_seq + k, ts + 1, per, None).await;
        h.send(d);
        ts += per as i64;
    }
    ts
}

/// A fatal producer error while a backlog is being produced: the messages librdkafka refuses
/// (`Fatal`) wait for the new producer instead of becoming dead letters, and what was in
/// flight gets its real outcome (not purged and produced again): every line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_error_during_a_backlog_loses_and_duplicates_nothing() {
    let mock = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(dir.path(), config(&mock, no_spill));
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
