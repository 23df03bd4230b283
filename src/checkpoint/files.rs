//! Positions of host log files (the `sources.files` source and nothing else: containers read
//! in `json_file` mode keep container cursors). Same rule as container cursors: a position
//! moves only when every sink has acknowledged the lines before it, and is written with them
//! by [`super::CheckpointStore::persist`] under `<state_dir>/files/<key>.json`.
//!
//! A file is known by its identity — device, inode, and a fingerprint (CRC-32 of its first
//! `fingerprint_len` bytes) — so an inode reused after a delete is not taken for the old file.

use serde::{Deserialize, Serialize};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
pub(super) struct PositionFile {
    pub key: String,
    #[serde(flatten)]
    pub position: FilePosition,
}

/// Reads one position file; the error says why it cannot be used.
pub(super) fn read_position(path: &std::path::Path) -> Result<(String, FilePosition), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let file: PositionFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if file.key != stem || file.key != file.position.id.key() {
        return Err(format!(
            "content does not match the file name (key {:?}, identity {})",
            file.key,
            file.position.id.key()
        ));
    }
    Ok((file.key, file.position))
}

pub(super) fn encode_position(key: &str, position: &FilePosition) -> std::io::Result<Vec<u8>> {
    let file = PositionFile {
        key: key.to_string(),
        position: position.clone(),
    };
    serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)
}
