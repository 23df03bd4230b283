use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tempfile::TempDir;

use super::super::test_support::*;
use super::super::*;

#[test]
fn peek_next_reads_ahead_across_segments_without_consuming() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), &options(1 << 20, 64));
    for i in 0..5 {
        store.append(&payload(i)).unwrap();
    }
    let (mut id, mut bytes) = store.peek().unwrap().unwrap();
    let mut ahead = vec![(id, bytes.clone())];
    while let Some((next, b)) = store.peek_next(id, bytes.len()).unwrap() {
        ahead.push((next, b.clone()));
        (id, bytes) = (next, b);
    }
    let got: Vec<Vec<u8>> = ahead.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(got, (0..5).map(payload).collect::<Vec<_>>());
    assert!(ahead.iter().any(|(id, _)| id.segment != ahead[0].0.segment));
    assert_eq!(store.pending_records(), 5, "nothing consumed");
    // Through the second record (both in the first segment) at once; not across segments.
    let (second, _) = &ahead[1];
    assert_eq!(second.segment, ahead[0].0.segment);
    let (third, _) = &ahead[2];
    assert!(
        store.consume_through(*third, 20, 3).is_err(),
        "across segments"
    );
    store.consume_through(*second, 20, 2).unwrap();
    assert_eq!(store.pending_records(), 3);
    for (id, _) in &ahead[2..] {
        store.consume(*id).unwrap();
    }
    assert_eq!(store.pending_records(), 0);
    drop(store);
    let (store, _) = open(dir.path(), &options(1 << 20, 64));
    assert_eq!(store.pending_records(), 0, "the position persisted");
}

#[test]
fn order_across_segments_and_reopen() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 64); // two 28-byte records per segment
    let (mut store, report) = open(tmp.path(), &opts);
    assert!(report.problems.is_empty());
    assert_eq!(report.pending_records, 0);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(store.append(&payload(i)).unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        ids[0],
        RecordId {
            segment: 1,
            offset: 0
        }
    );
    assert_eq!(
        ids[1],
        RecordId {
            segment: 1,
            offset: 28
        }
    );
    assert_eq!(
        ids[2],
        RecordId {
            segment: 2,
            offset: 0
        }
    );
    assert_eq!(segment_files(tmp.path()).len(), 5);
    assert_eq!(store.pending_records(), 10);
    assert_eq!(store.pending_bytes(), 280);
    assert_eq!(store.used_bytes(), 280);

    for (i, id) in ids.iter().enumerate().take(3) {
        let (peeked, data) = store.peek().unwrap().unwrap();
        assert_eq!(peeked, *id);
        assert_eq!(data, payload(i));
        // peek does not consume
        assert_eq!(store.peek().unwrap().unwrap().0, *id);
        store.consume(peeked).unwrap();
    }
    drop(store);

    let (mut store, report) = open(tmp.path(), &opts);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.pending_records, 7);
    assert_eq!(store.pending_records(), 7);
    assert_eq!(store.pending_bytes(), 7 * 28);
    store.append(&payload(10)).unwrap();
    let expected: Vec<Vec<u8>> = (3..11).map(payload).collect();
    assert_eq!(drain(&mut store), expected);
    assert_eq!(store.pending_records(), 0);
    assert_eq!(store.pending_bytes(), 0);
    assert_eq!(store.used_bytes(), 0);
}

#[test]
fn consumed_segments_are_deleted_and_position_persists() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 64);
    let (mut store, _) = open(tmp.path(), &opts);
    for i in 0..6 {
        store.append(&payload(i)).unwrap();
    }
    let first = segment_files(tmp.path())[0].clone();
    assert_eq!(segment_files(tmp.path()).len(), 3);
    for _ in 0..3 {
        let (id, _) = store.peek().unwrap().unwrap();
        store.consume(id).unwrap();
    }
    assert!(
        !first.exists(),
        "fully consumed first segment must be deleted"
    );
    assert_eq!(segment_files(tmp.path()).len(), 2);
    assert_eq!(store.used_bytes(), 3 * 28);
    drop(store);

    let (mut store, report) = open(tmp.path(), &opts);
    assert!(report.problems.is_empty());
    assert_eq!(store.pending_records(), 3);
    assert_eq!(drain(&mut store), (3..6).map(payload).collect::<Vec<_>>());
    // The segment being appended to survives being fully consumed.
    assert_eq!(segment_files(tmp.path()).len(), 1);
    drop(store);

    let (mut store, report) = open(tmp.path(), &opts);
    assert!(report.problems.is_empty());
    assert_eq!(report.pending_records, 0);
    assert!(store.peek().unwrap().is_none());
    // Appending continues in (then past) the consumed last segment; numbering goes on.
    let id = store.append(&payload(6)).unwrap();
    assert_eq!(id.segment, 4);
    assert_eq!(
        segment_files(tmp.path()).len(),
        1,
        "old last segment deleted"
    );
    assert_eq!(drain(&mut store), vec![payload(6)]);
}

#[test]
fn consume_checks_the_id() {
    let tmp = TempDir::new().unwrap();
    let (mut store, _) = open(tmp.path(), &options(1 << 20, 1 << 20));
    let empty = store
        .consume(RecordId {
            segment: 1,
            offset: 0,
        })
        .unwrap_err();
    assert_eq!(empty.kind(), io::ErrorKind::InvalidInput);
    let a = store.append(b"a").unwrap();
    let b = store.append(b"b").unwrap();
    let err = store.consume(b).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains(&b.to_string()), "{err}");
    // consume without a preceding peek works too
    store.consume(a).unwrap();
    store.consume(b).unwrap();
    assert!(store.peek().unwrap().is_none());
}

#[test]
fn full_then_accepts_again_after_consume() {
    let tmp = TempDir::new().unwrap();
    let (mut store, _) = open(tmp.path(), &options(100, 64));
    let big = vec![7u8; 40]; // 48 bytes on disk
    store.append(&big).unwrap();
    store.append(&big).unwrap();
    assert_eq!(store.used_bytes(), 96);
    match store.append(&big) {
        Err(AppendError::Full { used: 96, max: 100 }) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    match store.append(&[1u8; 93]) {
        Err(AppendError::TooLarge { len: 93 }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        store.append(&[]),
        Err(AppendError::Io(e)) if e.kind() == io::ErrorKind::InvalidInput
    ));
    // Consuming frees room again.
    let (id, _) = store.peek().unwrap().unwrap();
    store.consume(id).unwrap();
    assert_eq!(store.used_bytes(), 48);
    store.append(&big).unwrap();
    assert_eq!(store.pending_records(), 2);
    assert!(matches!(store.append(b"x"), Err(AppendError::Full { .. })));
    assert!(
        AppendError::Full { used: 1, max: 2 }
            .to_string()
            .contains("full")
    );
}

/// Issue 9 item 14: buffer and dead-letter files hold log bodies. Under umask 022 the
/// directories the store creates are 0700 and its files 0600. Runs itself again in a
/// child process whose umask is 022 (the umask is process-wide).
#[test]
fn files_are_private_under_umask_022() {
    const CHILD: &str = "LC_SEGMENT_UMASK_CHILD";
    if let Some(dir) = std::env::var_os(CHILD) {
        let dir = PathBuf::from(dir);
        let store_dir = dir.join("state").join("buffer").join("loki");
        let (mut store, _) = open(&store_dir, &options(1 << 20, 64));
        store.append(&payload(0)).unwrap();
        store.append(&payload(1)).unwrap();
        store.append(&payload(2)).unwrap();
        let (id, _) = store.peek().unwrap().unwrap();
        store.consume(id).unwrap();
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().unwrap();
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" --exact --quiet buffer::segment::store::tests::files_are_private_under_umask_022")
        .arg(&exe)
        .env(CHILD, tmp.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let state = tmp.path().join("state");
    let store_dir = state.join("buffer").join("loki");
    for dir in [&state, &state.join("buffer"), &store_dir] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let files: Vec<PathBuf> = fs::read_dir(&store_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(POSITION_FILE)),
        "{files:?}"
    );
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn big_record_gets_its_own_segment() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 64);
    let (mut store, _) = open(tmp.path(), &opts);
    let a = store.append(&payload(0)).unwrap();
    let b = store.append(&[5u8; 200]).unwrap();
    let c = store.append(&payload(1)).unwrap();
    assert_eq!((a.segment, b.segment, c.segment), (1, 2, 3));
    assert_eq!(b.offset, 0);
    drop(store);
    let (mut store, _) = open(tmp.path(), &opts);
    assert_eq!(
        drain(&mut store),
        vec![payload(0), vec![5u8; 200], payload(1)]
    );
}

#[test]
fn purge_empties_and_records_lists_without_consuming() {
    let tmp = TempDir::new().unwrap();
    let opts = options(1 << 20, 64);
    let (mut store, _) = open(tmp.path(), &opts);
    let ids: Vec<RecordId> = (0..5).map(|i| store.append(&payload(i)).unwrap()).collect();
    let (first, _) = store.peek().unwrap().unwrap();
    store.consume(first).unwrap();
    let listed = store.records().unwrap();
    assert_eq!(listed.iter().map(|r| r.0).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(payloads(listed), (1..5).map(payload).collect::<Vec<_>>());
    assert_eq!(store.pending_records(), 4);
    assert_eq!(store.records().unwrap().len(), 4);
    assert_eq!(store.peek().unwrap().unwrap().0, ids[1]);

    store.purge().unwrap();
    assert_eq!(store.pending_records(), 0);
    assert_eq!(store.pending_bytes(), 0);
    assert_eq!(store.used_bytes(), 0);
    assert!(store.records().unwrap().is_empty());
    assert!(store.peek().unwrap().is_none());
    assert!(segment_files(tmp.path()).is_empty());
    drop(store);

    let (mut store, report) = open(tmp.path(), &opts);
    assert!(report.problems.is_empty());
    assert_eq!(report.pending_records, 0);
    let id = store.append(&payload(7)).unwrap();
    assert!(id > ids[4]);
    drop(store);
    let (mut store, _) = open(tmp.path(), &opts);
    assert_eq!(drain(&mut store), vec![payload(7)]);
    assert_eq!(store.dir(), tmp.path());
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Consume,
    Peek,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => proptest::collection::vec(any::<u8>(), 1..120).prop_map(Op::Append),
        4 => Just(Op::Consume),
        1 => Just(Op::Peek),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn behaves_like_a_queue(ops in proptest::collection::vec(op(), 1..80)) {
        let tmp = TempDir::new().unwrap();
        let opts = StoreOptions {
            max_bytes: 400,
            segment_bytes: 100,
            fsync: FsyncPolicy::Never,
        };
        let (mut store, _) = open(tmp.path(), &opts);
        let mut model: VecDeque<(RecordId, Vec<u8>)> = VecDeque::new();
        let mut last_id: Option<RecordId> = None;
        for op in ops {
            match op {
                Op::Append(data) => {
                    let used: u64 = model.iter().map(|(_, p)| 8 + p.len() as u64).sum();
                    let fits = used + 8 + data.len() as u64 <= opts.max_bytes;
                    match store.append(&data) {
                        Ok(id) => {
                            prop_assert!(fits);
                            prop_assert!(last_id.is_none_or(|last| id > last));
                            last_id = Some(id);
                            model.push_back((id, data));
                        }
                        Err(AppendError::Full { used: u, .. }) => {
                            prop_assert!(!fits);
                            prop_assert_eq!(u, used);
                        }
                        Err(e) => prop_assert!(false, "append failed: {}", e),
                    }
                }
                Op::Consume => {
                    let peeked = store.peek().unwrap();
                    prop_assert_eq!(&peeked, &model.front().cloned());
                    if let Some((id, _)) = peeked {
                        store.consume(id).unwrap();
                        model.pop_front();
                    }
                }
                Op::Peek => {
                    prop_assert_eq!(store.peek().unwrap(), model.front().cloned());
                }
                Op::Reopen => {
                    drop(store);
                    let (reopened, report) = open(tmp.path(), &opts);
                    prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
                    prop_assert_eq!(report.pending_records, model.len() as u64);
                    store = reopened;
                }
            }
            let bytes: u64 = model.iter().map(|(_, p)| 8 + p.len() as u64).sum();
            prop_assert_eq!(store.pending_records(), model.len() as u64);
            prop_assert_eq!(store.pending_bytes(), bytes);
            prop_assert_eq!(store.used_bytes(), bytes);
            // Consumed segments do not pile up.
            prop_assert!(segment_files(tmp.path()).len() <= model.len() + 1);
        }
        let listed = store.records().unwrap();
        prop_assert_eq!(listed, model.iter().cloned().collect::<Vec<_>>());
        drop(store);
        let (mut store, _) = open(tmp.path(), &opts);
        let all: Vec<Vec<u8>> = model.into_iter().map(|(_, p)| p).collect();
        prop_assert_eq!(drain(&mut store), all);
    }
}
