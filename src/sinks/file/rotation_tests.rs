//! The file sink's rotation (size, age, `{date}`, a file moved away, compression and
//! `max_files`) through its [`Sink`] interface; the helpers are in `tests.rs`.

use super::*;

fn rotating_sink(dir: &Path, template: &str, rotate: RotatePolicy) -> (FileSink, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let sink = FileSink::new(
        FileSinkSettings {
            template: PathTemplate::new(&format!("{}/{template}", dir.display()))
                .expect("template"),
            idle_close: Duration::from_secs(60),
            modes: Modes::default(),
            durability: Durability::Always,
            max_open_files: 16,
            rotate,
        },
        Arc::clone(&metrics),
    );
    (sink, metrics)
}

/// What the writer does at a durable point.
fn durable(sink: &mut FileSink) {
    sink.flush().expect("flush");
    sink.sync().expect("sync");
    sink.commit();
}

fn rotations(metrics: &Metrics, reason: &'static str) -> u64 {
    metrics
        .file_sink_rotations
        .get_or_create(&crate::observability::metrics::ReasonLabels { reason })
        .get()
}

/// Every file of `dir` whose name starts with `prefix`, oldest first (rotated by number,
/// then the live one), gzip or not, as one sequence of numbers.
fn all_numbers(dir: &Path, prefix: &str) -> Vec<usize> {
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    let mut live = None;
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        if name == prefix {
            live = Some(path);
        } else if let Some((seq, kind)) = rotate::parse_rotated(prefix, &name) {
            assert_ne!(kind, rotate::Kind::GzTmp, "a .gz.tmp was left: {name}");
            rotated.push((seq, path));
        }
    }
    rotated.sort();
    let mut out = Vec::new();
    for path in rotated.into_iter().map(|(_, p)| p).chain(live) {
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(File::open(&path).expect("open")),
                &mut text,
            )
            .expect("gzip");
            text
        } else {
            std::fs::read_to_string(&path).expect("read")
        };
        let tmp = dir.join("one-file");
        std::fs::write(&tmp, text).expect("write");
        out.extend(numbers(&tmp));
        std::fs::remove_file(&tmp).expect("rm");
    }
    out
}

#[test]
fn size_rotation_keeps_every_line_once_in_order_and_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = RotatePolicy {
        max_bytes: Some(4096),
        ..RotatePolicy::default()
    };
    let (mut sink, metrics) = rotating_sink(dir.path(), "{container_name}.log", policy);
    let c = meta("id", "c");
    // 50 durable points of 20 lines (~2.5 KiB each): a file is due every second one.
    for round in 0..50 {
        write(&mut sink, &batch(&c, round * 20, 20, 10));
        durable(&mut sink);
    }
    assert_eq!(
        all_numbers(dir.path(), "c.log"),
        (0..1000).collect::<Vec<_>>()
    );
    let rotated = rotate::list_rotated(&dir.path().join("c.log")).expect("list");
    assert_eq!(rotations(&metrics, "size"), rotated.len() as u64);
    assert!(rotated.len() >= 20, "{} rotations", rotated.len());
    for seq in rotated.keys() {
        let path = rotate::rotated_path(&dir.path().join("c.log"), *seq, rotate::Kind::Plain);
        // Rotated at the first durable point past max_bytes: at most one more round in it.
        let len = std::fs::metadata(&path).expect("meta").len();
        assert!(
            (4096..4096 + 20 * 200).contains(&len),
            "{path:?}: {len} bytes"
        );
    }
}

#[test]
fn nothing_unacknowledged_is_rotated_and_abandon_still_cuts_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = RotatePolicy {
        max_bytes: Some(100),
        ..RotatePolicy::default()
    };
    let (mut sink, _) = rotating_sink(dir.path(), "{container_name}.log", policy);
    let c = meta("id", "c");
    write(&mut sink, &batch(&c, 0, 10, 10));
    durable(&mut sink); // due, rotated
    write(&mut sink, &batch(&c, 10, 10, 10));
    sink.flush().expect("flush"); // written, never acknowledged
    sink.abandon();
    assert_eq!(
        all_numbers(dir.path(), "c.log"),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn a_file_due_at_open_rotates_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = meta("id", "c");
    let (mut plain, _) = rotating_sink(dir.path(), "{container_name}.log", RotatePolicy::default());
    write(&mut plain, &batch(&c, 0, 10, 10));
    durable(&mut plain);
    drop(plain);
    let policy = RotatePolicy {
        max_age: Some(Duration::from_secs(3600)),
        ..RotatePolicy::default()
    };
    let (mut sink, metrics) = rotating_sink(dir.path(), "{container_name}.log", policy);
    // Two hours later: the old file is too old.
    sink.clock = Arc::new(|| SystemTime::now() + Duration::from_secs(7200));
    write(&mut sink, &batch(&c, 10, 5, 10));
    durable(&mut sink);
    assert_eq!(rotations(&metrics, "age"), 1);
    let live = dir.path().join("c.log");
    assert_eq!(numbers(&live), (10..15).collect::<Vec<_>>());
    assert_eq!(
        numbers(&rotate::rotated_path(&live, 1, rotate::Kind::Plain)),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn the_date_switches_files_at_midnight_utc_without_losing_a_line() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sink, metrics) = rotating_sink(
        dir.path(),
        "{container_name}-{date}.log",
        RotatePolicy::default(),
    );
    // 2026-12-01T23:59:58Z, moved on by the test.
    let now_ms = Arc::new(AtomicU64::new(1_796_169_598_000));
    let clock_ms = Arc::clone(&now_ms);
    sink.clock = Arc::new(move || {
        SystemTime::UNIX_EPOCH + Duration::from_millis(clock_ms.load(Ordering::SeqCst))
    });
    let c = meta("id", "c");
    for round in 0..10 {
        write(&mut sink, &batch(&c, round * 10, 10, 10));
        durable(&mut sink);
        now_ms.fetch_add(500, Ordering::SeqCst);
    }
    let day1 = numbers(&dir.path().join("c-2026-12-01.log"));
    let day2 = numbers(&dir.path().join("c-2026-12-02.log"));
    // 23:59:58.0, .5, 59.0, .5 are on the first day; midnight and later on the second.
    assert_eq!(day1, (0..40).collect::<Vec<_>>());
    assert_eq!(day2, (40..100).collect::<Vec<_>>());
    assert_eq!(rotations(&metrics, "date"), 1);
    assert_eq!(sink.files.len(), 1, "the first day's file is closed");
}

#[test]
fn a_file_moved_away_is_reopened_and_every_line_is_in_one_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sink, metrics) =
        rotating_sink(dir.path(), "{container_name}.log", RotatePolicy::default());
    let c = meta("id", "c");
    let live = dir.path().join("c.log");
    let moved = dir.path().join("c.log.1");
    let force_check = |sink: &mut FileSink| {
        sink.moved_checked = Instant::now()
            .checked_sub(Duration::from_secs(2))
            .expect("uptime");
    };
    write(&mut sink, &batch(&c, 0, 10, 10));
    durable(&mut sink);
    // logrotate (rename, then create): lines written before the sink notices go to the
    // moved file, later ones to the new one.
    std::fs::rename(&live, &moved).expect("rename");
    std::fs::write(&live, b"").expect("create");
    write(&mut sink, &batch(&c, 10, 10, 10));
    force_check(&mut sink);
    durable(&mut sink);
    assert_eq!(rotations(&metrics, "external"), 1);
    write(&mut sink, &batch(&c, 20, 10, 10));
    durable(&mut sink);
    assert_eq!(numbers(&moved), (0..20).collect::<Vec<_>>());
    assert_eq!(numbers(&live), (20..30).collect::<Vec<_>>());
    // Deleted outright (no create): the path is created again.
    std::fs::remove_file(&moved).expect("rm");
    std::fs::rename(&live, &moved).expect("rename");
    force_check(&mut sink);
    durable(&mut sink);
    write(&mut sink, &batch(&c, 30, 10, 10));
    durable(&mut sink);
    assert_eq!(rotations(&metrics, "external"), 2);
    assert_eq!(numbers(&moved), (20..30).collect::<Vec<_>>());
    assert_eq!(numbers(&live), (30..40).collect::<Vec<_>>());
    // Not checked more than once a second.
    std::fs::rename(&live, &moved).expect("rename");
    sink.moved_checked = Instant::now();
    durable(&mut sink);
    assert_eq!(rotations(&metrics, "external"), 2);
}

#[test]
fn rotated_files_are_compressed_and_pruned_to_max_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = RotatePolicy {
        max_bytes: Some(1000),
        max_files: Some(3),
        gzip: true,
        ..RotatePolicy::default()
    };
    let (mut sink, metrics) = rotating_sink(dir.path(), "{container_name}.log", policy);
    let c = meta("id", "c");
    for round in 0..10 {
        write(&mut sink, &batch(&c, round * 10, 10, 10));
        durable(&mut sink);
    }
    // Let the upkeep finish what was asked.
    if let Some(u) = sink.upkeeper.as_mut() {
        u.stop(false);
    }
    let size_rotations = rotations(&metrics, "size");
    assert_eq!(
        size_rotations, 10,
        "each round of ~1.2 KiB is past max_bytes"
    );
    let rotated = rotate::list_rotated(&dir.path().join("c.log")).expect("list");
    assert_eq!(rotated.keys().copied().collect::<Vec<_>>(), vec![8, 9, 10]);
    assert!(
        rotated.values().all(|k| k == &vec![rotate::Kind::Gz]),
        "{rotated:?}"
    );
    assert_eq!(metrics.file_sink_retention_deletions.get(), 7);
    assert_eq!(metrics.file_sink_compression_failures.get(), 0);
    // What is kept is the newest part, whole and in order.
    assert_eq!(
        all_numbers(dir.path(), "c.log"),
        (70..100).collect::<Vec<_>>()
    );
}

#[test]
fn a_failed_rotation_keeps_writing_into_the_same_file_and_is_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = RotatePolicy {
        max_bytes: Some(100),
        ..RotatePolicy::default()
    };
    let (mut sink, metrics) = rotating_sink(dir.path(), "{container_name}.log", policy);
    let c = meta("id", "c");
    let live = dir.path().join("c.log");
    std::fs::write(&live, b"").expect("create");
    // Append-only: renaming it fails with EPERM, even for root.
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(&live)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+a") {
        println!("skipped: chattr +a is not available on this file system");
        return;
    }
    for round in 0..5 {
        write(&mut sink, &batch(&c, round * 10, 10, 10));
        durable(&mut sink);
    }
    let lines = numbers(&live);
    let failures = metrics.file_sink_rotation_failures.get();
    assert!(chattr("-a"), "chattr -a");
    assert_eq!(lines, (0..50).collect::<Vec<_>>());
    assert_eq!(failures, 1, "retried only after ROTATE_RETRY");
    assert_eq!(rotations(&metrics, "size"), 0);
}
