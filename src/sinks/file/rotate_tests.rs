use super::*;

fn policy(gzip: bool, max_files: Option<usize>) -> RotatePolicy {
    RotatePolicy {
        max_bytes: Some(100),
        max_age: None,
        max_files,
        gzip,
    }
}

#[test]
fn a_file_is_due_by_size_or_age_and_never_when_empty() {
    let p = RotatePolicy {
        max_bytes: Some(100),
        max_age: Some(Duration::from_secs(60)),
        ..RotatePolicy::default()
    };
    assert_eq!(p.due(99, Duration::from_secs(59)), None);
    assert_eq!(p.due(100, Duration::ZERO), Some(FileRotationReason::Size));
    assert_eq!(
        p.due(1, Duration::from_secs(60)),
        Some(FileRotationReason::Age)
    );
    assert_eq!(p.due(0, Duration::from_secs(3600)), None);
    assert_eq!(RotatePolicy::default().due(u64::MAX, Duration::MAX), None);
}

#[test]
fn rotated_names_are_numbered_and_never_taken_for_logrotates() {
    let live = Path::new("/logs/web.log");
    assert_eq!(
        rotated_path(live, 7, Kind::Plain),
        PathBuf::from("/logs/web.log.000007")
    );
    assert_eq!(
        rotated_path(live, 1_234_567, Kind::GzTmp),
        PathBuf::from("/logs/web.log.1234567.gz.tmp")
    );
    assert_eq!(
        parse_rotated("web.log", "web.log.000007"),
        Some((7, Kind::Plain))
    );
    assert_eq!(
        parse_rotated("web.log", "web.log.000007.gz"),
        Some((7, Kind::Gz))
    );
    assert_eq!(
        parse_rotated("web.log", "web.log.1234567.gz.tmp"),
        Some((1_234_567, Kind::GzTmp))
    );
    for other in [
        "web.log",
        "web.log.1",
        "web.log.1.gz",
        "web.log.00000x",
        "web.log2.000001",
        "web.log.000001.zip",
        "web.log-000001",
    ] {
        assert_eq!(parse_rotated("web.log", other), None, "{other}");
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(File::open(path).expect("open"))
        .read_to_string(&mut text)
        .expect("gzip");
    text
}

#[test]
fn rotation_takes_the_next_number_and_upkeep_compresses_and_prunes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("c.log");
    let metrics = Metrics::new();
    let never = AtomicBool::new(false);
    for i in 1..=4 {
        std::fs::write(&live, format!("line {i}\n")).expect("write");
        assert_eq!(
            rotate(&live).expect("rotate"),
            rotated_path(&live, i, Kind::Plain)
        );
        // logrotate's own names are left alone.
        std::fs::write(dir.path().join(format!("c.log.{i}")), "theirs\n").expect("write");
    }
    upkeep(&live, &policy(true, Some(2)), 0o640, &never, &metrics);
    assert_eq!(
        files(dir.path()),
        [
            "c.log.000003.gz",
            "c.log.000004.gz",
            "c.log.1",
            "c.log.2",
            "c.log.3",
            "c.log.4"
        ]
    );
    assert_eq!(gunzip(&rotated_path(&live, 4, Kind::Gz)), "line 4\n");
    assert_eq!(metrics.file_sink_retention_deletions.get(), 2);
    assert_eq!(metrics.file_sink_compression_failures.get(), 0);
    // Numbers go on after the highest one, compressed or not.
    std::fs::write(&live, "line 5\n").expect("write");
    assert_eq!(
        rotate(&live).expect("rotate"),
        rotated_path(&live, 5, Kind::Plain)
    );
}

#[test]
fn upkeep_finishes_what_a_crash_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("c.log");
    let metrics = Metrics::new();
    let never = AtomicBool::new(false);
    // 1: crash mid-compression (a torn .gz.tmp beside the plain file).
    std::fs::write(rotated_path(&live, 1, Kind::Plain), "one\n").expect("write");
    std::fs::write(rotated_path(&live, 1, Kind::GzTmp), b"\x1f\x8b torn").expect("write");
    // 2: crash after the rename, before the plain file was deleted.
    std::fs::write(rotated_path(&live, 2, Kind::Plain), "two\n").expect("write");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"two\n").expect("gzip");
    std::fs::write(rotated_path(&live, 2, Kind::Gz), gz.finish().expect("gzip")).expect("write");
    upkeep(&live, &policy(true, None), 0o640, &never, &metrics);
    assert_eq!(files(dir.path()), ["c.log.000001.gz", "c.log.000002.gz"]);
    assert_eq!(gunzip(&rotated_path(&live, 1, Kind::Gz)), "one\n");
    assert_eq!(gunzip(&rotated_path(&live, 2, Kind::Gz)), "two\n");
    assert_eq!(metrics.file_sink_retention_deletions.get(), 0);
}

#[test]
fn a_cancelled_compression_keeps_the_plain_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("c.log");
    let metrics = Metrics::new();
    std::fs::write(rotated_path(&live, 1, Kind::Plain), "one\n").expect("write");
    upkeep(
        &live,
        &policy(true, None),
        0o640,
        &AtomicBool::new(true),
        &metrics,
    );
    assert_eq!(files(dir.path()), ["c.log.000001"]);
}

#[test]
fn a_failed_compression_is_counted_and_keeps_the_plain_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("c.log");
    let metrics = Metrics::new();
    // A directory where the .gz.tmp should go: the compression cannot start.
    std::fs::write(rotated_path(&live, 1, Kind::Plain), "one\n").expect("write");
    std::fs::create_dir(rotated_path(&live, 1, Kind::GzTmp)).expect("mkdir");
    upkeep(
        &live,
        &policy(true, None),
        0o640,
        &AtomicBool::new(false),
        &metrics,
    );
    assert_eq!(metrics.file_sink_compression_failures.get(), 1);
    assert!(rotated_path(&live, 1, Kind::Plain).exists());
}
