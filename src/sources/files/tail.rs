//! One file's reader: opens it (within the descriptor budget), decides where to start, reads
//! large chunks on a blocking thread, splits them into lines, hands batches to the pipeline
//! queue, and follows the file across copytruncate, rename and delete (see the README's
//! "Host log files" for the rules). Every wait races the reader's cancellation token.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::identity::{self, Start};
use super::lines::Splitter;
use super::matcher::Matcher;
use super::metrics::PathLabels;
use super::pool::{FdPermit, FdPool};
use crate::checkpoint::{CheckpointStore, FileId, FilePosition, Fingerprint};
use crate::clock::now_ns;
use crate::config::FileSettings;
use crate::observability::metrics::Metrics;
use crate::observability::reasons::{FileSourceErrorReason, HostFileRotationKind};
use crate::pipeline::{ContainerMeta, Delivery, QueueBudget};
use crate::processing::Processor;
use crate::sources::follow::{Followed, PathState};

/// Bytes read at once.
pub const CHUNK: usize = 256 * 1024;

/// How long a reader at the end of its file lets inotify wake-ups gather before it reads
/// again (see `Tail::wait`): bounds the reads of a file written line by line to ~40 a second,
/// at 25 ms of added latency.
const WAKE_COALESCE: Duration = Duration::from_millis(25);

/// What every reader shares.
pub struct TailContext {
    pub pipeline: mpsc::Sender<Delivery>,
    pub budget: QueueBudget,
    pub metrics: Arc<Metrics>,
    pub checkpoints: Arc<CheckpointStore>,
    pub settings: FileSettings,
    pub max_line_bytes: usize,
    pub pool: FdPool,
    pub matcher: Arc<Matcher>,
}

/// What the source and one reader share.
pub struct ReaderShared {
    /// Where the file is now (a rescan that finds it under another name updates it).
    pub path: Mutex<PathBuf>,
    /// Rung on inotify events for the path.
    pub wake: Notify,
    /// The file's fingerprint now (the source takes a new file with the same one for a copy).
    pub fingerprint: Mutex<Option<Fingerprint>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl ReaderShared {
    pub fn new(path: PathBuf) -> Self {
        ReaderShared {
            path: Mutex::new(path),
            wake: Notify::new(),
            fingerprint: Mutex::new(None),
        }
    }

    pub fn path(&self) -> PathBuf {
        lock(&self.path).clone()
    }
}

/// How a reader ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TailEnd {
    Cancelled,
    /// Deleted, rotated out of the globs, or replaced while closed: done with it.
    Finished,
    /// It could not be opened (or was another file by then); a rescan may try again.
    Failed,
}

pub struct Tail {
    pub ctx: Arc<TailContext>,
    pub shared: Arc<ReaderShared>,
    pub id: FileId,
    pub group: usize,
    /// It was found by the first scan of an agent that never ran on this state directory.
    pub preexisting: bool,
    pub meta: Arc<ContainerMeta>,
    pub processor: Option<Processor>,
    pub cancel: CancellationToken,
}

/// What a reader holds while it runs.
struct Open {
    file: Option<(Followed, FdPermit)>,
    splitter: Splitter,
    fingerprint: Fingerprint,
    /// Offset of the last batch handed over.
    handed: u64,
    last_data: Instant,
    key: String,
    lag: PathLabels,
}

/// Reads one chunk into `buf` (empty, with room for a chunk) on a blocking thread; None if
/// the blocking pool is gone (shutdown).
async fn read_chunk(
    mut f: Followed,
    mut buf: Vec<u8>,
) -> Option<(Followed, std::io::Result<usize>, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        let r = f.read(&mut buf, CHUNK);
        (f, r, buf)
    })
    .await
    .ok()
}

impl Tail {
    pub async fn run(mut self) -> TailEnd {
        let ctx = Arc::clone(&self.ctx);
        let key = self.id.key();
        let Some(mut st) = self.start(&key).await else {
            return if self.cancel.is_cancelled() {
                TailEnd::Cancelled
            } else {
                TailEnd::Failed
            };
        };
        let end = self.follow(&mut st).await;
        ctx.metrics.files.release_lag(&st.lag, self.id);
        end
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        tokio::task::spawn_blocking(f).await.ok()
    }

    /// Opens the file and decides where to start (see `identity::decide`).
    async fn start(&mut self, key: &str) -> Option<Open> {
        let ctx = Arc::clone(&self.ctx);
        let permit = ctx.pool.acquire(&ctx.metrics, &self.cancel).await?;
        let path = self.shared.path();
        let stored = ctx.checkpoints.file_position(key);
        let at_end = self.preexisting
            && ctx.matcher.groups[self.group].initial_position
                == crate::config::InitialPosition::End;
        let fp_bytes = ctx.settings.fingerprint_bytes.0;
        let p = path.clone();
        let opened = self
            .blocking(move || {
                let f = Followed::open(&p, 0)?;
                let file = std::fs::File::open(&p)?;
                let start = identity::decide(&file, stored.as_ref(), fp_bytes, at_end)?;
                Ok::<_, std::io::Error>((f, start))
            })
            .await?;
        let (mut followed, start) = match opened {
            Ok(v) => v,
            Err(e) => {
                ctx.metrics.files.error(FileSourceErrorReason::Open);
                warn!(file = %path.display(), error = %e, "cannot open host file; the rescan tries again");
                return None;
            }
        };
        if followed.id != self.id {
            debug!(file = %path.display(), "another file is at the path now; the rescan takes it");
            return None;
        }
        let (offset, fingerprint) = match start {
            Start::Resume {
                offset,
                fingerprint,
            } => {
                debug!(file = %path.display(), offset, "resuming host file");
                // Found under another name than it was read under (renamed while stopped).
                ctx.checkpoints.file_moved(key, &path.display().to_string());
                (offset, fingerprint)
            }
            Start::New {
                offset,
                fingerprint,
                reused,
                truncated,
            } => {
                if reused {
                    ctx.metrics.files.inode_reuses.inc();
                    info!(file = %path.display(), "inode of a stored position now holds another file: read from its start");
                }
                if truncated {
                    ctx.metrics.files.truncations.inc();
                    info!(file = %path.display(), "file shorter than its stored position (truncated while stopped): read from its start");
                }
                ctx.checkpoints.init_file(
                    key,
                    FilePosition {
                        path: path.display().to_string(),
                        id: self.id,
                        fingerprint,
                        offset,
                    },
                );
                (offset, fingerprint)
            }
        };
        if offset > 0 && followed.seek_to(offset).is_err() {
            ctx.metrics.files.error(FileSourceErrorReason::Read);
            return None;
        }
        *lock(&self.shared.fingerprint) = Some(fingerprint);
        Some(Open {
            file: Some((followed, permit)),
            splitter: Splitter::new(ctx.max_line_bytes, offset),
            fingerprint,
            handed: offset,
            last_data: Instant::now(),
            key: key.to_string(),
            lag: PathLabels {
                path: path.display().to_string(),
            },
        })
    }

    fn position(&self, st: &Open, offset: u64) -> FilePosition {
        FilePosition {
            path: self.shared.path().display().to_string(),
            id: self.id,
            fingerprint: st.fingerprint,
            offset,
        }
    }

    /// Upgrades a short fingerprint to cover what was read, up to `fingerprint_bytes` (`read`:
    /// the offset read to): a file found empty or small is then told apart from a later file
    /// on the same inode, and its copytruncate copy is recognised by what we read of it.
    fn upgrade_fingerprint(&self, st: &mut Open, read: u64) {
        let want = self.ctx.settings.fingerprint_bytes.0.min(read);
        if st.fingerprint.len >= want {
            return;
        }
        let Some((f, _)) = &st.file else { return };
        let Ok(fp) = f.fingerprint(want) else {
            self.ctx
                .metrics
                .files
                .error(FileSourceErrorReason::Fingerprint);
            return;
        };
        // Shorter: truncated since the read; the truncation is seen at the end of the file.
        if fp.len < want {
            return;
        }
        // The acknowledged offset with the new fingerprint; acknowledgements of batches still
        // in flight under the old one are ignored, later ones move it on.
        let acked = self
            .ctx
            .checkpoints
            .file_position(&st.key)
            .map_or(0, |p| p.offset);
        st.fingerprint = fp;
        *lock(&self.shared.fingerprint) = Some(fp);
        self.ctx
            .checkpoints
            .init_file(&st.key, self.position(st, acked));
    }

    async fn follow(&mut self, st: &mut Open) -> TailEnd {
        let ctx = Arc::clone(&self.ctx);
        let settings = ctx.settings.clone();
        // Since when the path no longer names the file (rotated away or deleted): it is read
        // until it has had no new data for `flush_partial_after` (a writer may not have
        // reopened yet), then finished.
        let mut away_since: Option<Instant> = None;
        // The read buffer, kept across reads (see `chunk_of`).
        let mut scratch = Vec::with_capacity(CHUNK);
        loop {
            if self.cancel.is_cancelled() {
                return TailEnd::Cancelled;
            }
            let Some((followed, permit)) = st.file.take() else {
                match self.reopen(st).await {
                    Reopen::Open => continue,
                    Reopen::Gone => return self.finish(st, HostFileRotationKind::Delete).await,
                    Reopen::Cancelled => return TailEnd::Cancelled,
                }
            };
            let (followed, read, buf) = tokio::select! {
                _ = self.cancel.cancelled() => return TailEnd::Cancelled,
                r = read_chunk(followed, std::mem::take(&mut scratch)) => match r {
                    Some(r) => r,
                    None => return TailEnd::Cancelled,
                },
            };
            scratch = buf;
            st.file = Some((followed, permit));
            match read {
                Ok(n) if n > 0 => {
                    ctx.metrics.files.bytes_read.inc_by(n as u64);
                    st.last_data = Instant::now();
                    // Before the batch is built: it must carry the fingerprint its
                    // acknowledgement is checked against (the bytes are on disk already).
                    self.upgrade_fingerprint(st, st.splitter.read_offset() + n as u64);
                    if !self
                        .deliver(st, Some(chunk_of(&mut scratch)), Flush::None)
                        .await
                    {
                        return TailEnd::Cancelled;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    ctx.metrics.files.error(FileSourceErrorReason::Read);
                    warn!(file = %self.shared.path().display(), error = %e, "cannot read host file; retrying");
                    if !self.sleep(settings.poll_interval.0).await {
                        return TailEnd::Cancelled;
                    }
                    continue;
                }
            }
            // At the end of what the file has now. The path asked about is where the file is
            // now (a rescan or a rename within the globs may have moved it). One stat of the
            // path and one fstat, at most once per wake-up: kept on the runtime (a blocking
            // task each would cost more than the stats themselves on a local disk).
            let path = self.shared.path();
            let state = st.file.as_mut().map(|(f, _)| {
                f.path = path;
                (f.path_state(), f.size())
            });
            let Some((state, size)) = state else { continue };
            match state {
                Ok(PathState::Same) => {
                    away_since = None;
                    // Only while the path names this file (not once another took its place).
                    if let Ok(size) = size {
                        self.set_lag(st, size);
                    }
                }
                Ok(PathState::Truncated { size }) => {
                    if !self.truncated(st, size).await {
                        return TailEnd::Cancelled;
                    }
                    continue;
                }
                Ok(PathState::Replaced(_)) | Ok(PathState::Gone) => {
                    if self.renamed_within_globs().await {
                        ctx.metrics.files.rotation(HostFileRotationKind::Rename);
                        away_since = None;
                        continue;
                    }
                    let since = *away_since.get_or_insert_with(Instant::now);
                    let quiet = st.last_data.elapsed().min(since.elapsed());
                    if quiet >= settings.flush_partial_after.0 {
                        let kind = if matches!(state, Ok(PathState::Gone)) {
                            HostFileRotationKind::Delete
                        } else {
                            HostFileRotationKind::Rename
                        };
                        return self.finish(st, kind).await;
                    }
                }
                Err(e) => {
                    ctx.metrics.files.error(FileSourceErrorReason::Stat);
                    debug!(file = %self.shared.path().display(), error = %e, "cannot stat host file");
                }
            }
            // Nothing to read: flush what is due, give the descriptor up when idle, wait.
            let idle = st.last_data.elapsed();
            if st.splitter.has_partial() && idle >= settings.flush_partial_after.0 {
                if !self.deliver(st, None, Flush::Due).await {
                    return TailEnd::Cancelled;
                }
            } else if self
                .processor
                .as_ref()
                .and_then(Processor::due_ns)
                .is_some_and(|d| d <= now_ns())
                && !self.deliver(st, None, Flush::None).await
            {
                return TailEnd::Cancelled;
            }
            // A file rotated away is kept open until it is finished: closed, it could not be
            // found again.
            if away_since.is_none() && (idle >= settings.close_inactive.0 || ctx.pool.contended()) {
                debug!(file = %self.shared.path().display(), "closing idle host file");
                st.file = None;
                continue;
            }
            let mut wait = settings.poll_interval.0;
            if st.splitter.has_partial() {
                wait = wait.min(settings.flush_partial_after.0.saturating_sub(idle));
            }
            if let Some(due) = self.processor.as_ref().and_then(Processor::due_ns) {
                wait = wait.min(Duration::from_nanos(
                    u64::try_from(due - now_ns()).unwrap_or(0),
                ));
            }
            if !self.wait(wait).await {
                return TailEnd::Cancelled;
            }
        }
    }

    /// `size` minus the acknowledged offset, as the file's lag.
    /// The series is keyed by the file's current path (moved when it was renamed).
    fn set_lag(&self, st: &mut Open, size: u64) {
        let acked = self
            .ctx
            .checkpoints
            .file_position(&st.key)
            .map_or(0, |p| p.offset);
        let m = &self.ctx.metrics.files;
        let path = self.shared.path().display().to_string();
        if st.lag.path != path {
            m.release_lag(&st.lag, self.id);
            st.lag = PathLabels { path };
        }
        m.set_lag(&st.lag, self.id, size.saturating_sub(acked) as i64);
    }

    /// Waits for an inotify wake-up or `d`; false when cancelled. After a wake-up it waits
    /// [`WAKE_COALESCE`] more, so that a writer appending one line per `write()` (one inotify
    /// event each) is read in one step per interval, not one blocking read per line.
    async fn wait(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = self.shared.wake.notified() => self.sleep(WAKE_COALESCE.min(d)).await,
            _ = tokio::time::sleep(d) => true,
        }
    }

    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    None,
    /// The held partial line is due (`flush_partial_after`).
    Due,
    /// The file is done (or its content was truncated): everything held goes out.
    All,
}

/// A read as the batch's buffer; `buf` is left empty with room for the next chunk. A short
/// read (a file written slowly) is copied into a buffer of its size and `buf` is kept: its
/// lines must not pin a whole `CHUNK`-sized allocation for as long as the batch lives (the
/// queue budget charges what the lines hold), and a reader woken for a few lines must not
/// allocate a chunk each time. Long reads are used as they are (no copy on the hot path), at
/// most 4/3 of what is charged, and a new buffer takes their place.
fn chunk_of(buf: &mut Vec<u8>) -> Bytes {
    if buf.len() < CHUNK * 3 / 4 {
        let chunk = Bytes::copy_from_slice(buf);
        buf.clear();
        chunk
    } else {
        Bytes::from(std::mem::replace(buf, Vec::with_capacity(CHUNK)))
    }
}

#[path = "tail_deliver.rs"]
mod deliver;
#[path = "tail_rotation.rs"]
mod rotation;
use rotation::Reopen;

#[cfg(test)]
#[path = "tail_tests.rs"]
pub(super) mod tests;
