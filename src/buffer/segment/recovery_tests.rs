use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::super::test_support::*;
use super::super::*;

/// Found by the long `segment_store` fuzz run: a position naming segment `MAX_SEGMENT`
/// itself was trusted, so the next append went to segment `MAX_SEGMENT + 1`, which a
/// reopen does not list: the record was lost.
#[test]
fn a_record_appended_after_the_highest_trusted_position_survives_a_reopen() {
    // MAX_SEGMENT itself: untrusted; one below (found by the CI smoke run after the first
    // fix, which had made the listing skip MAX_SEGMENT): trusted, and the next segment,
    // MAX_SEGMENT, is listed again.
    for position in [MAX_SEGMENT, MAX_SEGMENT - 1] {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(POSITION_FILE), format!("{position}:65")).unwrap();
        let (mut store, _) = open(dir.path(), &options(1 << 20, 1 << 16));
        assert_eq!(drain(&mut store), Vec::<Vec<u8>>::new());
        store.append(&payload(1)).unwrap();
        drop(store);
        let (mut store, report) = open(dir.path(), &options(1 << 20, 1 << 16));
        assert_eq!(
            report.pending_records, 1,
            "{position}: {:?}",
            report.problems
        );
        assert_eq!(drain(&mut store), vec![payload(1)]);
    }
}

/// A hand-made segment file numbered MAX_SEGMENT: appending fails with a clear error
/// rather than writing a segment no reopen would list.
#[test]
fn no_segment_is_created_above_the_highest_number() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(format!(
            "{MAX_SEGMENT:0width$}{SEGMENT_SUFFIX}",
            width = SEGMENT_DIGITS
        )),
        b"",
    )
    .unwrap();
    // Small segments: the second record needs a segment after it.
    let (mut store, _) = open(dir.path(), &options(1 << 20, 16));
    store.append(&payload(1)).unwrap();
    let err = store.append(&payload(2)).unwrap_err();
    assert!(
        err.to_string().contains("segment numbers exhausted"),
        "{err}"
    );
    drop(store);
    let (mut store, _) = open(dir.path(), &options(1 << 20, 16));
    assert_eq!(drain(&mut store), vec![payload(1)]);
}

/// Found by the `segment_store` fuzz target: a position naming segment u64::MAX made the
/// next append overflow the segment counter (a panic in debug builds; wrapped to 0 in
/// release, sorting new records before the read position).
#[test]
fn implausible_segment_numbers_are_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(POSITION_FILE), format!("{}:0", u64::MAX)).unwrap();
    fs::write(
        dir.path().join(format!(
            "{:0width$}{SEGMENT_SUFFIX}",
            u64::MAX,
            width = SEGMENT_DIGITS
        )),
        b"junk",
    )
    .unwrap();
    let (mut store, report) = open(dir.path(), &options(1 << 20, 1 << 16));
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("implausible read position")),
        "{:?}",
        report.problems
    );
    store.append(&payload(1)).unwrap();
    store.append(&payload(2)).unwrap();
    assert_eq!(drain(&mut store), vec![payload(1), payload(2)]);
    drop(store);
    let (mut store, _) = open(dir.path(), &options(1 << 20, 1 << 16));
    store.append(&payload(3)).unwrap();
    assert_eq!(drain(&mut store), vec![payload(3)]);
}

/// Appends three records to one segment and returns the file and the ids.
fn three_records(dir: &Path, opts: &StoreOptions) -> (PathBuf, Vec<RecordId>) {
    let (mut store, _) = open(dir, opts);
    let ids = (0..3).map(|i| store.append(&payload(i)).unwrap()).collect();
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    (files[0].clone(), ids)
}

fn assert_recovers(dir: &Path, opts: &StoreOptions, file: &Path, good: usize) {
    let (mut store, report) = open(dir, opts);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(report.problems[0].contains(name), "{:?}", report.problems);
    assert!(
        report.problems[0].contains("offset"),
        "{:?}",
        report.problems
    );
    assert_eq!(report.pending_records, good as u64);
    let expected: Vec<Vec<u8>> = (0..good).map(payload).collect();
    assert_eq!(payloads(store.records().unwrap()), expected);
    assert_eq!(fs::metadata(file).unwrap().len(), 28 * good as u64);
    store.append(&payload(9)).unwrap();
    drop(store);

    let (mut store, report) = open(dir, opts);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut expected = expected;
    expected.push(payload(9));
    assert_eq!(drain(&mut store), expected);
}

#[test]
fn torn_tail_is_truncated() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 1 << 20);
    let (file, ids) = three_records(tmp.path(), &opts);
    // In the middle of record 3's payload.
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(ids[2].offset + HEADER_LEN + 5).unwrap();
    drop(f);
    assert_recovers(tmp.path(), &opts, &file, 2);
}

#[test]
fn torn_header_is_truncated() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 1 << 20);
    let (file, ids) = three_records(tmp.path(), &opts);
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(ids[2].offset + 3).unwrap();
    drop(f);
    assert_recovers(tmp.path(), &opts, &file, 2);
}

#[test]
fn corrupt_payload_is_truncated() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 1 << 20);
    let (file, ids) = three_records(tmp.path(), &opts);
    let mut bytes = fs::read(&file).unwrap();
    bytes[(ids[1].offset + HEADER_LEN + 4) as usize] ^= 0x40;
    fs::write(&file, &bytes).unwrap();
    assert_recovers(tmp.path(), &opts, &file, 1);
}

#[test]
fn zero_filled_tail_is_not_read_as_records() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 1 << 20);
    let (file, _) = three_records(tmp.path(), &opts);
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(3 * 28 + 4096).unwrap();
    drop(f);
    assert_recovers(tmp.path(), &opts, &file, 3);
}

#[test]
fn corrupt_middle_segment_is_skipped() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 64);
    let (mut store, _) = open(tmp.path(), &opts);
    let ids: Vec<RecordId> = (0..6).map(|i| store.append(&payload(i)).unwrap()).collect();
    drop(store);
    let files = segment_files(tmp.path());
    assert_eq!(files.len(), 3);
    // Corrupt the second record of segment 2: its first record survives.
    let mut bytes = fs::read(&files[1]).unwrap();
    bytes[(ids[3].offset + HEADER_LEN) as usize] ^= 1;
    fs::write(&files[1], &bytes).unwrap();

    let (mut store, report) = open(tmp.path(), &opts);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let name = files[1].file_name().unwrap().to_str().unwrap();
    assert!(report.problems[0].contains(name));
    assert!(report.problems[0].contains("offset 28"));
    assert_eq!(report.pending_records, 5);
    // The bad bytes stay on disk (and count as used) until the segment is deleted.
    assert_eq!(store.used_bytes(), 6 * 28);
    assert_eq!(store.pending_bytes(), 5 * 28);
    let listed: Vec<RecordId> = store.records().unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(listed, vec![ids[0], ids[1], ids[2], ids[4], ids[5]]);
    // Consume two, reopen: the remaining bad region is still skipped and reported.
    for _ in 0..2 {
        let (id, _) = store.peek().unwrap().unwrap();
        store.consume(id).unwrap();
    }
    drop(store);
    let (mut store, report) = open(tmp.path(), &opts);
    assert_eq!(report.problems.len(), 1);
    assert_eq!(drain(&mut store), vec![payload(2), payload(4), payload(5)]);
    assert_eq!(segment_files(tmp.path()).len(), 1);
    store.append(&payload(6)).unwrap();
    assert_eq!(drain(&mut store), vec![payload(6)]);
}

/// Issue 9 item 3: data that goes bad after `open` is met by `peek`; skipping it skips the
/// rest of its segment (as `open` does), and the rest of the store is still read.
#[test]
fn corrupt_record_met_after_open_is_skipped() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 64);
    let (mut store, _) = open(tmp.path(), &opts);
    let ids: Vec<RecordId> = (0..6).map(|i| store.append(&payload(i)).unwrap()).collect();
    let files = segment_files(tmp.path());
    assert_eq!(files.len(), 3);
    let (first, _) = store.peek().unwrap().unwrap();
    store.consume(first).unwrap();
    let (second, _) = store.peek().unwrap().unwrap();
    store.consume(second).unwrap();
    // Segment 2 goes bad while the store is open.
    let mut bytes = fs::read(&files[1]).unwrap();
    bytes[(ids[2].offset + HEADER_LEN) as usize] ^= 1;
    fs::write(&files[1], &bytes).unwrap();
    let err = store.peek().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert_eq!(store.skip_corrupt_head(), 2);
    assert_eq!(store.pending_records(), 2);
    assert_eq!(drain(&mut store), vec![payload(4), payload(5)]);
    drop(store);
    let (mut store, report) = open(tmp.path(), &opts);
    assert_eq!(report.pending_records, 0, "{:?}", report.problems);
    store.append(&payload(6)).unwrap();
    assert_eq!(drain(&mut store), vec![payload(6)]);
}

/// The same in the segment being appended to, here truncated behind the store's back:
/// appends go to a fresh segment and are read normally.
#[test]
fn corrupt_tail_of_the_append_segment_is_skipped() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 1024);
    let (mut store, _) = open(tmp.path(), &opts);
    let ids: Vec<RecordId> = (0..3).map(|i| store.append(&payload(i)).unwrap()).collect();
    let files = segment_files(tmp.path());
    assert_eq!(files.len(), 1);
    let (first, _) = store.peek().unwrap().unwrap();
    store.consume(first).unwrap();
    let file = OpenOptions::new().write(true).open(&files[0]).unwrap();
    file.set_len(ids[1].offset + 4).unwrap();
    let err = store.peek().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert_eq!(store.skip_corrupt_head(), 2);
    assert_eq!(store.pending_records(), 0);
    assert!(store.peek().unwrap().is_none());
    store.append(&payload(3)).unwrap();
    store.append(&payload(4)).unwrap();
    assert_eq!(drain(&mut store), vec![payload(3), payload(4)]);
    assert_eq!(segment_files(tmp.path()).len(), 1);
}

#[test]
fn unparsable_position_starts_from_the_oldest_segment() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 1 << 20);
    let (mut store, _) = open(tmp.path(), &opts);
    for i in 0..3 {
        store.append(&payload(i)).unwrap();
    }
    let (id, _) = store.peek().unwrap().unwrap();
    store.consume(id).unwrap();
    drop(store);
    fs::write(tmp.path().join("position"), b"garbage\n").unwrap();
    let (store, report) = open(tmp.path(), &opts);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("position"));
    assert!(report.problems[0].contains("garbage"));
    assert_eq!(store.pending_records(), 3);

    // A missing position file is not a problem.
    drop(store);
    fs::remove_file(tmp.path().join("position")).unwrap();
    let (store, report) = open(tmp.path(), &opts);
    assert!(report.problems.is_empty());
    assert_eq!(store.pending_records(), 3);
}

#[test]
fn position_past_the_end_means_consumed_and_is_not_appended_to() {
    let tmp = TempDir::new().unwrap();
    let opts = StoreOptions {
        fsync: FsyncPolicy::Never,
        ..options(1 << 20, 1 << 20)
    };
    let (file, _) = three_records(tmp.path(), &opts);
    let (mut store, _) = open(tmp.path(), &opts);
    assert_eq!(drain(&mut store).len(), 3);
    drop(store);
    // Segment data lost (never fsynced), the position survived.
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(28).unwrap();
    drop(f);

    let (mut store, report) = open(tmp.path(), &opts);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("past the end"));
    assert_eq!(store.pending_records(), 0);
    assert!(store.peek().unwrap().is_none());
    let id = store.append(&payload(5)).unwrap();
    assert_eq!(
        id,
        RecordId {
            segment: 2,
            offset: 0
        }
    );
    assert!(!file.exists());
    drop(store);

    let (mut store, report) = open(tmp.path(), &opts);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(drain(&mut store), vec![payload(5)]);
}

#[test]
fn leftover_consumed_segments_are_deleted_on_open() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 64);
    let (mut store, _) = open(tmp.path(), &opts);
    for i in 0..4 {
        store.append(&payload(i)).unwrap();
    }
    drop(store);
    // As if a crash came between writing the position and deleting segment 1.
    fs::write(tmp.path().join("position"), b"2:0\n").unwrap();
    let (mut store, report) = open(tmp.path(), &opts);
    assert!(report.problems.is_empty());
    assert_eq!(segment_files(tmp.path()).len(), 1);
    assert_eq!(drain(&mut store), vec![payload(2), payload(3)]);
}
