//! The Kafka sink end to end (issue 14): the real agent binary on the real dockerd, shipping to
//! librdkafka's mock cluster held by this process, read back with a real consumer. Containers
//! print numbered lines (`<name> <seq>`), so loss, duplicates and order are checked per
//! container; the key is the container id (the default), so each container has one partition.
//!
//! - every broker down for 30 s, the agent SIGKILLed once it has spilled to its disk buffer,
//!   restarted during the outage: every line arrives, duplicates only as the crash window;
//! - SIGTERM and restart: every line exactly once, in order;
//! - a record above `message_max_bytes` becomes a dead letter and delivery goes on.

#[path = "kafka_e2e/checks.rs"]
mod checks;
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use log_capturer::buffer::SharedStore;
use log_capturer::config::KafkaSinkConfig;
use log_capturer::sinks::kafka::{self, store::decode_record};
use log_capturer_testkit::kafka::{Consumed, KafkaMock, consume_all};
use log_capturer_testkit::{open_fds, sum_prefix};
use support::agent::{Agent, AgentOptions};
use support::docker::{Containers, docker};
use support::wait_until;

use checks::{at_least, by_container, check_crash_window, complete, fd_profile, message};

const TOPIC: &str = "ke2e";
const BUFFER_BYTES: &str = "log_capturer_buffer_bytes{sink=\"kafka\"}";
const DEAD_LETTERS: &str = "log_capturer_dead_letters_total{sink=\"kafka\"";

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The `sinks:` entry of the Kafka sink on `mock`, with `extra` keys (indented by 4 spaces).
fn kafka_sink(mock: &KafkaMock, extra: &str) -> String {
    format!(
        "  kafka:\n    brokers: [{}]\n    topic: {TOPIC}\n    retry:\n      initial: 200ms\n      max: 2s\n{extra}",
        mock.brokers().join(", ")
    )
}

/// Starts the agent with the Kafka sink alone (so checkpoints follow Kafka's acks only).
fn start_agent(
    dir: &std::path::Path,
    containers: &Containers,
    sink: String,
    capture: &str,
) -> Agent {
    Agent::start(
        dir,
        AgentOptions {
            capture: format!("{}{capture}", containers.include_yaml()),
            sinks: sink,
            file_sink: false,
            ..AgentOptions::default()
        },
    )
}

/// Shell printing `<name> 1` … `<name> n`, `usleep_us` apart, then idling (its log stream stays
/// open, so the agent's descriptors are comparable before and after).
fn numbered(name: &str, n: u64, usleep_us: u64) -> String {
    format!(
        "i=1; while [ $i -le {n} ]; do echo \"{name} $i\"; i=$((i+1)); usleep {usleep_us}; done; exec sleep 3600"
    )
}

/// Reads the topic (from the beginning) until `done` holds or `within` passed; the last read.
/// One read ends 2 s after the last message or after 8 s (while containers print, messages
/// never stop coming).
fn consume_until(
    mock: &KafkaMock,
    within: Duration,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let start = Instant::now();
    loop {
        let got = consume_all(
            mock.bootstrap_servers(),
            TOPIC,
            usize::MAX,
            Duration::from_secs(2),
            Duration::from_secs(8),
        )
        .unwrap_or_default();
        if done(&got) || start.elapsed() > within {
            return got;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The topic read again once it holds at least `at_least` messages (what an earlier read saw):
/// whatever came late (a replay sent twice) is in it.
fn reread(mock: &KafkaMock, at_least: usize) -> Vec<Consumed> {
    consume_until(mock, Duration::from_secs(60), |got| got.len() >= at_least)
}

/// The last line a container has printed so far (its seq): an upper bound of what the agent
/// can have read from it.
fn printed(name: &str) -> u64 {
    let last = docker(&["logs", "--tail", "1", name]);
    last.rsplit_once(' ')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or_else(|| panic!("{name}: last line {last:?}"))
}

/// Stops the agent with SIGTERM: exit 0, and the process is gone.
fn stop(agent: &mut Agent) {
    let pid = agent.pid();
    let status = agent.terminate();
    assert!(
        status.success(),
        "agent exit {status:?}; log:\n{}",
        agent.log()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "agent process {pid} still there"
    );
}

/// Removes the test's containers and checks that none with its label is left.
fn remove(mut containers: Containers) {
    containers.remove_all();
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label={}", containers.label),
    ]);
    assert!(left.is_empty(), "containers left: {left}");
}

/// Issue 14's scenario: 6 containers print 1500 lines each for about a minute into a topic of 4
/// partitions on 3 brokers; after ~10 s every broker goes down for 30 s; once the agent has
/// spilled to its disk buffer it is SIGKILLed and started again on the same state (still in the
/// outage); then the brokers come back. Every line of every container arrives, first
/// occurrences in order within the container's partition, duplicates only as the crash window
/// (see `check_crash_window`); the buffer drains to 0, and the restarted agent's descriptors
/// after the outage are back near its figure in it (no sockets leaked by reconnects; the first
/// agent's figure before the outage is printed beside them).
#[test]
fn outage_with_sigkill_delivers_every_line_with_only_the_crash_window_duplicated() {
    const N: u64 = 1500;
    let mock = KafkaMock::start(3);
    mock.create_topic(TOPIC, 4);
    let mut containers = Containers::new("ke2e-outage");
    let dir = tempdir();
    let sink = kafka_sink(&mock, "    buffer:\n      spill_after: 2s\n");
    let mut agent = start_agent(dir.path(), &containers, sink, "");
    let names: Vec<String> = (1..=6)
        .map(|i| {
            let short = format!("ke2e-out{i}");
            let name = containers.name(&short);
            containers.run(&short, &["--network", "none"], &numbered(&name, N, 40_000));
            name
        })
        .collect();
    let started = Instant::now();
    // Live path first: some lines of every container in Kafka.
    let live = consume_until(&mock, Duration::from_secs(90), |got| {
        let seen = by_container(got);
        names.iter().all(|n| seen.contains_key(n))
    });
    let seen = by_container(&live);
    assert!(
        names.iter().all(|n| seen.contains_key(n)),
        "not every container reached Kafka ({} messages); log:\n{}",
        live.len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let fds_before = open_fds(agent.pid());
    let profile_before = fd_profile(agent.pid());
    let live_at = started.elapsed().as_secs_f64();

    mock.down(-1);
    let down = Instant::now();
    let mut buffer_peak = 0.0f64;
    let spilled = wait_until(Duration::from_secs(60), || {
        let b = agent.try_metric(BUFFER_BYTES).unwrap_or(0.0);
        buffer_peak = buffer_peak.max(b);
        b > 0.0
    });
    assert!(
        spilled,
        "nothing spilled to the buffer during the outage; log:\n{}",
        agent.log()
    );
    let spilled_after = down.elapsed().as_secs_f64();
    agent.kill();
    let at_kill: BTreeMap<&String, u64> = names.iter().map(|n| (n, printed(n))).collect();
    agent.restart();
    // The baseline once the restarted agent has attached every container's stream (and a
    // moment more): taken before, it would lack their sockets and files.
    let attached = wait_until(Duration::from_secs(60), || all_attached(&agent, &names));
    assert!(
        attached,
        "the restarted agent did not attach every container: {:?}; log:\n{}",
        agent.get("/api/v1/containers"),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let fds_in_outage = open_fds(agent.pid());
    let profile_in_outage = fd_profile(agent.pid());
    while down.elapsed() < Duration::from_secs(30) {
        buffer_peak = buffer_peak.max(agent.try_metric(BUFFER_BYTES).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(250));
    }
    let buffered_at_up = agent.try_metric(BUFFER_BYTES).unwrap_or(0.0);
    mock.up(-1);
    let up = Instant::now();

    let got = consume_until(&mock, Duration::from_secs(150), |got| {
        complete(got, &names, N)
    });
    let complete_after_up = up.elapsed().as_secs_f64();
    let drained = wait_until(Duration::from_secs(60), || {
        agent.try_metric(BUFFER_BYTES) == Some(0.0)
    });
    assert!(drained, "buffer not drained; log:\n{}", agent.log());
    let drained_after_up = up.elapsed().as_secs_f64();
    let fds_after = open_fds(agent.pid());
    let profile_after = fd_profile(agent.pid());
    // A few seconds more: nothing late (a replay sent twice) may come.
    std::thread::sleep(Duration::from_secs(3));
    let got = reread(&mock, got.len());

    let seen = by_container(&got);
    let mut total_dups = 0;
    for name in &names {
        let s = seen
            .get(name)
            .unwrap_or_else(|| panic!("{name}: nothing in Kafka; log:\n{}", agent.log()));
        assert_eq!(
            s.partitions.len(),
            1,
            "{name}: in partitions {:?}",
            s.partitions
        );
        let (dups, runs) =
            check_crash_window(name, &s.seqs, N, at_kill[name]).unwrap_or_else(|e| panic!("{e}"));
        println!(
            "kafka outage+SIGKILL: {name}: {} messages for {N} lines, {dups} duplicated, printed {} at the kill, runs {runs:?}",
            s.seqs.len(),
            at_kill[name]
        );
        total_dups += dups;
    }
    println!(
        "kafka outage+SIGKILL: {} containers x {N} lines, {} messages, {total_dups} duplicates; buffer peak {buffer_peak} B ({buffered_at_up} B when the brokers came back); FDs {fds_before} before the outage, {fds_in_outage} (restarted agent) in it, {fds_after} after",
        names.len(),
        got.len()
    );
    println!(
        "kafka outage+SIGKILL: timeline: brokers down {live_at:.1} s after the containers started, spilled {spilled_after:.1} s into the outage (then SIGKILL + restart), up at 30 s; every line in Kafka {complete_after_up:.1} s later, buffer empty after {drained_after_up:.1} s"
    );
    // The restarted agent began in the outage, reconnecting all along: after it, with the
    // same containers and sink, it holds about what it held then (a socket per reconnect would
    // add dozens). Its figure differs from the first agent's (it has the buffer's segments open
    // and librdkafka handles for the bootstrap brokers it never reached): that one is printed.
    let settled = fd_profile(agent.pid());
    assert!(
        fds_after <= fds_in_outage + 6.0,
        "FDs {fds_after} after the outage vs {fds_in_outage} in it: leaked from reconnects?\n\
         first agent before the outage ({fds_before}): {profile_before}\n\
         restarted, in the outage: {profile_in_outage}\nafter: {profile_after}\n3 s later: {settled}"
    );
    println!(
        "kafka outage+SIGKILL: FDs of the first agent before the outage: {profile_before}\n\
         restarted, in the outage: {profile_in_outage}\nafter: {profile_after}\n3 s later: {settled}"
    );
    stop(&mut agent);
    // Nothing left in the on-disk buffer of the stopped agent.
    let (buffer, _) = SharedStore::open(
        &kafka::buffer_dir(&dir.path().join("state")),
        kafka::buffer_options(&KafkaSinkConfig::default()),
    )
    .expect("open the kafka buffer");
    assert_eq!(
        buffer.pending(),
        (0, 0),
        "records, bytes left in the buffer"
    );
    drop(buffer);
    remove(containers);
}

/// Three containers print 2000 lines each; every broker goes down for 8 s (less than
/// `spill_after`: librdkafka's idempotent retries carry it), then, once delivery went on, a
/// Whether the status API lists every container of `names` with its stream open.
fn all_attached(agent: &Agent, names: &[String]) -> bool {
    let Some((200, body)) = agent.get("/api/v1/containers") else {
        return false;
    };
    let Ok(serde_json::Value::Array(listed)) = serde_json::from_str(&body) else {
        return false;
    };
    names.iter().all(|name| {
        listed
            .iter()
            .any(|c| c["name"] == name.as_str() && c["stream_open_since"].is_string())
    })
}

/// SIGTERM and a restart on the same state: every line exactly once, in order, each container
/// in one partition; and after the outage the agent's descriptors are back near their figure
/// before it (no socket left behind by the reconnects).
#[test]
fn sigterm_and_restart_deliver_every_line_exactly_once_in_order() {
    const N: u64 = 2000;
    let mock = KafkaMock::start(3);
    mock.create_topic(TOPIC, 4);
    let mut containers = Containers::new("ke2e-term");
    let dir = tempdir();
    let sink = kafka_sink(&mock, "    buffer:\n      spill_after: 60s\n");
    let mut agent = start_agent(dir.path(), &containers, sink, "");
    let names: Vec<String> = (1..=3)
        .map(|i| {
            let short = format!("ke2e-term{i}");
            let name = containers.name(&short);
            containers.run(&short, &["--network", "none"], &numbered(&name, N, 20_000));
            name
        })
        .collect();
    let live = consume_until(&mock, Duration::from_secs(90), |got| {
        at_least(got, &names, 100)
    });
    assert!(
        at_least(&live, &names, 100),
        "lines not in Kafka; log:\n{}",
        agent.log()
    );
    let (fds_before, profile_before) = (open_fds(agent.pid()), fd_profile(agent.pid()));
    // Every container 200 lines further than any had before the outage.
    let goal = by_container(&live)
        .values()
        .map(|s| s.seqs.len())
        .max()
        .unwrap_or(0)
        + 200;
    mock.down(-1);
    std::thread::sleep(Duration::from_secs(8));
    mock.up(-1);
    let after = consume_until(&mock, Duration::from_secs(90), |got| {
        at_least(got, &names, goal)
    });
    assert!(
        at_least(&after, &names, goal),
        "delivery did not go on after the outage; log:\n{}",
        agent.log()
    );
    let (fds_after, profile_after) = (open_fds(agent.pid()), fd_profile(agent.pid()));
    println!(
        "kafka SIGTERM: FDs {fds_before} before an 8 s outage, {fds_after} after\nbefore: {profile_before}\nafter: {profile_after}"
    );
    assert!(
        fds_after <= fds_before + 6.0,
        "FDs {fds_after} after an 8 s outage vs {fds_before} before: leaked from reconnects?\n\
         before: {profile_before}\nafter: {profile_after}"
    );
    let status = agent.terminate();
    assert!(
        status.success(),
        "SIGTERM exit {status:?}; log:\n{}",
        agent.log()
    );
    let at_stop = consume_until(&mock, Duration::ZERO, |_| true).len();
    std::thread::sleep(Duration::from_secs(2));
    agent.restart();
    consume_until(&mock, Duration::from_secs(120), |got| {
        complete(got, &names, N)
    });
    std::thread::sleep(Duration::from_secs(3));
    let got = consume_until(&mock, Duration::from_secs(30), |got| {
        complete(got, &names, N)
    });
    let seen = by_container(&got);
    for name in &names {
        let s = seen
            .get(name)
            .unwrap_or_else(|| panic!("{name}: nothing in Kafka"));
        assert_eq!(
            s.partitions.len(),
            1,
            "{name}: in partitions {:?}",
            s.partitions
        );
        let expected: Vec<u64> = (1..=N).collect();
        if s.seqs != expected {
            let what = check_crash_window(name, &s.seqs, N, N);
            panic!("{name}: not exactly once in order: {what:?}");
        }
    }
    println!(
        "kafka SIGTERM: {} containers x {N} lines, {at_stop} in Kafka at the stop, {} messages in the end: exactly once, in order",
        names.len(),
        got.len()
    );
    stop(&mut agent);
    remove(containers);
}

/// `message_max_bytes: 2KiB`: a 10 KiB line between small ones becomes a dead letter (counted
/// once, listed by `dlq list --sink kafka`), never produced; every small line arrives in order.
#[test]
fn too_large_record_becomes_a_dead_letter_and_delivery_goes_on() {
    let mock = KafkaMock::start(1);
    mock.create_topic(TOPIC, 1);
    let mut containers = Containers::new("ke2e-big");
    let dir = tempdir();
    let sink = kafka_sink(&mock, "    message_max_bytes: 2KiB\n");
    let mut agent = start_agent(dir.path(), &containers, sink, "  max_line_bytes: 64KiB\n");
    let script = "i=1; while [ $i -le 5 ]; do echo small-$i; i=$((i+1)); done; \
                  head -c 10240 /dev/zero | tr '\\0' x; echo; \
                  while [ $i -le 10 ]; do echo small-$i; i=$((i+1)); done; exec sleep 3600";
    containers.run("ke2e-big", &["--network", "none"], script);
    let dead = |agent: &Agent| sum_prefix(&agent.metrics(), DEAD_LETTERS);
    let got = consume_until(&mock, Duration::from_secs(90), |got| {
        got.iter().any(|c| message(c) == "small-10")
    });
    assert!(
        wait_until(Duration::from_secs(30), || dead(&agent) >= 1.0),
        "no dead letter counted; log:\n{}",
        agent.log()
    );
    let messages: Vec<String> = got.iter().map(message).collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("small-{i}")).collect();
    assert_eq!(
        messages, expected,
        "small lines once, in order; the big one not in Kafka"
    );
    assert_eq!(dead(&agent), 1.0, "dead letters of sink kafka");
    stop(&mut agent);
    // The dead letter as stored: one record, the big line alone, with why.
    let (store, _) = SharedStore::open(
        &kafka::dlq_dir(&dir.path().join("state")),
        kafka::dlq_options(&KafkaSinkConfig::default()),
    )
    .expect("open the kafka dead-letter store");
    let records = store.lock().records().expect("dead letters");
    assert_eq!(records.len(), 1, "one dead letter");
    let (header, stored) = decode_record(&records[0].1).expect("a kafka store record");
    drop(store);
    assert_eq!(stored.len(), 1, "the big message alone: {header:?}");
    let value: serde_json::Value = serde_json::from_slice(&stored[0].value).expect("NDJSON");
    assert_eq!(value["message"].as_str().map(str::len), Some(10240));
    let reason = header.reason.unwrap_or_default();
    assert!(reason.contains("message_max_bytes"), "reason {reason:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_log-capturer"))
        .args(["dlq", "list", "--sink", "kafka", "-c"])
        .arg(agent.config_path())
        .output()
        .expect("run log-capturer dlq list");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dlq list --sink kafka: {text}");
    assert!(
        text.contains("message_max_bytes"),
        "the dead letter and why: {text}"
    );
    println!(
        "kafka too large: 10 small lines delivered in order, 1 dead letter ({reason}); dlq list:\n{text}"
    );
    remove(containers);
}
