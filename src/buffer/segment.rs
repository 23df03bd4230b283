//! Append-only segment store: a FIFO of opaque byte records on disk, with blocking `std::fs`
//! I/O (call it from a blocking thread).
//!
//! # Layout
//!
//! The store owns one directory:
//!
//! - `{:020}.seg` — segment files, numbered from 1 upwards (numbers only ever grow; gaps are
//!   harmless). Records are appended to the highest-numbered segment; a new segment is started
//!   when the record would make the current one exceed `segment_bytes` (a record larger than
//!   `segment_bytes` gets a segment of its own).
//! - `position` — the read position as text, `"<segment>:<offset>\n"` (the [`RecordId`] of
//!   the next unconsumed record). Replaced atomically on every [`SegmentStore::consume`]:
//!   written to `position.tmp`, fsynced, renamed over `position`, directory fsynced.
//!
//! Every record is framed as
//!
//! ```text
//! [payload length: u32 LE][CRC-32 (IEEE, crc32fast) of the payload: u32 LE][payload]
//! ```
//!
//! A record is identified by its [`RecordId`] (segment number, byte offset of its frame).
//! Ids grow strictly in append order, so "consumed" simply means "id < read position".
//!
//! # Crash semantics
//!
//! - **Appends.** With [`FsyncPolicy::Always`] a record is fsynced before `append` returns (and
//!   the directory is fsynced when a segment is created), so an acknowledged append survives a
//!   power loss. With [`FsyncPolicy::Never`] the OS decides; a crash can lose the tail.
//! - **Torn or corrupt data.** [`SegmentStore::open`] scans every segment from the read position
//!   and validates each frame (header complete, length within the file, CRC). At the first bad
//!   frame of the *last* segment the file is truncated to the last good record, so later
//!   appends follow valid data. In an *earlier* segment the rest of that segment is skipped (it
//!   stays on disk until the segment is deleted, but is never returned). Both are listed in the
//!   [`OpenReport`]. Zero-length payloads are refused by `append`, so a zero-filled region
//!   (which a crash can leave behind on some file systems) is reported as corrupt instead of
//!   being read as a run of empty records.
//! - **Consumption.** `consume` persists the new read position before it deletes any segment,
//!   so a crash can at worst leave fully consumed segment files behind; `open` deletes them.
//!   Delivery is at-least-once: a record whose `consume` had not returned when the process
//!   died is returned again after the restart; a record whose `consume` returned `Ok` is
//!   never returned again (unless the `position` file itself is lost, see next point).
//!   A missing `position` file means "start of the oldest segment"; an unparsable one is
//!   reported and treated the same way (consumed records still on disk are then replayed).
//!   A position past the end of its segment (e.g. segment data lost with `Never`) means that
//!   segment is consumed; it is not appended to again, the next append starts a new segment.
//! - **The segment being appended to** is never deleted by `consume`, even once fully
//!   consumed: appends continue in it until it is full; when the next segment is started, the
//!   fully consumed one is deleted.
//! - **Failed appends.** If a write or fsync fails, the partial frame is truncated away and
//!   the error returned; the record is not stored. If even that truncation fails, the segment
//!   is sealed (the next append starts a new one) and its tail is never read in this process;
//!   in that rare case the record may reappear after a restart if its bytes did reach the disk.
//!
//! One process must own a directory at a time; nothing here locks it.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;

mod error;
mod files;
mod format;
mod recovery;
mod store;
#[cfg(test)]
mod test_support;

pub use error::{AppendError, StoreError};
pub use format::{ParseRecordIdError, RecordId};

/// Bytes of framing in front of every payload: length + CRC.
const HEADER_LEN: u64 = 8;
const POSITION_FILE: &str = "position";
const POSITION_TMP: &str = "position.tmp";
const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_DIGITS: usize = 20;
/// The highest segment number ever used. Higher ones come only from a corrupt or hand-edited
/// directory (the agent counts up from 1): such files are left alone, a read position at or
/// above it is not trusted (so the next number is at most this one, a number a reopen lists),
/// and no segment above it is ever created.
const MAX_SEGMENT: u64 = u64::MAX / 2;
/// Chunk size used to checksum payloads while scanning, so a bogus length cannot make us
/// allocate gigabytes.
const SCAN_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync the segment after every append, and the directory when a segment is created.
    Always,
    /// Leave flushing to the OS (the `position` file is still written atomically).
    Never,
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Upper bound on [`SegmentStore::used_bytes`], framing included.
    pub max_bytes: u64,
    /// Target size of one segment file.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

/// What `open` found: torn or corrupt data it skipped, in human-readable form naming file and offset.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub problems: Vec<String>,
    pub pending_records: u64,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    /// Length of the prefix holding valid records; anything after it is treated as absent.
    valid_len: u64,
    /// Bytes the file occupies on disk (≥ `valid_len`).
    file_len: u64,
    /// Unconsumed records in the segment.
    records: u64,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct SegmentStore {
    dir: PathBuf,
    options: StoreOptions,
    /// Every live segment, oldest first. The first one is the one being read.
    segments: VecDeque<Segment>,
    /// Next unconsumed record; `read.segment` is the first segment's number when there is one.
    /// Invariant: a segment other than the last is only kept while `read.offset < valid_len`.
    read: RecordId,
    pending_records: u64,
    /// Append handle on the last segment; `None` when it must not be appended to.
    writer: Option<File>,
    /// Read handle, with the number of the segment it reads.
    reader: Option<(u64, File)>,
    /// The record last returned by `peek` and the offset just past it.
    head: Option<(RecordId, u64)>,
    next_segment: u64,
    /// Consumed segment files whose deletion failed: (number, length). Retried on `consume`,
    /// counted in `used_bytes`.
    orphans: Vec<(u64, u64)>,
}
