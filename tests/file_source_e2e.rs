//! The host-file source (`sources.files`) end to end, with the real agent binary and Debian's
//! real `logrotate`: rename + create and copytruncate rotation under a writer appending at
//! speed, SIGTERM and SIGKILL restarts at random points while files rotate. Every written line
//! is accounted for exactly (see `file_source_identity_e2e.rs` for identity, resources and
//! partial lines).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::files::{
    self, Out, RotateMode, Rotator, Writer, WriterSpec, Written, assert_exactly_once,
    assert_in_order_per_inode, occurrences, start_agent, wait_for_records,
};

const PREFIX: &str = "L";

fn print_metrics(test: &str, agent: &Agent) {
    println!("{test}: metrics\n{}", files::file_metrics(&agent.metrics()));
}

fn writer(live: &Path, lines: u64, per_sec: u64) -> Writer {
    Writer::start(WriterSpec {
        path: live.to_path_buf(),
        prefix: PREFIX.into(),
        lines,
        per_sec,
        burst: 50,
    })
}

/// A temp dir with an empty `logs/app.log`, the agent reading `app.log*` (`glob_rotated`) or
/// just `app.log`, and logrotate rotating it in `mode` every `every`.
struct Rig {
    dir: tempfile::TempDir,
    live: PathBuf,
    agent: Agent,
    rotator: Rotator,
}

fn rig(glob_rotated: bool, mode: RotateMode, every: Duration) -> Rig {
    let dir = files::tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let live = logs.join("app.log");
    std::fs::write(&live, "").expect("live file");
    let include = if glob_rotated {
        logs.join("app.log*")
    } else {
        live.clone()
    };
    let agent = start_agent(dir.path(), &[include], "");
    let conf = files::logrotate_conf(dir.path(), &live, mode);
    let rotator = Rotator::start(conf, dir.path().join("logrotate.state"), every);
    Rig {
        dir,
        live,
        agent,
        rotator,
    }
}

/// Test 1: logrotate's default mode (rename to `.1`, older ones shifted, then create) every
/// 0.7 s while 120 000 lines are appended over ~12 s.
fn create_mode(test: &str, glob_rotated: bool) {
    let Rig {
        dir,
        live,
        agent,
        rotator,
    } = rig(glob_rotated, RotateMode::Create, Duration::from_millis(700));
    let n = 120_000;
    let w = writer(&live, n, 10_000);
    let started = Instant::now();
    let written = w.join();
    let runs = rotator.stop();
    let wrote_for = started.elapsed();
    let out = dir.path().join("out");
    let seen = wait_for_records(&out, n as usize, Duration::from_secs(20));
    print_metrics(test, &agent);
    let output = files::output(&out);
    let all = occurrences(output.values().flatten(), PREFIX, n);
    assert_exactly_once(&all, &format!("{test} (after {seen} records)"));
    assert_in_order_per_inode(&output, PREFIX, &written);
    println!(
        "{test}: {n} lines written in {wrote_for:?} to {} inodes, {runs} logrotate runs; \
         {} records in {} output files: every line exactly once, in order per file",
        written.inodes(),
        output.values().map(Vec::len).sum::<usize>(),
        output.len()
    );
    assert!(runs >= 5, "only {runs} logrotate runs");
}

#[test]
fn logrotate_create_mode_with_rotated_files_globbed_every_line_once() {
    create_mode("create mode, glob app.log*", true);
}

#[test]
fn logrotate_create_mode_live_file_only_reads_renamed_file_to_its_end() {
    create_mode("create mode, glob app.log", false);
}

#[test]
fn logrotate_copytruncate_live_file_only_reads_every_surviving_line_once() {
    copytruncate_mode("copytruncate, glob app.log", false);
}

#[test]
fn logrotate_copytruncate_with_copies_globbed_reads_every_surviving_line_once() {
    copytruncate_mode("copytruncate, glob app.log*", true);
}

/// The numbers of the lines on disk (and the torn pieces: a copy logrotate made while a
/// line was being written ends inside it) in `live` and its rotated copies (`live.N`).
fn lines_on_disk(live: &Path) -> (Vec<u64>, Vec<String>) {
    let dir = live.parent().expect("dir");
    let name = live
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mut numbers = Vec::new();
    let mut fragments = Vec::new();
    for entry in std::fs::read_dir(dir).expect("logs").flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file != name && !file.starts_with(&format!("{name}.")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("read log");
        for l in text.split_inclusive('\n') {
            match files::number(PREFIX, l.trim_end_matches('\n')) {
                Some(k) if l.ends_with('\n') => numbers.push(k),
                _ => fragments.push(l.trim_end_matches('\n').to_string()),
            }
        }
    }
    (numbers, fragments)
}

/// Test 2: logrotate `copytruncate` every 0.7 s under the same writer. logrotate itself loses
/// what is written between its copy and its truncate; everything else on disk is read once.
fn copytruncate_mode(test: &str, glob_rotated: bool) {
    // With the copies globbed, each is another inode with the live file's bytes: the agent
    // must take it for a copy (same fingerprint), not read it as a new file.
    let Rig {
        dir,
        live,
        agent,
        rotator,
    } = rig(
        glob_rotated,
        RotateMode::CopyTruncate,
        Duration::from_millis(700),
    );
    let n = 120_000;
    let written = writer(&live, n, 10_000).join();
    let runs = rotator.stop();
    let (on_disk, fragments) = lines_on_disk(&live);
    let mut disk = vec![0u32; n as usize + 1];
    for &k in &on_disk {
        disk[k as usize] += 1;
    }
    let survived: Vec<u64> = (1..=n).filter(|&k| disk[k as usize] > 0).collect();
    let disk_dups = (1..=n).filter(|&k| disk[k as usize] > 1).count();
    let out = dir.path().join("out");
    // The output ends with the last line (it survives: nothing truncates after the writer).
    let seen = wait_for_records(&out, survived.len(), Duration::from_secs(20));
    print_metrics(test, &agent);
    let output = files::output(&out);
    // Every record is a written line, none twice, or a torn piece that is on disk (once).
    let (whole, torn): (Vec<&Out>, Vec<&Out>) = output
        .values()
        .flatten()
        .partition(|r| files::number(PREFIX, &r.message).is_some());
    let mut pieces = fragments.clone();
    for r in &torn {
        let at = pieces.iter().position(|f| *f == r.message);
        assert!(
            at.is_some(),
            "{test}: not a written line nor a piece on disk: {r:?}"
        );
        pieces.swap_remove(at.unwrap_or_default());
    }
    let got = occurrences(whole, PREFIX, n);
    let dups: Vec<u64> = (1..=n).filter(|&k| got[k as usize] > 1).collect();
    assert!(
        dups.is_empty(),
        "{test}: {} lines duplicated (first {:?})",
        dups.len(),
        &dups[..dups.len().min(10)]
    );
    let missing: Vec<u64> = survived
        .iter()
        .copied()
        .filter(|&k| got[k as usize] == 0)
        .collect();
    assert!(
        missing.is_empty(),
        "{test}: {} lines on disk not read (first {:?}); {seen} records",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_in_order_per_inode(&output, PREFIX, &written);
    let lost_by_logrotate = n - survived.len() as u64;
    let read_but_lost_on_disk = (1..=n)
        .filter(|&k| got[k as usize] == 1 && disk[k as usize] == 0)
        .count();
    println!(
        "{test}: {n} lines written, {runs} logrotate runs; {} on disk ({disk_dups} twice, \
         {} torn pieces, {} of them read), {lost_by_logrotate} lost by logrotate's copy-to-truncate \
         window, of which the agent had read {read_but_lost_on_disk} before the truncate; \
         {} records, none twice, every surviving line read",
        survived.len(),
        fragments.len(),
        torn.len(),
        output.values().map(Vec::len).sum::<usize>()
    );
    assert!(runs >= 5, "only {runs} logrotate runs");
    let m = agent.metrics();
    let truncations = m
        .get("log_capturer_file_truncations_total")
        .copied()
        .unwrap_or(-1.0);
    println!("{test}: truncations seen {truncations} for {runs} runs");
}

/// How one run of the agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Term,
    Kill,
}

/// Test 3: while the writer appends and logrotate rotates (create mode, rotated files
/// globbed), the agent is stopped at random points and started again: three SIGTERMs (exactly
/// once across them), then three SIGKILLs (nothing lost; duplicates only a contiguous replay
/// per file from its last persisted position). `FILE_SOURCE_E2E_SEED` replays a seed.
#[test]
fn restarts_at_random_points_sigterm_exactly_once_sigkill_only_replays() {
    let test = "restarts";
    let seed = std::env::var("FILE_SOURCE_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("{test}: seed {seed} (FILE_SOURCE_E2E_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let Rig {
        dir,
        live,
        mut agent,
        rotator,
    } = rig(true, RotateMode::Create, Duration::from_millis(800));
    // ~30 s of writing: the six stops (each ~1-4 s with its restart) all fall inside it.
    let n = 150_000;
    let w = writer(&live, n, 5_000);
    let out = dir.path().join("out");
    // Record counts of each output file where each run ended.
    let mut cuts: Vec<(Stop, BTreeMap<String, usize>)> = Vec::new();
    for stop in [
        Stop::Term,
        Stop::Term,
        Stop::Term,
        Stop::Kill,
        Stop::Kill,
        Stop::Kill,
    ] {
        std::thread::sleep(Duration::from_millis(rng.u64(500..2000)));
        let at = w.progress.load(std::sync::atomic::Ordering::Acquire);
        assert!(
            at < n,
            "the writer finished before the {stop:?} (machine too slow?)"
        );
        match stop {
            Stop::Term => assert!(agent.terminate().success()),
            Stop::Kill => {
                agent.kill();
            }
        }
        let counts = files::output(&out)
            .into_iter()
            .map(|(k, v)| (k, v.len()))
            .collect();
        cuts.push((stop, counts));
        let down = Duration::from_millis(rng.u64(100..1000));
        println!("{test}: {stop:?} at line ~{at}, down for {down:?}");
        std::thread::sleep(down);
        agent.restart();
    }
    let written = w.join();
    let runs = rotator.stop();
    assert!(
        !cuts.is_empty() && written.lines == n,
        "writer finished early"
    );
    let seen = wait_for_records(&out, n as usize, Duration::from_secs(20));
    print_metrics(test, &agent);
    let output = files::output(&out);
    let per_run = split_runs(&output, &cuts);
    let replayed = check_runs(&per_run, &cuts, &written, n);
    let all = occurrences(output.values().flatten(), PREFIX, n);
    let missing: Vec<u64> = (1..=n).filter(|&k| all[k as usize] == 0).collect();
    assert!(
        missing.is_empty(),
        "{test}: {} lines lost (first {:?}); {seen} records",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let total_dups: u64 = all.iter().map(|&c| u64::from(c.saturating_sub(1))).sum();
    assert_eq!(total_dups, replayed.iter().sum::<u64>());
    println!(
        "{test}: {n} lines, {} inodes, {runs} logrotate runs, 3 SIGTERM + 3 SIGKILL; \
         nothing lost, no duplicate across a SIGTERM, replayed after each SIGKILL: {replayed:?}",
        written.inodes()
    );
}

/// The line numbers each agent run wrote (run i: between cut i-1 and cut i, the last run
/// after the last cut).
fn split_runs(
    output: &BTreeMap<String, Vec<Out>>,
    cuts: &[(Stop, BTreeMap<String, usize>)],
) -> Vec<Vec<u64>> {
    let mut runs = vec![Vec::new(); cuts.len() + 1];
    for (name, records) in output {
        let mut from = 0;
        for (i, run) in runs.iter_mut().enumerate() {
            let to = cuts
                .get(i)
                .map_or(records.len(), |c| c.1.get(name).copied().unwrap_or(0));
            assert!(to >= from, "{name}: output shrank");
            for r in &records[from..to] {
                run.push(
                    files::number(PREFIX, &r.message)
                        .unwrap_or_else(|| panic!("{name}: not a written line {r:?}")),
                );
            }
            from = to;
        }
    }
    runs
}

/// Per run boundary: no line written by an earlier run again after a SIGTERM; after a
/// SIGKILL, the lines read again are per source file one contiguous run ending at the last
/// line the earlier runs had of that file. Returns the replay count per SIGKILL.
fn check_runs(
    runs: &[Vec<u64>],
    cuts: &[(Stop, BTreeMap<String, usize>)],
    written: &Written,
    n: u64,
) -> Vec<u64> {
    let mut before: BTreeSet<u64> = BTreeSet::new();
    let mut replays = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let mut once = BTreeSet::new();
        for &k in run {
            assert!((1..=n).contains(&k), "run {i}: line {k} never written");
            assert!(once.insert(k), "run {i}: line {k} twice in one run");
        }
        let again: Vec<u64> = run.iter().copied().filter(|k| before.contains(k)).collect();
        if i > 0 {
            match cuts[i - 1].0 {
                Stop::Term => assert!(
                    again.is_empty(),
                    "run {i} (after a SIGTERM) read {} lines again (first {:?})",
                    again.len(),
                    &again[..again.len().min(10)]
                ),
                Stop::Kill => {
                    check_replay(i, &again, &before, written);
                    replays.push(again.len() as u64);
                }
            }
        }
        before.extend(run.iter().copied());
    }
    replays
}

/// `again` (lines read again after a SIGKILL), per inode, is the contiguous tail of what
/// the earlier runs had read of that inode.
fn check_replay(run: usize, again: &[u64], before: &BTreeSet<u64>, written: &Written) {
    let mut by_inode: HashMap<u64, Vec<u64>> = HashMap::new();
    for &k in again {
        by_inode.entry(written.inode_of(k)).or_default().push(k);
    }
    for (ino, mut lines) in by_inode {
        lines.sort_unstable();
        let (first, last) = (lines[0], lines[lines.len() - 1]);
        assert_eq!(
            lines.len() as u64,
            last - first + 1,
            "run {run}: inode {ino}: replay {first}..={last} has holes"
        );
        let read_before = before
            .iter()
            .copied()
            .filter(|&k| written.inode_of(k) == ino)
            .max()
            .unwrap_or(0);
        assert_eq!(
            last, read_before,
            "run {run}: inode {ino}: replay {first}..={last} is not the tail of what was read ({read_before})"
        );
    }
}
