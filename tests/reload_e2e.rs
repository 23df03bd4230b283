//! Config reload (SIGHUP, `POST /-/reload`) against the real dockerd, with the real agent
//! binary: containers keep writing while the config changes under them, and every line of
//! every captured container must reach the file sink exactly once, in order.

mod support;

use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::Containers;
use support::{assert_sequence, wait_until};

/// Replaces the config file in one step (the agent never reads half of it).
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("replace config");
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the config:\n{text}");
    text.replacen(from, to, 1)
}

const RELOADS: &str = "log_capturer_config_reloads_total";

fn reloads(agent: &Agent, result: &str) -> f64 {
    agent.metric(&format!("{RELOADS}{{result=\"{result}\"}}"))
}

/// Every reload attempt so far, whatever its result.
fn reload_attempts(agent: &Agent) -> f64 {
    let m = agent.metrics();
    m.iter()
        .filter(|(k, _)| k.starts_with(RELOADS))
        .map(|(_, v)| v)
        .sum()
}

/// Sends SIGHUP and waits until the reload it asked for has been done.
fn sighup_and_wait(agent: &Agent) {
    let before = reload_attempts(agent);
    agent.sighup();
    let done = wait_until(Duration::from_secs(120), || reload_attempts(agent) > before);
    assert!(done, "SIGHUP: no reload done; log:\n{}", agent.log());
}

/// `POST /-/reload`; expects `status` and returns the body.
fn post_reload(agent: &Agent, status: u16) -> String {
    let (got, body) = agent
        .request("POST", "/-/reload")
        .unwrap_or_else(|| panic!("no answer to POST /-/reload; log:\n{}", agent.log()));
    assert_eq!(got, status, "POST /-/reload answered {body:?}");
    body
}

/// This test's containers (none yet) and an agent selecting them, rotating every 2 s, with
/// its file sink; and the agent's config text.
fn start(test: &str) -> (Containers, tempfile::TempDir, Agent, String) {
    let containers = Containers::new(test);
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            capture: format!("{}  rotation_interval: 2s\n", containers.include_yaml()),
            ..AgentOptions::default()
        },
    );
    let config = std::fs::read_to_string(agent.config_path()).expect("config");
    (containers, dir, agent, config)
}

fn writer(prefix: &str, n: usize) -> String {
    format!(
        "i=1; while [ $i -le {n} ]; do echo {prefix}$i; usleep 1000; i=$((i+1)); done; exec sleep 3600"
    )
}

/// Several reloads while two containers write: exclude one (its capture stops; nothing of it
/// is written while excluded), include it again (it resumes from its checkpoint, so what it
/// wrote meanwhile is read then), change the rotation interval, add a second sink, change
/// only the log level, and two SIGHUPs at once. Every line of both containers is in the file
/// sink exactly once and in order; tasks and FDs are back to their baseline after going back
/// to the first config; the agent still stops with exit code 0.
#[test]
fn reloads_under_load_lose_and_duplicate_nothing() {
    let (mut containers, _dir, mut agent, original) = start("reload-load");
    let (a, b) = (containers.name("ra"), containers.name("rb"));
    let n = 12_000;
    containers.run("ra", &[], &writer("a-", n));
    containers.run("rb", &[], &writer("b-", n));
    let flowing = wait_until(Duration::from_secs(60), || {
        agent.records(&a).len() >= 300 && agent.records(&b).len() >= 300
    });
    assert!(flowing, "capture did not start; log:\n{}", agent.log());
    // Baseline while both are captured: the largest of a few samples.
    let baseline = (0..3)
        .map(|_| agent.resources())
        .fold((0.0, 0.0), |m, r| (f64::max(m.0, r.0), f64::max(m.1, r.1)));

    // 1. Exclude b (SIGHUP).
    let excluding = replace_once(
        &original,
        "capture:\n",
        &format!("capture:\n  exclude:\n    names: [\"{b}\"]\n"),
    );
    write_config(agent.config_path(), &excluding);
    sighup_and_wait(&agent);
    assert_eq!(reloads(&agent, "applied"), 1.0, "log:\n{}", agent.log());
    let b_excluded_at = agent.records(&b).len();
    let b_series =
        format!("log_capturer_logs_collected_total{{container_name=\"{b}\",stream=\"stdout\"}}");
    // Removed once the new pipeline's listing finds b excluded.
    assert!(
        wait_until(Duration::from_secs(60), || !agent
            .metrics()
            .contains_key(&b_series)),
        "an excluded container's series must be removed"
    );
    let a_then = agent.records(&a).len();
    let a_grew = wait_until(Duration::from_secs(60), || {
        agent.records(&a).len() >= a_then + 1000
    });
    assert!(a_grew, "a stopped being captured; log:\n{}", agent.log());
    assert_eq!(
        agent.records(&b).len(),
        b_excluded_at,
        "lines of b were written while it was excluded"
    );
    assert!(b_excluded_at < n, "the exclusion was not mid-stream");

    // 2. Include b again, rotate every second, add a second sink (POST /-/reload).
    let second = replace_once(
        &replace_once(&original, "rotation_interval: 2s", "rotation_interval: 1s"),
        "sinks:\n",
        "sinks:\n  discard: {}\n",
    );
    write_config(agent.config_path(), &second);
    let body = post_reload(&agent, 200);
    assert!(body.contains("reloaded"), "{body}");
    assert_eq!(reloads(&agent, "applied"), 2.0);
    let b_resumed = wait_until(Duration::from_secs(60), || {
        agent.records(&b).len() > b_excluded_at
    });
    assert!(b_resumed, "b not captured again; log:\n{}", agent.log());
    let discarded = wait_until(Duration::from_secs(60), || {
        agent.metric("log_capturer_sink_lines_total{sink=\"null\"}") > 0.0
    });
    assert!(
        discarded,
        "the added sink gets nothing; log:\n{}",
        agent.log()
    );

    // 3. Only the log level: applied in place.
    let quieter = replace_once(&second, "level: log_capturer=debug,info", "level: info");
    write_config(agent.config_path(), &quieter);
    sighup_and_wait(&agent);
    assert_eq!(reloads(&agent, "applied"), 3.0, "log:\n{}", agent.log());
    assert!(
        agent.log().contains("log.level is now \"info\""),
        "log:\n{}",
        agent.log()
    );

    // 4. Two SIGHUPs at once, for a pipeline change: coalesced or one after the other.
    let slower = replace_once(&quieter, "rotation_interval: 1s", "rotation_interval: 3s");
    write_config(agent.config_path(), &slower);
    let before = reload_attempts(&agent);
    agent.sighup();
    agent.sighup();
    assert!(wait_until(Duration::from_secs(120), || reload_attempts(
        &agent
    ) > before));
    // A POST is answered after every request queued before it.
    post_reload(&agent, 200);
    assert_eq!(
        agent.metric("log_capturer_config_last_reload_successful"),
        1.0
    );

    let all = wait_until(Duration::from_secs(180), || {
        agent.records(&a).len() >= n && agent.records(&b).len() >= n
    });
    assert!(
        all,
        "a: {} b: {} of {n}; log:\n{}",
        agent.records(&a).len(),
        agent.records(&b).len(),
        agent.log()
    );

    // 5. Back to the first config: the same tasks and FDs as before the reloads (the output
    // files close after idle_close; the streams of both containers stay open).
    write_config(agent.config_path(), &original);
    post_reload(&agent, 200);
    let settled = wait_until(Duration::from_secs(60), || {
        let now = agent.resources();
        now.0 <= baseline.0 && now.1 <= baseline.1
    });
    assert!(
        settled,
        "tasks/FDs {:?} above the baseline {baseline:?} after the reloads",
        agent.resources()
    );
    std::thread::sleep(Duration::from_secs(2)); // would reveal late duplicates
    assert_sequence(&agent.messages(&a), "a-", n, "a across reloads");
    assert_sequence(
        &agent.messages(&b),
        "b-",
        n,
        "b across reloads (excluded for a while)",
    );
    let status = agent.terminate();
    assert!(status.success(), "exit {status:?}; log:\n{}", agent.log());
    println!(
        "reloads: {} applied; b excluded after {b_excluded_at} lines; {n} lines each exactly once",
        reloads_from_log(&agent)
    );
}

fn reloads_from_log(agent: &Agent) -> usize {
    agent.log().matches("configuration reloaded").count()
}

/// A reload that fails keeps the old config running: an invalid file (SIGHUP and POST), a
/// key that needs a restart (refused, 409), a wrong method (405); the metrics say so, the
/// log names the file and the key. A valid file then applies. SIGHUP never kills: SIGTERM
/// later ends with exit code 0, and no line is lost or duplicated meanwhile.
#[test]
fn failed_reloads_keep_the_running_config() {
    let (mut containers, _dir, mut agent, original) = start("reload-fail");
    let config_path = agent.config_path().display().to_string();
    let name = containers.name("rf");
    let n = 5000;
    containers.run("rf", &[], &writer("f-", n));
    // Unreadable (501): counted once, whatever the number of pipeline generations.
    containers.run("rn", &["--log-driver", "none"], "exec sleep 3600");
    let unreadable = "log_capturer_containers_unreadable";
    let refused_501 =
        "log_capturer_container_stream_errors_total{reason=\"unreadable_log_driver\"}";
    assert!(wait_until(Duration::from_secs(60), || agent
        .metric(unreadable)
        == 1.0));
    assert!(wait_until(Duration::from_secs(60), || agent
        .records(&name)
        .len()
        >= 200));
    assert_eq!(
        agent.metric("log_capturer_config_last_reload_successful"),
        1.0
    );
    let started_at = agent.metric("log_capturer_config_last_reload_success_timestamp_seconds");
    assert!(started_at > 1.0e9, "start time {started_at}");

    // An invalid file: kept running, metric 0, the log names the file and the key.
    let invalid = replace_once(&original, "rotation_interval: 2s", "rotation_interval: 5x");
    write_config(agent.config_path(), &invalid);
    sighup_and_wait(&agent);
    assert_eq!(reloads(&agent, "invalid"), 1.0);
    assert_eq!(
        agent.metric("log_capturer_config_last_reload_successful"),
        0.0
    );
    let log = agent.log();
    let failure = log
        .lines()
        .find(|l| l.contains("config reload failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    assert!(
        failure.contains(&config_path) && failure.contains("capture.rotation_interval"),
        "{failure}"
    );
    let body = post_reload(&agent, 500);
    assert!(body.contains("capture.rotation_interval"), "{body}");

    // A key that needs a restart: refused, nothing of the file applied.
    let moved = replace_once(
        &replace_once(&original, "/state\n", "/state-elsewhere\n"),
        "rotation_interval: 2s",
        "rotation_interval: 1s",
    );
    write_config(agent.config_path(), &moved);
    let body = post_reload(&agent, 409);
    assert!(
        body.contains("checkpoint.state_dir") && body.contains("restart"),
        "{body}"
    );
    assert_eq!(reloads(&agent, "refused"), 1.0);
    assert_eq!(
        agent.metric("log_capturer_config_last_reload_successful"),
        0.0
    );
    assert!(!agent.dir.join("state-elsewhere").exists());

    let (status, _) = agent.request("GET", "/-/reload").expect("answer");
    assert_eq!(status, 405);

    // Capture went on meanwhile; a valid file applies.
    let grown = agent.records(&name).len();
    assert!(wait_until(Duration::from_secs(60), || agent
        .records(&name)
        .len()
        > grown));
    let valid = replace_once(&original, "rotation_interval: 2s", "rotation_interval: 1s");
    write_config(agent.config_path(), &valid);
    post_reload(&agent, 200);
    assert_eq!(
        agent.metric("log_capturer_config_last_reload_successful"),
        1.0
    );
    assert!(
        agent.metric("log_capturer_config_last_reload_success_timestamp_seconds") >= started_at
    );
    assert_eq!(reloads(&agent, "applied"), 1.0);
    // The new generation found the unreadable container again: still counted once.
    assert!(wait_until(Duration::from_secs(60), || agent
        .metric(refused_501)
        >= 2.0));
    let drifted = wait_until(Duration::from_secs(3), || agent.metric(unreadable) != 1.0);
    assert!(
        !drifted || wait_until(Duration::from_secs(10), || agent.metric(unreadable) == 1.0),
        "containers_unreadable is {} after a reload",
        agent.metric(unreadable)
    );

    assert!(
        wait_until(Duration::from_secs(120), || agent.records(&name).len() >= n),
        "only {} of {n}; log:\n{}",
        agent.records(&name).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2)); // would reveal late duplicates
    assert_sequence(&agent.messages(&name), "f-", n, "across failed reloads");
    let status = agent.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());
}

/// A reload whose drain hits `pipeline.shutdown_timeout` (here the stdout sink is blocked for
/// good: its pipe is full and nobody reads it). A second pipeline must not start beside a sink
/// thread that may still write: the agent stops as a shutdown does, exit code 3, with its
/// checkpoint only at what really reached stdout, so the restart reads the rest again.
#[test]
fn reload_drain_past_shutdown_timeout_stops_without_loss() {
    let mut blocked = support::blocked_stdout::BlockedStdout::start();
    let text = std::fs::read_to_string(blocked.agent.config_path()).expect("config");
    write_config(
        blocked.agent.config_path(),
        &replace_once(&text, "flush_interval: 50ms", "flush_interval: 60ms"),
    );
    blocked.agent.sighup();
    let status = blocked.agent.wait_exit();
    let log = blocked.agent.log();
    assert_eq!(status.code(), Some(3), "exit {status}; log:\n{log}");
    assert!(
        log.contains("reload: the drain did not finish"),
        "log:\n{log}"
    );

    blocked.assert_checkpoint_covers_only_what_was_written();
}

/// A container that writes its last lines and exits while a reload drains is read to its end
/// by the next pipeline; SIGTERM right behind a SIGHUP stops cleanly (exit 0), and after a
/// restart nothing is lost or duplicated.
#[test]
fn stops_and_shutdown_during_a_reload() {
    let (mut containers, _dir, mut agent, original) = start("reload-stop");
    let (early, steady) = (containers.name("se"), containers.name("ss"));
    containers.run(
        "se",
        &[],
        "i=1; while [ $i -le 500 ]; do echo e-$i; i=$((i+1)); done; \
         while [ ! -f /tmp/go ]; do usleep 10000; done; \
         while [ $i -le 1500 ]; do echo e-$i; i=$((i+1)); done",
    );
    let n = 6000;
    containers.run("ss", &[], &writer("s-", n));
    assert!(wait_until(Duration::from_secs(60), || {
        agent.records(&early).len() >= 500 && agent.records(&steady).len() >= 200
    }));

    // The early one writes its last 1000 lines and exits while the reload drains.
    write_config(
        agent.config_path(),
        &replace_once(&original, "rotation_interval: 2s", "rotation_interval: 1s"),
    );
    agent.sighup();
    support::docker::docker(&["exec", &early, "touch", "/tmp/go"]);
    assert!(
        wait_until(Duration::from_secs(120), || agent.records(&early).len()
            >= 1500),
        "only {} of 1500 lines of a container that exited during a reload; log:\n{}",
        agent.records(&early).len(),
        agent.log()
    );

    // SIGTERM right behind a SIGHUP: a clean stop either way.
    write_config(agent.config_path(), &original);
    agent.sighup();
    let status = agent.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());
    agent.restart();
    assert!(
        wait_until(Duration::from_secs(120), || agent.records(&steady).len()
            >= n),
        "only {} of {n}; log:\n{}",
        agent.records(&steady).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2)); // would reveal late duplicates
    assert_sequence(
        &agent.messages(&early),
        "e-",
        1500,
        "exited during a reload",
    );
    assert_sequence(
        &agent.messages(&steady),
        "s-",
        n,
        "shutdown during a reload",
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Reloads while Loki is down: each drain leaves the Loki sink's batches in its disk buffer
/// (acknowledged there), the next generation opens the buffer again and, once Loki is back,
/// delivers everything exactly once and in order.
#[test]
fn loki_disk_buffer_survives_reloads() {
    use support::loki::{LokiReceiver, Mode};
    let rx = LokiReceiver::start();
    rx.set_mode(Mode::Down);
    let mut containers = Containers::new("reload-loki");
    let dir = tempfile::tempdir().expect("tempdir");
    let loki = format!(
        "  loki:\n    url: {}\n    batch:\n      max_wait: 200ms\n    retry:\n      initial: 200ms\n      max: 1s\n    buffer:\n      spill_after: 1s\n      fsync: never\n",
        rx.push_url()
    );
    let agent = Agent::start(
        dir.path(),
        AgentOptions {
            capture: format!("{}  rotation_interval: 2s\n", containers.include_yaml()),
            sinks: loki,
            ..AgentOptions::default()
        },
    );
    let original = std::fs::read_to_string(agent.config_path()).expect("config");
    let name = containers.name("rl");
    let n = 4000;
    containers.run("rl", &[], &writer("l-", n));
    let buffered = "log_capturer_buffer_batches{sink=\"loki\"}";
    for (round, wait) in ["250ms", "300ms"].into_iter().enumerate() {
        assert!(
            wait_until(Duration::from_secs(60), || agent.metric(buffered) > 0.0),
            "round {round}: nothing buffered; log:\n{}",
            agent.log()
        );
        let text = replace_once(&original, "max_wait: 200ms", &format!("max_wait: {wait}"));
        write_config(agent.config_path(), &text);
        post_reload(&agent, 200);
    }
    // The next generation opened the buffer with what the previous one left in it.
    assert!(
        agent.log().contains("records waiting from an earlier run"),
        "log:\n{}",
        agent.log()
    );
    rx.set_mode(Mode::Accept);
    let received = || -> Vec<String> {
        rx.entries()
            .into_iter()
            .filter(|e| e.labels.get("container_name") == Some(&name))
            .map(|e| e.line)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(180), || received().len() >= n
            && agent.records(&name).len() >= n),
        "Loki got {} and the file {} of {n}; log:\n{}",
        received().len(),
        agent.records(&name).len(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2)); // would reveal late duplicates
    assert_sequence(&received(), "l-", n, "Loki across reloads");
    assert_sequence(&agent.messages(&name), "l-", n, "file across reloads");
}
