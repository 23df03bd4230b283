//! Tests of the local sink writer (`writer.rs`).

use super::*;
use crate::capture::Cursor;
use crate::checkpoint::CheckpointStore;
use crate::pipeline::{Batch, BudgetPermit, ContainerMeta, LogLine, QueueBudget, StreamKind};
use crate::sinks::FileSink;
use bytes::Bytes;
use std::sync::Mutex;

/// A sink that records what happened and can refuse to sync.
struct Recorder {
    durability: Durability,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Sink for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn durability(&self) -> Durability {
        self.durability
    }
    fn write_batch(&mut self, _: &crate::pipeline::Batch) -> Result<(), WriteError> {
        self.log.lock().expect("log").push("write");
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.log.lock().expect("log").push("flush");
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.log.lock().expect("log").push("sync");
        Ok(())
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<CheckpointStore>,
    ledger: Arc<AckLedger>,
    metrics: Arc<Metrics>,
    budget: QueueBudget,
    tx: Option<mpsc::UnboundedSender<Arc<Delivery>>>,
    worker: Option<tokio::task::JoinHandle<Result<(), OutputClosed>>>,
    seq: u64,
    status: Arc<SinkStatus>,
}

impl Harness {
    fn start(sink: Box<dyn Sink>, ids: &[&str]) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(
            CheckpointStore::open(&dir.path().join("state"), Arc::clone(&metrics)).expect("store"),
        );
        for id in ids {
            store.init(id, Cursor::at(0));
        }
        let ledger = Arc::new(AckLedger::new(1, Arc::clone(&store)));
        let status = Arc::new(SinkStatus::new("test", false));
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = LocalSinkWorker {
            sink,
            input: rx,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(&metrics),
            settings: WriterSettings {
                flush_interval: Duration::from_millis(20),
                flush_bytes: 1 << 20,
                sync_bytes: 1 << 30,
                held_retry: Duration::from_millis(300),
            },
            shutdown: CancellationToken::new(),
            status: Arc::clone(&status),
        };
        let runtime = Handle::current();
        let worker = tokio::task::spawn_blocking(move || worker.run_blocking(runtime));
        Harness {
            budget: QueueBudget::new(1 << 20, Arc::clone(&metrics)),
            _dir: dir,
            store,
            ledger,
            metrics,
            tx: Some(tx),
            worker: Some(worker),
            seq: 0,
            status,
        }
    }

    async fn send(&mut self, meta: &Arc<ContainerMeta>, ts: i64) {
        self.seq += 1;
        let batch = Batch {
            container: Arc::clone(meta),
            lines: vec![LogLine {
                ts_ns: ts,
                stream: StreamKind::Stdout,
                message: Bytes::from(format!("line {ts}")),
                truncated: false,
                extra: None,
            }],
            position: Cursor::legacy(ts, 1).into(),
        };
        let permit: BudgetPermit = self.budget.acquire(100, 1).await.expect("budget");
        let mut d = Delivery::new(batch, permit);
        d.seq = self.seq;
        self.ledger
            .register(&meta.id, d.seq, d.batch.position.clone());
        self.tx
            .as_ref()
            .expect("open")
            .send(Arc::new(d))
            .expect("send");
    }

    /// Waits up to `timeout` for `container`'s checkpoint to reach the batch `send` sent at
    /// `ts`; false if it did not.
    async fn acknowledged(&self, container: &str, ts: i64, timeout: Duration) -> bool {
        wait_for(timeout, || {
            self.store.get(container) == Some(Cursor::legacy(ts, 1))
        })
        .await
    }

    /// Closes the input and waits for the worker (which must not hang) to drain.
    async fn finish(&mut self) {
        self.tx = None;
        self.join().await.expect("drained, not closed");
    }

    /// Waits for the worker to end (without closing its input).
    async fn join(&mut self) -> Result<(), OutputClosed> {
        let worker = self.worker.take().expect("worker");
        tokio::time::timeout(Duration::from_secs(20), worker)
            .await
            .expect("the worker ended")
            .expect("worker")
    }
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
async fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn meta(id: &str, name: &str) -> Arc<ContainerMeta> {
    Arc::new(ContainerMeta::named(id, name))
}

/// A sink whose writes fail `failures` times, then work.
struct Failing {
    failures: usize,
}

impl Sink for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn write_batch(&mut self, _: &crate::pipeline::Batch) -> Result<(), WriteError> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err(WriteError::Sink(io::Error::other("disk full")));
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The status board shows the sink failing while its writes fail, and not once one works;
/// the batch is in flight (with its budget bytes) until acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_board_follows_a_failing_sink() {
    let c = meta("c", "c");
    let mut h = Harness::start(Box::new(Failing { failures: 3 }), &["c"]);
    h.send(&c, 10).await;
    let failing = wait_for(Duration::from_secs(10), || h.status.view().failing).await;
    assert!(failing, "never shown failing");
    let v = h.status.view();
    assert_eq!(v.last_error.as_deref(), Some("disk full"));
    assert!(v.failing_since.is_some());
    assert_eq!((v.in_flight_batches, v.queue_bytes), (1, 100));
    let acked = h.acknowledged("c", 10, Duration::from_secs(20)).await;
    assert!(acked, "never acknowledged");
    let v = h.status.view();
    assert!(!v.failing && v.last_error.is_none(), "{v:?}");
    assert_eq!(v.failures, 0);
    assert_eq!((v.in_flight_batches, v.queue_bytes), (0, 0));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_before_the_policy_made_it_durable() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Recorder {
        durability: Durability::Interval(Duration::from_secs(3600)),
        log: Arc::clone(&log),
    };
    let c = meta("c", "c");
    let mut h = Harness::start(Box::new(sink), &["c"]);
    h.send(&c, 10).await;
    // Flushed to the OS (several flush intervals pass), but the fsync is an hour away.
    let flushed = wait_for(Duration::from_secs(10), || {
        log.lock().expect("log").contains(&"flush")
    })
    .await;
    assert!(flushed, "never flushed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.store.get("c"),
        Some(Cursor::at(0)),
        "acknowledged before an fsync"
    );
    assert!(!log.lock().expect("log").contains(&"sync"));
    // Draining at shutdown reaches a durable point: fsync, then the acknowledgement.
    h.finish().await;
    assert_eq!(h.store.get("c"), Some(Cursor::legacy(10, 1)));
    let log = log.lock().expect("log").clone();
    assert_eq!(log.last(), Some(&"sync"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_syncs_before_every_acknowledgement() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Recorder {
        durability: Durability::Always,
        log: Arc::clone(&log),
    };
    let c = meta("c", "c");
    let mut h = Harness::start(Box::new(sink), &["c"]);
    h.send(&c, 10).await;
    let acked = h.acknowledged("c", 10, Duration::from_secs(10)).await;
    assert!(acked, "not acknowledged");
    let log = log.lock().expect("log").clone();
    assert_eq!(&log[..3], &["write", "flush", "sync"], "{log:?}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_containers_permanent_failure_holds_only_that_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = format!("{}/{{container_name}}/out.log", dir.path().display());
    // A regular file where the container's directory should be: fails even for root.
    std::fs::write(dir.path().join("blocked"), b"").expect("blocker");
    let metrics = Arc::new(Metrics::new());
    let sink = FileSink::for_tests(&template, Durability::Always, 16, metrics);
    let (blocked, fine) = (meta("b", "blocked"), meta("f", "fine"));
    let mut h = Harness::start(Box::new(sink), &["b", "f"]);
    for ts in 1..=5 {
        h.send(&blocked, ts).await;
        h.send(&fine, ts).await;
    }
    let fine_done = h.acknowledged("f", 5, Duration::from_secs(10)).await;
    assert!(
        fine_done,
        "the other container's lines were not all acknowledged"
    );
    // The held container's lines were released (the budget is free again) without being
    // acknowledged: its checkpoint stays where it was.
    let free = wait_for(Duration::from_secs(10), || h.budget.in_use() == 0).await;
    assert!(
        free,
        "held deliveries keep the budget: {}",
        h.budget.in_use()
    );
    assert_eq!(h.store.get("b"), Some(Cursor::at(0)));
    assert!(h.ledger.is_held("b"));
    let m = h.metrics.render();
    assert!(
        m.contains("log_capturer_sink_failures_total{sink=\"file\",reason=\"permanent\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("log_capturer_sink_containers_held{sink=\"file\"} 1"),
        "{m}"
    );
    h.finish().await;
    let out = std::fs::read_to_string(dir.path().join("fine/out.log")).expect("fine");
    assert_eq!(out.lines().count(), 5);
    // Held batches are released: none stays in flight on the status board.
    let v = h.status.view();
    assert_eq!((v.in_flight_batches, v.queue_bytes), (0, 0), "{v:?}");
    assert!(!v.failing, "a held container is not a failing sink: {v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_container_resumes_writing_when_its_path_works_again_but_stays_frozen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = format!("{}/{{container_name}}/out.log", dir.path().display());
    std::fs::write(dir.path().join("blocked"), b"").expect("blocker");
    let sink = FileSink::for_tests(&template, Durability::Never, 16, Arc::new(Metrics::new()));
    let blocked = meta("b", "blocked");
    let mut h = Harness::start(Box::new(sink), &["b"]);
    h.send(&blocked, 1).await;
    let held = wait_for(Duration::from_secs(10), || h.ledger.is_held("b")).await;
    assert!(held);
    std::fs::remove_file(dir.path().join("blocked")).expect("unblock");
    // Once the rest period is over, the next batch is tried, and works.
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.send(&blocked, 3).await;
    let path = dir.path().join("blocked/out.log");
    let written = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("line 3"))
    })
    .await;
    assert!(written, "writing did not resume");
    let text = std::fs::read_to_string(&path).expect("out");
    assert!(!text.contains("line 1"), "{text}");
    let m = h.metrics.render();
    assert!(
        m.contains("log_capturer_sink_containers_held{sink=\"file\"} 0"),
        "{m}"
    );
    h.finish().await;
    // Line 1 was never written: the position stays before it until the restart.
    assert_eq!(h.store.get("b"), Some(Cursor::at(0)));
}

/// A pipe whose reader exits when `closed` is set: every later flush fails with `EPIPE`.
struct Pipe {
    closed: Arc<std::sync::atomic::AtomicBool>,
    flushes: Arc<Mutex<u32>>,
}

impl Sink for Pipe {
    fn name(&self) -> &'static str {
        "pipe"
    }
    fn write_batch(&mut self, _: &crate::pipeline::Batch) -> Result<(), WriteError> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        *self.flushes.lock().expect("flushes") += 1;
        Ok(())
    }
    fn is_closed_for_good(&self, err: &io::Error) -> bool {
        err.kind() == io::ErrorKind::BrokenPipe
    }
}

/// An output closed for good (`EPIPE`) is not retried: the worker ends by itself, with its
/// input still open, reporting `OutputClosed`; what was acknowledged before stays, and the
/// batch it could not write is not acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_closed_for_good_ends_the_worker_without_acknowledging() {
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink = Pipe {
        closed: Arc::clone(&closed),
        flushes: Arc::new(Mutex::new(0)),
    };
    let c = meta("c", "c");
    let mut h = Harness::start(Box::new(sink), &["c"]);
    h.send(&c, 10).await;
    let acked = h.acknowledged("c", 10, Duration::from_secs(10)).await;
    assert!(acked, "the first batch was not acknowledged");
    closed.store(true, std::sync::atomic::Ordering::SeqCst);
    h.send(&c, 20).await;
    // The input stays open (h.tx): only the closed output can end the worker.
    let ended = h
        .join()
        .await
        .expect_err("the worker must report the closed output");
    assert_eq!(ended.sink, "pipe");
    assert_eq!(ended.error.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(h.store.get("c"), Some(Cursor::legacy(10, 1)));
    assert_eq!(h.ledger.unacknowledged(), 1);
    let closed_failures = h
        .metrics
        .sink_failures
        .get_or_create(&SinkReasonLabels {
            sink: "pipe",
            reason: "closed",
        })
        .get();
    assert_eq!(closed_failures, 1);
    let retries = h
        .metrics
        .sink_retries
        .get_or_create(&SinkLabels { sink: "pipe" })
        .get();
    assert_eq!(retries, 0, "a closed output must not be retried");
}
