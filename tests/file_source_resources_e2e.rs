//! The host-file source's resources, with the real agent binary: files that go away leave no
//! descriptor, gauge or per-file metric series behind, and `max_open_files` bounds the
//! descriptors held on source files while more files than that are appended to.

mod support;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::agent::Agent;
use support::files::{self, start_agent, wait_for_records};
use support::wait_until;

fn prefix(i: usize) -> String {
    format!("F{i:02}-")
}

fn append(path: &Path, prefix: &str, from: u64, to: u64) {
    let text: String = (from..=to).map(|k| files::line(prefix, k)).collect();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("append");
}

/// Every line `1..=n` of each of the `files` prefixes once, in order.
fn assert_each_file(out: &Path, files_n: usize, n: u64) {
    let output = files::output(out);
    for i in 0..files_n {
        let p = prefix(i);
        let got: Vec<u64> = output
            .values()
            .flatten()
            .filter_map(|r| files::number(&p, &r.message))
            .collect();
        let want: Vec<u64> = (1..=n).collect();
        assert!(
            got == want,
            "file {i}: {} records for {n} lines, first {:?}",
            got.len(),
            &got[..got.len().min(10)]
        );
    }
    let total: usize = output.values().map(Vec::len).sum();
    assert_eq!(
        total,
        files_n * n as usize,
        "records that are no file's line"
    );
}

/// (files open, files watched, lag series for paths under `logs`) from the agent's metrics.
fn gauges(agent: &Agent, logs: &Path) -> (f64, f64, usize) {
    let m = agent.metrics();
    let lag = m
        .keys()
        .filter(|k| {
            k.starts_with("log_capturer_file_lag_bytes{") && k.contains(&logs.display().to_string())
        })
        .count();
    (
        m.get("log_capturer_files_open").copied().unwrap_or(-1.0),
        m.get("log_capturer_files_watched").copied().unwrap_or(-1.0),
        lag,
    )
}

/// The fewest descriptors of the agent over a second of samples (a scrape's socket comes and
/// goes).
fn fd_floor(pid: u32, logs: &Path) -> usize {
    (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            files::fds(pid, logs).0
        })
        .min()
        .unwrap_or(0)
}

/// 5a: 50 files written, read, then deleted: gauges back to 0, no descriptor left on them,
/// the agent's descriptor count back to its baseline, their lag series gone.
#[test]
fn deleted_files_release_descriptors_gauges_and_lag_series() {
    let test = "50 files deleted";
    let dir = files::tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let agent = start_agent(dir.path(), &[logs.join("*.log")], "");
    let pid = agent.pid();
    let baseline = fd_floor(pid, &logs);
    let (files_n, n) = (50, 100);
    for i in 0..files_n {
        append(&logs.join(format!("f{i:02}.log")), &prefix(i), 1, n);
    }
    let out = dir.path().join("out");
    wait_for_records(&out, files_n * n as usize, Duration::from_secs(20));
    assert_each_file(&out, files_n, n);
    let (open, watched, lag) = gauges(&agent, &logs);
    let (fds_all, fds_logs) = files::fds(pid, &logs);
    println!(
        "{test}: read: files open {open}, watched {watched}, lag series {lag}; agent FDs \
         {fds_all} (baseline {baseline}), on source files {fds_logs}"
    );
    assert_eq!(watched, files_n as f64, "files watched while they exist");
    // The gauge says what the process holds (and the count below measures the right thing).
    assert_eq!(open, fds_logs as f64, "files_open against /proc/{pid}/fd");
    for i in 0..files_n {
        std::fs::remove_file(logs.join(format!("f{i:02}.log"))).expect("delete");
    }
    let mut last = (0.0, 0.0, 0, 0, 0);
    // The file sink closes its 50 output files after `idle_close` (1 s) too.
    let released = wait_until(Duration::from_secs(30), || {
        let (open, watched, lag) = gauges(&agent, &logs);
        let (all, on_logs) = files::fds(pid, &logs);
        last = (open, watched, lag, all, on_logs);
        open == 0.0 && watched == 0.0 && lag == 0 && on_logs == 0 && all <= baseline + 1
    });
    let floor = fd_floor(pid, &logs);
    println!(
        "{test}: after delete: files open {}, watched {}, lag series {}, FDs on source files {}, \
         agent FDs {} (floor {floor}, baseline {baseline})",
        last.0, last.1, last.2, last.4, last.3
    );
    assert!(
        released,
        "{test}: not released: {last:?}; log:\n{}",
        agent.log()
    );
    assert!(floor <= baseline, "FDs {floor} above baseline {baseline}");
    println!("{test}: metrics\n{}", files::file_metrics(&agent.metrics()));
}

/// 5b: `max_open_files: 8`, `close_inactive: 1s`, 40 files appended to round-robin (8 rounds
/// of 25 lines each, 25 ms apart): every line read once, in order, and the descriptors the
/// agent holds on source files (sampled every 10 ms) never above 8 + 2. (The agent's total
/// count is not the measure here: the file sink holds one output file per source file.)
#[test]
fn max_open_files_bounds_descriptors_and_every_line_is_read() {
    let test = "max_open_files 8, 40 files";
    let dir = files::tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let agent = start_agent(
        dir.path(),
        &[logs.join("*.log")],
        "    max_open_files: 8\n    close_inactive: 1s\n",
    );
    let pid = agent.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let max_fds = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_fds, logs) = (stop.clone(), max_fds.clone(), logs.clone());
        std::thread::spawn(move || {
            let mut samples = 0usize;
            while !stop.load(Ordering::Acquire) {
                max_fds.fetch_max(files::fds(pid, &logs).1, Ordering::AcqRel);
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    let (files_n, rounds, per) = (40usize, 8u64, 25u64);
    let mut max_open_gauge: f64 = 0.0;
    for r in 0..rounds {
        for i in 0..files_n {
            append(
                &logs.join(format!("f{i:02}.log")),
                &prefix(i),
                r * per + 1,
                (r + 1) * per,
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        max_open_gauge = max_open_gauge.max(agent.metric("log_capturer_files_open"));
    }
    let n = rounds * per;
    let out = dir.path().join("out");
    wait_for_records(&out, files_n * n as usize, Duration::from_secs(20));
    stop.store(true, Ordering::Release);
    let samples = sampler.join().expect("sampler");
    assert_each_file(&out, files_n, n);
    let max_fds = max_fds.load(Ordering::Acquire);
    println!(
        "{test}: {} lines in {files_n} files read once each; most FDs on source files \
         {max_fds} over {samples} samples, files_open gauge at most {max_open_gauge} \
         (sampled per round)",
        files_n * n as usize
    );
    // Everything is acknowledged: the lag of every file, closed (idle) ones too, goes to 0.
    let mut lagging = Vec::new();
    let caught_up = wait_until(Duration::from_secs(15), || {
        lagging = agent
            .metrics()
            .into_iter()
            .filter(|(k, v)| k.starts_with("log_capturer_file_lag_bytes{") && *v != 0.0)
            .collect();
        lagging.is_empty()
    });
    assert!(caught_up, "{} files still lag: {lagging:?}", lagging.len());
    assert!(max_fds <= 8 + 2, "{max_fds} descriptors on source files");
    assert!(max_fds >= 1 && samples >= 100, "the sampler saw nothing");
    assert!(max_open_gauge <= 8.0, "files_open {max_open_gauge}");
    println!("{test}: metrics\n{}", files::file_metrics(&agent.metrics()));
}
