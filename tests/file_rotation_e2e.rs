//! The file sink's rotation against the real dockerd, with the real agent binary: rotation by
//! size with gzip (every line exactly once, in order, across the live file and the rotated
//! ones), `max_files`, a SIGKILL in the middle of rotations and compressions, and Debian's
//! real `logrotate` moving files away (rename + create) while lines are written.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::{Containers, printer};
use support::{assert_run, wait_until};

fn options(containers: &Containers, out: &Path, file_keys: &str) -> AgentOptions {
    AgentOptions {
        capture: containers.include_yaml(),
        file_sink: false,
        sinks: format!(
            "  file:\n    path: {}/{{container_name}}.log\n{file_keys}",
            out.display()
        ),
        ..AgentOptions::default()
    }
}

/// The text of a sink file, gunzipped when it ends in `.gz`.
fn read_text(path: &Path) -> String {
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        if let Ok(f) = std::fs::File::open(path) {
            flate2::read::GzDecoder::new(f)
                .read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{}: not gzip: {e}", path.display()));
        }
        text
    } else {
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

/// The agent's rotated files of `live` (`live.NNNNNN[.gz][.tmp]`): number → file names.
fn rotated(live: &Path) -> BTreeMap<u64, Vec<String>> {
    let live_name = live.file_name().and_then(|n| n.to_str()).expect("name");
    let mut found: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(live.parent().expect("dir")) else {
        return found;
    };
    for entry in entries {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let Some(rest) = name
            .strip_prefix(live_name)
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        let digits = rest.split('.').next().unwrap_or_default();
        if digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
            found
                .entry(digits.parse().expect("number"))
                .or_default()
                .push(name);
        }
    }
    found
}

/// Every message of `live` and its rotated files, oldest first. Panics on a number with
/// both its plain and its `.gz` file or with a `.gz.tmp` (upkeep not finished: the caller
/// waits for [`settled`] first).
fn union(live: &Path) -> Vec<String> {
    let dir = live.parent().expect("dir");
    let mut out = Vec::new();
    for (seq, names) in rotated(live) {
        assert_eq!(names.len(), 1, "number {seq}: {names:?}");
        let path = dir.join(&names[0]);
        out.extend(support::ndjson_messages(&read_text(&path), &path));
    }
    out.extend(support::ndjson_messages(&read_text(live), live));
    out
}

/// Every rotated file of `live` is compressed, and nothing is left half done.
fn settled(live: &Path) -> bool {
    rotated(live)
        .values()
        .all(|names| names.len() == 1 && names[0].ends_with(".gz"))
}

/// The messages of `live` and its rotated files right now, wherever upkeep is (a plain file
/// and its `.gz` count once, a `.gz.tmp` not at all): for waiting, not for the final checks.
fn union_now(live: &Path) -> Vec<String> {
    let dir = live.parent().expect("dir");
    let mut out = Vec::new();
    for names in rotated(live).values() {
        let whole = names
            .iter()
            .find(|n| !n.ends_with(".gz") && !n.ends_with(".tmp"))
            .or_else(|| names.iter().find(|n| n.ends_with(".gz")));
        if let Some(name) = whole {
            let path = dir.join(name);
            out.extend(support::ndjson_messages(&read_text(&path), &path));
        }
    }
    out.extend(support::ndjson_messages(&read_text(live), live));
    out
}

fn lines_now(live: &Path) -> usize {
    union_now(live).len()
}

fn rotations(agent: &Agent, reason: &str) -> f64 {
    agent.metric(&format!(
        "log_capturer_file_sink_rotations_total{{reason=\"{reason}\"}}"
    ))
}

/// Containers of `test` and the agent writing to `<tmp>/out` with these `sinks.file` keys.
fn rotating_agent(test: &str, file_keys: &str) -> (Containers, tempfile::TempDir, PathBuf, Agent) {
    let containers = Containers::new(test);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let agent = Agent::start(dir.path(), options(&containers, &out, file_keys));
    (containers, dir, out, agent)
}

#[test]
fn size_rotation_with_gzip_keeps_every_line_exactly_once_in_order() {
    let (mut containers, _dir, out, mut agent) = rotating_agent(
        "rotsize",
        "    fsync: always\n    rotate:\n      max_bytes: 16KiB\n      max_files: 10000\n      compress: gzip\n",
    );
    let n = 3000;
    let names: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .map(|short| {
            containers.run(short, &[], &printer(&format!("{short}-"), n, 300));
            (containers.name(short), format!("{short}-"))
        })
        .collect();
    let lives: Vec<PathBuf> = names
        .iter()
        .map(|(name, _)| out.join(format!("{name}.log")))
        .collect();
    let done = wait_until(Duration::from_secs(180), || {
        lives.iter().zip(&names).all(|(live, (_, prefix))| {
            settled(live) && union_now(live).last() == Some(&format!("{prefix}{n}"))
        })
    });
    assert!(done, "not every line arrived; log:\n{}", agent.log());
    // Quiet now: nothing more is written, so the counts are final.
    std::thread::sleep(Duration::from_secs(2));
    assert!(wait_until(Duration::from_secs(30), || lives
        .iter()
        .all(|l| settled(l))));
    let mut files = 0;
    for (live, (_, prefix)) in lives.iter().zip(&names) {
        assert_run(&union(live), prefix, 1, n, &live.display().to_string());
        files += rotated(live).len();
    }
    assert!(files >= 3 * 10, "only {files} rotated files");
    assert_eq!(rotations(&agent, "size"), files as f64);
    assert_eq!(
        agent.metric("log_capturer_file_sink_compression_failures_total"),
        0.0
    );
    assert_eq!(
        agent.metric("log_capturer_file_sink_retention_deletions_total"),
        0.0
    );
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
    println!("rotation by size: 3 x {n} lines exactly once in {files} rotated .gz files + live");
}

#[test]
fn max_files_deletes_the_oldest_and_counts_them() {
    let (mut containers, _dir, out, mut agent) = rotating_agent(
        "rotkeep",
        "    fsync: always\n    rotate:\n      max_bytes: 8KiB\n      max_files: 3\n",
    );
    let n = 2000;
    containers.run("k", &[], &printer("k-", n, 300));
    let live = out.join(format!("{}.log", containers.name("k")));
    let last = format!("k-{n}");
    let done = wait_until(Duration::from_secs(120), || {
        rotated(&live).len() <= 3 && union_now(&live).last() == Some(&last)
    });
    assert!(done, "not every line arrived; log:\n{}", agent.log());
    std::thread::sleep(Duration::from_secs(2));
    let kept = rotated(&live);
    let newest = *kept.keys().last().expect("rotated files");
    assert!(newest > 3, "only {newest} rotations");
    // The three newest rotated files, the older ones deleted and counted.
    assert_eq!(
        kept.keys().copied().collect::<Vec<_>>(),
        vec![newest - 2, newest - 1, newest]
    );
    assert_eq!(rotations(&agent, "size"), newest as f64);
    assert_eq!(
        agent.metric("log_capturer_file_sink_retention_deletions_total"),
        (newest - 3) as f64
    );
    // What is kept is the newest lines, whole, once each, in order.
    let got = union(&live);
    let first: usize = got[0]
        .strip_prefix("k-")
        .and_then(|v| v.parse().ok())
        .expect("number");
    assert!(first > 1, "nothing was deleted");
    assert_run(&got, "k-", first, n, "kept files");
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigkill_during_rotations_and_compression_then_restart_loses_nothing() {
    let (mut containers, _dir, out, mut agent) = rotating_agent(
        "rotkill",
        "    fsync: always\n    rotate:\n      max_bytes: 4KiB\n      compress: gzip\n",
    );
    let n = 6000;
    let prefixes = ["x-", "y-"];
    for short in ["x", "y"] {
        containers.run(short, &[], &printer(&format!("{short}-"), n, 500));
    }
    let lives: Vec<PathBuf> = ["x", "y"]
        .iter()
        .map(|s| out.join(format!("{}.log", containers.name(s))))
        .collect();
    // Well into the run (past the first checkpoints), while files rotate and compress.
    let rotating = wait_until(Duration::from_secs(90), || {
        rotations(&agent, "size") >= 20.0 && lives.iter().all(|l| lines_now(l) >= 1500)
    });
    assert!(rotating, "no rotations; log:\n{}", agent.log());
    agent.kill();
    let at_kill: Vec<usize> = lives.iter().map(|l| lines_now(l)).collect();
    agent.restart();
    let done = wait_until(Duration::from_secs(180), || {
        lives.iter().zip(prefixes).all(|(live, prefix)| {
            settled(live) && union_now(live).last() == Some(&format!("{prefix}{n}"))
        })
    });
    assert!(
        done,
        "not every line arrived after the restart; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(wait_until(Duration::from_secs(30), || lives
        .iter()
        .all(|l| settled(l))));
    for ((live, prefix), at_kill) in lives.iter().zip(prefixes).zip(at_kill) {
        let got = union(live);
        let context = live.display().to_string();
        // Before the kill: 1..=at_kill once each. After it: one contiguous run s..=n with
        // s <= at_kill + 1 (the documented replay from the last checkpoint), nothing lost.
        assert_run(&got[..at_kill], prefix, 1, at_kill, &context);
        let first: usize = got[at_kill]
            .strip_prefix(prefix)
            .and_then(|v| v.parse().ok())
            .expect("number");
        assert!(
            first <= at_kill + 1,
            "{context}: gap after {at_kill}: resumed at {first}"
        );
        assert_run(&got[at_kill..], prefix, first, n, &context);
        println!(
            "{context}: {at_kill} lines at SIGKILL, {} replayed, none lost",
            at_kill + 1 - first
        );
    }
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
}

/// Debian's logrotate in its default mode (rename, then create) while lines are written: the
/// agent notices the new inode and reopens; every line is once in the live file or one of
/// logrotate's.
#[test]
fn real_logrotate_in_create_mode_loses_and_duplicates_nothing() {
    let Ok(logrotate) = which("logrotate") else {
        panic!("logrotate is not installed (scripts/test installs it)");
    };
    let mut containers = Containers::new("logrotate");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let mut agent = Agent::start(dir.path(), options(&containers, &out, ""));
    // Written for longer than the logrotate runs take (4 x 2.5 s).
    let n = 6000;
    containers.run("l", &[], &printer("l-", n, 2000));
    let name = containers.name("l");
    let live = out.join(format!("{name}.log"));
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 1000\n  create 0640 root root\n  missingok\n  nocompress\n}}\n",
            live.display()
        ),
    )
    .expect("conf");
    let state = dir.path().join("logrotate.state");
    assert!(wait_until(Duration::from_secs(60), || live.exists()));
    let runs = 4;
    for run in 1..=runs {
        std::thread::sleep(Duration::from_millis(2500));
        let result = Command::new(&logrotate)
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&conf)
            .output()
            .expect("logrotate");
        assert!(
            result.status.success(),
            "logrotate run {run}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    let logrotate_union = || {
        let mut all = Vec::new();
        for i in (1..=runs).rev() {
            let path = PathBuf::from(format!("{}.{i}", live.display()));
            all.extend(support::ndjson_messages(&read_text(&path), &path));
        }
        all.extend(support::ndjson_messages(&read_text(&live), &live));
        all
    };
    let last = format!("l-{n}");
    let done = wait_until(Duration::from_secs(120), || {
        logrotate_union().last() == Some(&last)
    });
    assert!(done, "not every line arrived; log:\n{}", agent.log());
    std::thread::sleep(Duration::from_secs(2));
    let got = logrotate_union();
    assert_run(&got, "l-", 1, n, "live file and logrotate's");
    for i in 1..=runs {
        let path = PathBuf::from(format!("{}.{i}", live.display()));
        assert!(
            !support::ndjson_messages(&read_text(&path), &path).is_empty(),
            "{} is empty: the agent did not write into the moved file nor reopen",
            path.display()
        );
    }
    // Each run was noticed once (they are further apart than the once-a-second check).
    assert_eq!(rotations(&agent, "external"), runs as f64);
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(program))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
