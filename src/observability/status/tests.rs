use super::*;
use crate::capture::Cursor;
use crate::pipeline::StreamKind;
use std::time::Duration;

fn meta(name: &str) -> watch::Receiver<Arc<ContainerMeta>> {
    watch::Sender::new(Arc::new(ContainerMeta::new(
        format!("id-{name}"),
        name.to_string(),
        "img:1".to_string(),
        None,
        None,
    )))
    .subscribe()
}

fn after(mut c: Cursor, stream: StreamKind, ts: i64) -> Cursor {
    c.deliver(stream, ts);
    c
}

struct Fixture {
    board: StatusBoard,
    store: Arc<CheckpointStore>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(CheckpointStore::open(dir.path(), Arc::new(Metrics::new())).expect("store"));
    let board = StatusBoard::new();
    board.attach_checkpoints(Arc::clone(&store));
    Fixture {
        board,
        store,
        _dir: dir,
    }
}

/// Delivered and acknowledged cursors, lines and lag as the JSON shows them: lag is 0
/// while nothing is pending and counts from the last acknowledged line while something is.
#[test]
fn containers_show_cursors_lines_and_lag() {
    let f = fixture();
    let start = Cursor::at(0);
    f.store.init("id-web", start);
    let delivered = DeliveredCursor::new(start);
    let entry = f.board.track("id-web", meta("web"), delivered.clone());
    entry.set_rotation_interval(Duration::from_secs(300));
    let views = f.board.containers();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].state, "waiting");
    assert!(!views[0].pending);
    assert_eq!(views[0].lag_seconds, 0.0);
    assert_eq!(views[0].acknowledged, Some(CursorView::of(&start)));

    entry.stream_opened(now_ns());
    let now = now_ns();
    let first = after(start, StreamKind::Stdout, now - 30_000_000_000);
    let second = after(first, StreamKind::Stderr, now - 10_000_000_000);
    delivered.set(second);
    entry.delivered(2, now - 30_000_000_000);
    let v = &f.board.containers()[0];
    assert_eq!((v.state.as_str(), v.lines, v.pending), ("running", 2, true));
    // Nothing acknowledged yet: counted from the first line delivered.
    assert!(v.lag_seconds >= 30.0 && v.lag_seconds < 60.0, "{v:?}");
    assert!(!v.rotation_overdue);

    f.store.ack("id-web", first);
    let v = &f.board.containers()[0];
    assert!(v.lag_seconds >= 30.0 && v.lag_seconds < 60.0, "{v:?}");
    assert_eq!(v.acknowledged, Some(CursorView::of(&first)));
    assert_eq!(
        v.acknowledged.as_ref().and_then(|a| a.last_line_ns),
        Some(now - 30_000_000_000)
    );

    f.store.ack("id-web", second);
    let v = &f.board.containers()[0];
    assert!(!v.pending);
    assert_eq!(v.lag_seconds, 0.0, "everything delivered is acknowledged");
    assert_eq!(v.delivered, CursorView::of(&second));
    assert_eq!(v.acknowledged.as_ref(), Some(&v.delivered));

    entry.stream_closed(true, now_ns());
    entry.error("read: connection reset");
    let v = &f.board.containers()[0];
    assert_eq!((v.rotations, v.errors), (1, 1));
    assert!(v.last_rotation_ns.is_some() && v.stream_open_since.is_none());
    assert_eq!(v.last_error.as_deref(), Some("read: connection reset"));
}

/// An entry survives a new capture task (or pipeline generation) with its counters, and
/// goes with `forget` or `retain_containers`; the lag series goes with it.
#[test]
fn entries_outlive_tasks_and_go_with_the_container() {
    let f = fixture();
    let metrics = Metrics::new();
    let cursor = || DeliveredCursor::new(Cursor::at(0));
    let a = f.board.track("id-a", meta("a"), cursor());
    a.delivered(5, 1);
    a.set_state(CaptureState::Detached);
    let again = f.board.track("id-a", meta("a"), cursor());
    assert!(Arc::ptr_eq(&a, &again));
    assert_eq!(f.board.containers()[0].lines, 5);
    assert_eq!(f.board.containers()[0].state, "waiting");
    f.board.track("id-b", meta("b"), cursor());
    f.board.refresh_lag_metric(&metrics);
    assert!(
        metrics
            .render()
            .contains("container_lag_seconds{container_name=\"b\"} 0.0")
    );

    f.board.forget("id-b");
    f.board.refresh_lag_metric(&metrics);
    let text = metrics.render();
    assert!(!text.contains("container_name=\"b\""), "{text}");
    assert!(text.contains("container_name=\"a\""), "{text}");
    f.board.retain_containers(|id| id != "id-a");
    assert!(f.board.containers().is_empty());
}

/// A host file is no container: tracking one leaves the board (and the lag metric) as
/// it was.
#[test]
fn host_files_are_never_listed_as_containers() {
    let f = fixture();
    let metrics = Metrics::new();
    let file = watch::Sender::new(Arc::new(ContainerMeta::for_file(
        "file-1-2".into(),
        "/var/log/syslog".into(),
        "h".into(),
        Vec::new(),
    )))
    .subscribe();
    let entry = f
        .board
        .track("file-1-2", file, DeliveredCursor::new(Cursor::at(0)));
    entry.delivered(3, 1);
    assert!(f.board.containers().is_empty());
    assert!(f.board.container("file-1-2").is_none());
    f.board.refresh_lag_metric(&metrics);
    assert!(!metrics.render().contains("syslog"));
}

/// A stream open longer than twice its rotation interval is overdue.
#[test]
fn a_stream_not_rotated_for_two_intervals_is_overdue() {
    let f = fixture();
    let e = f
        .board
        .track("id-x", meta("x"), DeliveredCursor::new(Cursor::at(0)));
    e.set_rotation_interval(Duration::from_secs(10));
    e.stream_opened(now_ns() - 15_000_000_000);
    assert!(!f.board.containers()[0].rotation_overdue);
    e.stream_opened(now_ns() - 21_000_000_000);
    assert!(f.board.containers()[0].rotation_overdue);
    e.stream_closed(false, now_ns());
    assert!(!f.board.containers()[0].rotation_overdue);
}

/// A sink error is cleared by a success of its kind only; a restarted sink starts afresh.
#[test]
fn sink_errors_and_counts() {
    let board = StatusBoard::new();
    let loki = board.sink("loki", true);
    loki.received(100);
    loki.received(50);
    loki.finished(100);
    loki.failed("send", "connection refused");
    loki.failed("send", "timeout");
    loki.recovered("dead_letter");
    loki.set_buffered(3, 4096);
    let v = &board.sinks()[0];
    assert_eq!((v.in_flight_batches, v.queue_bytes), (1, 50));
    assert!(v.failing);
    assert_eq!(v.failures, 2);
    assert_eq!(v.last_error.as_deref(), Some("timeout"));
    assert_eq!(
        (v.buffered_records, v.buffered_bytes),
        (Some(3), Some(4096))
    );
    loki.recovered("send");
    assert!(!board.sinks()[0].failing);
    assert_eq!(board.sinks()[0].last_error, None);

    let file = board.sink("file", false);
    assert_eq!(board.sinks()[0].name, "file");
    assert_eq!(board.sinks()[0].buffered_records, None);
    file.failed("write", "disk full");
    let again = board.sink("file", false);
    assert!(!again.error.lock().map(|e| e.is_some()).unwrap_or(true));
    board.retain_sinks(&["loki"]);
    assert_eq!(board.sinks().len(), 1);
}

/// The served config carries no secret.
#[test]
fn config_is_redacted() {
    let yaml = "sinks:\n  loki:\n    url: http://u:pw-s3cret-0@127.0.0.1:3100/loki/api/v1/push\n    \
                basic_auth: { username: u, password: pw-s3cret-1 }\n    \
                headers: { X-Api-Key: key-s3cret-3 }\n";
    let config = Config::parse(yaml, "t").expect("valid");
    let board = StatusBoard::new();
    board.set_config(&config);
    let json = board.config_json();
    let text = json.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    let loki = &json["sinks"]["loki"];
    assert_eq!(loki["basic_auth"]["password"], "***");
    assert_eq!(loki["basic_auth"]["username"], "u");
    assert_eq!(loki["bearer_token"], "", "empty: shown empty");
    assert_eq!(loki["headers"]["X-Api-Key"], "***");
    assert_eq!(loki["url"], "http://u:***@127.0.0.1:3100/loki/api/v1/push");
    assert_eq!(json["capture"]["rotation_interval"], "5m");
    assert_eq!(json["pipeline"]["queue_bytes"], 64 * 1024 * 1024);

    let yaml = "sinks:\n  loki:\n    bearer_token: tok-s3cret-2\n";
    board.set_config(&Config::parse(yaml, "t").expect("valid"));
    let json = board.config_json();
    assert!(!json.to_string().contains("s3cret"), "{json}");
    assert_eq!(json["sinks"]["loki"]["bearer_token"], "***");
}
