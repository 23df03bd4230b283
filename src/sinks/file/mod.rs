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

mod naming;
mod open;
mod rotate;

pub use naming::PathTemplate;
pub use open::Modes;
pub use rotate::RotatePolicy;

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
use crate::pipeline::{Batch, ContainerMeta};

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

pub struct FileSinkSettings {
    pub template: PathTemplate,
    pub idle_close: Duration,
    pub modes: Modes,
    pub durability: Durability,
    /// At most this many output files open at once (least recently used closed first).
    pub max_open_files: usize,
    /// Rotation (none: `RotatePolicy::default()`).
    pub rotate: RotatePolicy,
}

/// `sinks.file.path` checked, with room for the rotation suffix when `rotate` is set.
pub fn template_of(c: &crate::config::FileSinkConfig) -> Result<PathTemplate, String> {
    let room = if c.rotate.is_some() {
        rotate::SUFFIX_ROOM
    } else {
        0
    };
    PathTemplate::reserving(&c.path, room).map_err(|e| format!("sinks.file.path: {e}"))
}

/// Every `{NAME}` placeholder of `sinks.file.path` that is not built in must be a container
/// label copied by `processing.container_labels` (matching one of its globs) or a field of a
/// `sources.files` group (`group_fields`): anything else is a typo that would put every
/// container in a `_unknown` directory.
pub fn check_placeholders(
    c: &crate::config::FileSinkConfig,
    container_labels: &[String],
    group_fields: &[&str],
) -> Result<(), String> {
    let template = template_of(c)?;
    for name in template.label_placeholders() {
        if !group_fields.contains(&name)
            && !container_labels
                .iter()
                .any(|g| crate::discovery::filter::glob_match(g, name))
        {
            return Err(format!(
                "sinks.file.path: unknown placeholder {{{name}}}: not {{container_name}}, \
                 {{container_id}}, {{date}}, a container field ({}), a container label \
                 copied by processing.container_labels or a field of a sources.files group",
                naming::CONTAINER_FIELDS
                    .iter()
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

impl FileSinkSettings {
    /// From the validated `sinks.file` configuration.
    pub fn from_config(c: &crate::config::FileSinkConfig) -> Result<Self, String> {
        use crate::config::FileFsync;
        Ok(FileSinkSettings {
            template: template_of(c)?,
            idle_close: c.idle_close.0,
            modes: Modes {
                file: c.file_mode()?,
                dir: c.directory_mode()?,
            },
            durability: match c.fsync {
                FileFsync::Always => Durability::Always,
                FileFsync::Interval => Durability::Interval(c.fsync_interval.0),
                FileFsync::Never => Durability::Never,
            },
            max_open_files: c.max_open_files.max(1),
            rotate: c
                .rotate
                .as_ref()
                .map(|r| RotatePolicy {
                    max_bytes: r.max_bytes.map(|b| b.0),
                    max_age: r.max_age.map(|a| a.0),
                    max_files: r.max_files,
                    gzip: r.compress == crate::config::RotateCompress::Gzip,
                })
                .unwrap_or_default(),
        })
    }
}

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

    fn count_rotation(&self, reason: &'static str) {
        self.metrics
            .file_sink_rotations
            .get_or_create(&crate::observability::metrics::ReasonLabels { reason })
            .inc();
    }

    /// Renames a live file with nothing unacknowledged to its next rotated name. False (logged
    /// and counted) if that failed: writing goes on into the same file.
    fn rotate_file(&mut self, path: &Path, reason: &'static str) -> bool {
        match rotate::rotate(path) {
            Ok(to) => {
                self.count_rotation(reason);
                tracing::info!(file = %path.display(), rotated = %to.display(), reason, "rotated");
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
                warn!(file = %path.display(), error = %e, reason,
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
        let mut close: Vec<(PathBuf, Option<&'static str>)> = Vec::new();
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
                    self.count_rotation("external");
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
                        self.count_rotation("date");
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

    fn open(&mut self, path: &Path) -> Result<(), WriteError> {
        if self.files.len() >= self.settings.max_open_files && !self.close_least_recently_used() {
            return Err(WriteError::Sink(io::Error::other(format!(
                "{}: {} files open (sinks.file.max_open_files) and none can be closed before \
                 the next flush",
                path.display(),
                self.files.len()
            ))));
        }
        // A failure in the part of the path every container shares (or in the one file all
        // share) is the sink's: retried, in order, nothing held. Only a failure in the
        // container's own part can be that container's alone.
        let (shared_dir, per_container) = self.settings.template.shared_part();
        if let Some(dir) = shared_dir {
            // As many components of this path: `{date}` in the shared part is this path's day
            // (placeholders never add a `/`: names are encoded).
            let dir: PathBuf = path.components().take(dir.components().count()).collect();
            let mut changed = Vec::new();
            open::create_dirs(&dir, self.settings.modes.dir, &mut changed)
                .map_err(|e| WriteError::Sink(with_path(&dir, e)))?;
            self.dirs_to_sync.extend(changed);
        }
        let mut rotated_at_open = false;
        loop {
            match open::open_for_append(path, self.settings.modes) {
                Ok(opened) => {
                    if opened.torn_bytes > 0 {
                        self.metrics
                            .sink_torn_records
                            .get_or_create(&Self::labels())
                            .inc();
                        warn!(file = %path.display(), bytes = opened.torn_bytes,
                            "output file ended in a torn record (an earlier run stopped mid-write); cut it away");
                    }
                    self.dirs_to_sync.extend(opened.changed_dirs);
                    let meta = opened
                        .file
                        .metadata()
                        .map_err(|e| WriteError::Sink(with_path(path, e)))?;
                    // An empty file (new, or created by an external logrotate) ages from now.
                    let created = match meta.created() {
                        Ok(t) if meta.len() > 0 => t,
                        _ => (self.clock)(),
                    };
                    let age = (self.clock)().duration_since(created).unwrap_or_default();
                    // A file left due by an earlier run (or while it was closed) rotates
                    // before anything is written to it: it holds only acknowledged records.
                    if !rotated_at_open
                        && let Some(reason) = self.settings.rotate.due(meta.len(), age)
                    {
                        rotated_at_open = true;
                        // Renamed while open, then closed: the loop opens a new file. If the
                        // rename failed, writing goes on into this one.
                        if self.rotate_file(path, reason) {
                            continue;
                        }
                    }
                    if let Some(u) = &self.upkeeper
                        && !self.upkept.contains(path)
                    {
                        // Leftovers of an earlier run (a crash mid-compression, files beyond
                        // max_files) are looked after once per path and run. Bounded: with
                        // many short-lived containers it is forgotten now and then (a path
                        // is then looked after once more, which is harmless).
                        if self.upkept.len() >= UPKEPT_REMEMBERED {
                            self.upkept.clear();
                        }
                        u.request(path);
                        self.upkept.insert(path.to_path_buf());
                    }
                    self.files.insert(
                        path.to_path_buf(),
                        OpenFile {
                            file: opened.file,
                            buf: Vec::with_capacity(64 * 1024),
                            last_write: Instant::now(),
                            last_use: self.uses,
                            uncommitted: 0,
                            unsynced: false,
                            ended: false,
                            size: meta.len(),
                            created,
                            date: self.today(),
                            dev_ino: (meta.dev(), meta.ino()),
                            rotate_failed: None,
                        },
                    );
                    self.update_open_gauge();
                    return Ok(());
                }
                // Out of file descriptors: make room by closing idle files, then try again.
                Err(e) if is_fd_limit(&e) && self.close_least_recently_used() => {}
                Err(e) if per_container && is_permanent_for_path(&e) => {
                    return Err(WriteError::Container(with_path(path, e)));
                }
                Err(e) => return Err(WriteError::Sink(with_path(path, e))),
            }
        }
    }
}

/// EMFILE or ENFILE.
fn is_fd_limit(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::MFILE.raw_os_error())
        || code == Some(rustix::io::Errno::NFILE.raw_os_error())
}

/// Failures of opening one path that retrying will not cure and that say nothing about the
/// other containers' files: permission, name too long or invalid, a file where a directory
/// should be (or the reverse), a symlink loop. Disk full, I/O errors and a read-only file
/// system are not: they are the sink's, and are retried.
fn is_permanent_for_path(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::PermissionDenied
            | K::InvalidFilename
            | K::NotADirectory
            | K::IsADirectory
            | K::AlreadyExists
            | K::InvalidInput
    ) || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
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
