//! The daemon and its events stream: down at start, dropping, going away and back; failed
//! listings, and what the agent remembers (checkpoints, ignored containers) across them.
//!
//! (Alike on purpose: each test starts its own engine and agent and spells out the waits it
//! needs; the sequences differ in which fault is injected between them.)

use super::*;

/// The events stream drops; a container appears while it is down (no event for it will ever
/// be replayed). The agent reconnects, re-lists, and captures it; the container it already
/// captured is not captured twice.
#[test]
fn events_stream_drop_reconnects_and_resyncs() {
    let steady_lines = numbered_lines("steady", 3, 1);
    let late_lines = numbered_lines("late", 5, 1);
    let steady = Container::new("steady", steady_lines.clone(), vec![LogsPlan::Follow]);
    let late = Container::new("late", late_lines.clone(), vec![LogsPlan::Follow]);
    let (steady_id, late_id) = (steady.id.clone(), late.id.clone());
    let engine = FakeEngine::start(vec![steady]);
    engine.close_first_events_after(Duration::from_millis(500));
    engine.add_after_first_events_drop(late);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));

    let found = wait_until(Duration::from_secs(20), || {
        agent.messages("late").len() >= late_lines.len()
            && engine.events_requests() >= 2
            && agent.metric("log_capturer_events_reconnects_total") >= 1.0
    });
    assert!(
        found,
        "the events stream was not reconnected, or the container listed while it was down \
         was not captured: {} of {} lines, {} events requests, events_reconnects {}, \
         requests {:#?}; log:\n{}",
        agent.messages("late").len(),
        late_lines.len(),
        engine.events_requests(),
        agent.metric("log_capturer_events_reconnects_total"),
        engine.requests(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.messages("late"), texts(&late_lines));
    assert_eq!(
        agent.messages("steady"),
        texts(&steady_lines),
        "the re-list must not start a second capture of a container already captured"
    );
    assert_eq!(engine.logs_stats(&steady_id).requests, 1);
    assert_eq!(engine.logs_stats(&late_id).requests, 1);
    assert_eq!(
        engine.events_open(),
        1,
        "exactly one events stream followed"
    );
    assert_clean_exit(&mut agent);
}

/// Nothing listens on the socket when the agent starts: it serves /health, is not ready, and
/// retries; once the engine is up it connects, becomes ready and captures.
#[test]
fn daemon_down_at_start_then_up() {
    let lines = numbered_lines("early", 4, 2);
    let early = Container::new("early", lines.clone(), vec![LogsPlan::Follow]);
    let engine = FakeEngine::unbound(vec![early]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start_unready(
        dir.path(),
        fake_engine_options(&engine, "  retry_backoff_max: 1s\n"),
    );

    let retried = wait_until(Duration::from_secs(10), || {
        agent.get("/metrics").is_some()
            && agent.metric("log_capturer_docker_unreachable_total") >= 2.0
    });
    assert!(
        retried,
        "no retries against an absent daemon; log:\n{}",
        agent.log()
    );
    assert_healthy(&agent);
    let ready = agent.get("/ready").map(|(s, _)| s);
    assert_ne!(ready, Some(200), "ready without a daemon");

    engine.bind();
    let up = Instant::now();
    let became_ready = wait_until(Duration::from_secs(10), || {
        agent.get("/ready").is_some_and(|(s, _)| s == 200)
    });
    assert!(
        became_ready,
        "not ready {:?} after the daemon came up; log:\n{}",
        up.elapsed(),
        agent.log()
    );
    let captured = wait_until(Duration::from_secs(10), || {
        agent.messages("early").len() >= lines.len()
    });
    assert!(captured, "log:\n{}", agent.log());
    assert_eq!(agent.messages("early"), texts(&lines));
    assert_clean_exit(&mut agent);
}

/// Waits until the agent serves /metrics and has counted a failed container listing.
#[track_caller]
fn assert_failed_listing_counted(agent: &Agent) {
    let failed = wait_until(Duration::from_secs(10), || {
        agent.get("/metrics").is_some()
            && agent.metric(r#"log_capturer_container_stream_errors_total{reason="list"}"#) >= 1.0
    });
    assert!(
        failed,
        "the failing listing was not seen; log:\n{}",
        agent.log()
    );
}

/// The first container listing fails (500, a time-out under load...) while the events stream
/// is healthy: the listing must be retried, or containers already running are never captured
/// and /ready never turns 200.
#[test]
fn failed_first_listing_is_retried() {
    let lines = numbered_lines("patient", 2, 1);
    let patient = Container::new("patient", lines.clone(), vec![LogsPlan::Follow]);
    let engine = FakeEngine::start(vec![patient]);
    engine.fail_next_lists(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start_unready(dir.path(), fake_engine_options(&engine, ""));

    assert_failed_listing_counted(&agent);
    let captured = wait_until(Duration::from_secs(15), || {
        agent.messages("patient").len() >= lines.len()
    });
    assert!(
        captured,
        "listing never retried: ready={:?}, engine saw {:#?}; log:\n{}",
        agent.get("/ready"),
        engine.requests(),
        agent.log()
    );
    assert_eq!(agent.messages("patient"), texts(&lines));
    assert!(agent.get("/ready").is_some_and(|(s, _)| s == 200));
    assert_clean_exit(&mut agent);
}

/// A checkpoint left by an earlier run for a container that no longer exists must be
/// dropped, even when the first listing of all containers fails (the listing of running ones
/// works, so nothing else would retry).
#[test]
fn stale_checkpoint_is_dropped_when_the_first_full_listing_fails() {
    let lines = numbered_lines("present", 3, 1);
    let present = Container::new("present", lines.clone(), vec![LogsPlan::Follow]);
    let engine = FakeEngine::start(vec![present]);
    engine.fail_next_all_lists(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let ghost = support::fake_engine::container_id("removed-while-the-agent-was-down");
    let checkpoints = dir.path().join("state/checkpoints");
    std::fs::create_dir_all(&checkpoints).expect("checkpoint dir");
    let stale = checkpoints.join(format!("{ghost}.json"));
    std::fs::write(
        &stale,
        format!(
            r#"{{"container_id":"{ghost}","timestamp_ns":{BASE_NS},"count":1,"timestamp":"2026-01-01T00:00:00Z"}}"#
        ),
    )
    .expect("write checkpoint");
    let mut agent = Agent::start_unready(dir.path(), fake_engine_options(&engine, ""));

    assert_failed_listing_counted(&agent);
    let dropped = wait_until(Duration::from_secs(15), || !stale.exists());
    assert!(
        dropped,
        "the checkpoint of a container that no longer exists was kept; engine saw {:#?}; \
         log:\n{}",
        engine.requests(),
        agent.log()
    );
    assert!(wait_until(Duration::from_secs(10), || {
        agent.messages("present").len() >= lines.len()
    }));
    assert_eq!(agent.messages("present"), texts(&lines));
    assert!(agent.get("/ready").is_some_and(|(s, _)| s == 200));
    assert_clean_exit(&mut agent);
}

/// A container the filters leave out is remembered as ignored; when it is removed while the
/// events stream is down (no `destroy` will ever arrive), the next listing forgets it.
#[test]
fn ignored_container_removed_while_events_were_down_is_forgotten() {
    let kept_lines = numbered_lines("kept", 2, 1);
    let kept = Container::new("kept", kept_lines.clone(), vec![LogsPlan::Follow]);
    let skipped = Container::new(
        "skipped",
        numbered_lines("no", 2, 1),
        vec![LogsPlan::Follow],
    );
    let skipped_id = skipped.id.clone();
    let engine = FakeEngine::start(vec![kept, skipped]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(
        dir.path(),
        fake_engine_options(&engine, "  include:\n    names: [\"kept\"]\n"),
    );
    let ignored = wait_until(Duration::from_secs(10), || {
        agent.metric("log_capturer_containers_ignored") == 1.0
    });
    assert!(
        ignored,
        "containers_ignored {}; log:\n{}",
        agent.metric("log_capturer_containers_ignored"),
        agent.log()
    );

    engine.remove_silently(&skipped_id);
    engine.drop_events_streams();
    let forgotten = wait_until(Duration::from_secs(15), || {
        engine.events_requests() >= 2 && agent.metric("log_capturer_containers_ignored") == 0.0
    });
    assert!(
        forgotten,
        "the ignored set kept a container that no longer exists: containers_ignored {}, {} \
         events requests; log:\n{}",
        agent.metric("log_capturer_containers_ignored"),
        engine.events_requests(),
        agent.log()
    );
    assert_eq!(agent.messages("kept"), texts(&kept_lines));
    assert!(agent.records("skipped").is_empty());
    assert_clean_exit(&mut agent);
}

/// The daemon goes away (socket gone, every connection cut): /ready turns non-200 while it
/// is down, and 200 again once it is back and listed; capture resumes without loss or
/// duplicate.
#[test]
fn ready_follows_the_daemon_going_down_and_up() {
    let lines = numbered_lines("steady", 5, 1);
    let steady = Container::new("steady", lines.clone(), vec![LogsPlan::Follow]);
    let id = steady.id.clone();
    let engine = FakeEngine::start(vec![steady]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(
        dir.path(),
        fake_engine_options(&engine, "  retry_backoff_max: 1s\n"),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        agent.messages("steady").len() >= lines.len()
    }));

    engine.stop();
    let not_ready = wait_until(Duration::from_secs(15), || {
        agent.get("/ready").is_some_and(|(s, _)| s != 200)
    });
    assert!(
        not_ready,
        "/ready stayed {:?} with the daemon down; log:\n{}",
        agent.get("/ready"),
        agent.log()
    );
    assert_healthy(&agent);
    // Still not ready a moment later (no listing can succeed).
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(agent.get("/ready").map(|(s, _)| s), Some(200));

    engine.bind();
    let ready = wait_until(Duration::from_secs(15), || {
        agent.get("/ready").is_some_and(|(s, _)| s == 200)
    });
    assert!(
        ready,
        "not ready again after the daemon came back; log:\n{}",
        agent.log()
    );
    assert!(wait_until(Duration::from_secs(15), || {
        engine.logs_stats(&id).requests >= 2
    }));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.messages("steady"), texts(&lines));
    assert_clean_exit(&mut agent);
}

/// A stopped container without checkpoint that started and exited after the previous run
/// began watching (it ran while no agent watched) is found at start and read once, also when
/// its first inspects fail (the resync is retried); one that stopped before that time is not
/// read at all. The next run is told to look only from this run's own watching start.
#[test]
fn stopped_container_that_ran_unwatched_is_read_once_despite_failed_inspects() {
    let watched_from = now_ns() - 60_000_000_000;
    let lines = numbered_lines("unwatched", 5, 1);
    let mut unwatched = Container::new("unwatched", lines.clone(), vec![LogsPlan::End]);
    unwatched.running = false;
    unwatched.started_ns = Some(watched_from + 10_000_000_000);
    unwatched.finished_ns = Some(watched_from + 11_000_000_000);
    let mut old = Container::new("old", numbered_lines("old", 3, 1), vec![LogsPlan::End]);
    old.running = false;
    old.started_ns = Some(watched_from - 20_000_000_000);
    old.finished_ns = Some(watched_from - 10_000_000_000);
    let (unwatched_id, old_id) = (unwatched.id.clone(), old.id.clone());
    let engine = FakeEngine::start(vec![unwatched, old]);
    engine.fail_next_inspects(&unwatched_id, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    // An earlier run on this state_dir watched Docker from `watched_from`.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let marker = state.join("agent.json");
    std::fs::write(
        &marker,
        format!(
            "{{\"version\":\"0.1.0\",\"first_seen\":\"{}\",\"watching_since\":\"{}\"}}\n",
            stamp(watched_from - 3_600_000_000_000),
            stamp(watched_from)
        ),
    )
    .expect("marker");
    let mut agent = Agent::start_unready(dir.path(), fake_engine_options(&engine, ""));

    let captured = wait_until(Duration::from_secs(30), || {
        agent.messages("unwatched").len() >= lines.len()
    });
    assert!(
        captured,
        "the container that ran unwatched was not read; engine saw {:#?}; log:\n{}",
        engine.requests(),
        agent.log()
    );
    agent.wait_ready();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.messages("unwatched"), texts(&lines));
    assert_eq!(
        engine.logs_stats(&unwatched_id).since.first(),
        Some(&0),
        "not read from its first line"
    );
    assert_eq!(agent.metric("log_capturer_containers_caught_up_total"), 1.0);
    assert!(
        agent.metric(r#"log_capturer_container_stream_errors_total{reason="inspect"}"#) >= 2.0,
        "the failing inspects were not counted"
    );
    assert_eq!(
        engine.logs_stats(&old_id).requests,
        0,
        "stopped before: read"
    );
    assert!(agent.messages("old").is_empty());
    assert_clean_exit(&mut agent);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&marker).expect("marker")).expect("json");
    let since = written["watching_since"].as_str().expect("watching_since");
    assert!(
        since > stamp(watched_from).as_str(),
        "watching_since not moved to this run: {written}"
    );
    assert_eq!(
        written["first_seen"].as_str(),
        Some(stamp(watched_from - 3_600_000_000_000).as_str())
    );
}
