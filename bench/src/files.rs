//! `files` and `files-live`: the host-file source (`sources.files`, issue 13) of the release
//! agent into the null sink. Container capture points at a fake Engine API with no container,
//! so the agent reads nothing but the files.
//!
//! - files: 10 files × 1 000 000 lines of 100 B, written (and `sync`ed) before the agent
//!   starts, on the local disk under `--out` (ext4 here, not tmpfs; the pages are still in the
//!   page cache, as for a log just written), read from their start. Throughput is the line
//!   count over the time from spawning the agent until the null sink has counted every line,
//!   start-up included, as in `firehose`.
//! - files-live: 10 writer threads append one `write()` per line at a fixed total rate while
//!   the agent follows; agent CPU per million lines over the window from the first write until
//!   the sink has counted the last line.
//!
//! Both fail (non-zero exit) when the sink has not counted every line within a generous
//! time-out, or counts more lines than were written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentConfig};
use crate::runlog::RunLog;
use crate::{Row, dir_ready, fake_engine, median};
use log_capturer_testkit::{cpu_seconds, status_field};

const FILES: usize = 10;
const LINE_BYTES: usize = 100;
const SINK_LINES: &str = "log_capturer_sink_lines_total{sink=\"null\"}";

/// Removes the generated data (a gigabyte) however the scenario ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Appends line `n` of file `file` (exactly `LINE_BYTES` bytes, newline included) to `buf`.
fn line(buf: &mut Vec<u8>, file: usize, n: usize) {
    let start = buf.len();
    let _ = write!(
        buf,
        "2026-12-01T10:00:00.{:06}Z INFO app={file} seq={n:09} GET /api/v1/items/{} status=200 ",
        n % 1_000_000,
        n % 9973
    );
    buf.resize(start + LINE_BYTES - 1, b'x');
    buf.push(b'\n');
}

/// Creates `dir`; its absolute path (`sources.files` globs must be absolute).
fn absolute(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn write_files(dir: &Path, lines: usize) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut buf = Vec::with_capacity(1 << 20);
    for f in 0..FILES {
        let path = dir.join(format!("app-{f}.log"));
        let mut file =
            std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for n in 0..lines {
            line(&mut buf, f, n);
            if buf.len() >= (1 << 20) - LINE_BYTES {
                file.write_all(&buf)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                buf.clear();
            }
        }
        file.write_all(&buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        buf.clear();
    }
    // Written back now, so that writeback does not compete with the measured read.
    let _ = std::process::Command::new("sync").status();
    Ok(())
}

// A full `AgentConfig`, as in every scenario (alike on purpose, see main.rs).
fn start_agent(
    binary: &Path,
    dir: &Path,
    data: &Path,
) -> Result<(Agent, fake_engine::FakeEngine), String> {
    let engine = fake_engine::FakeEngine::start(&dir_ready(dir)?, 0, None)?;
    let extra = format!(
        "sources:\n  files:\n    - include: [\"{}/*.log\"]\n",
        data.display()
    );
    let agent = Agent::start(
        binary,
        dir,
        AgentConfig {
            docker_host: Some(engine.docker_host()),
            sink: "null",
            rotation: "1h",
            include_label: None,
            fsync: None,
            processing: None,
            extra: &extra,
        },
    )?;
    Ok((agent, engine))
}

/// Waits until the sink has counted `total` lines, then checks it counts no more.
fn wait_all(
    agent: &Agent,
    total: usize,
    timeout: Duration,
    what: &str,
    dir: &Path,
) -> Result<Duration, String> {
    let took = agent
        .wait_metric(SINK_LINES, total as f64, timeout)
        .map_err(|e| {
            format!(
                "{what}: the agent did not read every line: {e} (agent log: {})",
                dir.join("agent.log").display()
            )
        })?;
    std::thread::sleep(Duration::from_millis(300));
    let seen = agent.metric(SINK_LINES);
    if seen != total as f64 {
        return Err(format!(
            "{what}: the sink counted {seen} lines, {total} were written (duplicates)"
        ));
    }
    Ok(took)
}

// The entry point every scenario shares (alike on purpose, see main.rs).
pub fn scenario(
    binary: &Path,
    out: &Path,
    runs: usize,
    quick: bool,
    log: &RunLog,
) -> Result<Vec<Row>, String> {
    let lines = if quick { 100_000 } else { 1_000_000 };
    let total = FILES * lines;
    let data = Scratch(absolute(&out.join("files-data"))?);
    let t = Instant::now();
    write_files(&data.0, lines)?;
    eprintln!(
        "bench: files: {FILES} × {lines} lines written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let case = format!("{FILES} files × {lines} lines of {LINE_BYTES} B → null");
    let (mut rate, mut mbs, mut cpu, mut rss) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let dir = out.join(format!("files-{run}"));
        let (agent, engine) = start_agent(binary, &dir, &data.0)?;
        // Generous: 50 k lines/s, 1/40 of the target.
        let timeout = Duration::from_secs(60 + (total / 50_000) as u64);
        let took = wait_all(&agent, total, timeout, "files", &dir)?;
        let secs = took.as_secs_f64();
        let c = cpu_seconds(agent.pid()) / (total as f64 / 1e6);
        let r = status_field(agent.pid(), "VmHWM:") / 1024.0;
        agent.terminate()?;
        engine.stop();
        log.record(
            "files",
            &case,
            run,
            &format!(
                "{:.0} lines/s, {:.3} CPU-s per M lines, peak RSS {r:.1} MiB",
                total as f64 / secs,
                c
            ),
        );
        rate.push(total as f64 / secs);
        mbs.push((total * LINE_BYTES) as f64 / 1e6 / secs);
        cpu.push(c);
        rss.push(r);
    }
    Ok(vec![
        Row::new(
            "files",
            &case,
            "throughput",
            "lines/s",
            median(rate),
            Some((">=", 2_000_000.0)),
        ),
        Row::new("files", &case, "throughput", "MB/s", median(mbs), None),
        Row::new(
            "files",
            &case,
            "agent CPU per million lines",
            "s",
            median(cpu),
            None,
        ),
        Row::new("files", &case, "peak RSS", "MiB", median(rss), None),
    ])
}

/// One writer: `lines` lines appended to `path` at `rate` lines/s, one `write()` each.
fn writer(path: PathBuf, file: usize, lines: usize, rate: f64) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let t0 = Instant::now();
    let mut buf = Vec::with_capacity(LINE_BYTES);
    let mut n = 0;
    while n < lines {
        let due = ((t0.elapsed().as_secs_f64() * rate) as usize + 1).min(lines);
        while n < due {
            buf.clear();
            line(&mut buf, file, n);
            f.write_all(&buf)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

pub fn live(
    binary: &Path,
    out: &Path,
    runs: usize,
    quick: bool,
    log: &RunLog,
) -> Result<Vec<Row>, String> {
    let rate = 100_000.0;
    let secs = if quick { 2.0 } else { 10.0 };
    let per = (rate * secs) as usize / FILES;
    let total = per * FILES;
    let case = format!("{FILES} writers, {rate:.0} lines/s in all for {secs:.0} s → null");
    let (mut cpu, mut share, mut lag) = (vec![], vec![], vec![]);
    for run in 0..runs {
        let data = Scratch(absolute(&out.join(format!("files-live-data-{run}")))?);
        let paths: Vec<PathBuf> = (0..FILES)
            .map(|f| data.0.join(format!("app-{f}.log")))
            .collect();
        for p in &paths {
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let dir = out.join(format!("files-live-{run}"));
        let (agent, engine) = start_agent(binary, &dir, &data.0)?;
        // Let the agent find and open the empty files before the first write.
        std::thread::sleep(Duration::from_millis(500));
        let a0 = cpu_seconds(agent.pid());
        let t0 = Instant::now();
        let writers: Vec<_> = paths
            .iter()
            .cloned()
            .enumerate()
            .map(|(f, p)| std::thread::spawn(move || writer(p, f, per, rate / FILES as f64)))
            .collect();
        let mut failed = None;
        for w in writers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some("a writer thread panicked".to_string()),
            }
        }
        if let Some(e) = failed {
            return Err(format!("files-live: {e}"));
        }
        let written = Instant::now();
        // Not `wait_all` (alike on purpose): the settle and the count check it adds would
        // fall inside the window measured here.
        let timeout = Duration::from_secs(120);
        agent
            .wait_metric(SINK_LINES, total as f64, timeout)
            .map_err(|e| {
                format!(
                    "files-live: the agent did not read every line: {e} (agent log: {})",
                    dir.join("agent.log").display()
                )
            })?;
        let window = t0.elapsed().as_secs_f64();
        let l = written.elapsed().as_secs_f64();
        let c = cpu_seconds(agent.pid()) - a0;
        wait_all(&agent, total, timeout, "files-live", &dir)?;
        agent.terminate()?;
        engine.stop();
        log.record(
            "files-live",
            &case,
            run,
            &format!(
                "{:.3} CPU-s per M lines, {:.1} % of a core, last line read {:.3} s after it was written",
                c / (total as f64 / 1e6),
                100.0 * c / window,
                l
            ),
        );
        cpu.push(c / (total as f64 / 1e6));
        share.push(100.0 * c / window);
        lag.push(l);
    }
    Ok(vec![
        Row::new(
            "files-live",
            &case,
            "agent CPU per million lines",
            "s",
            median(cpu),
            None,
        ),
        Row::new(
            "files-live",
            &case,
            "agent CPU while following",
            "% of a core",
            median(share),
            None,
        ),
        Row::new(
            "files-live",
            &case,
            "last line counted after the last write",
            "s",
            median(lag),
            None,
        ),
    ])
}
