//! Why a state file (a container checkpoint, a host file's position, the agent marker) cannot
//! be used. The text is what is logged as the `reason` of a file set aside.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] io::Error),
    /// Not the JSON of such a file.
    #[error(transparent)]
    Parse(#[from] serde_json::Error),
    /// A container checkpoint whose `container_id` is not its file name.
    #[error("content does not match the file name (container_id {container_id:?})")]
    NotItsFile { container_id: String },
    /// A host file's position whose key is not its file name or its identity's key.
    #[error("content does not match the file name (key {key:?}, identity {identity})")]
    NotItsPosition { key: String, identity: String },
    /// A timestamp before 1970 (written back, it would be refused at the next start).
    #[error("{key} {ts} is negative (before 1970)")]
    NegativeStamp { key: &'static str, ts: i64 },
}
