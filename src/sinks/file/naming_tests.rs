use super::*;
use std::collections::HashSet;

fn meta(id: &str, name: &str) -> ContainerMeta {
    ContainerMeta::named(id, name)
}

#[test]
fn names_cannot_escape_the_directory() {
    let t = PathTemplate::new("/logs/{container_name}.log").expect("template");
    assert_eq!(
        t.path_for(&meta("id", "../etc/passwd"), ""),
        PathBuf::from("/logs/%2E.%2Fetc%2Fpasswd.log")
    );
    let bare = PathTemplate::new("/logs/{container_name}").expect("template");
    for name in [".", "..", "a/../../b"] {
        let path = bare.path_for(&meta("id", name), "");
        assert_eq!(path.parent(), Some(std::path::Path::new("/logs")), "{name}");
        assert!(
            !path.components().any(|c| matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::CurDir
            )),
            "{name} -> {path:?}"
        );
    }
}

#[test]
fn different_names_give_different_files() {
    let t = PathTemplate::new("/logs/{container_name}.log").expect("template");
    let names = [
        "a..b", "a__b", "a_b", "a%b", "a%25b", "a/b", "a%2Fb", ".a", "%2Ea", "a.b", "a\0b", "a%00b",
    ];
    let paths: HashSet<PathBuf> = names
        .iter()
        .map(|n| t.path_for(&meta("id", n), ""))
        .collect();
    assert_eq!(paths.len(), names.len(), "{paths:?}");
    // Ordinary names are kept as they are.
    assert_eq!(
        t.path_for(&meta("id", "web-1.a_b"), ""),
        PathBuf::from("/logs/web-1.a_b.log")
    );
}

#[test]
fn long_names_are_cut_to_fit_and_stay_apart() {
    let t = PathTemplate::new("/logs/{container_name}.log").expect("template");
    let long_a = "a".repeat(289);
    let long_b = format!("{}b", "a".repeat(288));
    let pa = t.path_for(&meta(&"1".repeat(64), &long_a), "");
    let pb = t.path_for(&meta(&"2".repeat(64), &long_b), "");
    for p in [&pa, &pb] {
        let file = p.file_name().and_then(|f| f.to_str()).expect("name");
        assert!(file.len() <= NAME_MAX, "{} bytes", file.len());
        assert!(file.contains("%~"), "{file}");
    }
    assert_ne!(pa, pb);
    assert!(
        pa.to_string_lossy().ends_with("%~111111111111.log"),
        "{pa:?}"
    );
    // Multi-byte characters and escapes are never split.
    let wide = "é%".repeat(200);
    let p = t.path_for(&meta("abcdef0123456789", &wide), "");
    let file = p.file_name().and_then(|f| f.to_str()).expect("utf-8");
    assert!(file.len() <= NAME_MAX);
    let stem = file.trim_end_matches(".log");
    let kept = stem.split("%~").next().unwrap_or_default();
    assert!(kept.ends_with("%25") || kept.ends_with('é'), "{kept}");
}

#[test]
fn real_file_system_accepts_the_longest_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = PathTemplate::new(&format!(
        "{}/{{container_name}}-{{container_id}}.ndjson",
        dir.path().display()
    ))
    .expect("template");
    let path = t.path_for(&meta(&"f".repeat(64), &"x".repeat(289)), "");
    std::fs::write(&path, b"ok\n").expect("a bounded name can be created");
}

#[test]
fn the_shared_directory_is_what_precedes_the_first_placeholder() {
    let shared = |t: &str| PathTemplate::new(t).expect("template").shared_part();
    let dir = |d: &str| Some(PathBuf::from(d));
    assert_eq!(shared("/logs/{container_name}.log"), (dir("/logs"), true));
    assert_eq!(
        shared("/logs/app-{container_id}/x.log"),
        (dir("/logs"), true)
    );
    assert_eq!(shared("/{container_name}.log"), (dir("/"), true));
    assert_eq!(shared("{container_name}.log"), (None, true));
    assert_eq!(shared("/logs/all.log"), (None, false));
    // The day's directory is shared by every container.
    assert_eq!(
        shared("/logs/{date}/{container_name}.log"),
        (dir("/logs/{date}"), true)
    );
    assert_eq!(
        shared("/logs/{date}-{container_name}.log"),
        (dir("/logs"), true)
    );
}

#[test]
fn the_date_placeholder_takes_the_utc_day() {
    use std::time::{Duration, UNIX_EPOCH};
    let t = PathTemplate::new("/logs/{date}/{container_name}-{date}.log").expect("template");
    assert!(t.has_date());
    assert!(
        !PathTemplate::new("/logs/{container_name}.log")
            .expect("t")
            .has_date()
    );
    // 2026-12-01T23:59:59.999Z and one millisecond later.
    let before = UNIX_EPOCH + Duration::from_millis(1_796_169_599_999);
    let after = before + Duration::from_millis(1);
    assert_eq!(utc_date(before), "2026-12-01");
    assert_eq!(utc_date(after), "2026-12-02");
    assert_eq!(
        t.path_for(&meta("id", "web"), &utc_date(after)),
        PathBuf::from("/logs/2026-12-02/web-2026-12-02.log")
    );
    // A name that looks like a placeholder is a name.
    assert_eq!(
        t.path_for(&meta("id", "{date}"), "2026-12-02"),
        PathBuf::from("/logs/2026-12-02/{date}-2026-12-02.log")
    );
    // The date's 10 bytes count against the name's room.
    let tight = format!("/logs/{}{{date}}{{container_name}}", "p".repeat(216));
    assert!(PathTemplate::new(&tight).is_err());
    assert!(PathTemplate::new(&tight.replacen("p", "", 4)).is_ok());
}

#[test]
fn room_is_left_for_the_rotation_suffix() {
    let suffix = ".000001.gz.tmp".len();
    let t = PathTemplate::reserving("/logs/{container_name}.log", suffix).expect("template");
    let path = t.path_for(&meta(&"f".repeat(64), &"x".repeat(289)), "");
    let file = path.file_name().and_then(|f| f.to_str()).expect("name");
    assert_eq!(file.len(), NAME_MAX - suffix);
    // A fixed file name that leaves no room for the suffix is refused.
    let fixed = format!("/logs/{}", "f".repeat(250));
    assert!(PathTemplate::new(&fixed).is_ok());
    assert!(PathTemplate::reserving(&fixed, suffix).is_err());
    // Only the file name pays for it.
    let dir = format!("/{}/{{container_name}}.log", "d".repeat(250));
    assert!(PathTemplate::reserving(&dir, suffix).is_ok());
}

/// `{team}` takes the copied container label, `{image}` the image; values are encoded like
/// names (no escape from the directory), a container without the value gets `_unknown`,
/// and a value that looks like a placeholder stays as it is.
#[test]
fn field_placeholders_take_container_labels() {
    let t = PathTemplate::new("/lc/{team}/{image}/{container_name}.log").expect("template");
    let labelled =
        |team: &str| meta("id", "web").with_label_fields(vec![("team".into(), team.into())]);
    let mut m = labelled("pay");
    m.image = "reg.io/shop:1".into();
    assert_eq!(
        t.path_for(&m, ""),
        PathBuf::from("/lc/pay/reg.io%2Fshop:1/web.log")
    );
    assert_eq!(
        t.path_for(&labelled("../../etc"), ""),
        PathBuf::from("/lc/%2E.%2F..%2Fetc/_unknown/web.log")
    );
    assert_eq!(
        t.path_for(&labelled(""), ""),
        PathBuf::from("/lc/_unknown/_unknown/web.log")
    );
    assert_eq!(
        t.path_for(&labelled("{container_name}"), ""),
        PathBuf::from("/lc/{container_name}/_unknown/web.log")
    );
    let long = t.path_for(&labelled(&"x".repeat(400)), "");
    let dir = long.iter().nth(2).and_then(|c| c.to_str()).expect("dir");
    assert!(dir.len() <= NAME_MAX && dir.ends_with("%~id"), "{dir}");
    assert_eq!(t.label_placeholders().collect::<Vec<_>>(), ["team"]);
    assert_eq!(t.shared_part(), (Some(PathBuf::from("/lc")), true));
    // A value shares its component's room with the name.
    let e = PathTemplate::new(&format!("/l/{}{{team}}{{container_name}}", "p".repeat(200)))
        .expect_err("too long")
        .to_string();
    assert!(e.contains("leaves"), "{e}");
}

#[test]
fn a_file_name_ending_in_a_value_is_known() {
    let ends = |t: &str| {
        PathTemplate::new(t)
            .expect("template")
            .file_name_ends_in_a_value()
    };
    assert!(ends("/l/{container_name}"));
    assert!(ends("/l/x-{team}"));
    assert!(!ends("/l/{team}/x.log"));
    assert!(!ends("/l/{container_name}-{container_id}"));
    assert!(!ends("/l/{container_name}.{date}"));
}

fn file(key: &str, path: &str) -> ContainerMeta {
    ContainerMeta::for_file(
        key.into(),
        path.into(),
        "node-1".into(),
        vec![("job".into(), "syslog".into())],
    )
}

/// A host file: its path as the name, its key as the id, its group's fields as values;
/// the container fields are `_unknown`.
#[test]
fn a_host_file_takes_its_path_key_and_group_fields() {
    let t = PathTemplate::new("/lc/{job}/{compose_project}/{container_name}-{container_id}.log")
        .expect("template");
    assert_eq!(
        t.path_for(&file("file-2049-131", "/var/log/syslog"), ""),
        PathBuf::from("/lc/syslog/_unknown/%2Fvar%2Flog%2Fsyslog-file-2049-131.log")
    );
    // Containers are unchanged beside them.
    assert_eq!(
        t.path_for(&meta("abc", "web"), ""),
        PathBuf::from("/lc/_unknown/_unknown/web-abc.log")
    );
}

/// Long paths of files of one device (keys `file-2049-…` alike in their first 12
/// characters) that share their first 240 bytes stay apart once cut, and every run cuts a
/// path the same way.
#[test]
fn cut_paths_of_host_files_stay_apart() {
    let t = PathTemplate::new("/logs/{container_name}.log").expect("template");
    let dir = format!("/var/log/{}", "deep/".repeat(60));
    let keys = [
        "file-2049-1310",
        "file-2049-1311",
        "file-2049-13100",
        "file-66-1310",
    ];
    let paths: HashSet<PathBuf> = keys
        .iter()
        .map(|k| t.path_for(&file(k, &format!("{dir}app.log")), ""))
        .collect();
    assert_eq!(paths.len(), keys.len(), "{paths:?}");
    for p in &paths {
        let name = p.file_name().and_then(|f| f.to_str()).expect("name");
        assert!(name.len() <= NAME_MAX && name.contains("%~"), "{name}");
    }
    let again = t.path_for(&file(keys[0], &format!("{dir}app.log")), "");
    assert!(paths.contains(&again));
    assert_eq!(cut_tag(&file("file-2049-1310", "/x"), "").len(), 12);
}

#[test]
fn templates_without_room_for_a_name_are_refused() {
    let e = PathTemplate::new(&format!("/logs/{}{{container_name}}", "p".repeat(230)))
        .expect_err("too long")
        .to_string();
    assert!(e.contains("leaves"), "{e}");
    assert!(PathTemplate::new("/logs/{container_name}/{container_id}.log").is_ok());
}
