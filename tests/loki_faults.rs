//! Loki sink under faults, fake Engine API → agent (real process) → Loki test receiver; no
//! docker needed. Each test reproduces an item of issue 9 and asserts behaviour (exact line
//! sets, order, request shapes), never wall-clock speed.
//!
//! Each test spells out the batch/retry/buffer values its fault depends on; the start-up
//! around them (`start_agent`) and the final exactly-once check (`assert_all_arrive_once`)
//! are shared. (`duplicates` pairs the calls of these helpers: kept, each passes its own values.)
//! One file, a little over 500 lines, because the eight tests share these helpers and nothing
//! else does.

mod support;

use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, start_on_fake_engine};
use support::fake_engine::{BASE_NS, Container, FakeEngine, Line, LogsPlan};
use support::loki::{LokiReceiver, Mode, RequestInfo};
use support::{tempdir, wait_until};

/// One container printing `n` numbered lines with `width` bytes of hardly compressible text,
/// served like dockerd (line by line, pausing every `every` lines, so capture hands over many
/// small deliveries).
fn numbered(name: &str, n: usize, width: usize, every: usize) -> (Container, Vec<String>) {
    numbered_paced(name, n, width, every, Duration::from_millis(20))
}

fn numbered_paced(
    name: &str,
    n: usize,
    width: usize,
    every: usize,
    pause: Duration,
) -> (Container, Vec<String>) {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let texts: Vec<String> = (0..n)
        .map(|i| {
            let noise: String = (0..width)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    char::from(b"0123456789abcdefghijklmnopqrstuv"[(seed >> 59) as usize])
                })
                .collect();
            format!("{name} {i:06} {noise}")
        })
        .collect();
    let lines = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Line::stdout(BASE_NS + 1_000_000_000 + i as i64 * 1000, t.clone()))
        .collect();
    let plan = LogsPlan::LineByLine { every, pause };
    (Container::new(name, lines, vec![plan]), texts)
}

fn unavailable() -> Mode {
    Mode::Status {
        code: 503,
        retry_after: None,
        body: "unavailable".into(),
    }
}

/// Every line exactly once, in capture order.
fn assert_exactly_once_in_order(rx: &LokiReceiver, want: &[String], agent: &Agent) {
    let got = rx.lines();
    assert_eq!(
        got.len(),
        want.len(),
        "{} lines arrived, {} expected; log tail:\n{}",
        got.len(),
        want.len(),
        tail(&agent.log())
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "line {i} differs (duplicate or out of order)");
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn assert_caps(requests: &[RequestInfo], max_entries: usize, max_bytes: usize) {
    for (i, r) in requests.iter().enumerate() {
        assert!(
            r.entries <= max_entries,
            "push {i} carries {} entries, cap {max_entries}",
            r.entries
        );
        assert!(
            r.line_bytes <= max_bytes,
            "push {i} carries {} line bytes, cap {max_bytes}",
            r.line_bytes
        );
    }
}

/// Issue 9 item 1: Loki down long enough to fill a small on-disk buffer, then healthy again:
/// the buffer is replayed (freeing room), the batches waiting in memory follow, and every line
/// arrives exactly once, in order.
#[test]
fn full_buffer_drains_when_loki_recovers() {
    let (container, want) = numbered("full", 2000, 60, 20);
    let rx = receiver(unavailable());
    let dir = tempdir();
    let (_engine, agent) = start_agent(
        dir.path(),
        container,
        &rx,
        "    batch:\n      max_entries: 100\n      max_wait: 50ms\n    \
         retry:\n      initial: 100ms\n      max: 500ms\n    \
         buffer:\n      spill_after: 300ms\n      max_bytes: 16KiB\n      segment_bytes: 4KiB\n",
    );
    let full = wait_until(Duration::from_secs(60), || {
        agent.metric("log_capturer_buffer_full_total{sink=\"loki\"}") > 0.0
    });
    assert!(
        full,
        "the buffer never filled; log:\n{}",
        tail(&agent.log())
    );
    rx.set_mode(Mode::Accept);
    assert_all_arrive_once(
        &rx,
        &want,
        &agent,
        Duration::from_secs(120),
        Duration::from_secs(1),
        "after Loki recovered",
    );
    assert_caps(&rx.requests(), 100, 1024 * 1024);
}

fn loki_config(rx: &LokiReceiver, extra: &str) -> String {
    format!("  loki:\n    url: {}\n{extra}", rx.push_url())
}

/// The Loki receiver, answering `mode` until told otherwise.
fn receiver(mode: Mode) -> LokiReceiver {
    let rx = LokiReceiver::start();
    rx.set_mode(mode);
    rx
}

/// Starts the agent in `dir`, capturing `container` from a fake engine (returned: it must
/// outlive the agent) and pushing to `rx` with `loki_settings`, the keys under `sinks.loki`
/// besides `url`.
fn start_agent(
    dir: &Path,
    container: Container,
    rx: &LokiReceiver,
    loki_settings: &str,
) -> (FakeEngine, Agent) {
    let engine = FakeEngine::start(vec![container]);
    let agent = start_on_fake_engine(dir, &engine, &loki_config(rx, loki_settings));
    (engine, agent)
}

/// Waits up to `timeout` for as many lines as `want`, lets `settle` pass (late duplicates
/// would show up after the last line), then checks every line arrived exactly once, in
/// order. `when` says at which point of the test, for the failure message.
#[track_caller]
fn assert_all_arrive_once(
    rx: &LokiReceiver,
    want: &[String],
    agent: &Agent,
    timeout: Duration,
    settle: Duration,
    when: &str,
) {
    assert!(
        wait_until(timeout, || rx.lines().len() >= want.len()),
        "{} of {} lines {when}; log tail:\n{}",
        rx.lines().len(),
        want.len(),
        tail(&agent.log())
    );
    std::thread::sleep(settle);
    assert_exactly_once_in_order(rx, want, agent);
}

/// Issue 9 item 10: `batch.max_entries` and `batch.max_bytes` are hard caps on every push, even
/// when capture hands over deliveries much larger than a push and lines are split into several
/// entries; a delivery cut across pushes still arrives exactly once, in order.
#[test]
fn no_push_exceeds_the_batch_caps() {
    let (mut container, texts) = numbered("caps", 3000, 40, 3000);
    // Every 7th line is long: split into 3 entries of at most 1 KiB.
    let mut want_lines = Vec::new();
    for (i, line) in container.lines.iter_mut().enumerate() {
        if i % 7 == 0 {
            line.text = format!("{} {}", texts[i], "L".repeat(2200));
        }
        want_lines.push(line.text.clone());
    }
    container.plans = vec![LogsPlan::Follow];
    let rx = LokiReceiver::start();
    let dir = tempdir();
    let (_engine, agent) = start_agent(
        dir.path(),
        container,
        &rx,
        "    max_line_bytes: 1KiB\n    line_overflow: split\n    \
         batch:\n      max_entries: 100\n      max_bytes: 4KiB\n      max_wait: 200ms\n",
    );
    let want: String = want_lines.concat();
    let all = wait_until(Duration::from_secs(120), || {
        rx.lines().iter().map(String::len).sum::<usize>() >= want.len()
    });
    assert!(all, "not every line arrived; log:\n{}", tail(&agent.log()));
    std::thread::sleep(Duration::from_secs(1));
    let got: String = rx.lines().concat();
    assert!(
        got == want,
        "lines differ: duplicated, lost or out of order"
    );
    let requests = rx.requests();
    assert_caps(&requests, 100, 4096);
    assert!(requests.len() >= 3000 / 100, "{} pushes", requests.len());
}

/// The time between the first failed push and the next one.
fn gap_after_first_failure(rx: &LokiReceiver) -> Duration {
    let requests = rx.requests();
    assert!(requests.len() >= 2, "{} requests", requests.len());
    requests[1].at.duration_since(requests[0].at)
}

/// Loki first answers `failure` once, then accepts; with `spill_after: 0s` the failed push
/// goes to the on-disk buffer at once. Returns the gap between the failed push and the next
/// attempt (the buffer replay), after checking that every line arrived exactly once.
fn gap_before_replay(prefix: &str, failure: Mode, retry: &str) -> Duration {
    let (container, want) = numbered(prefix, 10, 20, 10);
    let rx = receiver(failure);
    rx.set_mode_after(1, Mode::Accept);
    let dir = tempdir();
    let (_engine, agent) = start_agent(
        dir.path(),
        container,
        &rx,
        &format!(
            "    batch:\n      max_wait: 300ms\n    retry:\n{retry}    buffer:\n      spill_after: 0s\n"
        ),
    );
    assert_all_arrive_once(
        &rx,
        &want,
        &agent,
        Duration::from_secs(60),
        Duration::ZERO,
        "after the replay",
    );
    gap_after_first_failure(&rx)
}

/// Issue 9 item 11: a `Retry-After` answered to a live push still holds after the push was
/// spilled to the on-disk buffer: replay waits it out.
#[test]
fn retry_after_carries_over_into_replay() {
    let slow_down = Mode::Status {
        code: 429,
        retry_after: Some(1),
        body: "slow down".into(),
    };
    let gap = gap_before_replay("ra", slow_down, "      initial: 20ms\n      max: 40ms\n");
    assert!(
        gap >= Duration::from_millis(990),
        "sent again {gap:?} after a 429 with Retry-After: 1"
    );
}

/// Issue 9 item 11, the back-off variant: after a 503 (no Retry-After) the back-off (retry
/// `initial: 2s`, so at least 1 s with jitter) also holds across the spill.
#[test]
fn backoff_carries_over_into_replay() {
    let gap = gap_before_replay("bo", unavailable(), "      initial: 2s\n      max: 4s\n");
    assert!(
        gap >= Duration::from_millis(990),
        "sent again {gap:?} after a 503 with a back-off of at least 1 s"
    );
}

/// Waits until everything went to the on-disk buffer (Loki failing, `spill_after: 0s`).
fn wait_buffered(agent: &Agent, records: f64) {
    let ok = wait_until(Duration::from_secs(60), || {
        agent.metric("log_capturer_buffer_batches{sink=\"loki\"}") >= records
    });
    assert!(
        ok,
        "the buffer never held {records} records; log:\n{}",
        tail(&agent.log())
    );
}

/// Issue 9 item 9: the buffer cannot record its read position (here `position.tmp` is a
/// directory, so writing it fails). The replayed batch is sent once, the consume is retried
/// with back-off and counted; once the position can be written again, delivery goes on and
/// every line arrives exactly once.
#[test]
fn failed_consume_does_not_resend() {
    let (container, want) = numbered("consume", 200, 40, 20);
    let rx = receiver(unavailable());
    let dir = tempdir();
    let (_engine, agent) = start_agent(
        dir.path(),
        container,
        &rx,
        "    batch:\n      max_entries: 20\n      max_wait: 50ms\n    \
         retry:\n      initial: 100ms\n      max: 400ms\n    buffer:\n      spill_after: 0s\n",
    );
    wait_buffered(&agent, 10.0);
    let blocker = dir.path().join("state/buffer/loki/position.tmp");
    std::fs::create_dir(&blocker).expect("block position.tmp");
    rx.set_mode(Mode::Accept);
    let consume_errors =
        || agent.metric("log_capturer_buffer_errors_total{sink=\"loki\",reason=\"consume\"}");
    // Either the errors are counted, or (the bug) the record is pushed again and again.
    let accepted = || rx.requests().iter().filter(|r| r.status == 204).count();
    wait_until(Duration::from_secs(60), || {
        consume_errors() >= 3.0 || accepted() >= 3
    });
    let delivered = rx.lines();
    assert!(
        accepted() == 1
            && !delivered.is_empty()
            && delivered.len() <= 20
            && delivered == want[..delivered.len()],
        "{} pushes accepted ({} lines) while the first record could not be consumed; \
         it must be sent once",
        accepted(),
        delivered.len()
    );
    assert!(consume_errors() >= 3.0, "consume errors not counted");
    std::fs::remove_dir(&blocker).expect("unblock");
    assert_all_arrive_once(
        &rx,
        &want,
        &agent,
        Duration::from_secs(60),
        Duration::from_secs(1),
        "once the position could be written",
    );
}

/// Issue 9 item 3: a buffer record that goes bad on disk after start-up is skipped (with the
/// rest of its segment) and counted, and replay goes on with the next segment.
#[test]
fn corrupt_record_after_start_is_skipped() {
    let (container, want) = numbered("corrupt", 400, 40, 20);
    let rx = receiver(unavailable());
    let dir = tempdir();
    let (_engine, agent) = start_agent(
        dir.path(),
        container,
        &rx,
        "    batch:\n      max_entries: 20\n      max_wait: 50ms\n    \
         retry:\n      initial: 100ms\n      max: 400ms\n    \
         buffer:\n      spill_after: 0s\n      segment_bytes: 4KiB\n",
    );
    wait_buffered(&agent, 20.0);
    let buffer = dir.path().join("state/buffer/loki");
    let mut segments: Vec<_> = std::fs::read_dir(&buffer)
        .expect("buffer dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    // Flip payload bytes of the first record of the oldest segment.
    let mut bytes = std::fs::read(&segments[0]).expect("segment");
    for b in &mut bytes[20..40] {
        *b ^= 0xff;
    }
    std::fs::write(&segments[0], &bytes).expect("corrupt");
    rx.set_mode(Mode::Accept);
    let drained = wait_until(Duration::from_secs(60), || {
        rx.lines().len() >= want.len() / 2
            && agent.metric("log_capturer_buffer_batches{sink=\"loki\"}") == 0.0
    });
    assert!(
        drained,
        "replay stalled on the corrupt record; log:\n{}",
        tail(&agent.log())
    );
    assert!(agent.metric("log_capturer_buffer_corrupt_total{sink=\"loki\"}") >= 1.0);
    // What arrived is in order, without duplicates; only the corrupt segment's lines are gone.
    let got = rx.lines();
    let mut at = 0;
    for line in &got {
        let found = want[at..].iter().position(|w| w == line);
        assert!(found.is_some(), "{line:?} duplicated or out of order");
        at += found.unwrap_or(0) + 1;
    }
}

/// Issue 9 item 6: Loki rejects every push (400) and the dead-letter store cannot take it
/// (full). The batch is not acknowledged and not counted as a dead letter; the failure is
/// counted. After a restart with Loki healthy, the lines are read again and delivered.
#[test]
fn rejected_batch_waits_until_its_dead_letter_is_durable() {
    use log_capturer::buffer::{FsyncPolicy, SegmentStore, StoreOptions};
    let (container, want) = numbered("dlq", 50, 40, 50);
    let rx = receiver(Mode::Status {
        code: 400,
        retry_after: None,
        body: "entry too far behind".into(),
    });
    let dir = tempdir();
    // A dead-letter store (same cap as the buffer) with no room left.
    let (mut dlq, _) = SegmentStore::open(
        &dir.path().join("state/dlq/loki"),
        StoreOptions {
            max_bytes: 16 * 1024,
            segment_bytes: 4096,
            fsync: FsyncPolicy::Never,
        },
    )
    .expect("dlq");
    dlq.append(&vec![b'x'; 16_000]).expect("fill the dlq");
    drop(dlq);
    let (_engine, mut agent) = start_agent(
        dir.path(),
        container,
        &rx,
        "    batch:\n      max_wait: 100ms\n    retry:\n      initial: 100ms\n      max: 300ms\n    \
         buffer:\n      max_bytes: 16KiB\n      segment_bytes: 4KiB\n",
    );
    let dead_letter_failures =
        || agent.metric("log_capturer_sink_failures_total{sink=\"loki\",reason=\"dead_letter\"}");
    let retried = wait_until(Duration::from_secs(60), || dead_letter_failures() >= 3.0);
    let rejected = rx.requests().len();
    assert_eq!(
        agent.metric("log_capturer_dead_letters_total{sink=\"loki\",reason=\"400\"}"),
        0.0,
        "counted as a dead letter although the store did not take it"
    );
    assert!(
        retried,
        "dead-letter append not retried; log:\n{}",
        tail(&agent.log())
    );
    assert_eq!(rejected, 1, "the rejected batch must not be pushed again");
    // Let a checkpoint interval pass: nothing may be checkpointed past the batch.
    std::thread::sleep(Duration::from_millis(1500));
    // The batch is left unacknowledged at the stop (read again at the next start): an
    // incomplete stop, exit code 3.
    let status = agent.terminate();
    assert_eq!(status.code(), Some(3), "exit {status:?}");
    rx.set_mode(Mode::Accept);
    agent.restart();
    assert_all_arrive_once(
        &rx,
        &want,
        &agent,
        Duration::from_secs(60),
        Duration::from_millis(500),
        "after the restart (the rejected lines were acknowledged without a dead letter?)",
    );
}

/// Issue 9 item 1, second half: a batch too large for the buffer behind a non-empty buffer.
/// It waits in memory (no spin); when Loki recovers the buffer is replayed first, then it and
/// the batches behind it are sent live, in order.
#[test]
fn batch_too_large_for_the_buffer_waits_in_memory_in_order() {
    // Served 3 lines at a time, so that even a worker without hard caps makes pushes of 3.
    let (mut container, _) = numbered_paced("big", 33, 1500, 3, Duration::from_millis(300));
    // Three short lines first: the first push (max_entries 3) fits the buffer, the rest not.
    for line in container.lines.iter_mut().take(3) {
        line.text.truncate(12);
    }
    let want: Vec<String> = container.lines.iter().map(|l| l.text.clone()).collect();
    let rx = receiver(unavailable());
    let dir = tempdir();
    let (_engine, agent) = start_agent(
        dir.path(),
        container,
        &rx,
        "    max_line_bytes: 2KiB\n    batch:\n      max_entries: 3\n      max_wait: 50ms\n    \
         retry:\n      initial: 100ms\n      max: 300ms\n    \
         buffer:\n      spill_after: 300ms\n      max_bytes: 4KiB\n      segment_bytes: 4KiB\n",
    );
    let stuck = wait_until(Duration::from_secs(60), || {
        agent.metric("log_capturer_buffer_batches{sink=\"loki\"}") >= 1.0
            && agent.metric("log_capturer_buffer_full_total{sink=\"loki\"}") >= 1.0
    });
    assert!(
        stuck,
        "never had a too-large batch behind the buffer; log:\n{}",
        tail(&agent.log())
    );
    // Waiting, not spinning: attempts follow the back-off (at least 50 ms apart here).
    let before = rx.requests().len();
    std::thread::sleep(Duration::from_secs(2));
    let attempts = rx.requests().len() - before;
    assert!(
        attempts <= 40,
        "{attempts} pushes in 2 s while Loki was down"
    );
    rx.set_mode(Mode::Accept);
    assert_all_arrive_once(
        &rx,
        &want,
        &agent,
        Duration::from_secs(60),
        Duration::from_millis(500),
        "after Loki recovered",
    );
}
