//! Scenario 14 of issue 10: the HTTP listener abused, within bounds: 2 000 concurrent `/metrics`
//! requests, garbage requests (random bytes, bad versions, huge heads and URIs, HTTP/2 and TLS
//! prefaces, a slow drip, pipelining), and more idle connections than `http.max_connections` held
//! past `http.header_read_timeout`. README: the listener serves at most 64 connections (a new one
//! closes the oldest) and closes one without a complete request head after 10 s. Checked: capture
//! goes on in every phase (and every line of the writer arrives once, in order), a fresh `/health`
//! is answered while the idle connections are held, RSS stays bounded, and afterwards `/health`
//! answers and tasks and FDs are back at their baseline.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::kit::{Held, parallel, terminate_checked, wait_until};
use crate::ctx::{AgentYaml, Ctx, verify};
use crate::scenario::{Outcome, Scenario};
use log_capturer_testkit::docker::docker;

pub const SCENARIO: Scenario = Scenario {
    name: "http-abuse",
    what: "2 000 concurrent /metrics, garbage requests, idle connections over the cap: capture goes on, RSS bounded, /health answers",
    quick: true,
    run,
};

/// The most RSS may grow over its baseline during the abuse.
const RSS_BOUND_MIB: f64 = 64.0;

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

/// How one connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Answered with this status.
    Status(u16),
    /// Closed (FIN or RST) without an answer.
    Closed,
    /// Still open, without an answer, when the client gave up.
    Hung,
    /// Could not connect.
    Refused,
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let room = nofile_soft().saturating_sub(200);
    let (concurrent, idle) = if ctx.quick { (500, 200) } else { (2000, 500) };
    let concurrent = concurrent.min(room);
    let idle = idle.min(room);
    // The default header time-out (10 s); 2 s in the quick run.
    let header_timeout = Duration::from_secs(if ctx.quick { 2 } else { 10 });
    let mut agent = ctx.start_agent(
        "agent",
        &AgentYaml {
            http: format!("  header_read_timeout: {}s\n", header_timeout.as_secs()),
            ..AgentYaml::default()
        },
    )?;
    let writer = ctx.run_container(
        "ha",
        &[],
        "i=1; while true; do echo \"ha $i\"; i=$((i+1)); usleep 20000; done",
    )?;
    if !agent.wait_records(&writer, 20, Duration::from_secs(30)) {
        return Err("the writer's lines do not arrive".into());
    }
    std::thread::sleep(Duration::from_secs(1));
    let baseline = Held::of(&agent);
    let pid = agent.process.pid().unwrap_or(0);
    let http = agent.process.http.clone();
    let lines = || agent.messages(&writer).map(|(o, _)| o.len()).unwrap_or(0);
    let mut problems = Vec::new();
    let mut stalled = Vec::new();
    let peak_rss = Mutex::new(baseline.rss_mib);
    let done = AtomicBool::new(false);
    let (storm, garbage, idle_result) = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let rss = log_capturer_testkit::status_field(pid, "VmRSS:") / 1024.0;
                if let Ok(mut p) = peak_rss.lock() {
                    *p = p.max(rss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // Each phase lasts at least 2 s, so that a writer at 50 lines/s shows progress.
        let mut phase = |name: &str, f: &mut dyn FnMut()| {
            let (before, started) = (lines(), Instant::now());
            f();
            if let Some(rest) = Duration::from_secs(2).checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
            if lines() <= before {
                stalled.push(name.to_string());
            }
        };
        let mut storm = Vec::new();
        phase("metrics storm", &mut || {
            storm = metrics_storm(&http, concurrent)
        });
        let mut garbage = Vec::new();
        phase("garbage", &mut || {
            garbage = garbage_requests(&http, header_timeout)
        });
        let mut idle_result = (0, 0, 0);
        phase("idle", &mut || {
            idle_result = idle_connections(&http, idle, header_timeout)
        });
        done.store(true, Ordering::Relaxed);
        (storm, garbage, idle_result)
    });
    if !stalled.is_empty() {
        problems.push(format!("capture stalled during: {}", stalled.join(", ")));
    }
    let count = |v: &[Ending], f: fn(&Ending) -> bool| v.iter().filter(|e| f(e)).count();
    let storm_ok = count(&storm, |e| *e == Ending::Status(200));
    let storm_closed = count(&storm, |e| *e == Ending::Closed);
    let storm_hung = count(&storm, |e| *e == Ending::Hung);
    let storm_refused = count(&storm, |e| *e == Ending::Refused);
    let storm_other = storm.len() - storm_ok - storm_closed - storm_hung - storm_refused;
    if storm_hung + storm_other > 0 {
        problems.push(format!(
            "metrics storm: {storm_hung} connections hung without an answer, {storm_other} other answers"
        ));
    }
    if storm_ok == 0 {
        problems.push("metrics storm: no request answered".into());
    }
    let garbage_hung: Vec<&str> = garbage
        .iter()
        .filter(|(_, e)| *e == Ending::Hung)
        .map(|(n, _)| *n)
        .collect();
    if !garbage_hung.is_empty() {
        problems.push(format!("garbage left hanging: {}", garbage_hung.join(", ")));
    }
    let pipelined = garbage
        .iter()
        .find(|(n, _)| *n == "pipelined")
        .map(|(_, e)| *e);
    if pipelined != Some(Ending::Status(200)) {
        problems.push(format!("100 pipelined /health: {pipelined:?}"));
    }
    let (health_ok, health_tries, still_open) = idle_result;
    if health_ok < health_tries {
        problems.push(format!(
            "/health answered {health_ok} of {health_tries} times while {idle} idle connections were held"
        ));
    }
    if still_open > 0 {
        problems.push(format!(
            "{still_open} idle connections still open after the header time-out"
        ));
    }
    let peak_rss = peak_rss.into_inner().unwrap_or_default();
    if peak_rss - baseline.rss_mib > RSS_BOUND_MIB {
        problems.push(format!(
            "RSS grew from {:.0} to {peak_rss:.0} MiB",
            baseline.rss_mib
        ));
    }
    let health = agent.process.get("/health").map(|(s, _)| s);
    if health != Some(200) {
        problems.push(format!("/health after the abuse: {health:?}"));
    }
    let released = wait_until(Duration::from_secs(30), || {
        let now = Held::of(&agent);
        now.tasks <= baseline.tasks && now.fds <= baseline.fds
    });
    let after = Held::of(&agent);
    if !released {
        problems.push(format!(
            "tasks/FDs not back at baseline: {}/{} -> {}/{}",
            baseline.tasks, baseline.fds, after.tasks, after.fds
        ));
    }
    let m = agent.process.metrics();
    let closed = |reason: &str| {
        m.get(&format!(
            "log_capturer_http_connections_closed_total{{reason=\"{reason}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    let (over_limit, header_timeout) = (closed("over_limit"), closed("header_timeout"));
    docker(&["stop", "-t", "1", &writer])?;
    ctx.wait_exited(&writer, Duration::from_secs(30))?;
    let served = ctx.served(&writer)?;
    wait_until(Duration::from_secs(30), || lines() >= served.stdout.len());
    std::thread::sleep(Duration::from_secs(1));
    let (out, _) = agent.messages(&writer)?;
    let tally = verify(&served.stdout, &out);
    if tally.lost + tally.duplicated + tally.out_of_order > 0 {
        problems.push(format!(
            "writer: {} lost, {} duplicated, {} out of order",
            tally.lost, tally.duplicated, tally.out_of_order
        ));
    }
    terminate_checked(&mut agent, Duration::from_secs(30), &mut problems)?;
    let garbage_text = garbage
        .iter()
        .map(|(n, e)| match e {
            Ending::Status(s) => format!("{n}:{s}"),
            other => format!("{n}:{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    Ok(
        Outcome::judge(problems, format!("garbage answers: {garbage_text}"))
            .count("metrics_concurrent", concurrent)
            .count("answered", storm_ok)
            .count("closed_unanswered", storm_closed)
            .count("refused", storm_refused)
            .count("hung", storm_hung + garbage_hung.len())
            .count("idle_held", idle)
            .count("health_during_idle", format!("{health_ok}/{health_tries}"))
            .count("closed_over_limit", over_limit)
            .count("closed_header_timeout", header_timeout)
            .count(
                "rss_mib",
                format!("{:.0}>{peak_rss:.0}>{:.0}", baseline.rss_mib, after.rss_mib),
            )
            .count("tasks", format!("{}>{}", baseline.tasks, after.tasks))
            .count("fds", format!("{}>{}", baseline.fds, after.fds))
            .count("lines_lost", tally.lost)
            .count("lines_dup", tally.duplicated),
    )
}

/// The soft limit of open files of this process (`/proc/self/limits`).
fn nofile_soft() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn connect(http: &str) -> Option<TcpStream> {
    let addr = http.parse().ok()?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()
}

/// Reads until the server closes or `within` passes: how the connection ended.
fn ending(stream: &mut TcpStream, within: Duration) -> (Ending, Vec<u8>) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return (classify(&got, Ending::Hung), got);
        }
        match stream.read(&mut buf) {
            Ok(0) => return (classify(&got, Ending::Closed), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (classify(&got, Ending::Hung), got);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (classify(&got, Ending::Closed), got),
        }
    }
}

/// The status of the first answer in `got`, else `otherwise`.
fn classify(got: &[u8], otherwise: Ending) -> Ending {
    let text = String::from_utf8_lossy(&got[..got.len().min(64)]);
    text.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .map_or(otherwise, Ending::Status)
}

/// `n` connections each send `GET /metrics` at once (100 threads, each opening its share,
/// writing every request, then reading every answer).
fn metrics_storm(http: &str, n: usize) -> Vec<Ending> {
    let threads = 100.min(n.max(1));
    let shares: Vec<usize> = (0..threads)
        .map(|t| n / threads + usize::from(t < n % threads))
        .collect();
    parallel(&shares, threads, |&share| {
        let mut conns: Vec<Option<TcpStream>> = (0..share).map(|_| connect(http)).collect();
        for c in conns.iter_mut().flatten() {
            let _ =
                c.write_all(b"GET /metrics HTTP/1.1\r\nHost: faults\r\nConnection: close\r\n\r\n");
        }
        conns
            .iter_mut()
            .map(|c| match c {
                None => Ending::Refused,
                Some(c) => ending(c, Duration::from_secs(20)).0,
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Requests no client should send, each on its own connection, 32 at a time (under the cap);
/// how each ended.
fn garbage_requests(http: &str, header_timeout: Duration) -> Vec<(&'static str, Ending)> {
    let mut random = vec![0u8; 4096];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for b in random.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let long_header = format!(
        "GET /metrics HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\n\r\n", "u".repeat(100_000));
    let pipelined = "GET /health HTTP/1.1\r\nHost: faults\r\n\r\n".repeat(100);
    let cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("random", random),
        ("nul", vec![0u8; 2048]),
        ("version", b"GET /metrics HTTP/9.9\r\n\r\n".to_vec()),
        ("method", b"BREW /metrics HTTP/1.1\r\n\r\n".to_vec()),
        (
            "no_colon",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(),
        ),
        ("long_header", long_header.into_bytes()),
        ("long_uri", long_uri.into_bytes()),
        ("http2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        (
            "tls",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ],
        ),
        (
            "traversal",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "huge_body",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\nabc".to_vec(),
        ),
        (
            "bad_chunk",
            b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ),
        ("half_head", b"GET /metrics HT".to_vec()),
        ("pipelined", pipelined.into_bytes()),
        ("drip", Vec::new()),
    ];
    let within = header_timeout + Duration::from_secs(5);
    parallel(&cases, 32, |(name, bytes)| {
        let Some(mut c) = connect(http) else {
            return (*name, Ending::Refused);
        };
        if *name == "drip" {
            // A slow client: one byte of a never-ending head every 500 ms.
            let started = Instant::now();
            let _ = c.write_all(b"GET /health HTTP/1.1\r\n");
            let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
            let mut scratch = [0u8; 256];
            while started.elapsed() < within {
                if c.write_all(b"x").is_err() {
                    break;
                }
                match c.read(&mut scratch) {
                    Ok(0) => return (*name, Ending::Closed),
                    Ok(_) => return (*name, classify(&scratch, Ending::Closed)),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return (*name, Ending::Closed),
                }
            }
            return (*name, ending(&mut c, Duration::from_millis(100)).0);
        }
        let _ = c.write_all(bytes);
        let (end, got) = ending(&mut c, within);
        if *name == "pipelined" {
            let answers = String::from_utf8_lossy(&got)
                .matches("HTTP/1.1 200")
                .count();
            return (*name, if answers == 100 { end } else { Ending::Closed });
        }
        (*name, end)
    })
}

/// Holds `n` idle connections past the header time-out, asking `/health` on a fresh
/// connection every second meanwhile: (health answered, health asked, idle still open).
fn idle_connections(http: &str, n: usize, header_timeout: Duration) -> (usize, usize, usize) {
    let mut conns: Vec<TcpStream> = (0..n).filter_map(|_| connect(http)).collect();
    let started = Instant::now();
    let (mut ok, mut tries) = (0, 0);
    while started.elapsed() < header_timeout + Duration::from_secs(3) {
        tries += 1;
        if log_capturer_testkit::http_get(http, "/health").is_some_and(|(s, _)| s == 200) {
            ok += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let still_open = conns
        .iter_mut()
        .map(|c| ending(c, Duration::from_millis(20)).0)
        .filter(|e| *e == Ending::Hung)
        .count();
    (ok, tries, still_open)
}
