//! Watching a running agent from outside, as an operator would: its HTTP endpoints
//! (`/metrics`, `/ready`) and its figures in `/proc`. Shared by the end-to-end tests, the soak
//! harness and the benchmark runner, so that all three read the agent the same way.

pub mod agent;
pub mod docker;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "loki")]
pub mod loki;
pub mod verify;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// A minimal HTTP/1.0 GET to `addr` (`host:port`): the status and the body, or `None` when
/// nothing answers within 10 s.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, Duration::from_secs(10))
}

/// A minimal HTTP/1.0 request without a body (`POST /-/reload`, say) to `addr`: the status
/// and the body, or `None` when nothing answers within `timeout`.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: testkit\r\n{length}\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Every sample of a Prometheus text exposition: `name{labels}` → value.
pub fn parse_metrics(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The agent's `/metrics` at `addr`; `None` when it does not answer.
pub fn metrics(addr: &str) -> Option<HashMap<String, f64>> {
    http_get(addr, "/metrics").map(|(_, body)| parse_metrics(&body))
}

/// The sum of every series whose key starts with `prefix` (all label sets of one metric).
pub fn sum_prefix(metrics: &HashMap<String, f64>, prefix: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Seconds since the UNIX epoch (0 if the clock is before it): run directories, reports.
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A TCP port that was free a moment ago, for an agent's HTTP listener.
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// Opens `path` for appending (created if missing); the error text names the path.
pub fn open_append(path: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `kill -SIG PID` (`sig` as `TERM`, `KILL`, …); the error text names the signal and the pid.
pub fn send_signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{sig} {pid} failed"))
    }
}

/// CPU seconds (user + system) a process has used, its exited threads included.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Clock ticks per second (asked of `getconf` once per process).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A numeric `/proc/<pid>/status` field (`VmRSS:`, `VmHWM:` in KiB, `Threads:`); 0 if absent.
pub fn status_field(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as f64)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_exposition() {
        let m = parse_metrics(
            "# HELP x y\n# TYPE x counter\nx_total{a=\"1\"} 3\nx_total{a=\"2\"} 4.5\ng 7\n\n",
        );
        assert_eq!(m.get("g"), Some(&7.0));
        assert_eq!(sum_prefix(&m, "x_total"), 7.5);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(status_field(pid, "VmRSS:") > 0.0);
        assert!(open_fds(pid) >= 3.0);
        assert!(cpu_seconds(pid) >= 0.0);
    }
}
