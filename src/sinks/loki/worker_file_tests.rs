//! Host-file records across a Loki outage: the on-disk buffer and the dead letters keep them
//! intact (labels, lines, times), and their file positions are acknowledged once the push is
//! durably stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::tests::{Harness, Seen, answering_loki, harness_with};
use crate::checkpoint::{FileId, FilePosition, Fingerprint};
use crate::config::HumanDuration;
use crate::pipeline::{AckPosition, Batch, ContainerMeta, Delivery, LogLine, StreamKind};
use crate::sinks::loki::proto::PushRequest;
use crate::sinks::loki::store::decode_record;

const KEY: &str = "file-2049-131";
const PATH: &str = "/var/log/syslog";

fn position(offset: u64) -> FilePosition {
    FilePosition {
        path: PATH.to_string(),
        id: FileId {
            dev: 2049,
            ino: 131,
        },
        fingerprint: Fingerprint { len: 4, crc32: 7 },
        offset,
    }
}

/// Three lines of `/var/log/syslog` (group field `job: syslog`), registered in the ledger as
/// `seq`, ending at byte 30.
async fn file_delivery(h: &Harness, seq: u64) -> Arc<Delivery> {
    let meta = Arc::new(ContainerMeta::for_file(
        KEY.into(),
        PATH.into(),
        "node-7".into(),
        vec![("job".into(), "syslog".into())],
    ));
    let lines = (1..=3)
        .map(|i| LogLine {
            ts_ns: 1_700_000_000_000_000_000 + i,
            stream: StreamKind::Stdout,
            message: Bytes::from(format!("syslog line {i} \"quoted\" é")),
            truncated: false,
            extra: None,
        })
        .collect();
    let permit = h.budget.acquire(1, 1).await.expect("permit");
    let mut d = Delivery::new(
        Batch {
            container: meta,
            lines,
            position: AckPosition::File(position(30)),
        },
        permit,
    );
    d.seq = seq;
    h.checkpoints.init_file(KEY, position(0));
    h.ledger.register(KEY, seq, AckPosition::File(position(30)));
    Arc::new(d)
}

fn quick(c: &mut crate::config::LokiSinkConfig) {
    c.host = "h1".into();
    c.labels.push("job".into());
    c.retry.initial = HumanDuration(Duration::from_millis(20));
    c.retry.max = HumanDuration(Duration::from_millis(50));
    c.buffer.spill_after = HumanDuration(Duration::from_millis(100));
}

fn decode(body: &[u8]) -> PushRequest {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .expect("snappy");
    prost::Message::decode(raw.as_slice()).expect("protobuf")
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn requests(seen: &Seen) -> usize {
    seen.lock().expect("seen").len()
}

/// Loki fails (503) past `spill_after`: the push goes to the buffer and the file's position
/// is acknowledged; once Loki is back the buffer is replayed, and the push Loki gets decodes
/// to exactly the push built from the records (labels `filename`, `host`, `job`; lines; times).
#[tokio::test]
async fn a_buffered_file_push_replays_unchanged() {
    let answer = Arc::new(AtomicU16::new(503));
    let (url, seen) = answering_loki(Arc::clone(&answer)).await;
    let mut h = harness_with(&url, 100, quick);
    let d = file_delivery(&h, 1).await;
    let (want, _) = h.worker().encoder.build(std::slice::from_ref(&d));
    let labels: Vec<&str> = want.streams.iter().map(|s| s.labels.as_str()).collect();
    assert_eq!(
        labels,
        [r#"{filename="/var/log/syslog", host="h1", job="syslog"}"#]
    );
    h.tx.send(d).expect("send");
    let task = h.start();
    let buffer = h.buffer.clone();
    until("the push in the buffer", || buffer.pending().0 == 1).await;
    let checkpoints = Arc::clone(&h.checkpoints);
    until("the file position acknowledged", || {
        checkpoints.file_position(KEY).map(|p| p.offset) == Some(30)
    })
    .await;
    let before = requests(&seen);
    answer.store(204, Ordering::SeqCst);
    until("the buffer replayed", || buffer.pending().0 == 0).await;
    let last = seen
        .lock()
        .expect("seen")
        .last()
        .map(|(_, body, _)| body.clone())
        .expect("a request");
    assert!(requests(&seen) > before, "no request after Loki came back");
    assert_eq!(decode(&last), want);
    h.stop(task).await;
}

/// Loki rejects the push (400): it becomes a dead letter that shows the file (its `filename`
/// label) and every line, the file's position is acknowledged, and no metric names the file.
#[tokio::test]
async fn a_rejected_file_push_is_a_dead_letter_naming_the_file() {
    let answer = Arc::new(AtomicU16::new(400));
    let (url, _seen) = answering_loki(answer).await;
    let mut h = harness_with(&url, 100, quick);
    let dead_letters = h.worker().dead_letters.clone();
    let d = file_delivery(&h, 1).await;
    h.tx.send(d).expect("send");
    let task = h.start();
    until("a dead letter", || dead_letters.pending().0 == 1).await;
    let checkpoints = Arc::clone(&h.checkpoints);
    until("the file position acknowledged", || {
        checkpoints.file_position(KEY).map(|p| p.offset) == Some(30)
    })
    .await;
    let records = dead_letters.lock().records().expect("records");
    let (header, body) = decode_record(&records[0].1).expect("record");
    assert!(
        header
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("400")),
        "{header:?}"
    );
    let entries = crate::dlq::decode_entries(&header, &body).expect("entries");
    let shown: Vec<(String, i64, String)> = (1..=3)
        .map(|i| {
            (
                r#"{filename="/var/log/syslog", host="h1", job="syslog"}"#.to_string(),
                1_700_000_000_000_000_000 + i,
                format!("syslog line {i} \"quoted\" é"),
            )
        })
        .collect();
    assert_eq!(entries, shown);
    // Counted by reason only: no metric names the file.
    let text = h.metrics.render();
    assert!(text.contains("log_capturer_dead_letters_total"), "{text}");
    assert!(!text.contains("syslog"), "{text}");
    h.stop(task).await;
}
