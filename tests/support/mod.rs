//! Shared test harness: runs the real `log-capturer` binary as a process, scrapes its metrics,
//! reads its NDJSON output, and drives containers on a real dockerd or a fake Engine API
//! (`fake_engine`).

#![allow(dead_code)]

pub mod agent;
pub mod docker;
pub mod fake_engine;
pub mod loki;
pub mod release;
pub mod tls_proxy;

use std::collections::HashSet;
use std::time::{Duration, Instant};

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
    let expected: Vec<String> = (1..=n).map(|i| format!("{prefix}{i}")).collect();
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
            "{context}: {} records for {n} lines; missing (first 10) {missing:?}; duplicated {dups:?}",
            messages.len()
        );
    }
}
