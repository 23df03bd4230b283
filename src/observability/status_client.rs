//! (Kept in one file, a little over 500 lines: the status command is one request → one table, and
//! its printing and exit codes read best next to each other.)
//!
//! `log-capturer status`: fetches `/api/v1/containers` and `/api/v1/sinks` from a running
//! agent and prints them for a person at a terminal (containers by lag, largest first; then
//! sinks), or as raw JSON. The exit code makes it a check command:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | healthy |
//! | 1 | unhealthy: a sink is failing, or a stream has not rotated for twice its interval |
//! | 3 | no status: the agent cannot be reached, or did not answer with its status |
//!
//! (2 stays what it is for every subcommand: bad arguments or a bad config file.)

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::status::{ContainerView, SinkView};
use crate::clock::now_ns;
use crate::docker::timestamp::format_rfc3339_nanos;

pub const EXIT_HEALTHY: u8 = 0;
pub const EXIT_UNHEALTHY: u8 = 1;
pub const EXIT_NO_STATUS: u8 = 3;

/// How long one request to the agent may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the agent reported (`--json` prints it as is).
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub containers: Vec<ContainerView>,
    pub sinks: Vec<SinkView>,
}

/// `http://host:port` from `--url` or `http.listen` (`127.0.0.1:8001` alone is accepted too).
pub fn base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// Why `log-capturer status` has no report; `url` is the address asked.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{url}: {source}")]
    Uri {
        url: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    #[error("{url}: {reason}")]
    Request {
        url: String,
        #[source]
        reason: RequestError,
    },
    #[error("{url}: not a status answer: {source}")]
    NotAStatusAnswer {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Why one status request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The client error with its chain of causes (see `describe`).
    #[error("{0}")]
    Connect(String),
    #[error(transparent)]
    Body(hyper::Error),
    #[error("answered {status}: {body}")]
    Status {
        status: hyper::StatusCode,
        body: String,
    },
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Fetches both lists from the agent at `base` (`http://host:port`).
pub async fn fetch(base: &str) -> Result<Report, StatusError> {
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |path: &'static str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let uri: hyper::Uri = url.parse().map_err(|source| StatusError::Uri {
                url: url.clone(),
                source,
            })?;
            let request = async {
                let response = client
                    .get(uri)
                    .await
                    .map_err(|e| RequestError::Connect(describe(&e)))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(RequestError::Body)?
                    .to_bytes();
                if !status.is_success() {
                    return Err(RequestError::Status {
                        status,
                        body: String::from_utf8_lossy(&body).trim().to_string(),
                    });
                }
                Ok(body)
            };
            tokio::time::timeout(REQUEST_TIMEOUT, request)
                .await
                .map_err(|_| RequestError::Timeout(REQUEST_TIMEOUT))
                .and_then(|r| r)
                .map_err(|reason| StatusError::Request { url, reason })
        }
    };
    let containers = get("/api/v1/containers").await?;
    let sinks = get("/api/v1/sinks").await?;
    Ok(Report {
        containers: serde_json::from_slice(&containers).map_err(|source| {
            StatusError::NotAStatusAnswer {
                url: format!("{base}/api/v1/containers"),
                source,
            }
        })?,
        sinks: serde_json::from_slice(&sinks).map_err(|source| StatusError::NotAStatusAnswer {
            url: format!("{base}/api/v1/sinks"),
            source,
        })?,
    })
}

/// A client error with its cause (hyper's own text is only "client error (Connect)").
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// What makes the agent unhealthy for a check: failing sinks and overdue rotations.
pub fn problems(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for s in report.sinks.iter().filter(|s| s.failing) {
        out.push(format!(
            "sink {} failing since {} ({} failures): {}",
            s.name,
            s.failing_since.as_deref().unwrap_or("?"),
            s.failures,
            s.last_error.as_deref().unwrap_or("?")
        ));
    }
    for c in report.containers.iter().filter(|c| c.rotation_overdue) {
        out.push(format!(
            "container {}: stream open for {}, not rotated for twice its interval ({})",
            c.name,
            c.stream_age_seconds.map_or("?".to_string(), age),
            c.rotation_interval_seconds.map_or("?".to_string(), age),
        ));
    }
    out
}

/// The exit code for a report (see the module doc).
pub fn exit_code(report: &Report) -> u8 {
    if problems(report).is_empty() {
        EXIT_HEALTHY
    } else {
        EXIT_UNHEALTHY
    }
}

/// `850ms`, `12s`, `3m4s`, `2h3m`, `4d2h`.
pub fn age(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".to_string();
    }
    if seconds == 0.0 {
        return "0s".to_string();
    }
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0) as u64);
    }
    let s = seconds as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// `1.5 MiB`, `812 B`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// The report for a terminal: containers by lag (largest first), sinks, then the problems.
pub fn render(report: &Report, now: i64) -> String {
    let ago = |ns: Option<i64>| {
        ns.map_or("-".to_string(), |t| {
            format!("{} ago", age((now - t) as f64 / 1e9))
        })
    };
    let mut containers: Vec<&ContainerView> = report.containers.iter().collect();
    containers.sort_by(|a, b| {
        b.lag_seconds
            .total_cmp(&a.lag_seconds)
            .then_with(|| a.name.cmp(&b.name))
    });
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.state.clone(),
                age(c.lag_seconds),
                c.lines.to_string(),
                c.rotations.to_string(),
                ago(c.last_rotation_ns),
                c.stream_age_seconds.map_or("-".to_string(), |s| {
                    format!(
                        "{}{}",
                        age(s),
                        if c.rotation_overdue { " OVERDUE" } else { "" }
                    )
                }),
                c.errors.to_string(),
                c.acknowledged
                    .as_ref()
                    .and_then(|a| a.last_line.clone())
                    .unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let mut out = format!("CONTAINERS ({})\n", containers.len());
    out.push_str(&table(
        &[
            "NAME",
            "STATE",
            "LAG",
            "LINES",
            "ROTATIONS",
            "LAST ROTATION",
            "STREAM AGE",
            "ERRORS",
            "LAST ACKNOWLEDGED LINE",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = report
        .sinks
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                bytes(s.queue_bytes),
                s.in_flight_batches.to_string(),
                match (s.buffered_records, s.buffered_bytes) {
                    (Some(r), Some(b)) => format!("{r} ({})", bytes(b)),
                    _ => "-".to_string(),
                },
                s.dead_letters.map_or("-".to_string(), |d| d.to_string()),
                if s.failing {
                    format!(
                        "FAILING for {} ({} failures): {}",
                        s.failing_since_ns
                            .map_or("?".to_string(), |t| age((now - t) as f64 / 1e9)),
                        s.failures,
                        s.last_error.as_deref().unwrap_or("?")
                    )
                } else {
                    "ok".to_string()
                },
            ]
        })
        .collect();
    out.push_str(&format!("\nSINKS ({})\n", report.sinks.len()));
    out.push_str(&table(
        &[
            "NAME",
            "QUEUE",
            "IN FLIGHT",
            "BUFFERED",
            "DEAD LETTERS",
            "STATUS",
        ],
        &rows,
    ));
    let problems = problems(report);
    if problems.is_empty() {
        out.push_str("\nhealthy\n");
    } else {
        out.push_str("\nPROBLEMS\n");
        for p in problems {
            out.push_str(&p);
            out.push('\n');
        }
    }
    out
}

/// `log-capturer status`: prints the report (or why there is none) and returns the exit code.
pub fn run(url: &str, json: bool) -> u8 {
    let base = base_url(url);
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StatusError::Runtime)
        .and_then(|rt| rt.block_on(fetch(&base)));
    let report = match fetched {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot get the agent's status: {e}");
            return EXIT_NO_STATUS;
        }
    };
    let text = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => format!("{text}\n"),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_NO_STATUS;
            }
        }
    } else {
        let now = now_ns();
        format!(
            "{}(agent {base}, at {})\n",
            render(&report, now),
            format_rfc3339_nanos(now)
        )
    };
    // Not `print!`, which panics on a closed stdout (`status --json | head -1`): a reader that
    // stopped early is no error, and the exit code still tells the health.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write the report: {e}");
    }
    exit_code(&report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Cursor;
    use crate::observability::status::CursorView;

    fn container(name: &str, lag: f64, overdue: bool) -> ContainerView {
        ContainerView {
            id: format!("id-{name}"),
            name: name.to_string(),
            image: "img".to_string(),
            state: "running".to_string(),
            stream_open_since: None,
            stream_open_since_ns: Some(1),
            stream_age_seconds: Some(if overdue { 700.0 } else { 10.0 }),
            rotation_interval_seconds: Some(300.0),
            rotation_overdue: overdue,
            pipeline: None,
            rotations: 3,
            last_rotation: None,
            last_rotation_ns: None,
            delivered: CursorView::of(&Cursor::at(5)),
            acknowledged: Some(CursorView::of(&Cursor::at(5))),
            pending: lag > 0.0,
            lag_seconds: lag,
            lines: 42,
            errors: 0,
            last_error: None,
            last_error_at: None,
        }
    }

    fn sink(name: &str, failing: bool) -> SinkView {
        SinkView {
            name: name.to_string(),
            queue_bytes: 3 * 1024 * 1024 / 2,
            in_flight_batches: 2,
            buffered_records: Some(4),
            buffered_bytes: Some(8192),
            dead_letters: Some(0),
            failing,
            failures: u64::from(failing) * 7,
            last_error: failing.then(|| "send: connection refused".to_string()),
            failing_since: failing.then(|| "2026-12-01T00:00:00.000000000Z".to_string()),
            failing_since_ns: failing.then_some(1),
        }
    }

    #[test]
    fn healthy_unless_a_sink_fails_or_a_rotation_is_overdue() {
        let mut report = Report {
            containers: vec![container("a", 0.0, false), container("b", 2.5, false)],
            sinks: vec![sink("file", false), sink("loki", false)],
        };
        assert_eq!(exit_code(&report), EXIT_HEALTHY);
        assert!(render(&report, 2).ends_with("\nhealthy\n"));

        report.sinks[1] = sink("loki", true);
        assert_eq!(exit_code(&report), EXIT_UNHEALTHY);
        let p = problems(&report);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("sink loki failing since 2026-12-01T00:00:00"),
            "{p:?}"
        );
        assert!(
            p[0].contains("(7 failures): send: connection refused"),
            "{p:?}"
        );

        report.sinks[1] = sink("loki", false);
        report.containers[0] = container("a", 0.0, true);
        assert_eq!(exit_code(&report), EXIT_UNHEALTHY);
        assert_eq!(
            problems(&report),
            vec![
                "container a: stream open for 11m40s, not rotated for twice its interval (5m0s)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn the_table_sorts_containers_by_lag() {
        let report = Report {
            containers: vec![
                container("low", 1.0, false),
                container("high", 90.0, false),
                container("none", 0.0, false),
            ],
            sinks: vec![sink("loki", true)],
        };
        let text = render(&report, 61_000_000_001);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "CONTAINERS (3)");
        assert!(
            lines[1].starts_with("NAME  STATE    LAG    LINES"),
            "{text}"
        );
        let order: Vec<&str> = lines[2..5]
            .iter()
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(order, ["high", "low", "none"], "{text}");
        assert!(lines[2].contains("1m30s"), "{text}");
        assert!(lines[4].starts_with("none  running  0s "), "{text}");
        assert!(text.contains("\nSINKS (1)\n"), "{text}");
        assert!(
            text.contains("loki  1.5 MiB  2          4 (8.0 KiB)  0             FAILING for 1m1s (7 failures): send: connection refused"),
            "{text}"
        );
        assert!(text.contains("\nPROBLEMS\nsink loki failing"), "{text}");
    }

    #[test]
    fn formats() {
        assert_eq!(age(0.25), "250ms");
        assert_eq!(age(59.9), "59s");
        assert_eq!(age(3_661.0), "1h1m");
        assert_eq!(age(90_000.0), "1d1h");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(base_url("127.0.0.1:8001/"), "http://127.0.0.1:8001");
        assert_eq!(base_url("http://[::1]:9"), "http://[::1]:9");
    }

    /// Nothing listening: the "no status" code, not the unhealthy one.
    #[test]
    fn an_unreachable_agent_is_no_status() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        assert_eq!(run(&format!("127.0.0.1:{port}"), false), EXIT_NO_STATUS);
    }
}
