//! Containers that exit or are removed while the agent looks at them: 409s, inspects that
//! fail or come too late, empty streams of an instant `--rm`.

use super::*;

/// 409 (the container is being removed) ends the capture; it must not turn into a loop.
#[test]
fn conflict_409_does_not_loop() {
    let removing = Container::new(
        "removing",
        Vec::new(),
        vec![LogsPlan::Status(409, "container is being removed".into())],
    );
    let id = removing.id.clone();
    let engine = FakeEngine::start(vec![removing]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));

    let asked = wait_until(Duration::from_secs(10), || {
        engine.logs_stats(&id).requests >= 1
    });
    assert!(asked, "no logs request; log:\n{}", agent.log());
    std::thread::sleep(Duration::from_secs(3));
    let stats = engine.logs_stats(&id);
    assert!(stats.requests <= 2, "409 answered in a loop: {stats:?}");
    assert_healthy(&agent);
    let ready = agent.get("/ready");
    assert!(ready.is_some_and(|(s, _)| s == 200));
    let released = wait_until(Duration::from_secs(5), || engine.logs_stats(&id).open == 0);
    assert!(
        released,
        "the 409 answer's connection was not closed: {:?}",
        engine.logs_stats(&id)
    );
    assert_clean_exit(&mut agent);
}

/// A container is listed as running, then exits while the agent waits for its inspect (3 s
/// late): at start-up, and again at the resync after the events stream reconnects. Listed as
/// running means it wrote while we looked: it must be read to its end, not dropped because
/// the inspect says "exited".
#[test]
fn container_that_exits_during_a_resync_is_read_to_its_end() {
    let first_lines = numbered_lines("first", 40, 1);
    let second_lines = numbered_lines("second", 30, 1);
    let first = Container::new("first", first_lines.clone(), vec![LogsPlan::End]);
    let second = Container::new("second", second_lines.clone(), vec![LogsPlan::End]);
    let (first_id, second_id) = (first.id.clone(), second.id.clone());
    let engine = FakeEngine::start(vec![first]);
    engine.exit_during_inspect(&first_id, Duration::from_secs(3));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));

    let read = wait_until(Duration::from_secs(20), || {
        agent.messages("first").len() >= first_lines.len()
    });
    assert!(
        read,
        "a container that exited during the start-up listing was not read: {} of {} lines, \
         engine saw {:?}; log:\n{}",
        agent.messages("first").len(),
        first_lines.len(),
        engine.logs_stats(&first_id),
        agent.log()
    );

    // The same window at the resync after the events stream is lost.
    engine.add_after_first_events_drop(second);
    engine.exit_during_inspect(&second_id, Duration::from_secs(3));
    engine.drop_events_streams();
    let read = wait_until(Duration::from_secs(20), || {
        agent.messages("second").len() >= second_lines.len()
    });
    assert!(
        read,
        "a container that exited during the resync after an events reconnect was not read: \
         {} of {} lines, engine saw {:?}; log:\n{}",
        agent.messages("second").len(),
        second_lines.len(),
        engine.logs_stats(&second_id),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.messages("first"), texts(&first_lines));
    assert_eq!(agent.messages("second"), texts(&second_lines));
    assert_clean_exit(&mut agent);
}

/// Item 19 of issue 9, at a resync: a container listed as running and removed before its
/// inspect (an instant `--rm` while the agent starts) was dropped without a word. It is
/// counted as `gone_before_read` and named in a warning, as at its start event.
#[test]
fn container_removed_between_listing_and_inspect_is_counted_and_named() {
    let doomed = Container::new("doomed", numbered_lines("d", 5, 1), vec![LogsPlan::End]);
    let kept_lines = numbered_lines("kept", 5, 1);
    let kept = Container::new("kept", kept_lines.clone(), vec![LogsPlan::Follow]);
    let doomed_id = doomed.id.clone();
    let engine = FakeEngine::start(vec![doomed, kept]);
    engine.remove_during_inspect(&doomed_id);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));
    let key = "log_capturer_container_stream_errors_total{reason=\"gone_before_read\"}";
    let counted = wait_until(Duration::from_secs(20), || agent.metric(key) >= 1.0);
    assert!(counted, "not counted; log:\n{}", agent.log());
    assert_eq!(agent.metric(key), 1.0);
    assert_eq!(
        warnings_mentioning(&agent, "doomed").len(),
        1,
        "one warning naming it; log:\n{}",
        agent.log()
    );
    assert!(wait_until(Duration::from_secs(20), || {
        agent.messages("kept").len() >= kept_lines.len()
    }));
    assert_eq!(agent.messages("kept"), texts(&kept_lines));
    assert_clean_exit(&mut agent);
}

/// A container gone before its inspect (an instant `--rm`) is counted and named only when
/// the filters select it, by what its start event says (name, image, labels) or, at a resync,
/// what the listing said. One the filters leave out used to be counted in
/// `gone_before_read` and named in a warning too (the fault suite's rm-burst saw 9 of 20 such
/// containers counted).
#[test]
fn container_gone_before_its_inspect_is_counted_only_when_the_filters_select_it() {
    let outside_listed = Container::new(
        "outside-listed",
        numbered_lines("o", 3, 1),
        vec![LogsPlan::End],
    );
    let outside_listed_id = outside_listed.id.clone();
    let engine = FakeEngine::start(vec![outside_listed]);
    engine.remove_during_inspect(&outside_listed_id);
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(
        dir.path(),
        fake_engine_options(
            &engine,
            "  include:\n    names: [\"inside*\"]\n    labels: [\"team=core\"]\n",
        ),
    );
    let start = |name: &str, team: &str| {
        let id = support::fake_engine::container_id(name);
        let ts_ns = support::fake_engine::now_ns();
        engine.send_event(
            &serde_json::json!({
                "status": "start", "id": id, "from": "img",
                "Type": "container", "Action": "start",
                "Actor": {"ID": id, "Attributes": {"image": "img", "name": name, "team": team}},
                "scope": "local", "time": ts_ns / 1_000_000_000, "timeNano": ts_ns,
            })
            .to_string(),
        );
    };
    // Neither is known to the engine: each inspect answers 404.
    start("outside-by-label", "ops");
    start("outside-by-name", "core");
    start("inside", "core");
    let key = "log_capturer_container_stream_errors_total{reason=\"gone_before_read\"}";
    let counted = wait_until(Duration::from_secs(20), || agent.metric(key) >= 1.0);
    assert!(
        counted,
        "the selected container was not counted; log:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        agent.metric(key),
        1.0,
        "only the selected container is counted; log:\n{}",
        agent.log()
    );
    assert_eq!(warnings_mentioning(&agent, "inside").len(), 1);
    for outside in ["outside-by-label", "outside-by-name", "outside-listed"] {
        assert!(
            warnings_mentioning(&agent, outside).is_empty(),
            "{outside} named in a warning; log:\n{}",
            agent.log()
        );
    }
}

/// A `start` event whose inspect fails (dockerd briefly out of file descriptors, a proxy
/// error): the container must still be captured, by a retry with back-off, not left unread
/// until some later listing that may never come.
#[test]
fn container_whose_inspect_fails_at_its_start_event_is_retried() {
    let engine = FakeEngine::start(Vec::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(
        dir.path(),
        fake_engine_options(
            &engine,
            "  retry_backoff_initial: 100ms\n  retry_backoff_max: 1s\n",
        ),
    );
    let lines = numbered_lines("late", 20, 1);
    let late = Container::new("late", lines.clone(), vec![LogsPlan::Follow]);
    let id = late.id.clone();
    engine.fail_next_inspects(&id, 2);
    engine.add(late);
    assert!(
        wait_until(Duration::from_secs(10), || engine.events_open() >= 1),
        "the agent follows no events stream"
    );
    engine.send_start(&id, "late");
    let captured = wait_until(Duration::from_secs(30), || {
        agent.messages("late").len() >= lines.len()
    });
    assert!(
        captured,
        "not captured after its inspect failed: {} of {} lines, engine saw {:#?}; log:\n{}",
        agent.messages("late").len(),
        lines.len(),
        engine.requests(),
        agent.log()
    );
    assert_eq!(agent.messages("late"), texts(&lines));
    assert!(agent.metric(r#"log_capturer_container_stream_errors_total{reason="inspect"}"#) >= 1.0);
    assert_clean_exit(&mut agent);
}

/// A daemon removing an instant `--rm` container can answer its logs request 200 with an
/// empty body (the log file is already gone), and then 409 or 404. Such a container used to
/// be taken for a silent one that stopped: nothing read, nothing counted (capture_e2e's
/// instant-rm test saw one of 12 so under load). The empty first stream of a container that
/// never gave a line is now read once more, and the 409 makes it counted and named.
#[test]
fn empty_stream_then_gone_is_counted_as_gone_before_read() {
    let mut vanishing = Container::new(
        "vanishing",
        Vec::new(),
        vec![
            LogsPlan::End,
            LogsPlan::Status(409, "removal of container in progress".into()),
        ],
    );
    vanishing.running = false;
    let id = vanishing.id.clone();
    let engine = FakeEngine::start(vec![vanishing]);
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));
    engine.send_start(&id, "vanishing");
    let key = "log_capturer_container_stream_errors_total{reason=\"gone_before_read\"}";
    let counted = wait_until(Duration::from_secs(20), || agent.metric(key) >= 1.0);
    assert!(
        counted,
        "not counted; engine saw {:#?}; log:\n{}",
        engine.requests(),
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.metric(key), 1.0);
    assert_eq!(engine.logs_stats(&id).requests, 2);
    assert_eq!(
        warnings_mentioning(&agent, "vanishing").len(),
        1,
        "one warning naming it; log:\n{}",
        agent.log()
    );
}
