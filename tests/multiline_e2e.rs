//! End-to-end exactness of processing pipelines against the real dockerd (issue 12): stack
//! traces joined by a `multiline` stage survive 1 s rotations and a SIGKILL/restart whole and
//! without loss, and lines a `drop` stage drops are acknowledged — never read again after a
//! restart, and a container whose every line is dropped still has its checkpoint advance.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use log_capturer::docker::timestamp::parse_rfc3339_nanos;
use support::agent::{Agent, AgentOptions};
use support::blocked_stdout::checkpoint;
use support::docker::{Containers, docker};
use support::tempdir;
use support::wait_until;

/// Starts the agent on this test's containers, rotating every second, with one processing
/// pipeline `name` of `stages` (YAML list items indented by 8 spaces) for them.
fn start_agent(dir: &std::path::Path, containers: &Containers, name: &str, stages: &str) -> Agent {
    let label = containers.label.replace('"', "\\\"");
    Agent::start(
        dir,
        AgentOptions {
            capture: format!("{}  rotation_interval: 1s\n", containers.include_yaml()),
            processing: format!(
                "  pipelines:\n    - name: {name}\n      match:\n        labels: [\"{label}\"]\n      stages:\n{stages}"
            ),
            ..AgentOptions::default()
        },
    )
}

/// (stream, message) of each record of a container, in file order.
fn records(agent: &Agent, name: &str) -> Vec<(String, String)> {
    agent
        .records(name)
        .iter()
        .map(|r| {
            (
                r["stream"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn of_stream<'a>(records: &'a [(String, String)], stream: &str) -> Vec<&'a str> {
    records
        .iter()
        .filter(|r| r.0 == stream)
        .map(|r| r.1.as_str())
        .collect()
}

/// Samples of a metric family for one pipeline, by the value of `label` (e.g. `end`).
fn by_label(agent: &Agent, family: &str, pipeline: &str, label: &str) -> HashMap<String, f64> {
    let pipeline = format!("pipeline=\"{pipeline}\"");
    let label = format!("{label}=\"");
    agent
        .metrics()
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}{{")) && k.contains(&pipeline))
        .filter_map(|(k, v)| {
            let at = k.find(&label)? + label.len();
            let end = k[at..].find('"')?;
            Some((k[at..at + end].to_string(), v))
        })
        .collect()
}

/// Traces per stream.
const TRACES: usize = 50;

/// Continuation lines of trace `i` of the stream with `seed`: 0 to 30.
fn frames(seed: usize, i: usize) -> usize {
    (i * 7 + seed) % 31
}

/// The whole text of trace `i` of stream `tag` (as one record, lines joined by `\n`).
fn trace(tag: &str, seed: usize, i: usize) -> String {
    let k = frames(seed, i);
    let mut text = format!("2026-12-01 00:00:00 ERROR trace {tag}-{i} frames {k}");
    for j in 1..=k {
        text.push_str(&format!("\n\tat frame {tag}-{i}.{j}"));
    }
    text
}

/// Shell for the container: stdout and stderr each print `TRACES` stack-trace-shaped groups
/// at once (a start line, then 0 to 30 `\tat frame` lines 10 ms apart); after every tenth
/// trace of a stream it is quiet for 1.5 s (its group then ends by `flush_after`, while the
/// other stream goes on); at the end the container exits.
fn trace_script() -> String {
    format!(
        "emit() {{ i=1; while [ $i -le {TRACES} ]; do k=$(( (i * 7 + $1) % 31 )); \
           echo \"2026-12-01 00:00:00 ERROR trace $2-$i frames $k\"; j=1; \
           while [ $j -le $k ]; do printf '\\tat frame %s-%d.%d\\n' $2 $i $j; usleep 10000; j=$((j+1)); done; \
           usleep 30000; if [ $(( (i + $1) % 10 )) -eq 0 ]; then usleep 1500000; fi; \
           i=$((i+1)); done; }}; \
         emit 0 out & emit 5 err >&2; wait"
    )
}

/// Issue 12, exactness: a container prints stack traces on stdout and stderr at once; the
/// agent joins them with `multiline` (`flush_after: 1s`), rotates every second (each rotation
/// ends a session with groups open: they are re-read), and is SIGKILLed and restarted in the
/// middle. Every trace arrives whole (one record, exactly its text), in order per stream;
/// records written before the kill come once, and after the restart each stream resumes with
/// at most a replay of its last traces before the kill (what a SIGKILL leaves unpersisted),
/// whole. The group counters of the restarted agent add up to the records it wrote.
#[test]
fn stack_traces_survive_rotations_and_a_sigkill_whole() {
    let mut containers = Containers::new("mltrace");
    let dir = tempdir();
    let mut agent = start_agent(
        dir.path(),
        &containers,
        "traces",
        "        - multiline:\n            start: '^\\d{4}-'\n            flush_after: 1s\n",
    );
    let name = containers.name("mltrace");
    containers.run("mltrace", &["--network", "none"], &trace_script());
    let expected = |tag: &str, seed: usize| -> Vec<String> {
        (1..=TRACES).map(|i| trace(tag, seed, i)).collect()
    };
    let (out_expected, err_expected) = (expected("out", 0), expected("err", 5));
    assert!(
        wait_until(Duration::from_secs(120), || agent.records(&name).len()
            >= TRACES / 2),
        "a quarter of the traces never arrived; log:\n{}",
        agent.log()
    );
    agent.kill();
    let before = records(&agent, &name);
    let at_kill = before.len();
    std::thread::sleep(Duration::from_millis(1500));
    agent.restart();
    let complete = |r: &[(String, String)]| {
        of_stream(r, "stdout").last().copied() == out_expected.last().map(String::as_str)
            && of_stream(r, "stderr").last().copied() == err_expected.last().map(String::as_str)
    };
    let done = wait_until(Duration::from_secs(180), || {
        complete(&records(&agent, &name))
    });
    // The container has exited: its last groups were flushed at the end of its output. A few
    // more rotations' worth: nothing new may come.
    std::thread::sleep(Duration::from_secs(3));
    let all = records(&agent, &name);
    let after = &all[at_kill..];
    let mut replayed = Vec::new();
    for (stream, expected) in [("stdout", &out_expected), ("stderr", &err_expected)] {
        let pre = of_stream(&before, stream);
        let post = of_stream(after, stream);
        let whole = |m: &&str| expected.iter().any(|e| e == m);
        let half: Vec<&&str> = pre
            .iter()
            .chain(&post)
            .filter(|m| !whole(m))
            .take(3)
            .collect();
        assert!(
            half.is_empty(),
            "{stream}: records that are not one whole trace (first 3): {half:?}; done: {done}; log:\n{}",
            agent.log()
        );
        assert_eq!(
            pre,
            expected[..pre.len()]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            "{stream}: before the kill, traces 1..={} in order, once each",
            pre.len()
        );
        let first = post
            .first()
            .and_then(|m| expected.iter().position(|e| e == m))
            .unwrap_or_else(|| panic!("{stream}: nothing after the restart (done: {done})"));
        assert!(
            first <= pre.len(),
            "{stream}: trace {} lost: {} before the kill, resumed at trace {}",
            pre.len() + 1,
            pre.len(),
            first + 1
        );
        assert_eq!(
            post,
            expected[first..]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            "{stream}: after the restart, one run of whole traces to the last, once each \
             (done: {done}); log:\n{}",
            agent.log()
        );
        replayed.push(pre.len() - first);
    }
    // The restarted agent's group counters: one per record it wrote, none counted twice.
    let ends = by_label(
        &agent,
        "log_capturer_pipeline_multiline_groups_total",
        "traces",
        "end",
    );
    let groups: f64 = ends.values().sum();
    assert_eq!(
        groups,
        after.len() as f64,
        "groups counted by end {ends:?} against {} records written after the restart",
        after.len()
    );
    assert!(
        ends.get("next_group").copied().unwrap_or(0.0) > 0.0
            && ends.get("flush_after").copied().unwrap_or(0.0) > 0.0,
        "groups by end {ends:?}: some end at the next trace, some by flush_after"
    );
    let lines: usize = after.iter().map(|r| r.1.split('\n').count()).sum();
    assert_eq!(
        agent.metric("log_capturer_pipeline_lines_in_total{pipeline=\"traces\"}"),
        lines as f64,
        "lines in: the lines of the records written after the restart"
    );
    assert_eq!(
        agent.metric("log_capturer_pipeline_records_out_total{pipeline=\"traces\"}"),
        after.len() as f64
    );
    let rotations = agent.metric(&format!(
        "log_capturer_container_stream_rotations_total{{container_name=\"{name}\"}}"
    ));
    println!(
        "multiline traces: {} traces whole, {at_kill} records before SIGKILL, replayed after \
         it (stdout, stderr) {replayed:?}, {rotations} rotations after the restart, groups by \
         end {ends:?}",
        2 * TRACES
    );
}

/// Docker's timestamps of a container's lines, in order (`docker logs -t`).
fn line_stamps(name: &str) -> Vec<i64> {
    docker(&["logs", "-t", name])
        .lines()
        .map(|l| {
            let stamp = l.split(' ').next().unwrap_or_default();
            parse_rfc3339_nanos(stamp.as_bytes())
                .unwrap_or_else(|| panic!("no timestamp in `docker logs -t` line {l:?}"))
        })
        .collect()
}

/// How many of `stamps` (one stream, in order) come after the position (ts, count).
fn after_position(stamps: &[i64], (ts, count): (i64, u64)) -> usize {
    let at_ts = stamps.iter().filter(|&&s| s == ts).count() as u64;
    stamps.iter().filter(|&&s| s > ts).count() + at_ts.saturating_sub(count) as usize
}

/// Issue 12: dropping a line acknowledges it. A `drop` stage drops 90 % of one container's
/// lines and every line of another. The agent is stopped (SIGTERM) in the middle and
/// restarted: the kept lines arrive exactly once, in order, none of the dropped ones; the
/// restarted agent reads exactly the lines after the checkpoints it left (its `lines_in`
/// counts no dropped line twice); and the checkpoint of the container whose lines were all
/// dropped stands at its last line.
#[test]
fn dropped_lines_are_acknowledged_and_never_read_again() {
    let mut containers = Containers::new("mldrop");
    let dir = tempdir();
    let mut agent = start_agent(
        dir.path(),
        &containers,
        "drops",
        "        - drop:\n            expression: '^drop-'\n",
    );
    let (mix, only) = (containers.name("mldropmix"), containers.name("mldroponly"));
    let n = 2000;
    let only_n = 300;
    let mix_id = containers.run(
        "mldropmix",
        &["--network", "none"],
        &format!(
            "i=1; while [ $i -le {n} ]; do if [ $((i % 10)) -eq 0 ]; then echo keep-$i; \
             else echo drop-$i; fi; usleep 2000; i=$((i+1)); done; exec sleep 3600"
        ),
    );
    let only_id = containers.run(
        "mldroponly",
        &["--network", "none"],
        &format!(
            "i=1; while [ $i -le {only_n} ]; do echo drop-only-$i; usleep 1000; i=$((i+1)); done; \
             exec sleep 3600"
        ),
    );
    // All of the drop-only container's lines read and acknowledged: its checkpoint stands at
    // its last line (persisted every second).
    let only_last = || {
        let stamps = line_stamps(&only);
        (stamps.len() == only_n).then(|| {
            let last = stamps[only_n - 1];
            (last, stamps.iter().filter(|&&s| s == last).count() as u64)
        })
    };
    assert!(
        wait_until(Duration::from_secs(120), || {
            only_last().is_some_and(|last| checkpoint(&agent, &only_id) == Some(last))
        }),
        "the checkpoint of a container whose every line is dropped did not reach its last line \
         {:?}: {:?}; log:\n{}",
        only_last(),
        checkpoint(&agent, &only_id),
        agent.log()
    );
    assert!(
        wait_until(Duration::from_secs(120), || agent.records(&mix).len()
            >= n / 10 / 4),
        "a quarter of the kept lines never arrived; log:\n{}",
        agent.log()
    );
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status:?}");
    let at_stop = agent.messages(&mix).len();
    let mix_at_stop = checkpoint(&agent, &mix_id).expect("checkpoint of the mixed container");
    let only_at_stop = checkpoint(&agent, &only_id).expect("checkpoint of the drop-only one");
    agent.restart();
    let last = format!("keep-{n}");
    let done = wait_until(Duration::from_secs(180), || {
        agent.messages(&mix).last() == Some(&last)
    });
    // Some rotations more: nothing new may come.
    std::thread::sleep(Duration::from_secs(3));
    let kept: Vec<String> = (1..=n / 10).map(|i| format!("keep-{}", i * 10)).collect();
    let got = agent.messages(&mix);
    assert_eq!(
        got,
        kept,
        "kept lines exactly once, in order, none dropped ({at_stop} before the stop, done: \
         {done}); log:\n{}",
        agent.log()
    );
    assert!(
        !std::fs::exists(agent.out_file(&only)).unwrap_or(true),
        "records of a container whose every line is dropped"
    );
    // The restarted agent read exactly what came after the checkpoints it found: the drop-only
    // container nothing, the other its lines after the stop.
    let mix_stamps = line_stamps(&mix);
    assert_eq!(mix_stamps.len(), n);
    let unread = after_position(&mix_stamps, mix_at_stop)
        + after_position(&line_stamps(&only), only_at_stop);
    let lines_in = agent.metric("log_capturer_pipeline_lines_in_total{pipeline=\"drops\"}");
    assert_eq!(
        lines_in, unread as f64,
        "lines read after the restart against lines after the checkpoints at the stop \
         (mixed {mix_at_stop:?}, drop-only {only_at_stop:?})"
    );
    let dropped = by_label(
        &agent,
        "log_capturer_pipeline_dropped_total",
        "drops",
        "stage",
    );
    let records_out = agent.metric("log_capturer_pipeline_records_out_total{pipeline=\"drops\"}");
    assert_eq!(
        dropped.values().sum::<f64>() + records_out,
        lines_in,
        "every line read dropped or written: dropped {dropped:?}, out {records_out}"
    );
    assert_eq!(records_out, (n / 10 - at_stop) as f64);
    assert_eq!(
        checkpoint(&agent, &only_id),
        Some(only_at_stop),
        "the drop-only container's checkpoint did not move back"
    );
    println!(
        "drop stage: {} kept of {n} exactly once ({at_stop} before SIGTERM), {lines_in} lines \
         read after the restart = lines after the checkpoints, drop-only container's checkpoint \
         at its last line",
        kept.len()
    );
}
