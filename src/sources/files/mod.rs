//! The host-file source (`sources.files`): finds files by glob (inotify, with a periodic
//! rescan as the fallback), reads each from its acknowledged position, follows it across
//! rename, copytruncate and delete, and hands batches of lines to the pipeline queue with
//! [`crate::pipeline::AckPosition::File`] positions.
//!
//! ```text
//! FileSource ── scan (matcher) ──▶ one Tail per identity (JoinSet, child tokens)
//!     ▲  inotify (watcher): new files → rescan; data → wake that file's Tail
//! ```

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod identity;
pub mod lines;
pub mod matcher;
pub mod metrics;
mod pool;
pub mod status;
mod tail;
mod watcher;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::checkpoint::{CheckpointStore, FileId};
use crate::config::SourcesConfig;
use crate::observability::metrics::Metrics;
use crate::observability::reasons::FileSourceErrorReason;
use crate::pipeline::{ContainerMeta, Delivery, QueueBudget};
use crate::processing::Pipelines;
use matcher::{Found, Matcher};
use tail::{ReaderShared, Tail, TailContext, TailEnd};
use watcher::DirWatcher;

/// What the file source needs from the agent.
pub struct FileSourceContext {
    pub config: SourcesConfig,
    pub pipeline: mpsc::Sender<Delivery>,
    pub budget: QueueBudget,
    pub metrics: Arc<Metrics>,
    pub checkpoints: Arc<CheckpointStore>,
    pub pipelines: Arc<Pipelines>,
    /// `capture.max_line_bytes`: longer lines are cut, as for containers.
    pub max_line_bytes: usize,
    /// The record's `host` field.
    pub host: String,
}

pub struct FileSource {
    ctx: FileSourceContext,
}

/// Structural inotify events are gathered this long before one rescan.
/// How long inotify events gather before the source passes them on (see `run`).
const WATCH_COALESCE: Duration = Duration::from_millis(20);
const RESCAN_DEBOUNCE: Duration = Duration::from_millis(50);

struct Reader {
    shared: Arc<ReaderShared>,
    cancel: CancellationToken,
}

struct Running {
    tail: Arc<TailContext>,
    readers: HashMap<FileId, Reader>,
    by_path: HashMap<PathBuf, FileId>,
    tasks: JoinSet<(FileId, TailEnd)>,
    /// Which file each task reads (to clean up after a task that panicked).
    task_files: HashMap<tokio::task::Id, FileId>,
    first_scan: bool,
    scan_errors_logged: HashSet<PathBuf>,
}

impl FileSource {
    pub fn new(ctx: FileSourceContext) -> Self {
        FileSource { ctx }
    }

    /// Runs until `cancel`; owns every per-file task and awaits them before returning (and
    /// with them its handles to the queue, so the pipeline can drain).
    pub async fn run(self, cancel: CancellationToken) {
        if self.ctx.config.files.is_empty() {
            return;
        }
        let matcher = match Matcher::new(&self.ctx.config) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                error!(error = %e, "sources.files: cannot compile the globs; host files are not read");
                return;
            }
        };
        let settings = self.ctx.config.file_settings.clone();
        let tail = Arc::new(TailContext {
            pipeline: self.ctx.pipeline.clone(),
            budget: self.ctx.budget.clone(),
            metrics: Arc::clone(&self.ctx.metrics),
            checkpoints: Arc::clone(&self.ctx.checkpoints),
            settings: settings.clone(),
            max_line_bytes: self.ctx.max_line_bytes,
            pool: pool::FdPool::new(settings.max_open_files),
            matcher: Arc::clone(&matcher),
        });
        let mut run = Running {
            tail,
            readers: HashMap::new(),
            by_path: HashMap::new(),
            tasks: JoinSet::new(),
            task_files: HashMap::new(),
            first_scan: true,
            scan_errors_logged: HashSet::new(),
        };
        let mut watcher = DirWatcher::new(&self.ctx.metrics.files);
        let mut rescan = tokio::time::interval(settings.rescan_interval.0);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let scan_soon = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(scan_soon);
        let mut soon_armed = false;
        loop {
            let scan = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(joined) = run.tasks.join_next_with_id(), if !run.tasks.is_empty() => {
                    match joined {
                        Ok((task, (id, end))) => {
                            run.task_files.remove(&task);
                            self.ended(&mut run, id, end);
                        }
                        Err(e) => {
                            // A reader that panicked: its file is free for the next scan.
                            error!(error = %e, "host file reader failed");
                            if let Some(id) = run.task_files.remove(&e.id()) {
                                self.ended(&mut run, id, TailEnd::Failed);
                            }
                        }
                    }
                    false
                }
                // Before the watcher: a busy writer keeps it ready all the time, and a scan
                // due (a file created or renamed) must not wait for the writer to pause.
                _ = &mut scan_soon, if soon_armed => { soon_armed = false; true }
                _ = rescan.tick() => true,
                _ = watcher.changed() => {
                    // A busy writer makes one event per write: let them gather, so the
                    // runtime is woken once per interval, not once per line written.
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(WATCH_COALESCE) => {}
                    }
                    let changes = watcher.take();
                    for p in &changes.modified {
                        if let Some(r) = run.by_path.get(p).and_then(|id| run.readers.get(id)) {
                            r.shared.wake.notify_one();
                        }
                    }
                    if changes.overflow {
                        run.readers.values().for_each(|r| r.shared.wake.notify_one());
                    }
                    if (changes.structure || changes.overflow) && !soon_armed {
                        soon_armed = true;
                        scan_soon.as_mut().reset(tokio::time::Instant::now() + RESCAN_DEBOUNCE);
                    }
                    false
                }
            };
            if !scan {
                continue;
            }
            let m = Arc::clone(&matcher);
            let found = tokio::select! {
                _ = cancel.cancelled() => break,
                r = tokio::task::spawn_blocking(move || m.scan()) => r,
            };
            let Ok(found) = found else { continue };
            for (dir, e) in &found.errors {
                self.ctx.metrics.files.error(FileSourceErrorReason::Scan);
                if run.scan_errors_logged.insert(dir.clone()) {
                    warn!(dir = %dir.display(), error = %e, "cannot list a directory of sources.files globs");
                }
            }
            watcher.watch(&found.dirs, &found.dir_ids, &self.ctx.metrics.files);
            // A scan that could not list some directory does not know what is gone.
            let complete = found.errors.is_empty();
            // Opens and reads on a blocking thread, not in this loop.
            let copies = tokio::select! {
                _ = cancel.cancelled() => break,
                c = self.copies_of_followed(&run, &found.files) => c,
            };
            self.take(
                &mut run,
                found.files,
                &found.dirs,
                &copies,
                complete,
                &cancel,
            );
        }
        // Every reader stops (their tokens are children of `cancel`) and is awaited.
        for r in run.readers.values() {
            r.cancel.cancel();
        }
        while run.tasks.join_next().await.is_some() {}
        self.ctx.metrics.files.watched.set(0);
    }

    fn ended(&self, run: &mut Running, id: FileId, end: TailEnd) {
        if end == TailEnd::Finished {
            // Deleted or rotated out of the globs, read to its end. Forgotten now, not at the
            // next scan: a new file on the same inode must not be taken for it (late
            // acknowledgements of its batches are ignored).
            self.ctx.checkpoints.forget_file(&id.key());
        }
        if let Some(r) = run.readers.remove(&id) {
            run.by_path.retain(|_, v| *v != id);
            debug!(file = %r.shared.path().display(), ?end, "host file reader ended");
        }
        self.ctx.metrics.files.watched.set(run.readers.len() as i64);
    }

    /// A scan's files: new identities get a reader, known ones their current path; stored
    /// positions of identities no longer found are dropped.
    fn take(
        &self,
        run: &mut Running,
        files: Vec<Found>,
        listed: &[PathBuf],
        copies: &HashSet<FileId>,
        complete: bool,
        cancel: &CancellationToken,
    ) {
        // Files of the process's very first scan on a state directory no agent used before
        // existed before the agent's first run (`initial_position`); not after a reload.
        let preexisting = run.first_scan
            && self.ctx.checkpoints.first_file_scan()
            && !self.ctx.checkpoints.had_previous_run;
        let first = std::mem::replace(&mut run.first_scan, false);
        run.by_path.clear();
        let mut seen = HashSet::new();
        for f in files {
            seen.insert(f.id);
            run.by_path.insert(f.path.clone(), f.id);
            if let Some(r) = run.readers.get(&f.id) {
                let current = r.shared.path();
                if current != f.path
                    && crate::sources::follow::id_of_path(&current).ok().flatten() != Some(f.id)
                {
                    self.ctx
                        .checkpoints
                        .file_moved(&f.id.key(), &f.path.display().to_string());
                    *tail_lock(&r.shared.path) = f.path;
                }
                continue;
            }
            // A copytruncate copy whose content a reader delivered and that still waits for
            // its acknowledgements: not read again meanwhile.
            if self.ctx.checkpoints.is_alias_target(&f.id.key()) || copies.contains(&f.id) {
                continue;
            }
            self.spawn(run, f, preexisting, cancel);
        }
        // Positions of files gone (or no longer matched) are forgotten; a reader still
        // finishing one keeps it.
        if !complete {
            self.ctx.metrics.files.watched.set(run.readers.len() as i64);
            return;
        }
        // Only where the directory of the stored path was listed: a directory briefly
        // missing (remount, redeploy) must not make its files be read again from 0.
        let listed: HashSet<&std::path::Path> = listed.iter().map(PathBuf::as_path).collect();
        for (key, p) in self.ctx.checkpoints.file_positions() {
            let dir_listed = std::path::Path::new(&p.path)
                .parent()
                .is_some_and(|d| listed.contains(d));
            if dir_listed && !seen.contains(&p.id) && !run.readers.contains_key(&p.id) {
                if first {
                    info!(file = %p.path, "stored position of a host file no longer found; forgotten");
                }
                self.ctx.checkpoints.forget_file(&key);
            }
        }
        self.ctx.metrics.files.watched.set(run.readers.len() as i64);
    }

    /// The new files without a stored position whose first `fingerprint_bytes` equal a
    /// followed file's: copies of it (logrotate's copytruncate), whose content is read through
    /// the original, which marks the copy read once it sees the truncation. The files are
    /// opened and read on a blocking thread.
    async fn copies_of_followed(&self, run: &Running, files: &[Found]) -> HashSet<FileId> {
        let want = self.ctx.config.file_settings.fingerprint_bytes.0;
        let mut checks = Vec::new();
        for f in files {
            if run.readers.contains_key(&f.id)
                || self.ctx.checkpoints.file_position(&f.id.key()).is_some()
            {
                continue;
            }
            // Only a followed file's rotated names count (`app.log` → `app.log.1`,
            // `app.log-20261201`): two unrelated files may well begin with the same kilobyte.
            let full: Vec<_> = run
                .readers
                .values()
                .filter(|r| identity::rotated_name_of(&f.path, &r.shared.path()))
                .filter_map(|r| *tail_lock(&r.shared.fingerprint))
                .filter(|fp| fp.len >= want && want > 0)
                .collect();
            if !full.is_empty() {
                checks.push((f.id, f.path.clone(), full));
            }
        }
        if checks.is_empty() {
            return HashSet::new();
        }
        tokio::task::spawn_blocking(move || {
            checks
                .into_iter()
                .filter_map(|(id, path, full)| {
                    let file = std::fs::File::open(&path).ok()?;
                    let fp = crate::sources::follow::fingerprint_of(&file, want).ok()?;
                    full.contains(&fp).then(|| {
                        debug!(file = %path.display(), "same first bytes as a followed file (a copytruncate copy): not read");
                        id
                    })
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    fn spawn(&self, run: &mut Running, f: Found, preexisting: bool, cancel: &CancellationToken) {
        let group = &run.tail.matcher.groups[f.group];
        let processor = group.pipeline.as_deref().and_then(|name| {
            match self
                .ctx
                .pipelines
                .processor_named(name, &self.ctx.metrics.processing)
            {
                Some(Ok(p)) => Some(p),
                other => {
                    self.ctx.metrics.files.error(FileSourceErrorReason::Pipeline);
                    warn!(file = %f.path.display(), pipeline = name, error = ?other.and_then(Result::err).map(|e| e.to_string()),
                        "processing pipeline unavailable; lines pass unprocessed");
                    None
                }
            }
        });
        let key = f.id.key();
        let meta = Arc::new(ContainerMeta::for_file(
            key,
            f.path.display().to_string(),
            self.ctx.host.clone(),
            group.fields.clone(),
        ));
        let shared = Arc::new(ReaderShared::new(f.path.clone()));
        let token = cancel.child_token();
        let tail = Tail {
            ctx: Arc::clone(&run.tail),
            shared: Arc::clone(&shared),
            id: f.id,
            group: f.group,
            preexisting,
            meta,
            processor,
            cancel: token.clone(),
        };
        let id = f.id;
        let task = run.tasks.spawn(async move { (id, tail.run().await) });
        run.task_files.insert(task.id(), id);
        run.readers.insert(
            f.id,
            Reader {
                shared,
                cancel: token,
            },
        );
        debug!(file = %f.path.display(), "following host file");
    }
}

fn tail_lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
