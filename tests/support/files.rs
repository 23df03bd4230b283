//! Host-file helpers for the file source's end-to-end tests: a paced writer of numbered lines
//! that reopens its file for every burst (so it follows logrotate like an app signalled by
//! `postrotate`), a thread running Debian's real `logrotate`, the agent's NDJSON output read
//! back as (file, line number), and the agent's open descriptors.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::agent::{Agent, AgentOptions};

/// Bytes of each numbered line, newline included.
pub const LINE_BYTES: usize = 100;

/// Line `n` of `prefix`: `{prefix}{n:09} xxx…` padded to [`LINE_BYTES`] with its newline.
pub fn line(prefix: &str, n: u64) -> String {
    let mut s = format!("{prefix}{n:09} ");
    while s.len() < LINE_BYTES - 1 {
        s.push('x');
    }
    s.push('\n');
    s
}

/// The number of a line of `prefix` (a record's message), None for anything else.
pub fn number(prefix: &str, message: &str) -> Option<u64> {
    let rest = message.strip_prefix(prefix)?;
    let digits = rest.get(..9)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || message.len() + 1 != LINE_BYTES {
        return None;
    }
    digits.parse().ok()
}

pub struct WriterSpec {
    pub path: PathBuf,
    pub prefix: String,
    /// Lines `1..=lines` are written.
    pub lines: u64,
    pub per_sec: u64,
    /// Lines per open-append-close.
    pub burst: u64,
}

/// What a writer wrote: lines `1..=lines`, and the inode each went to.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub lines: u64,
    /// (first line, inode) of each run of consecutive lines written to one inode.
    pub runs: Vec<(u64, u64)>,
}

impl Written {
    /// The inode line `n` was written to.
    pub fn inode_of(&self, n: u64) -> u64 {
        let i = self.runs.partition_point(|&(first, _)| first <= n);
        assert!(i > 0, "line {n} before the first run");
        self.runs[i - 1].1
    }

    /// Distinct inodes written to.
    pub fn inodes(&self) -> usize {
        let mut all: Vec<u64> = self.runs.iter().map(|r| r.1).collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
}

/// A thread appending numbered lines at a steady pace. Each burst opens the path (append,
/// no create: between logrotate's rename and its create it waits for the new file), writes
/// with one `write`, notes the inode and closes.
pub struct Writer {
    handle: Option<JoinHandle<io::Result<Written>>>,
    /// Lines written so far.
    pub progress: Arc<AtomicU64>,
}

impl Writer {
    pub fn start(spec: WriterSpec) -> Writer {
        let progress = Arc::new(AtomicU64::new(0));
        let seen = progress.clone();
        let handle = std::thread::spawn(move || write_lines(&spec, &seen));
        Writer {
            handle: Some(handle),
            progress,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    pub fn join(mut self) -> Written {
        let handle = self.handle.take().expect("joined once");
        handle.join().expect("writer thread").expect("writer")
    }
}

fn write_lines(spec: &WriterSpec, progress: &AtomicU64) -> io::Result<Written> {
    let start = Instant::now();
    let mut written = Written::default();
    let mut next = 1;
    let mut buf = String::new();
    while next <= spec.lines {
        let last = (next + spec.burst - 1).min(spec.lines);
        buf.clear();
        for n in next..=last {
            buf.push_str(&line(&spec.prefix, n));
        }
        let mut file = open_append_waiting(&spec.path)?;
        let ino = file.metadata()?.ino();
        file.write_all(buf.as_bytes())?;
        drop(file);
        if written.runs.last().is_none_or(|r| r.1 != ino) {
            written.runs.push((next, ino));
        }
        written.lines = last;
        progress.store(last, Ordering::Release);
        next = last + 1;
        let due = start + Duration::from_secs_f64(last as f64 / spec.per_sec as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(written)
}

/// Opens `path` for appending, creating it only if it never existed (the first burst);
/// while it is missing (logrotate between rename and create) tries again for up to 10 s.
fn open_append_waiting(path: &Path) -> io::Result<std::fs::File> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::OpenOptions::new().append(true).open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// Debian's `logrotate` binary (scripts/test installs it).
pub fn logrotate_binary() -> PathBuf {
    [
        "/usr/sbin/logrotate",
        "/usr/bin/logrotate",
        "/sbin/logrotate",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("logrotate is not installed (scripts/test installs it)")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateMode {
    /// Rename to `.1` (older ones shifted), then create an empty file.
    Create,
    /// Copy to `.1`, then truncate the live file in place.
    CopyTruncate,
}

/// A logrotate config for `path` (keeps 1000 rotated files, no compression) in `dir`.
pub fn logrotate_conf(dir: &Path, path: &Path, mode: RotateMode) -> PathBuf {
    let how = match mode {
        RotateMode::Create => "create 0644 root root",
        RotateMode::CopyTruncate => "copytruncate",
    };
    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 1000\n  {how}\n  missingok\n  ifempty\n  nocompress\n}}\n",
            path.display()
        ),
    )
    .expect("logrotate conf");
    conf
}

/// Runs `logrotate -f -s <state> <conf>` once.
pub fn logrotate_once(conf: &Path, state: &Path) -> Result<(), String> {
    let out = Command::new(logrotate_binary())
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(conf)
        .output()
        .map_err(|e| format!("logrotate: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "logrotate {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A thread running logrotate every `every` until stopped.
pub struct Rotator {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<u32, String>>,
}

impl Rotator {
    pub fn start(conf: PathBuf, state: PathBuf, every: Duration) -> Rotator {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut runs = 0;
            loop {
                let until = Instant::now() + every;
                while Instant::now() < until {
                    if stopped.load(Ordering::Acquire) {
                        return Ok(runs);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                logrotate_once(&conf, &state)?;
                runs += 1;
            }
        });
        Rotator { stop, handle }
    }

    /// Stops and returns how many times logrotate ran.
    pub fn stop(self) -> u32 {
        self.stop.store(true, Ordering::Release);
        self.handle
            .join()
            .expect("rotator thread")
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One record of the agent's output.
#[derive(Debug, Clone)]
pub struct Out {
    /// The record's `file` field (the source path).
    pub file: String,
    pub message: String,
}

/// Every whole record under `out` (each output file in order), by output file name.
pub fn output(out: &Path) -> BTreeMap<String, Vec<Out>> {
    let mut all = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return all;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let records = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: bad record {l:?}: {e}", path.display()));
                Out {
                    file: v["file"].as_str().unwrap_or_default().to_string(),
                    message: v["message"].as_str().unwrap_or_default().to_string(),
                }
            })
            .collect();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        all.insert(name, records);
    }
    all
}

/// Whole records under `out` in all.
pub fn output_len(out: &Path) -> usize {
    output(out).values().map(Vec::len).sum()
}

/// How often each line `1..=n` of `prefix` occurs in `records` (index 0 unused); panics on a
/// record that is no line of `prefix` (a torn or foreign line).
pub fn occurrences<'a>(
    records: impl IntoIterator<Item = &'a Out>,
    prefix: &str,
    n: u64,
) -> Vec<u32> {
    let mut seen = vec![0u32; n as usize + 1];
    for r in records {
        let k = number(prefix, &r.message)
            .filter(|k| (1..=n).contains(k))
            .unwrap_or_else(|| panic!("not a written line: {r:?}"));
        seen[k as usize] += 1;
    }
    seen
}

/// Asserts every line `1..=n` occurs exactly once.
pub fn assert_exactly_once(seen: &[u32], context: &str) {
    let missing: Vec<usize> = (1..seen.len()).filter(|&k| seen[k] == 0).collect();
    let dups: Vec<usize> = (1..seen.len()).filter(|&k| seen[k] > 1).collect();
    assert!(
        missing.is_empty() && dups.is_empty(),
        "{context}: {} lines missing (first {:?}), {} duplicated (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)],
        dups.len(),
        &dups[..dups.len().min(10)],
    );
}

/// Asserts that in each output file the lines of each source inode come in increasing order.
pub fn assert_in_order_per_inode(
    output: &BTreeMap<String, Vec<Out>>,
    prefix: &str,
    written: &Written,
) {
    for (name, records) in output {
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for r in records {
            let Some(k) = number(prefix, &r.message) else {
                continue;
            };
            let ino = written.inode_of(k);
            if let Some(&before) = last.get(&ino) {
                assert!(
                    k > before,
                    "{name}: line {k} (inode {ino}) after line {before} of the same file"
                );
            }
            last.insert(ino, k);
        }
    }
}

/// Open descriptors of process `pid`: all, and those naming something under `dir`.
pub fn fds(pid: u32, dir: &Path) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let mut all = 0;
    let mut under = 0;
    for entry in entries.flatten() {
        all += 1;
        if std::fs::read_link(entry.path()).is_ok_and(|t| t.starts_with(dir)) {
            under += 1;
        }
    }
    (all, under)
}

/// The file source's metric samples (zero ones only without labels), sorted, as text.
pub fn file_metrics(metrics: &std::collections::HashMap<String, f64>) -> String {
    const FAMILIES: &[&str] = &[
        "log_capturer_files_",
        "log_capturer_file_source_",
        "log_capturer_file_rotations",
        "log_capturer_file_truncations",
        "log_capturer_file_lag_bytes",
    ];
    let mut lines: Vec<String> = metrics
        .iter()
        .filter(|(k, v)| {
            FAMILIES.iter().any(|f| k.starts_with(f)) && (**v != 0.0 || !k.contains('{'))
        })
        .map(|(k, v)| format!("  {k} = {v}"))
        .collect();
    lines.sort();
    lines.join("\n")
}

/// The agent reading `include` (globs) with these extra `file_settings` keys (indented by 4
/// spaces); containers are left alone (a label nobody sets).
pub fn start_agent(dir: &Path, include: &[PathBuf], settings: &str) -> Agent {
    Agent::start(dir, options(include, settings))
}

pub fn options(include: &[PathBuf], settings: &str) -> AgentOptions {
    let include: Vec<String> = include
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    AgentOptions {
        capture: "  include:\n    labels: [\"log-capturer-file-source-e2e-none\"]\n".into(),
        sources: format!(
            "  files:\n    - include: [{}]\n  file_settings:\n    poll_interval: 100ms\n{settings}",
            include.join(", ")
        ),
        ..AgentOptions::default()
    }
}

/// Waits until `out` holds at least `n` whole records and no new one came for 1.5 s (what
/// is still in flight, a duplicate too, has arrived by then); gives up after `stall` without a
/// new record (or 180 s in all). Returns the count seen.
pub fn wait_for_records(out: &Path, n: usize, stall: Duration) -> usize {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = (count_lines(out), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = count_lines(out);
        if now != last.0 {
            last = (now, Instant::now());
        }
        let quiet = last.1.elapsed();
        if (now >= n && quiet >= Duration::from_millis(1500))
            || quiet >= stall
            || Instant::now() >= deadline
        {
            return now;
        }
    }
}

/// Newlines under `out` (whole records), without parsing them.
pub fn count_lines(out: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(out) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            std::fs::read(e.path())
                .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                .unwrap_or(0)
        })
        .sum()
}

/// A temp dir for one test; kept (its path printed) when `FILE_SOURCE_E2E_KEEP` is set, to
/// look at the agent's log, output and state after a failure.
pub fn tempdir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("FILE_SOURCE_E2E_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("keeping {}", dir.path().display());
    }
    dir
}
