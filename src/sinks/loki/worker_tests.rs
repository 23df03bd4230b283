//! The worker's own tests (with a fake Loki); host-file records are in `worker_file_tests.rs`.

use super::super::encode::Slice;
use super::super::store::{RecordHeader, encode_record};
use super::*;
use crate::capture::Cursor;
use crate::checkpoint::CheckpointStore;
use crate::pipeline::{Batch, ContainerMeta, LogLine, QueueBudget, StreamKind};
use bytes::Bytes;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// `pub(super)`: also used by `file_tests`.
pub(super) struct Harness {
    pub(super) worker: Option<LokiWorker>,
    pub(super) ledger: Arc<AckLedger>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shutdown: CancellationToken,
    abandon: CancellationToken,
    pub(super) buffer: SharedStore,
    pub(super) tx: mpsc::UnboundedSender<Arc<Delivery>>,
    pub(super) checkpoints: Arc<CheckpointStore>,
    pub(super) budget: QueueBudget,
    _dir: tempfile::TempDir,
}

fn harness(url: &str, max_entries: usize) -> Harness {
    harness_with(url, max_entries, |_| {})
}

pub(super) fn harness_with(
    url: &str,
    max_entries: usize,
    tweak: impl FnOnce(&mut LokiSinkConfig),
) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let checkpoints =
        Arc::new(CheckpointStore::open(&dir.path().join("cp"), Arc::clone(&metrics)).expect("cp"));
    let mut config = LokiSinkConfig {
        url: url.to_string(),
        ..LokiSinkConfig::default()
    };
    config.batch.max_entries = max_entries;
    config.batch.max_wait = crate::config::HumanDuration(Duration::from_millis(10));
    tweak(&mut config);
    let (buffer, _) = SharedStore::open(
        &dir.path().join("buffer"),
        super::super::buffer_options(&config),
    )
    .expect("buffer");
    let (dead_letters, _) =
        SharedStore::open(&dir.path().join("dlq"), super::super::dlq_options(&config))
            .expect("dlq");
    let (tx, input) = mpsc::unbounded_channel();
    let ledger = Arc::new(AckLedger::new(1, Arc::clone(&checkpoints)));
    let shutdown = CancellationToken::new();
    let abandon = CancellationToken::new();
    let worker = LokiWorker {
        input,
        ledger: Arc::clone(&ledger),
        metrics: Arc::clone(&metrics),
        encoder: Encoder::new(&config),
        client: LokiClient::new(&config).expect("client"),
        buffer,
        dead_letters,
        config,
        shutdown: shutdown.clone(),
        abandon: abandon.clone(),
        status: Arc::new(SinkStatus::new(SINK, true)),
    };
    Harness {
        buffer: worker.buffer.clone(),
        worker: Some(worker),
        ledger,
        metrics: Arc::clone(&metrics),
        shutdown,
        abandon,
        tx,
        checkpoints,
        budget: QueueBudget::new(1 << 20, metrics),
        _dir: dir,
    }
}

impl Harness {
    pub(super) fn worker(&self) -> &LokiWorker {
        self.worker.as_ref().expect("worker not started")
    }

    pub(super) fn start(&mut self) -> tokio::task::JoinHandle<()> {
        let worker = self.worker.take().expect("worker not started");
        tokio::spawn(worker.run())
    }

    pub(super) async fn stop(self, task: tokio::task::JoinHandle<()>) {
        self.shutdown.cancel();
        drop(self.tx);
        task.await.expect("worker");
    }
}

/// A delivery of `n` lines stamped 1..=n, registered in the ledger as `seq`.
async fn delivery(h: &Harness, seq: u64, n: usize) -> Arc<Delivery> {
    delivery_with(h, seq, n, |_, _| {}).await
}

/// Like [`delivery`], with `edit(i, line)` applied to each line.
// The Kafka worker's tests build their deliveries alike, against their own harness and
// ledger set-up: kept apart.
async fn delivery_with(
    h: &Harness,
    seq: u64,
    n: usize,
    edit: impl Fn(usize, &mut LogLine),
) -> Arc<Delivery> {
    let meta = Arc::new(ContainerMeta::new(
        "c1".into(),
        "web".into(),
        "img".into(),
        None,
        None,
    ));
    let lines = (1..=n)
        .map(|i| {
            let mut line = LogLine {
                ts_ns: i as i64,
                stream: StreamKind::Stdout,
                message: Bytes::from(format!("line {i}")),
                truncated: false,
                extra: None,
            };
            edit(i, &mut line);
            line
        })
        .collect();
    let cursor = Cursor::legacy(n as i64, 1);
    let permit = h.budget.acquire(1, 1).await.expect("permit");
    let mut d = Delivery::new(
        Batch {
            container: meta,
            lines,
            position: cursor.into(),
        },
        permit,
    );
    d.seq = seq;
    if n > 0 {
        h.checkpoints.init("c1", Cursor::at(0));
        h.ledger.register("c1", seq, cursor);
    }
    Arc::new(d)
}

pub(super) type Seen = Arc<Mutex<Vec<(String, Vec<u8>, String)>>>;

/// A Loki that answers 204 to everything and records (content type, body, X-Scope-OrgID)
/// per request.
async fn accepting_loki() -> (String, Seen) {
    answering_loki(Arc::new(std::sync::atomic::AtomicU16::new(204))).await
}

/// A listener on a free local port, and the push URL that reaches it.
async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/loki/api/v1/push",
        listener.local_addr().expect("addr")
    );
    (listener, url)
}

/// A Loki that answers each request with the status `answer` holds then (a short text
/// body unless 204) and records (content type, body, X-Scope-OrgID) per request.
pub(super) async fn answering_loki(answer: Arc<std::sync::atomic::AtomicU16>) -> (String, Seen) {
    let (listener, url) = listen().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            let status = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.trim()
                                    .eq_ignore_ascii_case(name)
                                    .then(|| v.trim().to_string())
                            })
                            .unwrap_or_default()
                    };
                    let len: usize = header("content-length").parse().unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    buf.drain(..end + 4 + len);
                    if let Ok(mut seen) = record.lock() {
                        seen.push((header("content-type"), body, header("x-scope-orgid")));
                    }
                    let answer = match status.load(std::sync::atomic::Ordering::SeqCst) {
                        204 => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
                        code => format!(
                            "HTTP/1.1 {code} Test\r\ncontent-length: 14\r\n\r\nanswer by test"
                        ),
                    };
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

async fn wait_acked(h: &Harness, ts_ns: i64) -> bool {
    for _ in 0..500 {
        if h.checkpoints
            .get("c1")
            .is_some_and(|c| c.streams.stdout.timestamp_ns == ts_ns)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// `pipeline.shutdown_timeout` ran out while Loki hangs: the push under way is dropped and
/// every push not yet done is abandoned, not buffered, so that nothing is acknowledged or
/// buffered after the agent's final checkpoint write (a buffered batch that is also read
/// again would be delivered twice).
#[tokio::test]
async fn abandon_at_the_deadline_buffers_and_acknowledges_nothing_more() {
    // A Loki that takes connections and never answers.
    let (listener, url) = listen().await;
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            open.push(conn);
        }
    });
    let mut h = harness(&url, 2);
    let d1 = delivery(&h, 1, 2).await;
    let d2 = delivery(&h, 2, 2).await;
    h.tx.send(d1).expect("send");
    h.tx.send(d2).expect("send");
    // Shut down at once: the worker drains, and its first live attempt hangs.
    h.shutdown.cancel();
    let task = h.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.abandon.cancel();
    drop(h.tx);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the worker ends once abandoned")
        .expect("worker");
    assert_eq!(h.ledger.unacknowledged(), 2, "nothing acknowledged");
    hold.abort();
    let (records, _) = h.buffer.pending();
    assert_eq!(records, 0, "nothing buffered after the deadline");
}

/// Issue 9 item 12: a batch whose configured encoding fails goes as plain JSON (counted),
/// and is acknowledged, so the container's checkpoint keeps moving.
#[tokio::test]
async fn unencodable_batch_goes_as_plain_json_and_is_acknowledged() {
    let (url, seen) = accepting_loki().await;
    let mut h = harness(&url, 100);
    if let Some(w) = h.worker.as_mut() {
        w.encoder.fail_for_test = true;
    }
    let d = delivery(&h, 1, 3).await;
    h.tx.send(d).expect("send");
    let task = h.start();
    assert!(wait_acked(&h, 3).await, "not acknowledged");
    let requests = seen.lock().expect("seen").clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, "application/json");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].1).expect("json");
    assert_eq!(body["streams"][0]["values"][2][1], "line 3");
    assert_eq!(
        h.metrics
            .sink_failures
            .get_or_create(&LokiWorker::reason("encode"))
            .get(),
        1
    );
    h.stop(task).await;
}

/// Deliveries without lines (end-of-stream markers) are ignored: no push, nothing to ack.
#[tokio::test]
async fn delivery_without_lines_is_ignored() {
    let (url, seen) = accepting_loki().await;
    let mut h = harness(&url, 100);
    let empty = delivery(&h, 7, 0).await;
    h.tx.send(empty).expect("send");
    let d = delivery(&h, 8, 2).await;
    let task = h.start();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        seen.lock().expect("seen").is_empty(),
        "an empty push was sent"
    );
    h.tx.send(d).expect("send");
    assert!(wait_acked(&h, 2).await, "not acknowledged");
    assert_eq!(seen.lock().expect("seen").len(), 1);
    h.stop(task).await;
}

/// Issue 9 item 10: a delivery larger than `max_entries` is cut across pushes, and it is
/// acknowledged only when every one of them is done.
#[tokio::test]
async fn split_delivery_is_acknowledged_when_all_parts_are_done() {
    let h = harness("http://127.0.0.1:9/loki/api/v1/push", 2);
    let mut batcher = Batcher::new(2, 1 << 20);
    batcher.add(delivery(&h, 1, 5).await, &h.worker().encoder);
    batcher.seal();
    let pushes: Vec<Push> = batcher.ready.drain(..).collect();
    assert_eq!(
        pushes.iter().map(|p| p.entries).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    let mut pushes = pushes.into_iter();
    for push in pushes.by_ref().take(2) {
        h.worker().done(push);
        assert_eq!(
            h.checkpoints.get("c1"),
            Some(Cursor::at(0)),
            "acknowledged early"
        );
    }
    for push in pushes {
        h.worker().done(push);
    }
    assert_eq!(
        h.checkpoints
            .get("c1")
            .map(|c| c.streams.stdout.timestamp_ns),
        Some(5)
    );
}

/// The lines of a protobuf push body, by stream.
fn pushed_lines(body: &[u8]) -> Vec<String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .expect("snappy");
    let req: super::super::proto::PushRequest =
        prost::Message::decode(raw.as_slice()).expect("protobuf");
    req.streams
        .into_iter()
        .flat_map(|s| s.entries.into_iter().map(|e| e.line))
        .collect()
}

/// Issue 12: one delivery holding records of two tenants and records without one goes out
/// as one push per tenant, each with its X-Scope-OrgID (the sink's `tenant` for records
/// without one), and is acknowledged once all of them are accepted.
#[tokio::test]
async fn pushes_are_grouped_per_tenant() {
    let (url, seen) = accepting_loki().await;
    let mut h = harness_with(&url, 100, |c| c.tenant = "sink-t".into());
    let tenants = [None, Some("a"), None, Some("b"), Some("a"), Some("b")];
    let d = delivery_with(&h, 1, tenants.len(), |i, line| {
        if let Some(t) = tenants[i - 1] {
            line.extra_mut().tenant = Some(t.into());
        }
    })
    .await;
    h.tx.send(d).expect("send");
    let task = h.start();
    assert!(wait_acked(&h, 6).await, "not acknowledged");
    let mut pushes: Vec<(String, Vec<String>)> = seen
        .lock()
        .expect("seen")
        .iter()
        .map(|(_, body, tenant)| (tenant.clone(), pushed_lines(body)))
        .collect();
    pushes.sort();
    assert_eq!(
        pushes,
        [
            (
                "a".to_string(),
                vec!["line 2".to_string(), "line 5".to_string()]
            ),
            (
                "b".to_string(),
                vec!["line 4".to_string(), "line 6".to_string()]
            ),
            (
                "sink-t".to_string(),
                vec!["line 1".to_string(), "line 3".to_string()]
            ),
        ]
    );
    h.stop(task).await;
}

/// A push with its own tenant, in the on-disk buffer, is replayed with that tenant; one
/// without (as written before tenants existed) with the sink's.
#[tokio::test]
async fn buffer_replay_keeps_the_tenant() {
    let (url, seen) = accepting_loki().await;
    let mut h = harness_with(&url, 100, |c| c.tenant = "sink-t".into());
    for (ts, tenant) in [(1, Some("t9")), (2, None)] {
        let d = delivery_with(&h, ts as u64, 1, |_, line| line.ts_ns = ts).await;
        let slices = [Slice::whole(&d)];
        let (mut batch, _) = h.worker().encoder.encode_slices(&slices).expect("encode");
        batch.tenant = tenant.map(str::to_string);
        let record = encode_record(&RecordHeader::for_batch(&batch, None), &batch.body);
        h.buffer.append(record).await.expect("append");
    }
    let task = h.start();
    for _ in 0..500 {
        if h.buffer.pending().0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.buffer.pending().0, 0, "buffer not replayed");
    let tenants: Vec<String> = seen
        .lock()
        .expect("seen")
        .iter()
        .map(|(_, _, t)| t.clone())
        .collect();
    assert_eq!(tenants, ["t9", "sink-t"]);
    h.stop(task).await;
}
