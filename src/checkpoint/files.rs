//! Positions of host log files (the `sources.files` source and nothing else: containers read
//! in `json_file` mode keep container cursors). Same rule as container cursors: a position
//! moves only when every sink has acknowledged the lines before it, and is written with them
//! by [`super::CheckpointStore::persist`] under `<state_dir>/files/<key>.json`.
//!
//! A file is known by its identity — device, inode, and a fingerprint (CRC-32 of its first
//! `fingerprint_len` bytes) — so an inode reused after a delete is not taken for the old file.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;
use tracing::error;

use super::{CheckpointError, CheckpointStore, FileEntry, lock, remove_unknown};
use crate::clock::now_ns;
use crate::fsutil::{create_private_dir, write_atomically};
use crate::observability::metrics::Metrics;

/// (device, inode) of an open file or a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The key of the file's position in the store (and its source id in the pipeline):
    /// `file-<dev>-<ino>`, never a container id (those are 64 hex digits).
    pub fn key(&self) -> String {
        format!("file-{}-{}", self.dev, self.ino)
    }
}

/// CRC-32 of a file's first `len` bytes, taken once the file holds at least that many (or, for
/// a shorter file, of all it has: `len` is then its size when it was taken).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u64,
    pub crc32: u32,
}

/// Where reading a host file resumes: every byte before `offset` was delivered (it ends on a
/// line boundary: a held partial line is not counted until its newline comes or it is flushed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// The path it was last read under (for people, logs, and to find it again at start).
    pub path: String,
    pub id: FileId,
    pub fingerprint: Fingerprint,
    pub offset: u64,
}

/// `<state_dir>/files/<key>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct PositionFile {
    pub key: String,
    #[serde(flatten)]
    pub position: FilePosition,
}

/// Reads one position file; the error says why it cannot be used.
fn read_position(path: &std::path::Path) -> Result<(String, FilePosition), CheckpointError> {
    let bytes = std::fs::read(path)?;
    let file: PositionFile = serde_json::from_slice(&bytes)?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if file.key != stem || file.key != file.position.id.key() {
        return Err(CheckpointError::NotItsPosition {
            identity: file.position.id.key(),
            key: file.key,
        });
    }
    Ok((file.key, file.position))
}

fn encode_position(key: &str, position: &FilePosition) -> std::io::Result<Vec<u8>> {
    let file = PositionFile {
        key: key.to_string(),
        position: position.clone(),
    };
    serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)
}

/// Loads `<state_dir>/files/*.json` (creating the directory); a file that cannot be read or
/// parsed is set aside (`.corrupt-<unix time>`), counted and logged, like a container's.
pub(super) fn load_file_positions(
    dir: &Path,
    metrics: &Metrics,
) -> io::Result<HashMap<String, FileEntry>> {
    create_private_dir(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("checkpoint.state_dir {}: {e}", dir.display()),
        )
    })?;
    let mut out = HashMap::new();
    for item in fs::read_dir(dir)? {
        let path = item?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match read_position(&path) {
            Ok((key, position)) => {
                out.insert(
                    key,
                    FileEntry {
                        position,
                        dirty_since: None,
                    },
                );
            }
            Err(reason) => {
                metrics.checkpoint_corrupt.inc();
                let aside =
                    path.with_extension(format!("json.corrupt-{}", now_ns() / 1_000_000_000));
                let moved = fs::rename(&path, &aside);
                error!(file = %path.display(), %reason, moved_to = %aside.display(), moved = moved.is_ok(),
                    "host-file position is corrupt or unreadable; set aside, that file is read as new");
            }
        }
    }
    Ok(out)
}

/// Where acknowledgements of a host file's content before a copytruncate go: the copy's key,
/// and the copy's size (once acknowledged that far, the alias is done).
pub(super) type FileAliases = HashMap<(String, Fingerprint), (String, u64)>;

impl CheckpointStore {
    /// copytruncate: the content of `key` under `fingerprint` is in the copy `copy_key` now
    /// (`copy_size` bytes, the same offsets). Acknowledgements still in flight for it move the
    /// copy's position on (a restart then resumes in the copy), and the scan leaves the copy
    /// to the reader that read it until they are all in.
    pub fn alias_file(&self, key: &str, fingerprint: Fingerprint, copy_key: &str, copy_size: u64) {
        lock(&self.file_aliases).insert(
            (key.to_string(), fingerprint),
            (copy_key.to_string(), copy_size),
        );
    }

    /// Whether `key` is a copy still waiting for acknowledgements of what was read from it.
    pub fn is_alias_target(&self, key: &str) -> bool {
        lock(&self.file_aliases).values().any(|(k, _)| k == key)
    }

    /// An acknowledgement `ack_file` found no matching entry for: applied to the copy it is
    /// an alias of, if any. Called with the positions locked (`files`).
    pub(super) fn ack_aliased(
        &self,
        files: &mut HashMap<String, FileEntry>,
        key: &str,
        position: &FilePosition,
    ) {
        let mut aliases = lock(&self.file_aliases);
        let alias = (key.to_string(), position.fingerprint);
        let Some((copy_key, end)) = aliases.get(&alias).cloned() else {
            return;
        };
        let Some(entry) = files.get_mut(&copy_key) else {
            aliases.remove(&alias);
            return;
        };
        let offset = position.offset.min(end);
        if offset > entry.position.offset {
            entry.position.offset = offset;
            entry.dirty_since.get_or_insert_with(Instant::now);
        }
        if offset >= end {
            aliases.remove(&alias);
        }
    }

    /// Writes every changed host-file position (see [`CheckpointStore::persist`]). The same
    /// loop as the container cursors' there, kept apart on purpose: other entries, file names,
    /// log fields and messages (one generic loop would take them all as parameters).
    pub(super) fn persist_file_positions(&self) -> bool {
        let mut all_written = true;
        let dirty: Vec<(String, FilePosition, Instant)> = lock(&self.file_positions)
            .iter()
            .filter_map(|(k, e)| e.dirty_since.map(|s| (k.clone(), e.position.clone(), s)))
            .collect();
        for (key, position, since) in dirty {
            let path = self.files_dir.join(format!("{key}.json"));
            let result =
                encode_position(&key, &position).and_then(|bytes| write_atomically(&path, &bytes));
            match result {
                Ok(()) => {
                    self.metrics.checkpoint_writes.inc();
                    if let Some(e) = lock(&self.file_positions).get_mut(&key)
                        && e.position == position
                        && e.dirty_since == Some(since)
                    {
                        e.dirty_since = None;
                    }
                }
                Err(e) => {
                    all_written = false;
                    self.metrics.checkpoint_errors.inc();
                    error!(file = %path.display(), host_file = %position.path, error = %e,
                        "cannot write the position of a host file; will retry");
                }
            }
        }
        // A position forgotten while it was being written must not stay behind.
        let known: HashSet<String> = lock(&self.file_positions).keys().cloned().collect();
        remove_unknown(&self.files_dir, &known);
        all_written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointStore;
    use std::sync::Arc;

    fn file_pos(ino: u64, offset: u64) -> FilePosition {
        FilePosition {
            path: format!("/var/log/f{ino}.log"),
            id: FileId { dev: 1, ino },
            fingerprint: Fingerprint { len: 10, crc32: 7 },
            offset,
        }
    }

    #[test]
    fn file_positions_persist_reload_and_forget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let store = CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        let a = file_pos(5, 0);
        let key = a.id.key();
        store.init_file(&key, a.clone());
        store.ack_file(&key, file_pos(5, 40));
        store.ack_file(&key, file_pos(5, 30)); // behind: ignored
        let mut other_fp = file_pos(5, 90);
        other_fp.fingerprint.crc32 = 8;
        store.ack_file(&key, other_fp); // another file on the inode: ignored
        store.ack_file("file-1-99", file_pos(99, 10)); // not tracked: ignored
        store.init_file(&file_pos(6, 3).id.key(), file_pos(6, 3));
        assert!(store.persist());
        let again = CheckpointStore::open(dir.path(), metrics.clone()).expect("reopen");
        assert_eq!(again.file_position(&key), Some(file_pos(5, 40)));
        assert_eq!(again.file_position("file-1-6"), Some(file_pos(6, 3)));
        assert_eq!(again.file_positions().len(), 2);
        again.forget_file(&key);
        assert!(
            !dir.path()
                .join("files")
                .join(format!("{key}.json"))
                .exists()
        );
        again.file_moved("file-1-6", "/var/log/f6.log.1");
        assert!(again.persist());
        let third = CheckpointStore::open(dir.path(), metrics.clone()).expect("reopen");
        assert_eq!(third.file_position(&key), None);
        let mut moved = file_pos(6, 3);
        moved.path = "/var/log/f6.log.1".into();
        assert_eq!(third.file_position("file-1-6"), Some(moved));
        assert_eq!(metrics.checkpoint_corrupt.get(), 0);
    }

    #[test]
    fn a_corrupt_file_position_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = dir.path().join("files");
        fs::create_dir_all(&files).expect("mkdir");
        fs::write(files.join("file-1-2.json"), b"{not json").expect("write");
        // Valid JSON under another identity's name: not trusted either.
        let wrong = encode_position("file-1-3", &file_pos(3, 1)).expect("encode");
        fs::write(files.join("file-1-4.json"), wrong).expect("write");
        let metrics = Arc::new(Metrics::new());
        let store = CheckpointStore::open(dir.path(), metrics.clone()).expect("open");
        assert!(store.file_positions().is_empty());
        assert_eq!(metrics.checkpoint_corrupt.get(), 2);
        let names: Vec<String> = fs::read_dir(&files)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names.iter().all(|n| n.contains(".json.corrupt-")),
            "{names:?}"
        );
    }
}
