//! Per-container acknowledged cursors ([`AckedCursor`]) persisted under
//! `<state_dir>/checkpoints/<container id>.json`. A cursor only moves when the sinks acknowledge
//! a batch; files are written atomically (temporary file, fsync, rename, fsync of the
//! directory). A file that cannot be read or parsed is renamed aside with a
//! `.corrupt-<unix time>` suffix, reported, and skipped.

mod error;
mod files;
mod marker;

pub use error::CheckpointError;
pub use files::{FileId, FilePosition, Fingerprint};
use marker::{AgentMarker, MARKER, read_marker, write_marker};

/// Under the state directory: host-file positions (`files/<key>.json`).
const FILES_DIR: &str = "files";

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tracing::{error, warn};

use crate::capture::{AckedCursor, Cursor, StreamPositions};
use crate::clock::now_ns;
use crate::docker::timestamp::format_rfc3339_nanos;
use crate::fsutil::{create_private_dir, write_atomically};
use crate::observability::metrics::Metrics;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointFile {
    container_id: String,
    /// Nanoseconds since the epoch where reading resumes (`since`).
    timestamp_ns: i64,
    /// Lines carrying exactly that timestamp already delivered (both streams together).
    count: u64,
    /// `timestamp_ns` in RFC3339, for people reading the file.
    timestamp: String,
    /// Per-stream positions (see `capture::cursor`). Absent in files of older versions, whose
    /// `timestamp_ns` and `count` still load exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    streams: Option<StreamPositions>,
}

impl CheckpointFile {
    fn cursor(&self) -> Cursor {
        match self.streams {
            Some(streams) => Cursor {
                streams,
                legacy_count: 0,
            },
            None => Cursor::legacy(self.timestamp_ns, self.count),
        }
    }
}

#[derive(Debug)]
struct FileEntry {
    position: FilePosition,
    dirty_since: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    cursor: AckedCursor,
    /// Acknowledged but not yet persisted since this instant.
    dirty_since: Option<Instant>,
}

pub struct CheckpointStore {
    dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
    metrics: Arc<Metrics>,
    /// Whether an earlier run of the agent used this state directory.
    pub had_previous_run: bool,
    /// Since when the previous run watched Docker (ns since the epoch): a stopped container
    /// without checkpoint that ran after it ran while no agent was watching (or in a gap at
    /// that run's start). `None` on a fresh state directory or when `agent.json` was
    /// unreadable.
    pub previous_start_ns: Option<i64>,
    /// The marker to write and whether it changed since it was last written.
    marker: Mutex<(AgentMarker, bool)>,
    /// Positions of host log files by key (see [`files`]).
    file_positions: Mutex<HashMap<String, FileEntry>>,
    /// Host-file content moved to a copytruncate copy (see [`CheckpointStore::alias_file`]).
    file_aliases: Mutex<files::FileAliases>,
    /// `<state_dir>/files`.
    files_dir: PathBuf,
    /// The file source has scanned once in this process (see [`CheckpointStore::first_file_scan`]).
    files_scanned: std::sync::atomic::AtomicBool,
    /// Ids (file names) whose checkpoint was set aside as corrupt at open: such a container
    /// has lines no cursor accounts for, so it must be read even when it is not running.
    set_aside: Mutex<HashSet<String>>,
}

impl CheckpointStore {
    /// Opens (creating) the state directory and loads every checkpoint.
    pub fn open(state_dir: &Path, metrics: Arc<Metrics>) -> io::Result<CheckpointStore> {
        let dir = state_dir.join("checkpoints");
        create_private_dir(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("checkpoint.state_dir {}: {e}", dir.display()),
            )
        })?;
        let marker = state_dir.join(MARKER);
        let had_previous_run = marker.exists();
        let (previous_start_ns, first_seen_ns) = if had_previous_run {
            read_marker(&marker)
        } else {
            (None, Some(now_ns()))
        };
        // Written now (a later run must know this state_dir was used); `watching_since` stays
        // the previous run's until this one watches (`watching`): a run that fails before
        // that (Docker unreachable, port in use) must not hide what happened meanwhile.
        let written = AgentMarker {
            version: env!("CARGO_PKG_VERSION").to_string(),
            // Not invented when unknown (a damaged marker).
            first_seen: first_seen_ns.map(format_rfc3339_nanos),
            watching_since: previous_start_ns.map(format_rfc3339_nanos),
        };
        write_marker(&marker, &written)
            .or_else(|e| if had_previous_run { Ok(()) } else { Err(e) })?;
        let mut entries = HashMap::new();
        let mut set_aside = HashSet::new();
        for item in fs::read_dir(&dir)? {
            let path = item?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read_checkpoint(&path) {
                Ok(cp) => {
                    entries.insert(
                        cp.container_id.clone(),
                        Entry {
                            cursor: cp.cursor(),
                            dirty_since: None,
                        },
                    );
                }
                Err(reason) => {
                    metrics.checkpoint_corrupt.inc();
                    if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
                        set_aside.insert(id.to_string());
                    }
                    let aside =
                        path.with_extension(format!("json.corrupt-{}", now_ns() / 1_000_000_000));
                    let moved = fs::rename(&path, &aside);
                    error!(file = %path.display(), %reason, moved_to = %aside.display(),
                        moved = moved.is_ok(),
                        "checkpoint file is corrupt or unreadable; set aside, that container restarts without it");
                }
            }
        }
        let files_dir = state_dir.join(FILES_DIR);
        let file_positions = files::load_file_positions(&files_dir, &metrics)?;
        Ok(CheckpointStore {
            dir,
            files_dir,
            files_scanned: std::sync::atomic::AtomicBool::new(false),
            entries: Mutex::new(entries),
            metrics,
            had_previous_run,
            previous_start_ns,
            marker: Mutex::new((written, false)),
            file_positions: Mutex::new(file_positions),
            file_aliases: Mutex::new(HashMap::new()),
            set_aside: Mutex::new(set_aside),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        lock(&self.entries)
    }

    pub fn get(&self, id: &str) -> Option<AckedCursor> {
        self.lock().get(id).map(|e| e.cursor)
    }

    /// The container's checkpoint was set aside as corrupt at open and it has had none since:
    /// it must be read (from where a container without checkpoint starts) even if stopped.
    pub fn lost_cursor(&self, id: &str) -> bool {
        self.get(id).is_none() && lock(&self.set_aside).contains(id)
    }

    /// This run watches Docker since `since_ns`: recorded in `agent.json` at the next persist.
    pub fn watching(&self, since_ns: i64) {
        let mut marker = lock(&self.marker);
        marker.0.watching_since = Some(format_rfc3339_nanos(since_ns));
        marker.1 = true;
    }

    /// Ids of all known checkpoints.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Records a starting position for a container that has none (persisted with the others).
    pub fn init(&self, id: &str, cursor: AckedCursor) {
        self.lock().entry(id.to_string()).or_insert(Entry {
            cursor,
            dirty_since: Some(Instant::now()),
        });
    }

    /// Every sink has acknowledged everything up to `cursor`. Ignored for containers that are
    /// not tracked (forgotten meanwhile: a late acknowledgement must not resurrect the file).
    pub fn ack(&self, id: &str, cursor: AckedCursor) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(id)
            && cursor.is_at_or_after(&entry.cursor)
        {
            entry.cursor = cursor;
            entry.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    /// The container is gone: drop its cursor and file.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
        lock(&self.set_aside).remove(id);
        let path = self.path(id);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(file = %path.display(), error = %e, "cannot remove checkpoint of removed container");
        }
    }

    /// The stored position of the host file `key` (see [`FileId::key`]).
    pub fn file_position(&self, key: &str) -> Option<FilePosition> {
        lock(&self.file_positions)
            .get(key)
            .map(|e| e.position.clone())
    }

    /// Every stored host-file position (key, position): what the file source looks for at start.
    pub fn file_positions(&self) -> Vec<(String, FilePosition)> {
        lock(&self.file_positions)
            .iter()
            .map(|(k, e)| (k.clone(), e.position.clone()))
            .collect()
    }

    /// Records where a newly found host file starts (its first read, or after a restart found
    /// it under a new identity). Replaces what was there: a new identity is a new file.
    pub fn init_file(&self, key: &str, position: FilePosition) {
        lock(&self.file_positions).insert(
            key.to_string(),
            FileEntry {
                position,
                dirty_since: Some(Instant::now()),
            },
        );
    }

    /// Every sink has acknowledged the host file `key` up to `position`. Ignored for keys not
    /// tracked (forgotten meanwhile) and for a position of another identity or behind.
    pub fn ack_file(&self, key: &str, position: FilePosition) {
        let mut files = lock(&self.file_positions);
        if let Some(entry) = files.get_mut(key)
            && entry.position.id == position.id
            && entry.position.fingerprint == position.fingerprint
            && position.offset >= entry.position.offset
        {
            entry.position = position;
            entry.dirty_since.get_or_insert_with(Instant::now);
        } else {
            self.ack_aliased(&mut files, key, &position);
        }
    }

    /// True once per process: for the file source's first scan, whose files existed before
    /// the agent's start (a config reload starts a new file source; its first scan is not).
    pub fn first_file_scan(&self) -> bool {
        !self
            .files_scanned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// The host file `key` is now known under `path` (renamed within the globs): its stored
    /// position says so (persisted with the next changes).
    pub fn file_moved(&self, key: &str, path: &str) {
        if let Some(e) = lock(&self.file_positions).get_mut(key)
            && e.position.path != path
        {
            e.position.path = path.to_string();
            e.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    /// The host file `key` is gone (deleted and read to its end): drop its position.
    pub fn forget_file(&self, key: &str) {
        lock(&self.file_positions).remove(key);
        let path = self.files_dir.join(format!("{key}.json"));
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(file = %path.display(), error = %e, "cannot remove the position of a host file no longer read");
        }
    }

    /// Writes `agent.json` if it changed; false (logged, counted) when that failed.
    fn persist_marker(&self) -> bool {
        let marker = {
            let guard = lock(&self.marker);
            if !guard.1 {
                return true;
            }
            guard.0.clone()
        };
        let path = self.dir.with_file_name(MARKER);
        match write_marker(&path, &marker) {
            Ok(()) => {
                let mut guard = lock(&self.marker);
                if guard.0.watching_since == marker.watching_since {
                    guard.1 = false;
                }
                true
            }
            Err(e) => {
                self.metrics.checkpoint_errors.inc();
                error!(error = %e, "cannot write the agent marker; will retry");
                false
            }
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes every changed cursor. Blocking (fsync): call from a blocking thread. Returns
    /// whether every changed cursor was written; each failure is logged and counted, and its
    /// cursor stays dirty (the next call tries again).
    #[must_use = "a failed final persist must be reported"]
    pub fn persist(&self) -> bool {
        let mut all_written = true;
        let dirty: Vec<(String, Cursor, Instant)> = self
            .lock()
            .iter()
            .filter_map(|(id, e)| e.dirty_since.map(|since| (id.clone(), e.cursor, since)))
            .collect();
        for (id, cursor, since) in dirty {
            // A cursor still carrying an older version's count has delivered nothing since it
            // was loaded: it is written back in that version's form.
            let file = CheckpointFile {
                container_id: id.clone(),
                timestamp_ns: cursor.since_ns(),
                count: cursor.count_at_since(),
                timestamp: format_rfc3339_nanos(cursor.since_ns()),
                streams: (cursor.legacy_count == 0).then_some(cursor.streams),
            };
            let result = serde_json::to_vec_pretty(&file)
                .map_err(io::Error::other)
                .and_then(|bytes| write_atomically(&self.path(&id), &bytes));
            match result {
                Ok(()) => {
                    self.metrics.checkpoint_writes.inc();
                    let mut entries = self.lock();
                    // Still the same cursor (and not forgotten meanwhile): clean.
                    if let Some(e) = entries.get_mut(&id)
                        && e.cursor == cursor
                        && e.dirty_since == Some(since)
                    {
                        e.dirty_since = None;
                    }
                }
                Err(e) => {
                    all_written = false;
                    self.metrics.checkpoint_errors.inc();
                    error!(container = %id, file = %self.path(&id).display(), error = %e,
                        "cannot write checkpoint; will retry");
                }
            }
        }
        let lag = self
            .lock()
            .values()
            .filter_map(|e| e.dirty_since)
            .map(|s| s.elapsed().as_secs_f64())
            .fold(0.0, f64::max);
        self.metrics.checkpoint_lag.set(lag);
        all_written = self.persist_file_positions() && all_written;
        // The marker last: a newer `watching_since` must never be on disk while the first
        // checkpoint of a container read because of the older one is not.
        all_written = all_written && self.persist_marker();
        // A container forgotten while its file was being written must not leave it behind.
        let known = self.lock().keys().cloned().collect::<HashSet<_>>();
        remove_unknown(&self.dir, &known);
        all_written
    }
}

/// Removes the `<name>.json` files of `dir` whose name is not in `known`.
fn remove_unknown(dir: &Path, known: &HashSet<String>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for item in entries.flatten() {
            let name = item.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json")
                && !known.contains(id)
            {
                let _ = fs::remove_file(item.path());
            }
        }
    }
}

/// Locks one of the store's mutexes; a panic elsewhere while holding it leaves the data as it
/// was (each update is a single assignment or insert), so a poisoned lock is used anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn read_checkpoint(path: &Path) -> Result<CheckpointFile, CheckpointError> {
    let bytes = fs::read(path)?;
    let cp: CheckpointFile = serde_json::from_slice(&bytes)?;
    let expected = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if cp.container_id != expected {
        return Err(CheckpointError::NotItsFile {
            container_id: cp.container_id,
        });
    }
    // Docker stamps are after 1970. A position before it would be written back as a negative
    // `timestamp_ns`, which this check would then refuse at the next start: refuse it now.
    let streams = cp.streams.unwrap_or_default();
    let stamps = [
        ("timestamp_ns", Some(cp.timestamp_ns)),
        (
            "streams.stdout.timestamp_ns",
            Some(streams.stdout.timestamp_ns),
        ),
        (
            "streams.stderr.timestamp_ns",
            Some(streams.stderr.timestamp_ns),
        ),
        ("streams.unfinished_ns", streams.unfinished_ns),
    ];
    if let Some(&(key, Some(ts))) = stamps.iter().find(|(_, ts)| ts.is_some_and(|t| t < 0)) {
        return Err(CheckpointError::NegativeStamp { key, ts });
    }
    Ok(cp)
}

#[cfg(test)]
mod tests;
