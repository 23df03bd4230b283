//! Rotation of the file sink's outputs: when a live file is due (`max_bytes`, `max_age`), how
//! rotated files are named, and the upkeep done off the writer's thread (gzip, `max_files`).
//!
//! - **Names.** A live file `web.log` rotates to `web.log.000001`, `web.log.000002`, … (higher
//!   is newer; the number is the next one after every rotated file of that path, so names are
//!   never reused, also across restarts). Compressed, it becomes `web.log.000001.gz`. At least
//!   six digits: logrotate's `web.log.1` is never taken for one of ours.
//! - **When.** Only at a durable point, once everything written to the file is acknowledged
//!   (and at open, before anything is written): a rotated file never holds a torn record, and
//!   [`super::FileSink`]'s `abandon` never has to cut a file that was moved away.
//! - **Compression is crash-safe.** `N.gz.tmp` is written, fsynced and renamed to `N.gz`
//!   before `N` is deleted. Upkeep of a path first deletes leftover `.gz.tmp` files and plain
//!   files whose `.gz` is complete, so a crash at any point leaves every line in exactly one
//!   of the files (after the next upkeep of that path).

use crate::observability::reasons::FileRotationReason;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::{debug, warn};

use crate::observability::metrics::Metrics;

/// Digits of a rotated file's number, at least.
const SEQ_DIGITS: usize = 6;
/// What rotation appends to a file name (`.000001.gz.tmp`): path templates leave room for it
/// when rotation is on (numbers beyond 999999 take a byte more each).
pub const SUFFIX_ROOM: usize = 1 + SEQ_DIGITS + ".gz.tmp".len();

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotatePolicy {
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
    pub max_files: Option<usize>,
    pub gzip: bool,
}

impl RotatePolicy {
    /// Why a live file of `size` bytes and `age` must rotate now, if it must. An empty file
    /// never rotates.
    pub fn due(&self, size: u64, age: Duration) -> Option<FileRotationReason> {
        if size == 0 {
            return None;
        }
        if self.max_bytes.is_some_and(|max| size >= max) {
            return Some(FileRotationReason::Size);
        }
        if self.max_age.is_some_and(|max| age >= max) {
            return Some(FileRotationReason::Age);
        }
        None
    }

    /// Whether rotated files need upkeep (compression or retention).
    pub fn has_upkeep(&self) -> bool {
        self.gzip || self.max_files.is_some()
    }
}

/// What one rotated file of a live path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Plain,
    Gz,
    GzTmp,
}

/// The rotated name `seq` of `live`.
pub fn rotated_path(live: &Path, seq: u64, kind: Kind) -> PathBuf {
    let mut name = live.as_os_str().to_os_string();
    name.push(format!(".{seq:0SEQ_DIGITS$}"));
    match kind {
        Kind::Plain => {}
        Kind::Gz => name.push(".gz"),
        Kind::GzTmp => name.push(".gz.tmp"),
    }
    PathBuf::from(name)
}

/// If `candidate` (a file name) is a rotated file of the live file named `live_name`: its
/// number and kind.
pub fn parse_rotated(live_name: &str, candidate: &str) -> Option<(u64, Kind)> {
    let rest = candidate.strip_prefix(live_name)?.strip_prefix('.')?;
    let (digits, kind) = if let Some(d) = rest.strip_suffix(".gz.tmp") {
        (d, Kind::GzTmp)
    } else if let Some(d) = rest.strip_suffix(".gz") {
        (d, Kind::Gz)
    } else {
        (rest, Kind::Plain)
    };
    if digits.len() < SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, kind))
}

/// Every rotated file of `live`, by number (each number with the kinds present).
pub fn list_rotated(live: &Path) -> io::Result<BTreeMap<u64, Vec<Kind>>> {
    let mut found: BTreeMap<u64, Vec<Kind>> = BTreeMap::new();
    let Some(live_name) = live.file_name().and_then(|n| n.to_str()) else {
        return Ok(found);
    };
    let dir = match live.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str()
            && let Some((seq, kind)) = parse_rotated(live_name, name)
        {
            let kinds = found.entry(seq).or_default();
            kinds.push(kind);
            kinds.sort();
        }
    }
    Ok(found)
}

/// Renames `live` to its next rotated name; returns that name.
pub fn rotate(live: &Path) -> io::Result<PathBuf> {
    let next = list_rotated(live)?
        .last_key_value()
        .map_or(1, |(seq, _)| seq + 1);
    let to = rotated_path(live, next, Kind::Plain);
    std::fs::rename(live, &to)?;
    Ok(to)
}

/// Compression and retention of one live path's rotated files, done off the writer's thread.
/// See the module comment for the order that makes it crash-safe. `cancel` stops a
/// compression between two chunks (its `.gz.tmp` is deleted, the plain file kept).
pub fn upkeep(
    live: &Path,
    policy: &RotatePolicy,
    file_mode: u32,
    cancel: &AtomicBool,
    metrics: &Metrics,
) {
    let Some(rotated) = listed(live, metrics) else {
        return;
    };
    for (&seq, kinds) in &rotated {
        if kinds.contains(&Kind::GzTmp) {
            // Left by a compression that did not finish (crash, shutdown, error).
            remove(&rotated_path(live, seq, Kind::GzTmp), metrics);
        }
        if !kinds.contains(&Kind::Plain) {
            continue;
        }
        let plain = rotated_path(live, seq, Kind::Plain);
        if kinds.contains(&Kind::Gz) {
            // The .gz was complete (it is renamed into place only once fsynced): the plain
            // copy survived a crash between the rename and its deletion.
            remove(&plain, metrics);
        } else if policy.gzip {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            match compress(live, seq, file_mode, cancel) {
                Ok(true) => {
                    remove(&plain, metrics);
                }
                Ok(false) => return, // cancelled; done at the next upkeep of this path
                Err(e) => {
                    warn!(file = %plain.display(), error = %e,
                        "cannot compress a rotated file; it stays uncompressed (tried again at the next rotation)");
                    metrics.file_sink_compression_failures.inc();
                    let _ = std::fs::remove_file(rotated_path(live, seq, Kind::GzTmp));
                }
            }
        }
    }
    let Some(max_files) = policy.max_files else {
        return;
    };
    let Some(rotated) = listed(live, metrics) else {
        return;
    };
    let excess = rotated.len().saturating_sub(max_files);
    for (&seq, kinds) in rotated.iter().take(excess) {
        let mut deleted = true;
        for &kind in kinds {
            deleted &= remove(&rotated_path(live, seq, kind), metrics);
        }
        if deleted {
            metrics.file_sink_retention_deletions.inc();
            debug!(file = %rotated_path(live, seq, Kind::Plain).display(), "deleted (max_files)");
        }
    }
}

/// [`list_rotated`], logged and counted when it fails.
fn listed(live: &Path, metrics: &Metrics) -> Option<BTreeMap<u64, Vec<Kind>>> {
    list_rotated(live)
        .inspect_err(|e| {
            warn!(file = %live.display(), error = %e, "cannot list rotated files");
            metrics.file_sink_rotation_failures.inc();
        })
        .ok()
}

/// Deletes a file (gone already is fine). False, logged and counted, if it could not.
fn remove(path: &Path, metrics: &Metrics) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot delete a rotated file");
            metrics.file_sink_rotation_failures.inc();
            false
        }
    }
}

/// Writes `N.gz` from `N`: `.gz.tmp` first, fsynced, then renamed and the directory fsynced.
/// False if cancelled (the `.gz.tmp` is deleted).
fn compress(live: &Path, seq: u64, file_mode: u32, cancel: &AtomicBool) -> io::Result<bool> {
    let plain = rotated_path(live, seq, Kind::Plain);
    let tmp = rotated_path(live, seq, Kind::GzTmp);
    let mut input = File::open(&plain)?;
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(file_mode)
        .open(&tmp)?;
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        if cancel.load(Ordering::Relaxed) {
            drop(gz);
            let _ = std::fs::remove_file(&tmp);
            return Ok(false);
        }
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        gz.write_all(&chunk[..n])?;
    }
    let out = gz.finish()?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, rotated_path(live, seq, Kind::Gz))?;
    if let Some(dir) = live.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

/// The thread that does [`upkeep`], owned by the sink: asked per live path, stopped and
/// joined when the sink is dropped (a compression in progress is cancelled then; the plain
/// file stays and is compressed at the next upkeep of its path).
pub struct Upkeeper {
    jobs: Option<mpsc::Sender<PathBuf>>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upkeeper {
    pub fn start(policy: RotatePolicy, file_mode: u32, metrics: Arc<Metrics>) -> Upkeeper {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let thread_metrics = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name("file-rotate".into())
            .spawn(move || {
                while let Ok(live) = rx.recv() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    upkeep(&live, &policy, file_mode, &stop, &thread_metrics);
                }
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // Without the thread, rotated files stay as they are (nothing is lost).
                warn!(error = %e, "cannot start the file sink's rotation upkeep thread; rotated files are neither compressed nor pruned");
                metrics.file_sink_rotation_failures.inc();
                None
            }
        };
        Upkeeper {
            jobs: thread.as_ref().map(|_| tx),
            cancel,
            thread,
        }
    }

    /// Asks for the upkeep of `live`'s rotated files.
    pub fn request(&self, live: &Path) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(live.to_path_buf());
        }
    }

    /// Stops the thread: with `cancel`, at once (a compression in progress is abandoned);
    /// without, after the queued upkeep is done. Waits for it.
    pub fn stop(&mut self, cancel: bool) {
        if cancel {
            self.cancel.store(true, Ordering::Relaxed);
        }
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the file sink's rotation upkeep thread panicked");
        }
    }
}

impl Drop for Upkeeper {
    fn drop(&mut self) {
        self.stop(true);
    }
}

#[cfg(test)]
#[path = "rotate_tests.rs"]
mod tests;
