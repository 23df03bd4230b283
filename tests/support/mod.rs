//! Shared test harness: runs the real `log-capturer` binary as a process, scrapes its metrics,
//! reads its NDJSON output, and drives containers on a real dockerd or a fake Engine API
//! (`fake_engine`).

#![allow(dead_code)]

pub mod agent;
pub mod blocked_stdout;
pub mod docker;
pub mod fake_engine;
pub mod files;
pub mod loki;
pub mod release;
pub mod tls_proxy;

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A temporary directory for one test (removed when dropped). `files::tempdir` is another:
/// it can keep the directory for a look after a failure.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that `messages` are exactly `prefix1 .. prefixN`, once each, in order.
pub fn assert_sequence(messages: &[String], prefix: &str, n: usize, context: &str) {
    assert_run(messages, prefix, 1, n, context);
}

/// Asserts that `messages` are exactly `prefix{from} ..= prefix{to}`, once each, in order.
pub fn assert_run(messages: &[String], prefix: &str, from: usize, to: usize, context: &str) {
    let expected: Vec<String> = (from..=to).map(|i| format!("{prefix}{i}")).collect();
    if messages != expected {
        let got: HashSet<&String> = messages.iter().collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|e| !got.contains(e))
            .take(10)
            .collect();
        let mut seen = HashSet::new();
        let dups: Vec<&String> = messages
            .iter()
            .filter(|m| !seen.insert(*m))
            .take(10)
            .collect();
        panic!(
            "{context}: {} records for {} lines; missing (first 10) {missing:?}; duplicated (first 10) {dups:?}",
            messages.len(),
            expected.len()
        );
    }
}

/// The messages of NDJSON text (`what` names it in a panic); a last line without its newline
/// (being written) is left out: tests that care check the file's end themselves.
pub fn ndjson_messages(text: &str, what: &std::path::Path) -> Vec<String> {
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not one whole record {l:?}: {e}", what.display()));
            v["message"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}
