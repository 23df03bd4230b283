//! NDJSON files, one per path the template yields (usually one per container).
//!
//! What the writer may rely on (see [`Sink`]):
//! - a file whose path cannot be opened for a reason that is this container's own (permission,
//!   name, a file where a directory should be) fails the batch as [`WriteError::Container`]:
//!   the writer holds that container and the others go on;
//! - everything else (disk full, I/O errors, no file descriptor to spare) fails as
//!   [`WriteError::Sink`]: the writer retries;
//! - bytes written since the last [`Sink::commit`] are the only ones [`Sink::abandon`] removes,
//!   and a file never keeps a torn last record: it is cut at open and at abandon, so a record
//!   read again after a restart is written once, whole.
//!
//! Files are closed when idle (`idle_close`), when their container's stream has ended, and
//! least recently used first when `max_open_files` is reached or the process runs out of
//! file descriptors — only ever once everything written to them is acknowledged.
//!
//! Files change only at a durable point ([`Sink::commit`]: everything written is acknowledged)
//! or at open, so no record is split or lost across files (see [`rotate`]):
//! - **Rotation** (`rotate.max_bytes`, `rotate.max_age`): the live file is renamed to its next
//!   numbered name; compression and `max_files` are done by a thread the sink owns.
//! - **`{date}`**: a batch goes to the file of the UTC day it is written on; at the first
//!   durable point of a new day, the previous day's files are closed.
//! - **Moved away** (an external logrotate): at most once a second, at a durable point, each
//!   open file's path is checked; if it is gone or is another inode, the file is closed and the
//!   path reopened (created) at the next write.

mod error;
mod naming;
mod open;
mod rotate;
mod settings;

pub use naming::PathTemplate;
pub use open::Modes;
pub use settings::{FileSinkSettings, check_placeholders, template_of};

use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, warn};

use super::ndjson::encode_line;
use super::{Durability, Sink, WriteError, write_out};
use crate::observability::metrics::{Metrics, SinkLabels};
use crate::observability::reasons::FileRotationReason;
use crate::pipeline::{Batch, ContainerMeta};
use open::{is_fd_limit, with_path};

/// Encoded bytes a file may hold before a batch writes them out ahead of the flush.
const WRITE_AHEAD_BYTES: usize = 256 * 1024;
/// A written-out buffer keeps its allocation only up to this size. One busy moment can grow
/// a file's buffer to a large batch's encoding; kept by every file of a hundred containers,
/// that was most of the agent's memory beyond the queue budget.
const RETAINED_BUF_BYTES: usize = 16 * 1024;
/// How often open files' paths are checked for having been moved away (an external logrotate).
const MOVED_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long after a failed rotation (rename) a file is tried again.
const ROTATE_RETRY: Duration = Duration::from_secs(30);

/// Paths remembered as looked after (see `FileSink::upkept`).
const UPKEPT_REMEMBERED: usize = 10_000;

/// The wall clock (replaced in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

struct OpenFile {
    file: File,
    /// Encoded records not yet written out.
    buf: Vec<u8>,
    last_write: Instant,
    /// Order of last use, for closing the least recently used file.
    last_use: u64,
    /// Bytes written out since the last commit: what `abandon` removes again.
    uncommitted: u64,
    /// Written out since the last fsync.
    unsynced: bool,
    /// The container's stream has ended: close once everything is committed.
    ended: bool,
    /// Bytes in the file (at open, plus what was written since).
    size: u64,
    /// When the file was created (or, if the file system does not say, opened).
    created: SystemTime,
    /// The `{date}` it was opened for (empty without `{date}`).
    date: String,
    /// Device and inode, to notice the path being moved away.
    dev_ino: (u64, u64),
    /// A rotation of this file failed then: not tried again before `ROTATE_RETRY` passed
    /// (one warning per attempt, not one per flush).
    rotate_failed: Option<Instant>,
}

impl OpenFile {
    /// Nothing buffered and nothing unacknowledged: safe to close.
    fn clean(&self) -> bool {
        self.buf.is_empty() && self.uncommitted == 0
    }

    /// Writes the buffer out, keeping only what was not written.
    fn write_buffered(&mut self) -> io::Result<()> {
        let before = self.buf.len();
        let result = write_out(&mut self.file, &mut self.buf);
        let written = (before - self.buf.len()) as u64;
        if written > 0 {
            self.size += written;
            self.uncommitted += written;
            self.unsynced = true;
        }
        if self.buf.is_empty() && self.buf.capacity() > RETAINED_BUF_BYTES {
            self.buf = Vec::new();
        }
        result
    }
}

pub struct FileSink {
    settings: FileSinkSettings,
    files: HashMap<PathBuf, OpenFile>,
    /// Directories whose entries changed since the last sync (new files, new directories).
    dirs_to_sync: BTreeSet<PathBuf>,
    uses: u64,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// When open files' paths were last checked for having been moved away.
    moved_checked: Instant,
    /// Paths whose rotated files were looked after in this run (leftovers of a crash).
    upkept: std::collections::HashSet<PathBuf>,
    upkeeper: Option<rotate::Upkeeper>,
}

impl FileSink {
    pub fn new(settings: FileSinkSettings, metrics: Arc<Metrics>) -> Self {
        let upkeeper = settings.rotate.has_upkeep().then(|| {
            rotate::Upkeeper::start(
                settings.rotate.clone(),
                settings.modes.file,
                Arc::clone(&metrics),
            )
        });
        FileSink {
            settings,
            files: HashMap::new(),
            dirs_to_sync: BTreeSet::new(),
            uses: 0,
            metrics,
            clock: Arc::new(SystemTime::now),
            moved_checked: Instant::now(),
            upkept: std::collections::HashSet::new(),
            upkeeper,
        }
    }

    /// A sink writing to `template` with no rotation, a minute's idle close and the default
    /// modes: the tests' usual one.
    #[cfg(test)]
    pub(crate) fn for_tests(
        template: &str,
        durability: Durability,
        max_open_files: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        FileSink::new(
            FileSinkSettings {
                template: PathTemplate::new(template).expect("template"),
                idle_close: Duration::from_secs(60),
                modes: Modes::default(),
                durability,
                max_open_files,
                rotate: rotate::RotatePolicy::default(),
            },
            metrics,
        )
    }

    /// Today's `{date}` (empty when the template has none).
    fn today(&self) -> String {
        if self.settings.template.has_date() {
            naming::utc_date((self.clock)())
        } else {
            String::new()
        }
    }

    pub fn path_for(&self, meta: &ContainerMeta) -> PathBuf {
        self.settings.template.path_for(meta, &self.today())
    }

    fn count_rotation(&self, reason: FileRotationReason) {
        self.metrics
            .file_sink_rotations
            .get_or_create(&crate::observability::metrics::ReasonLabels {
                reason: reason.as_label(),
            })
            .inc();
    }

    /// Renames a live file with nothing unacknowledged to its next rotated name. False (logged
    /// and counted) if that failed: writing goes on into the same file.
    fn rotate_file(&mut self, path: &Path, reason: FileRotationReason) -> bool {
        match rotate::rotate(path) {
            Ok(to) => {
                self.count_rotation(reason);
                tracing::info!(file = %path.display(), rotated = %to.display(), reason = reason.as_label(), "rotated");
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    self.dirs_to_sync.insert(dir.to_path_buf());
                }
                if let Some(u) = &self.upkeeper {
                    u.request(path);
                }
                true
            }
            Err(e) => {
                self.metrics.file_sink_rotation_failures.inc();
                warn!(file = %path.display(), error = %e, reason = reason.as_label(),
                    "cannot rotate; writing goes on into the same file");
                false
            }
        }
    }

    /// Rotates the open files that are due, closes those of a past `{date}` and those whose
    /// path was moved away. Only called when every open file is clean (all acknowledged).
    fn rotate_due(&mut self) {
        let now = (self.clock)();
        let today = self.today();
        let check_moved = self.moved_checked.elapsed() >= MOVED_CHECK_EVERY;
        if check_moved {
            self.moved_checked = Instant::now();
        }
        let mut close: Vec<(PathBuf, Option<FileRotationReason>)> = Vec::new();
        for (path, f) in &self.files {
            if !f.clean() {
                continue;
            }
            if f.date != today {
                close.push((path.clone(), None));
                continue;
            }
            if check_moved {
                let moved = match std::fs::metadata(path) {
                    Ok(m) => (m.dev(), m.ino()) != f.dev_ino,
                    Err(e) => e.kind() == io::ErrorKind::NotFound,
                };
                if moved {
                    self.count_rotation(FileRotationReason::External);
                    tracing::info!(file = %path.display(),
                        "the file was moved away or deleted (external rotation); reopening the path");
                    close.push((path.clone(), None));
                    continue;
                }
            }
            if f.rotate_failed
                .is_some_and(|at| at.elapsed() < ROTATE_RETRY)
            {
                continue;
            }
            let age = now.duration_since(f.created).unwrap_or_default();
            if let Some(reason) = self.settings.rotate.due(f.size, age) {
                close.push((path.clone(), Some(reason)));
            }
        }
        for (path, reason) in close {
            match reason {
                Some(reason) => {
                    if self.rotate_file(&path, reason) {
                        self.files.remove(&path);
                    } else if let Some(f) = self.files.get_mut(&path) {
                        f.rotate_failed = Some(Instant::now());
                    }
                }
                None => {
                    if let Some(f) = self.files.remove(&path)
                        && f.date != today
                    {
                        self.count_rotation(FileRotationReason::Date);
                    }
                }
            }
        }
        self.update_open_gauge();
    }

    fn labels() -> SinkLabels {
        SinkLabels { sink: "file" }
    }

    fn update_open_gauge(&self) {
        self.metrics
            .file_sink_files_open
            .set(self.files.len() as i64);
    }

    /// Closes the least recently used file that is safe to close. False if none is.
    fn close_least_recently_used(&mut self) -> bool {
        let victim = self
            .files
            .iter()
            .filter(|(_, f)| f.clean())
            .min_by_key(|(_, f)| f.last_use)
            .map(|(p, _)| p.clone());
        match victim {
            Some(path) => {
                self.files.remove(&path);
                self.update_open_gauge();
                true
            }
            None => false,
        }
    }
}

impl Drop for FileSink {
    /// Its files close with it (a config reload starts another sink): the gauge follows.
    fn drop(&mut self) {
        self.metrics.file_sink_files_open.set(0);
    }
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn durability(&self) -> Durability {
        self.settings.durability
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), WriteError> {
        let path = self.path_for(&batch.container);
        if !self.files.contains_key(&path) {
            // The only point where a batch is refused before anything is buffered.
            self.open(&path)?;
        }
        self.uses += 1;
        let Some(entry) = self.files.get_mut(&path) else {
            return Err(WriteError::Sink(io::Error::other(
                "file vanished after open",
            )));
        };
        // Hand large buffers to the kernel early rather than growing them until the flush
        // (200 ms of a firehose is tens of MiB). Done before encoding, so that a failed
        // write leaves this batch unencoded for the retry, and nothing is written twice.
        if entry.buf.len() >= WRITE_AHEAD_BYTES {
            entry
                .write_buffered()
                .map_err(|e| WriteError::Sink(with_path(&path, e)))?;
        }
        for line in &batch.lines {
            encode_line(&mut entry.buf, &batch.container, line);
        }
        entry.last_write = Instant::now();
        entry.last_use = self.uses;
        entry.ended = false;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut first_error = None;
        for (path, f) in &mut self.files {
            if !f.buf.is_empty()
                && let Err(e) = f.write_buffered()
            {
                first_error.get_or_insert(with_path(path, e));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut synced = false;
        for (path, f) in &mut self.files {
            if f.unsynced {
                f.file.sync_data().map_err(|e| with_path(path, e))?;
                f.unsynced = false;
                synced = true;
            }
        }
        // A new file survives a power loss only once its directory entry is on disk too.
        while let Some(dir) = self.dirs_to_sync.first().cloned() {
            match File::open(&dir) {
                Ok(d) => d.sync_all().map_err(|e| with_path(&dir, e))?,
                // No descriptor to spare for the directory (every one may be held by streams
                // and unacknowledged files, which only a successful sync lets go): sync(2)
                // needs none and covers every directory at once.
                Err(e) if is_fd_limit(&e) => {
                    rustix::fs::sync();
                    self.dirs_to_sync.clear();
                    synced = true;
                    break;
                }
                Err(e) => return Err(with_path(&dir, e)),
            }
            self.dirs_to_sync.remove(&dir);
            synced = true;
        }
        if synced {
            self.metrics.sink_syncs.get_or_create(&Self::labels()).inc();
        }
        Ok(())
    }

    fn commit(&mut self) {
        let idle = self.settings.idle_close;
        for f in self.files.values_mut() {
            // Nothing is unsynced here when the policy syncs: the writer syncs right before.
            f.uncommitted = 0;
        }
        self.rotate_due();
        self.files
            .retain(|_, f| !(f.clean() && (f.ended || f.last_write.elapsed() >= idle)));
        self.update_open_gauge();
    }

    fn abandon(&mut self) {
        for (path, f) in &mut self.files {
            f.buf.clear();
            if f.uncommitted == 0 {
                continue;
            }
            // Cut what was written after the last acknowledgement (possibly a torn record):
            // those lines are read again after the restart and written then, once.
            let cut = f.file.metadata().and_then(|m| {
                let keep = m.len().saturating_sub(f.uncommitted);
                f.file.set_len(keep).map(|()| keep)
            });
            match cut {
                Ok(keep) => {
                    warn!(file = %path.display(), removed_bytes = f.uncommitted, length = keep,
                        "giving up: cut the file back to its last acknowledged record");
                    f.uncommitted = 0;
                }
                Err(e) => error!(file = %path.display(), error = %e,
                    "giving up: cannot cut unacknowledged records; they may be written again after restart"),
            }
        }
        self.files.clear();
        self.update_open_gauge();
    }

    fn end_of_stream(&mut self, container: &ContainerMeta) {
        let path = self.path_for(container);
        if let Some(f) = self.files.get_mut(&path) {
            f.ended = true;
        }
    }
}

#[cfg(test)]
mod tests;
