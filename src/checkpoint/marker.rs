//! `<state_dir>/agent.json`, the agent marker: which version last ran on the state directory
//! and since when the previous run watched Docker.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::Path;
use tracing::warn;

use super::CheckpointError;
use crate::docker::timestamp::parse_rfc3339_nanos;
use crate::fsutil::write_atomically;

pub(super) const MARKER: &str = "agent.json";

/// `<state_dir>/agent.json`: which version last ran, when an agent first ran on this state
/// directory (`first_seen`), and since when the latest run that got as far watched Docker
/// (`watching_since`: just before its first complete listing, events stream connected).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AgentMarker {
    pub(super) version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) first_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) watching_since: Option<String>,
}

/// Reads an existing marker: when the previous run started watching, and the first run's
/// start. Without `watching_since` (no run has watched yet, or a version before it existed,
/// which rewrote `first_seen` at every start) nothing is known to be watched since
/// `first_seen`. `None`s when the file is unreadable (logged).
pub(super) fn read_marker(path: &Path) -> (Option<i64>, Option<i64>) {
    let parsed = fs::read(path)
        .map_err(CheckpointError::from)
        .and_then(|bytes| {
            serde_json::from_slice::<AgentMarker>(&bytes).map_err(CheckpointError::from)
        });
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

pub(super) fn write_marker(path: &Path, marker: &AgentMarker) -> io::Result<()> {
    serde_json::to_vec(marker)
        .map_err(io::Error::other)
        .and_then(|mut bytes| {
            bytes.push(b'\n');
            write_atomically(path, &bytes)
        })
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
