//! The host-file source's identity rules across restarts, with the real agent binary: a file
//! is (device, inode) plus a fingerprint of its first bytes, so an inode reused by another
//! file, or a file rewritten in place while the agent was down, is read from its start, and an
//! unchanged file is not read again. And a last line without its newline is emitted once,
//! after `flush_partial_after`, never again after a restart.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::agent::Agent;
use support::files::{self, start_agent, wait_for_records};

/// Lines `from..=to` of `prefix` (100 B each), appended to `path` or replacing its content
/// (same inode: truncated, not recreated).
fn write(path: &Path, prefix: &str, from: u64, to: u64, truncate: bool) {
    use std::io::Write;
    let text: String = (from..=to).map(|k| files::line(prefix, k)).collect();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(!truncate)
        .write(true)
        .truncate(truncate)
        .open(path)
        .expect("open for writing");
    f.write_all(text.as_bytes()).expect("write");
}

fn expected(runs: &[(&str, u64)]) -> Vec<String> {
    runs.iter()
        .flat_map(|&(prefix, n)| {
            (1..=n).map(move |k| files::line(prefix, k).trim_end().to_string())
        })
        .collect()
}

/// Every message under `out`, in order (one source file: one output file).
fn messages(out: &Path) -> Vec<String> {
    files::output(out)
        .into_values()
        .flatten()
        .map(|r| r.message)
        .collect()
}

/// Waits for `want` records in all and a quiet 1.5 s (a duplicate would show), and
/// asserts the messages are exactly `want`.
fn assert_output(test: &str, agent: &Agent, want: &[String]) {
    let out = agent.dir.join("out");
    wait_for_records(&out, want.len(), Duration::from_secs(15));
    let got = messages(&out);
    assert!(
        got == want,
        "{test}: {} records for {} expected; first differences: {:?}; log:\n{}",
        got.len(),
        want.len(),
        got.iter()
            .zip(want)
            .enumerate()
            .find(|(_, (g, w))| g != w)
            .map(|(i, (g, w))| format!("#{i}: got {g:?}, want {w:?}")),
        agent.log()
    );
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    agent: Agent,
}

/// `logs/app.log` with lines `A1..=A100`, read by the agent, which is then stopped (SIGTERM).
fn read_then_stop(settings: &str) -> Setup {
    let dir = files::tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let path = logs.join("app.log");
    write(&path, "A", 1, 100, false);
    let mut agent = start_agent(dir.path(), &[logs.join("*.log")], settings);
    assert_output("first run", &agent, &expected(&[("A", 100)]));
    assert!(agent.terminate().success());
    Setup {
        _dir: dir,
        path,
        agent,
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").ino()
}

/// 4a: A read to its end; while the agent is down A is deleted and B (other first bytes,
/// longer) created, on A's inode. B is read from its start, entirely.
#[test]
fn inode_reused_by_another_file_is_read_from_its_start() {
    let test = "inode reuse";
    let mut s = read_then_stop("");
    let old = inode(&s.path);
    std::fs::remove_file(&s.path).expect("delete A");
    // ext4 gives a new file the lowest free inode of the directory's group: files are
    // created with B's content (kept, so the next one moves up) until one gets A's inode,
    // which is then renamed to A's path (a rename keeps the inode).
    let logs = s.path.parent().expect("logs").to_path_buf();
    let mut reused = None;
    for attempt in 1..=5000 {
        let candidate = logs.join(format!("b-{attempt}.tmp"));
        write(&candidate, "B", 1, 200, false);
        if inode(&candidate) == old {
            std::fs::rename(&candidate, &s.path).expect("rename");
            reused = Some(attempt);
            break;
        }
    }
    let Some(attempts) = reused else {
        println!(
            "{test}: the filesystem did not give B A's inode in 5000 new files: only the \
             same-inode rewrite (file_rewritten_in_place_...) covers the fingerprint"
        );
        return;
    };
    assert_eq!(inode(&s.path), old);
    println!("{test}: B got A's inode {old} (new file {attempts})");
    s.agent.restart();
    assert_output(test, &s.agent, &expected(&[("A", 100), ("B", 200)]));
    println!(
        "{test}: A (100 lines) then B (200 lines) on the same inode: each read once, B from 0; \
         inode reuses counted: {}",
        s.agent
            .metric("log_capturer_file_source_inode_reuses_total")
    );
    assert!(s.agent.terminate().success());
}

/// 4b: same inode, rewritten while the agent was down (truncated, then longer than the stored
/// position, other first bytes): read from 0, not from the old offset.
#[test]
fn file_rewritten_in_place_while_down_is_read_from_zero() {
    let test = "same inode, new content";
    let mut s = read_then_stop("");
    let old = inode(&s.path);
    write(&s.path, "B", 1, 200, true);
    assert_eq!(inode(&s.path), old, "truncate kept the inode");
    s.agent.restart();
    assert_output(test, &s.agent, &expected(&[("A", 100), ("B", 200)]));
    println!("{test}: B (200 lines, 20000 B) over A (100 lines) on inode {old}: B read from 0");
    assert!(s.agent.terminate().success());
}

/// 4c: an unchanged file across a restart is not read again; what is appended after it is.
#[test]
fn unchanged_file_is_not_read_again_after_a_restart() {
    let test = "unchanged file";
    let mut s = read_then_stop("");
    s.agent.restart();
    // Lines appended after the restart come after anything re-read: once they are there, a
    // re-read would be too.
    write(&s.path, "A", 101, 150, false);
    assert_output(test, &s.agent, &expected(&[("A", 150)]));
    println!("{test}: 100 lines before the restart, 50 after: each once");
    assert!(s.agent.terminate().success());
}

/// 6: "abc" without a newline is emitted once after `flush_partial_after` (1 s), and not again
/// after a restart; a line appended later starts after it.
#[test]
fn partial_last_line_is_emitted_once_and_not_after_a_restart() {
    let test = "partial line";
    let dir = files::tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let path = logs.join("p.log");
    std::fs::write(&path, "first\nabc").expect("write");
    let mut agent = start_agent(
        dir.path(),
        &[logs.join("*.log")],
        "    flush_partial_after: 1s\n",
    );
    let want = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_output(test, &agent, &want(&["first", "abc"]));
    // Long after the flush: still once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(messages(&dir.path().join("out")), want(&["first", "abc"]));
    let flushes = agent.metric("log_capturer_file_source_partial_flushes_total");
    assert!(agent.terminate().success());
    agent.restart();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"next\n"))
        .expect("append");
    assert_output(test, &agent, &want(&["first", "abc", "next"]));
    println!(
        "{test}: \"abc\" emitted once after 1 s ({flushes} partial flushes counted), not after the restart"
    );
    assert!(agent.terminate().success());
}
