//! Per-run lines of the issue 13 scenarios: each run's figures with the machine load beside
//! them (other builds share the 2 cores), printed to stderr and kept in `<out>/runs.txt`.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct RunLog {
    path: PathBuf,
}

impl RunLog {
    pub fn new(out: &Path) -> RunLog {
        RunLog {
            path: out.join("runs.txt"),
        }
    }

    /// One line: `scenario | case | run | figures | load`.
    pub fn record(&self, scenario: &str, case: &str, run: usize, figures: &str) {
        let line = format!(
            "{scenario} | {case} | run {run} | {figures} | load {}",
            load()
        );
        eprintln!("bench: {line}");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The 1/5/15-minute load averages, as `uptime` prints them.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_string())
}
