//! The replay window: several buffer records produced at once, consumed in store order.

use super::*;
use crate::sinks::kafka::encode::Message;
use crate::sinks::kafka::store::encode_record;

/// A buffer of many one-message records (as a trickle of small deliveries spilled during an
/// outage makes): replayed with several records in flight at once (the in-flight gauge goes
/// above one message), every line once and in order, the buffer emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_keeps_several_records_in_flight() {
    const RECORDS: i64 = 3_000;
    let (mock, _dir, mut h) = setup(|_| {});
    let topic: Arc<str> = Arc::from(TOPIC);
    let key: Arc<[u8]> = Arc::from(&b"c1"[..]);
    for ts in 1..=RECORDS {
        let msg = Message {
            topic: Arc::clone(&topic),
            key: Some(Arc::clone(&key)),
            value: format!("line {ts}").into_bytes(),
        };
        h.buffer
            .append(encode_record(None, &[msg]))
            .await
            .expect("append");
    }
    let metrics = Arc::clone(&h.metrics);
    let done = CancellationToken::new();
    let sampler = tokio::spawn({
        let done = done.clone();
        async move {
            let mut max = 0;
            while !done.is_cancelled() {
                max = max.max(metrics.kafka.in_flight.get());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            max
        }
    });
    let started = std::time::Instant::now();
    let task = h.start();
    assert!(
        h.wait_buffer(|n| n == 0, Duration::from_secs(120)).await,
        "buffer replayed; {} records left",
        h.buffer.pending().0
    );
    let took = started.elapsed();
    done.cancel();
    let max_in_flight = sampler.await.expect("sampler");
    eprintln!(
        "replayed {RECORDS} one-line records in {took:?}: {:.0} lines/s; at most {max_in_flight} in flight",
        RECORDS as f64 / took.as_secs_f64()
    );
    assert!(
        max_in_flight > 1,
        "several records in flight at once (saw at most {max_in_flight})"
    );
    assert_eq!(
        read_back(&mock, RECORDS as usize).await,
        (1..=RECORDS).collect::<Vec<i64>>()
    );
    h.stop(task).await;
}
