//! Per-container cursors persisted under `<state_dir>/checkpoints/<container id>.json`.
//! A cursor only moves when the sinks acknowledge a batch; files are written atomically
//! (temporary file, fsync, rename, fsync of the directory). A file that cannot be read or
//! parsed is renamed aside with a `.corrupt-<unix time>` suffix, reported, and skipped.

mod files;

pub use files::{FileId, FilePosition, Fingerprint};

/// Under the state directory: host-file positions (`files/<key>.json`).
const FILES_DIR: &str = "files";

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, warn};

use crate::capture::{Cursor, StreamPositions};
use crate::docker::timestamp::{format_rfc3339_nanos, parse_rfc3339_nanos};
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
    cursor: Cursor,
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

const MARKER: &str = "agent.json";

/// `<state_dir>/agent.json`: which version last ran, when an agent first ran on this state
/// directory (`first_seen`), and since when the latest run that got as far watched Docker
/// (`watching_since`: just before its first complete listing, events stream connected).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentMarker {
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watching_since: Option<String>,
}

/// Reads an existing marker: when the previous run started watching, and the first run's
/// start. Without `watching_since` (no run has watched yet, or a version before it existed,
/// which rewrote `first_seen` at every start) nothing is known to be watched since
/// `first_seen`. `None`s when the file is unreadable (logged).
fn read_marker(path: &Path) -> (Option<i64>, Option<i64>) {
    let parsed = fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<AgentMarker>(&bytes).map_err(|e| e.to_string()));
    let marker = match parsed {
        Ok(m) => m,
        Err(reason) => {
            warn!(file = %path.display(), %reason,
                "agent marker unreadable: containers that ran entirely while the agent was down are not looked for this time");
            return (None, None);
        }
    };
    let time = |t: &Option<String>| t.as_deref().and_then(|t| parse_rfc3339_nanos(t.as_bytes()));
    let first_seen_ns = time(&marker.first_seen);
    (
        time(&marker.watching_since).or(first_seen_ns),
        first_seen_ns,
    )
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

    pub fn get(&self, id: &str) -> Option<Cursor> {
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
    pub fn init(&self, id: &str, cursor: Cursor) {
        self.lock().entry(id.to_string()).or_insert(Entry {
            cursor,
            dirty_since: Some(Instant::now()),
        });
    }

    /// Every sink has acknowledged everything up to `cursor`. Ignored for containers that are
    /// not tracked (forgotten meanwhile: a late acknowledgement must not resurrect the file).
    pub fn ack(&self, id: &str, cursor: Cursor) {
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

fn write_marker(path: &Path, marker: &AgentMarker) -> io::Result<()> {
    serde_json::to_vec(marker)
        .map_err(io::Error::other)
        .and_then(|mut bytes| {
            bytes.push(b'\n');
            write_atomically(path, &bytes)
        })
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Locks one of the store's mutexes; a panic elsewhere while holding it leaves the data as it
/// was (each update is a single assignment or insert), so a poisoned lock is used anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn read_checkpoint(path: &Path) -> Result<CheckpointFile, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let cp: CheckpointFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let expected = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if cp.container_id != expected {
        return Err(format!(
            "content does not match the file name (container_id {:?})",
            cp.container_id
        ));
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
    if let Some((key, Some(ts))) = stamps.iter().find(|(_, ts)| ts.is_some_and(|t| t < 0)) {
        return Err(format!("{key} {ts} is negative (before 1970)"));
    }
    Ok(cp)
}

/// Creates `dir` and its missing parents with mode 0700 whatever the umask, and makes `dir`
/// itself 0700 if it already existed: state files hold positions and log bodies.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Opens `path` for writing (created if missing, truncated when `truncate`) with mode 0600
/// whatever the umask; a file left by an older version with wider bits is narrowed too.
pub fn open_private_file(path: &Path, truncate: bool) -> io::Result<fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// temp file + fsync + rename + fsync(dir): after a crash the file is either old or new.
/// The file is 0600 (see `open_private_file`). A failed write removes its temp file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = open_private_file(&tmp, true)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Not left behind: nothing else removes the file of a container forgotten meanwhile,
        // and on a full disk it holds space.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cursor after `n` stdout lines stamped `ts`.
    fn delivered(ts: i64, n: u64) -> Cursor {
        let mut c = Cursor::at(0);
        for _ in 0..n {
            c.deliver(crate::pipeline::StreamKind::Stdout, ts);
        }
        c
    }

    #[test]
    fn older_checkpoint_files_still_load_and_new_ones_keep_stream_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cps = dir.path().join("checkpoints");
        fs::create_dir_all(&cps).expect("mkdir");
        fs::write(
            cps.join("old.json"),
            br#"{"container_id":"old","timestamp_ns":5,"count":2,"timestamp":"1970-01-01T00:00:00.000000005Z"}"#,
        )
        .expect("write");
        let metrics = Arc::new(Metrics::new());
        let store = CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        assert_eq!(store.get("old"), Some(Cursor::legacy(5, 2)));
        let mut c = delivered(9, 1);
        c.deliver(crate::pipeline::StreamKind::Stderr, 12);
        c.streams.unfinished_ns = Some(8);
        store.init("new", c);
        store.init("dirty-old", Cursor::legacy(7, 3));
        assert!(store.persist(), "persist");
        let again = CheckpointStore::open(dir.path(), metrics.clone()).expect("reopen");
        assert_eq!(again.get("old"), Some(Cursor::legacy(5, 2)));
        assert_eq!(again.get("new"), Some(c));
        assert_eq!(again.get("dirty-old"), Some(Cursor::legacy(7, 3)));
        let text = fs::read_to_string(cps.join("new.json")).expect("read");
        assert!(
            text.contains("\"timestamp_ns\": 8"),
            "since is the unfinished line: {text}"
        );
        assert_eq!(metrics.checkpoint_corrupt.get(), 0);
    }

    #[test]
    fn the_marker_tells_since_when_the_previous_run_watched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let marker = dir.path().join(MARKER);
        let read = || fs::read_to_string(&marker).expect("marker");
        let open = || CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        let first = open();
        assert_eq!(first.previous_start_ns, None, "fresh state_dir");
        let first_seen = serde_json::from_str::<AgentMarker>(&read())
            .expect("json")
            .first_seen
            .expect("first_seen");
        // No run has watched Docker yet: nothing was watched since the first one started.
        let first_seen_ns = parse_rfc3339_nanos(first_seen.as_bytes());
        assert_eq!(open().previous_start_ns, first_seen_ns);
        let second = open();
        second.watching(1_000);
        assert!(second.persist());
        assert_eq!(open().previous_start_ns, Some(1_000));
        // One that stops before it watches keeps the earlier run's time.
        assert_eq!(open().previous_start_ns, Some(1_000));
        assert!(read().contains(&first_seen), "first_seen kept: {}", read());

        // A marker of an older version (first_seen rewritten at every start): that time is
        // the previous start.
        fs::write(
            &marker,
            "{\"version\":\"0.1.0\",\"first_seen\":\"2026-11-30T10:00:00.5Z\"}\n",
        )
        .expect("write");
        assert_eq!(open().previous_start_ns, Some(1_796_032_800_500_000_000));

        // Unreadable: a previous run whose times are unknown; the file is rewritten whole,
        // without inventing a first run.
        fs::write(&marker, "{garbage").expect("write");
        let damaged = open();
        assert!(damaged.had_previous_run);
        assert_eq!(damaged.previous_start_ns, None);
        assert!(!read().contains("first_seen"), "{}", read());
        assert!(serde_json::from_str::<AgentMarker>(&read()).is_ok());
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let store = CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        assert!(!store.had_previous_run);
        store.ack("ghost", delivered(5, 2)); // never tracked: ignored
        store.init("abc", Cursor::at(0));
        store.ack("abc", delivered(5, 2));
        store.ack("abc", delivered(4, 9)); // older: ignored
        store.init("def", Cursor::at(7));
        assert!(store.persist());
        let again = CheckpointStore::open(dir.path(), metrics).expect("reopen");
        assert!(again.had_previous_run);
        assert_eq!(again.get("abc"), Some(delivered(5, 2)));
        assert_eq!(again.get("def"), Some(Cursor::at(7)));
        assert_eq!(again.get("ghost"), None);
        again.forget("abc");
        assert!(again.persist());
        assert!(!dir.path().join("checkpoints/abc.json").exists());
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    /// Checkpoints and the state directory are private whatever the umask (022 here, as on
    /// most hosts): positions and, next to them, log bodies must not be world-readable.
    #[test]
    fn state_files_and_directories_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let umask = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
            })
            .expect("umask from /proc/self/status");
        assert_eq!(
            umask & 0o044,
            0,
            "run the tests under a permissive umask (e.g. 022) so this test can see a leak"
        );
        let lock = crate::state_lock::StateLock::acquire(&state).expect("lock");
        let store = CheckpointStore::open(&state, Arc::new(Metrics::new())).expect("open");
        store.init("abc", Cursor::at(1));
        assert!(store.persist());
        assert_eq!(mode(&state), 0o700, "state_dir");
        assert_eq!(mode(&state.join("checkpoints")), 0o700, "checkpoints/");
        assert_eq!(mode(&state.join("lock")), 0o600, "lock");
        assert_eq!(mode(&state.join(MARKER)), 0o600, "marker");
        assert_eq!(
            mode(&state.join("checkpoints/abc.json")),
            0o600,
            "checkpoint"
        );
        drop(lock);
    }

    /// A checkpoint that cannot be written (here: a directory stands where the file goes, which
    /// fails for root too) makes `persist` say so, and stays dirty for the next attempt.
    #[test]
    fn failed_write_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let store = CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        store.init("good", Cursor::at(1));
        store.init("bad", Cursor::at(2));
        let blocker = dir.path().join("checkpoints/bad.json");
        fs::create_dir(&blocker).expect("mkdir in the file's place");
        assert!(!store.persist(), "a failed write must be reported");
        assert_eq!(metrics.checkpoint_errors.get(), 1);
        assert!(dir.path().join("checkpoints/good.json").is_file());
        fs::remove_dir(&blocker).expect("rmdir");
        assert!(store.persist(), "retried and written");
        assert!(blocker.is_file());
    }

    /// A write that fails half-way (disk full, read-only, here a directory where the file
    /// goes) leaves no temporary file behind: nothing else would ever remove the one of a
    /// container forgotten meanwhile, and on a full disk it holds space.
    #[test]
    fn failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::open(dir.path(), Arc::new(Metrics::new())).expect("open");
        store.init("bad", Cursor::at(2));
        fs::create_dir(dir.path().join("checkpoints/bad.json")).expect("mkdir in its place");
        assert!(!store.persist(), "the write fails");
        let left: Vec<_> = fs::read_dir(dir.path().join("checkpoints"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("bad.json")],
            "only the blocker"
        );
    }

    #[test]
    fn corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cps = dir.path().join("checkpoints");
        fs::create_dir_all(&cps).expect("mkdir");
        fs::write(cps.join("bad.json"), b"{not json").expect("write");
        let metrics = Arc::new(Metrics::new());
        let store = CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        assert_eq!(store.get("bad"), None);
        assert!(!cps.join("bad.json").exists());
        let aside: Vec<_> = fs::read_dir(&cps)
            .expect("ls")
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("bad.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(metrics.checkpoint_corrupt.get(), 1);
        // Its container must still be read (it has lines no cursor accounts for) until it
        // gets a cursor again or is forgotten.
        assert!(store.lost_cursor("bad"));
        assert!(!store.lost_cursor("other"));
        store.init("bad", Cursor::at(0));
        assert!(!store.lost_cursor("bad"));
    }

    /// Found by the checkpoint fuzz target: a file whose stream positions are before 1970 was
    /// loaded, then written back with a negative `timestamp_ns` that the next start rejected,
    /// so the container silently lost its cursor one restart later. Such a file is now set
    /// aside at once, reported like any corrupt one.
    #[test]
    fn negative_stream_positions_are_set_aside_not_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cps = dir.path().join("checkpoints");
        fs::create_dir_all(&cps).expect("mkdir");
        for (name, streams) in [
            (
                "out",
                r#"{"stdout":{"timestamp_ns":-5,"count":0},"stderr":{"timestamp_ns":5,"count":0}}"#,
            ),
            (
                "err",
                r#"{"stdout":{"timestamp_ns":5,"count":0},"stderr":{"timestamp_ns":-5,"count":0}}"#,
            ),
            (
                "unfinished",
                r#"{"stdout":{"timestamp_ns":5,"count":0},"stderr":{"timestamp_ns":5,"count":0},"unfinished_ns":-1}"#,
            ),
        ] {
            let text = format!(
                r#"{{"container_id":"{name}","timestamp_ns":5,"count":0,"timestamp":"x","streams":{streams}}}"#
            );
            fs::write(cps.join(format!("{name}.json")), text).expect("write");
        }
        let metrics = Arc::new(Metrics::new());
        let store = CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        for name in ["out", "err", "unfinished"] {
            assert_eq!(store.get(name), None, "{name}");
            assert!(
                !cps.join(format!("{name}.json")).exists(),
                "{name} set aside"
            );
        }
        assert_eq!(metrics.checkpoint_corrupt.get(), 3);
    }

    /// Found by the checkpoint fuzz target: counts near `u64::MAX` in a file made persisting
    /// overflow (a panic in debug builds, a wrapped count written in release ones).
    #[test]
    fn huge_counts_persist_without_overflow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cps = dir.path().join("checkpoints");
        fs::create_dir_all(&cps).expect("mkdir");
        fs::write(
            cps.join("big.json"),
            br#"{"container_id":"big","timestamp_ns":5,"count":0,"timestamp":"x","streams":{"stdout":{"timestamp_ns":5,"count":18446744073709551615},"stderr":{"timestamp_ns":5,"count":3}}}"#,
        )
        .expect("write");
        let metrics = Arc::new(Metrics::new());
        let store = CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        // Both streams at the resume point: the file's `count` is their sum.
        let c = store.get("big").expect("loaded");
        store.ack("big", c);
        assert!(store.persist(), "persist");
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(cps.join("big.json")).expect("read")).expect("json");
        assert_eq!(
            file["count"],
            serde_json::json!(u64::MAX),
            "saturated, not wrapped"
        );
        let again = CheckpointStore::open(dir.path(), metrics).expect("reopen");
        assert_eq!(again.get("big"), Some(c));
    }
}
