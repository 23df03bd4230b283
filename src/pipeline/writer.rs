//! The worker of a local sink (stdout, file): takes deliveries, writes them, flushes, makes
//! them durable as the sink's [`Durability`] asks, and only then acknowledges them. It runs on
//! a blocking thread because that I/O is blocking; it ends when its input closes and is
//! drained.
//!
//! - **Durable point**: flush everything → fsync (unless `Durability::Never`) → acknowledge
//!   every written delivery → `Sink::commit`. Nothing is written between these steps, so what
//!   is committed is exactly what is acknowledged. With `Durability::Interval`, flushes in
//!   between only hand bytes to the OS; their deliveries wait for the next durable point.
//! - **Sink errors** (disk full, I/O errors) are retried with back-off, in order; capture pauses
//!   meanwhile (the budget fills). Before retrying a refused batch, what was already written
//!   is committed: that lets the sink close files (e.g. at its file-descriptor limit).
//! - **Container errors** (one container's output cannot be written: permission, name): that
//!   container is *held*. Its lines are released without being written or acknowledged, its
//!   position is frozen in the ledger for this run (so they are read again after a restart),
//!   and every other container goes on. Its output is tried again every `held_retry`; when
//!   that works, writing resumes, but the position stays frozen until the restart, which
//!   writes the held lines and writes the lines since the recovery a second time.
//! - **Giving up** (shutdown while the sink fails): nothing more is acknowledged, and the sink
//!   is told to `abandon`, which removes what was written after the last commit.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Delivery;
use super::ledger::AckLedger;
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::observability::metrics::{Metrics, SinkLabels, SinkReasonLabels};
use crate::sinks::{Durability, Sink, WriteError};

/// How long a held container's output rests before it is tried again (the default of
/// [`WriterSettings::held_retry`]).
pub const HELD_RETRY: Duration = Duration::from_secs(30);

pub struct WriterSettings {
    pub flush_interval: Duration,
    /// Flush early once this many message bytes are waiting (bounds sink buffers).
    pub flush_bytes: usize,
    /// With `Durability::Interval`: reach a durable point early once this many message bytes
    /// wait for one, so that waiting for the interval never fills the queue's budget.
    pub sync_bytes: usize,
    /// How long a held container's output rests before it is tried again.
    pub held_retry: Duration,
}

pub struct LocalSinkWorker {
    pub sink: Box<dyn Sink>,
    pub input: mpsc::UnboundedReceiver<Arc<Delivery>>,
    pub ledger: Arc<AckLedger>,
    pub metrics: Arc<Metrics>,
    pub settings: WriterSettings,
    /// Cancelled at shutdown: a sink that keeps failing is then given up on (its batches stay
    /// unacknowledged, so they are read again after the restart).
    pub shutdown: CancellationToken,
}

/// Shutdown came while the sink was failing.
struct GaveUp;

/// Deliveries written but not yet acknowledged.
#[derive(Default)]
struct Pending {
    /// Buffered in the sink since the last flush.
    written: Vec<Arc<Delivery>>,
    written_bytes: usize,
    /// When the first of `written` arrived.
    oldest: Option<Instant>,
    /// Flushed to the OS, waiting for a durable point (`Durability::Interval`).
    flushed: Vec<Arc<Delivery>>,
    flushed_bytes: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.written.is_empty() && self.flushed.is_empty()
    }
}

/// The writer's state besides the sink.
struct Run {
    pending: Pending,
    last_durable: Instant,
    /// Held containers (by id) → when their output is tried again.
    held: HashMap<String, Instant>,
}

impl LocalSinkWorker {
    /// Runs until the input is closed and drained. Call from a blocking thread.
    pub fn run_blocking(mut self, runtime: Handle) {
        let mut run = Run {
            pending: Pending::default(),
            last_durable: Instant::now(),
            held: HashMap::new(),
        };
        if self.run_until_closed(&runtime, &mut run).is_err() {
            // Nothing more is acknowledged; what was written since the last commit goes.
            self.sink.abandon();
        }
        if !run.held.is_empty() {
            warn!(
                sink = self.sink.name(),
                containers = run.held.len(),
                "stopping with containers held; their lines are read again after the restart"
            );
        }
    }

    fn run_until_closed(&mut self, runtime: &Handle, run: &mut Run) -> Result<(), GaveUp> {
        loop {
            let wait = self
                .next_deadline(run)
                .saturating_duration_since(Instant::now());
            let next =
                runtime.block_on(async { tokio::time::timeout(wait, self.input.recv()).await });
            match next {
                Ok(Some(first)) => {
                    // Take everything already queued without going back to sleep: one thread
                    // wake-up per burst, not per batch.
                    let mut next = Some(first);
                    while let Some(delivery) = next {
                        self.take(delivery, runtime, run)?;
                        if run.pending.written_bytes >= self.settings.flush_bytes {
                            break;
                        }
                        next = self.input.try_recv().ok();
                    }
                    self.on_timers(runtime, run)?;
                }
                Ok(None) => return self.durable_point(runtime, run),
                Err(_elapsed) => self.on_timers(runtime, run)?,
            }
        }
    }

    /// When the loop must wake up next even without input.
    fn next_deadline(&self, run: &Run) -> Instant {
        let now = Instant::now();
        let mut at = now + self.settings.flush_interval;
        if let Some(oldest) = run.pending.oldest {
            at = at.min(oldest + self.settings.flush_interval);
        }
        if let Durability::Interval(every) = self.sink.durability()
            && !run.pending.flushed.is_empty()
        {
            at = at.min(run.last_durable + every);
        }
        at
    }

    /// Flushes and reaches durable points as they fall due.
    fn on_timers(&mut self, runtime: &Handle, run: &mut Run) -> Result<(), GaveUp> {
        let p = &run.pending;
        let flush_due = p
            .oldest
            .is_some_and(|t| t.elapsed() >= self.settings.flush_interval)
            || p.written_bytes >= self.settings.flush_bytes;
        match self.sink.durability() {
            Durability::Never | Durability::Always => {
                if flush_due || p.is_empty() {
                    // With nothing written this still lets the sink close idle files.
                    self.durable_point(runtime, run)?;
                }
            }
            Durability::Interval(every) => {
                let waiting = p.written_bytes + p.flushed_bytes;
                let sync_due = !p.is_empty()
                    && (run.last_durable.elapsed() >= every || waiting >= self.settings.sync_bytes);
                if sync_due || p.is_empty() {
                    self.durable_point(runtime, run)?;
                } else if flush_due {
                    self.retry(runtime, |sink| sink.flush())?;
                    let p = &mut run.pending;
                    p.flushed_bytes += std::mem::take(&mut p.written_bytes);
                    p.flushed.append(&mut p.written);
                    p.oldest = None;
                }
            }
        }
        Ok(())
    }

    /// Writes one delivery (or handles a marker, or releases a held container's batch).
    fn take(
        &mut self,
        delivery: Arc<Delivery>,
        runtime: &Handle,
        run: &mut Run,
    ) -> Result<(), GaveUp> {
        if delivery.end_of_stream {
            self.sink.end_of_stream(&delivery.batch.container);
            return Ok(());
        }
        let id = &delivery.batch.container.id;
        if !run.held.is_empty()
            && run
                .held
                .get(id)
                .is_some_and(|&retry_at| Instant::now() < retry_at)
        {
            return Ok(()); // released unwritten and unacknowledged; read again after restart
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            match self.sink.write_batch(&delivery.batch) {
                Ok(()) => {
                    if run.held.remove(id).is_some() {
                        self.held_gauge(run);
                        info!(sink = self.sink.name(), container = %delivery.batch.container.name,
                            "container output works again; writing resumes. Its checkpoint stays \
                             frozen until the restart, which writes the held lines (and these again)");
                    }
                    let p = &mut run.pending;
                    p.oldest.get_or_insert_with(Instant::now);
                    p.written_bytes += delivery.batch.bytes();
                    p.written.push(delivery);
                    return Ok(());
                }
                Err(WriteError::Container(e)) => {
                    self.hold(&delivery, e, run);
                    return Ok(());
                }
                Err(WriteError::Sink(e)) => {
                    if !run.pending.is_empty() {
                        // Commit what is written first (frees files to close), then retry.
                        self.durable_point(runtime, run)?;
                        continue;
                    }
                    self.failed(e, &mut backoff, runtime)?;
                }
            }
        }
    }

    /// One container's output cannot be written: hold it (see the module comment).
    fn hold(&mut self, delivery: &Delivery, err: io::Error, run: &mut Run) {
        let name = self.sink.name();
        let meta = &delivery.batch.container;
        self.ledger.hold(&meta.id, delivery.seq);
        self.metrics
            .sink_failures
            .get_or_create(&SinkReasonLabels {
                sink: name,
                reason: "permanent",
            })
            .inc();
        let retry_at = Instant::now() + self.settings.held_retry;
        if run.held.insert(meta.id.clone(), retry_at).is_none() {
            self.held_gauge(run);
            warn!(sink = name, container = %meta.name, container_id = %meta.id, error = %err,
                retry_every = ?self.settings.held_retry,
                "cannot write this container's output; its lines are held (not written, checkpoint \
                 frozen, read again after restart) while the other containers go on");
        } else {
            debug!(sink = name, container = %meta.name, error = %err, "held container still fails");
        }
    }

    fn held_gauge(&self, run: &Run) {
        self.metrics
            .sink_containers_held
            .get_or_create(&SinkLabels {
                sink: self.sink.name(),
            })
            .set(run.held.len() as i64);
    }

    /// Flush → fsync (per the sink's durability) → acknowledge every written delivery →
    /// commit. With nothing written this still lets the sink close idle files.
    fn durable_point(&mut self, runtime: &Handle, run: &mut Run) -> Result<(), GaveUp> {
        let started = Instant::now();
        self.retry(runtime, |sink| sink.flush())?;
        let p = &mut run.pending;
        if !p.is_empty() && self.sink.durability() != Durability::Never {
            self.retry(runtime, |sink| sink.sync())?;
        }
        let p = &mut run.pending;
        let mut done = std::mem::take(&mut p.flushed);
        done.append(&mut p.written);
        *p = Pending::default();
        run.last_durable = Instant::now();
        if !done.is_empty() {
            let labels = SinkLabels {
                sink: self.sink.name(),
            };
            let lines: usize = done.iter().map(|d| d.batch.lines.len()).sum();
            self.metrics
                .sink_lines
                .get_or_create(&labels)
                .inc_by(lines as u64);
            self.metrics.sink_batches.get_or_create(&labels).inc();
            self.metrics
                .sink_latency
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            for d in done {
                self.ledger.complete(&d.batch.container.id, d.seq);
            }
        }
        self.sink.commit();
        Ok(())
    }

    /// Runs `op` until it succeeds, with back-off; capture pauses meanwhile (the budget fills).
    fn retry(
        &mut self,
        runtime: &Handle,
        mut op: impl FnMut(&mut dyn Sink) -> io::Result<()>,
    ) -> Result<(), GaveUp> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            match op(self.sink.as_mut()) {
                Ok(()) => return Ok(()),
                Err(e) => self.failed(e, &mut backoff, runtime)?,
            }
        }
    }

    /// Counts a sink error and waits before the next attempt; `GaveUp` at shutdown.
    fn failed(
        &mut self,
        err: io::Error,
        backoff: &mut Backoff,
        runtime: &Handle,
    ) -> Result<(), GaveUp> {
        let name = self.sink.name();
        self.metrics
            .sink_errors
            .get_or_create(&SinkLabels { sink: name })
            .inc();
        self.metrics
            .sink_failures
            .get_or_create(&SinkReasonLabels {
                sink: name,
                reason: "io",
            })
            .inc();
        if self.shutdown.is_cancelled() {
            error!(sink = name, error = %err,
                "sink failed during shutdown; unacknowledged lines will be read again after restart");
            return Err(GaveUp);
        }
        let delay = backoff.next_delay();
        self.metrics
            .sink_retries
            .get_or_create(&SinkLabels { sink: name })
            .inc();
        warn!(sink = name, error = %err, retry_in = ?delay, "sink failed; capture pauses until it recovers");
        if !runtime.block_on(sleep_or_cancel(delay, &self.shutdown)) {
            error!(
                sink = name,
                "shutdown while the sink was failing; unacknowledged lines will be read again after restart"
            );
            return Err(GaveUp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Cursor;
    use crate::checkpoint::CheckpointStore;
    use crate::pipeline::{Batch, BudgetPermit, ContainerMeta, LogLine, QueueBudget, StreamKind};
    use crate::sinks::{FileSink, FileSinkSettings, Modes, PathTemplate};
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
        worker: Option<tokio::task::JoinHandle<()>>,
        seq: u64,
    }

    impl Harness {
        fn start(sink: Box<dyn Sink>, ids: &[&str]) -> Harness {
            let dir = tempfile::tempdir().expect("tempdir");
            let metrics = Arc::new(Metrics::new());
            let store = Arc::new(
                CheckpointStore::open(&dir.path().join("state"), Arc::clone(&metrics))
                    .expect("store"),
            );
            for id in ids {
                store.init(id, Cursor::at(0));
            }
            let ledger = Arc::new(AckLedger::new(1, Arc::clone(&store)));
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
                }],
                cursor: Cursor {
                    ts_ns: ts,
                    count: 1,
                },
            };
            let permit: BudgetPermit = self.budget.acquire(100, 1).await.expect("budget");
            let mut d = Delivery::new(batch, permit);
            d.seq = self.seq;
            self.ledger.register(&meta.id, d.seq, d.batch.cursor);
            self.tx
                .as_ref()
                .expect("open")
                .send(Arc::new(d))
                .expect("send");
        }

        /// Closes the input and waits for the worker (which must not hang).
        async fn finish(&mut self) {
            self.tx = None;
            let worker = self.worker.take().expect("worker");
            tokio::time::timeout(Duration::from_secs(20), worker)
                .await
                .expect("the worker ended")
                .expect("worker");
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
        Arc::new(ContainerMeta::new(
            id.into(),
            name.into(),
            String::new(),
            None,
            None,
        ))
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
        assert_eq!(
            h.store.get("c"),
            Some(Cursor {
                ts_ns: 10,
                count: 1
            })
        );
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
        let acked = wait_for(Duration::from_secs(10), || {
            h.store.get("c")
                == Some(Cursor {
                    ts_ns: 10,
                    count: 1,
                })
        })
        .await;
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
        let sink = FileSink::new(
            FileSinkSettings {
                template: PathTemplate::new(&template).expect("template"),
                idle_close: Duration::from_secs(60),
                modes: Modes::default(),
                durability: Durability::Always,
                max_open_files: 16,
            },
            metrics,
        );
        let (blocked, fine) = (meta("b", "blocked"), meta("f", "fine"));
        let mut h = Harness::start(Box::new(sink), &["b", "f"]);
        for ts in 1..=5 {
            h.send(&blocked, ts).await;
            h.send(&fine, ts).await;
        }
        let fine_done = wait_for(Duration::from_secs(10), || {
            h.store.get("f") == Some(Cursor { ts_ns: 5, count: 1 })
        })
        .await;
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_container_resumes_writing_when_its_path_works_again_but_stays_frozen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let template = format!("{}/{{container_name}}/out.log", dir.path().display());
        std::fs::write(dir.path().join("blocked"), b"").expect("blocker");
        let sink = FileSink::new(
            FileSinkSettings {
                template: PathTemplate::new(&template).expect("template"),
                idle_close: Duration::from_secs(60),
                modes: Modes::default(),
                durability: Durability::Never,
                max_open_files: 16,
            },
            Arc::new(Metrics::new()),
        );
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
}
