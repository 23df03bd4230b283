//! Helpers of the segment store's tests.

use std::fs;
use std::path::{Path, PathBuf};

use super::{FsyncPolicy, OpenReport, RecordId, SegmentStore, StoreOptions};

pub(super) fn options(max_bytes: u64, segment_bytes: u64) -> StoreOptions {
    StoreOptions {
        max_bytes,
        segment_bytes,
        fsync: FsyncPolicy::Always,
    }
}

pub(super) fn open(dir: &Path, options: &StoreOptions) -> (SegmentStore, OpenReport) {
    SegmentStore::open(dir, options.clone()).unwrap()
}

/// Payload of exactly 20 bytes (28 on disk).
pub(super) fn payload(i: usize) -> Vec<u8> {
    format!("record-{i:013}").into_bytes()
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

pub(super) fn drain(store: &mut SegmentStore) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((id, payload)) = store.peek().unwrap() {
        store.consume(id).unwrap();
        out.push(payload);
    }
    out
}

pub(super) fn payloads(records: Vec<(RecordId, Vec<u8>)>) -> Vec<Vec<u8>> {
    records.into_iter().map(|(_, p)| p).collect()
}
