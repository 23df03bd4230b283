//! Tests of the checkpoint store (`mod.rs`): container cursors, the agent marker, private
//! and atomic writes, corrupt files.

use super::*;
use crate::docker::timestamp::parse_rfc3339_nanos;

/// A cursor after `n` stdout lines stamped `ts`.
fn delivered(ts: i64, n: u64) -> Cursor {
    let mut c = Cursor::at(0);
    for _ in 0..n {
        c.deliver(crate::pipeline::StreamKind::Stdout, ts);
    }
    c
}

/// A state directory (the guard) with its `checkpoints` directory made, for files the test
/// writes before the store opens.
fn state_with_checkpoints_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cps = dir.path().join("checkpoints");
    fs::create_dir_all(&cps).expect("mkdir");
    (dir, cps)
}

#[test]
fn older_checkpoint_files_still_load_and_new_ones_keep_stream_positions() {
    let (dir, cps) = state_with_checkpoints_dir();
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
    let (dir, cps) = state_with_checkpoints_dir();
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
    let (dir, cps) = state_with_checkpoints_dir();
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
    let (dir, cps) = state_with_checkpoints_dir();
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
