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
