//! Logs streams that misbehave: silent, cut in the middle of a frame, closed after each
//! answer, served line by line, hundreds at once; all rotated on schedule.

use super::*;

/// A logs stream that sends its head and then nothing, forever: rotation must still close it
/// (and its socket) on schedule and open exactly one replacement each time.
#[test]
fn silent_stream_is_rotated_and_its_connection_closed() {
    let silent = Container::new("silent", Vec::new(), vec![LogsPlan::Follow]);
    let id = silent.id.clone();
    let engine = FakeEngine::start(vec![silent]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(
        dir.path(),
        fake_engine_options(&engine, "  rotation_interval: 1s\n"),
    );

    let rotated = wait_until(Duration::from_secs(15), || {
        engine.logs_stats(&id).requests >= 5
    });
    let stats = engine.logs_stats(&id);
    assert!(
        rotated,
        "expected >= 5 logs requests within 15 s with 1 s rotation, got {stats:?}; log:\n{}",
        agent.log()
    );
    assert_eq!(
        stats.max_open, 1,
        "a rotated stream's connection stayed open next to its replacement: {stats:?}"
    );
    assert!(stats.open <= 1, "{stats:?}");
    let rotations =
        agent.metric(r#"log_capturer_container_stream_rotations_total{container_name="silent"}"#);
    assert!(
        rotations >= 4.0,
        "rotations metric {rotations}, engine saw {stats:?}"
    );
    let active = agent.metric("log_capturer_container_streams_active");
    assert!(active <= 1.0, "streams_active {active}");

    assert_clean_exit(&mut agent);
    let closed = wait_until(Duration::from_secs(5), || engine.logs_stats(&id).open == 0);
    assert!(
        closed,
        "logs connection still open after the agent exited: {:?}",
        engine.logs_stats(&id)
    );
    assert_eq!(engine.logs_stats(&id).max_open, 1);
}

/// The logs connection dies in the middle of a frame, twice, at points where the last line
/// read shares its timestamp with lines not yet read. Each reopen must ask from the cursor and
/// skip exactly the lines already emitted at that timestamp: every line once, in order.
#[test]
fn reset_mid_frame_resumes_without_loss_or_duplicate() {
    // 3 lines per timestamp: line 151 is the first of its group, line 227 the second.
    let lines = numbered_lines("line", 300, 3);
    let expected = texts(&lines);
    let since_151 = lines[150].ts_ns;
    let since_227 = lines[226].ts_ns;
    let resets = Container::new(
        "resets",
        lines,
        vec![
            LogsPlan::CutMidFrame { last_line: 151 },
            LogsPlan::CutMidFrame { last_line: 227 },
            LogsPlan::Follow,
        ],
    );
    let id = resets.id.clone();
    let engine = FakeEngine::start(vec![resets]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(dir.path(), fake_engine_options(&engine, ""));

    let all = wait_until(Duration::from_secs(20), || {
        agent.messages("resets").len() >= expected.len()
    });
    assert!(
        all,
        "got {} of {} lines; engine saw {:?}; log:\n{}",
        agent.messages("resets").len(),
        expected.len(),
        engine.logs_stats(&id),
        agent.log()
    );
    // Anything duplicated after the last line would be written by now.
    std::thread::sleep(Duration::from_secs(1));
    let got = agent.messages("resets");
    if got != expected {
        let first_diff = got.iter().zip(&expected).position(|(g, e)| g != e);
        panic!(
            "lines lost, duplicated or reordered: got {} lines, first difference at index \
             {first_diff:?}; engine saw {:?}",
            got.len(),
            engine.logs_stats(&id)
        );
    }

    let stats = engine.logs_stats(&id);
    assert_eq!(stats.requests, 3, "{stats:?}");
    assert_eq!(
        stats.since[0], 0,
        "first open from the beginning: {stats:?}"
    );
    // stderr delivered nothing, so a stderr entry written after line 151 could still be
    // stamped up to the reorder slack before it (see `Cursor::since_ns`).
    let slack = log_capturer::capture::REORDER_SLACK_NS;
    assert_eq!(
        stats.since[1..],
        [since_151 - slack, since_227 - slack],
        "each reopen asks from the last emitted line's timestamp less the reorder slack: \
         {stats:?}"
    );
    // A chunked body cut short is an error (not a clean end).
    let read_errors = agent.metric(r#"log_capturer_container_stream_errors_total{reason="read"}"#);
    assert_eq!(
        read_errors,
        2.0,
        "stream_errors{{reason=\"read\"}}; log:\n{}",
        agent.log()
    );
    assert_clean_exit(&mut agent);
}

/// An engine (or a proxy in front of dockerd) that closes the connection right after each
/// short answer, which HTTP/1.1 allows. The answer was complete: it must not be reported as
/// "connection closed before the response".
#[test]
fn answer_then_close_is_not_an_error() {
    let lines = numbered_lines("closer", 3, 1);
    let closer = Container::new("closer", lines.clone(), vec![LogsPlan::Follow]);
    let engine = FakeEngine::start(vec![closer]);
    engine.close_after_response(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start_unready(dir.path(), fake_engine_options(&engine, ""));

    let captured = wait_until(Duration::from_secs(15), || {
        agent.messages("closer").len() >= lines.len()
    });
    assert!(captured, "nothing captured; log:\n{}", agent.log());
    assert_eq!(agent.messages("closer"), texts(&lines));
    let errors: Vec<(String, f64)> = agent
        .metrics()
        .into_iter()
        .filter(|(k, v)| k.starts_with("log_capturer_container_stream_errors_total") && *v > 0.0)
        .collect();
    assert!(
        errors.is_empty(),
        "errors against a well-behaved engine: {errors:?}; log:\n{}",
        agent.log()
    );
    assert_clean_exit(&mut agent);
}

/// Hundreds of idle streams: all open, all rotated with tasks and FDs back where they were,
/// and SIGTERM still ends the agent cleanly (the time is printed, not asserted).
#[test]
fn hundreds_of_idle_streams_rotate_and_shut_down_cleanly() {
    let n = 300;
    let containers: Vec<Container> = (0..n)
        .map(|i| Container::new(&format!("idle-{i}"), Vec::new(), vec![LogsPlan::Follow]))
        .collect();
    let engine = FakeEngine::start(containers);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(
        dir.path(),
        AgentOptions {
            file_sink: false,
            sinks: "  discard: {}\n".to_string(),
            ..fake_engine_options(&engine, "  rotation_interval: 5s\n")
        },
    );
    let open = wait_until(Duration::from_secs(60), || {
        agent.metric("log_capturer_container_streams_active") == n as f64
    });
    assert!(open, "not all {n} streams opened; log:\n{}", agent.log());
    let m = agent.metrics();
    let before = (
        m["log_capturer_tasks_alive"],
        m["log_capturer_file_descriptors_open"],
    );
    let rotated = wait_until(Duration::from_secs(30), || {
        let m = agent.metrics();
        let r =
            log_capturer_testkit::sum_prefix(&m, "log_capturer_container_stream_rotations_total");
        r >= n as f64 && m["log_capturer_container_streams_active"] == n as f64
    });
    assert!(rotated, "not every stream rotated");
    let mut after = (0.0, 0.0);
    let back = wait_until(Duration::from_secs(10), || {
        let m = agent.metrics();
        after = (
            m["log_capturer_tasks_alive"],
            m["log_capturer_file_descriptors_open"],
        );
        after == before
    });
    assert!(
        back,
        "(tasks, fds) before rotation {before:?}, after {after:?}"
    );
    let started = Instant::now();
    assert_clean_exit(&mut agent);
    println!(
        "{n} idle streams: (tasks, fds) {before:?} before and after a full rotation; SIGTERM → exit in {:?}",
        started.elapsed()
    );
}

/// The fake engine's stamps, in any year (a live stream's lines are stamped now).
#[test]
fn fake_engine_stamps_are_docker_rfc3339_nanos() {
    use support::fake_engine::stamp;
    assert_eq!(
        stamp(BASE_NS + 61_000_000_123),
        "2026-01-01T00:01:01.000000123Z"
    );
    assert_eq!(
        stamp(1_796_054_424_164_885_246),
        "2026-11-30T16:00:24.164885246Z"
    );
    assert_eq!(
        stamp(951_782_400_000_000_000),
        "2000-02-29T00:00:00.000000000Z"
    );
}

/// dockerd writes every line as its own HTTP chunk and its own write. Served that way, fast
/// enough that the agent coalesces its reads (pausing with its socket out of the reactor), and
/// rotated every second in the middle of it: every line once and in order, and never two
/// streams of the container open at once (a parked socket is closed by the rotation too).
#[test]
fn line_by_line_stream_is_read_exactly_once_across_rotations() {
    let count = 120_000;
    // Stamped as a live stream's lines are: after the moment each session opens (served at
    // about 25 µs a line, stamped 50 µs apart from now). A stream serving lines stamped before
    // it opened is reading a backlog, and is not rotated until it has caught up (issue 9,
    // item 18).
    let start = support::fake_engine::now_ns();
    let lines: Vec<Line> = (0..count)
        .map(|i| Line::stdout(start + i as i64 * 50_000, format!("line {:03}", i + 1)))
        .collect();
    let expected = texts(&lines);
    // 300 pauses of 10 ms: at least 3 s of serving, so at least two rotations fall inside it.
    let container = Container::new(
        "chatty",
        lines,
        vec![LogsPlan::LineByLine {
            every: 400,
            pause: Duration::from_millis(10),
        }],
    );
    let id = container.id.clone();
    let engine = FakeEngine::start(vec![container]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(
        dir.path(),
        fake_engine_options(&engine, "  rotation_interval: 1s\n"),
    );

    let all = wait_until(Duration::from_secs(90), || {
        agent.metric(r#"log_capturer_sink_lines_total{sink="file"}"#) >= count as f64
    });
    assert!(
        all,
        "got {} of {count} lines; engine saw {:?}; log:\n{}",
        agent.metric(r#"log_capturer_sink_lines_total{sink="file"}"#),
        engine.logs_stats(&id).requests,
        agent.log()
    );
    // Anything duplicated after the last line would be written by now.
    std::thread::sleep(Duration::from_secs(1));
    let got = agent.messages("chatty");
    if got != expected {
        let first_diff = got.iter().zip(&expected).position(|(g, e)| g != e);
        panic!(
            "lines lost, duplicated or reordered: got {} lines, first difference at index \
             {first_diff:?}; engine saw {} requests",
            got.len(),
            engine.logs_stats(&id).requests
        );
    }
    let stats = engine.logs_stats(&id);
    println!(
        "line by line: {count} lines exactly once over {} logs requests, at most {} open at once",
        stats.requests, stats.max_open
    );
    assert!(stats.requests >= 3, "rotated mid-stream: {stats:?}");
    assert_eq!(stats.max_open, 1, "{stats:?}");
    assert_healthy(&agent);
    assert_clean_exit(&mut agent);
}
