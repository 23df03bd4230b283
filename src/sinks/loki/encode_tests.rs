//! The encoder's tests; host-file records are in `encode_file_tests.rs`.

use super::*;
use crate::capture::Cursor;
use crate::config::MAX_LABEL_VALUE;
use crate::observability::metrics::Metrics;
use crate::pipeline::{Batch, ContainerMeta, QueueBudget};
use bytes::Bytes;

fn meta(name: &str) -> Arc<ContainerMeta> {
    Arc::new(ContainerMeta::new(
        format!("{name}-id"),
        name.to_string(),
        "img:1".to_string(),
        Some("shop".to_string()),
        None,
    ))
}

pub(super) fn line(ts: i64, text: &str, stream: StreamKind) -> LogLine {
    LogLine {
        ts_ns: ts,
        stream,
        message: Bytes::from(text.to_string()),
        truncated: false,
        extra: None,
    }
}

async fn delivery(meta: Arc<ContainerMeta>, lines: Vec<LogLine>) -> Arc<Delivery> {
    delivery_at(meta, lines, Cursor::at(0).into()).await
}

/// Also used by `file_tests`.
pub(super) async fn delivery_at(
    meta: Arc<ContainerMeta>,
    lines: Vec<LogLine>,
    position: crate::pipeline::AckPosition,
) -> Arc<Delivery> {
    let budget = QueueBudget::new(1 << 20, Arc::new(Metrics::new()));
    let permit = budget.acquire(1, 1).await.expect("permit");
    Arc::new(Delivery::new(
        Batch {
            container: meta,
            lines,
            position,
        },
        permit,
    ))
}

fn config() -> LokiSinkConfig {
    LokiSinkConfig {
        host: "h1".to_string(),
        ..LokiSinkConfig::default()
    }
}

#[tokio::test]
async fn groups_by_labels_sorts_and_adds_metadata() {
    let enc = Encoder::new(&config());
    let d1 = delivery(
        meta("web"),
        vec![
            line(30, "c", StreamKind::Stdout),
            line(10, "a", StreamKind::Stdout),
            line(20, "err", StreamKind::Stderr),
        ],
    )
    .await;
    let (req, _) = enc.build(&[d1]);
    assert_eq!(req.streams.len(), 2);
    let out = &req.streams[0];
    assert_eq!(
        out.labels,
        r#"{compose_project="shop", container_name="web", host="h1", stream="stdout"}"#
    );
    let lines: Vec<&str> = out.entries.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(lines, ["a", "c"], "timestamp order within a stream");
    let md: Vec<(&str, &str)> = out.entries[0]
        .structured_metadata
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(md, [("container_id", "web-id"), ("image", "img:1")]);
}

#[tokio::test]
async fn truncates_or_splits_long_lines() {
    let long = "é".repeat(1000); // 2000 bytes
    let mut c = config();
    c.max_line_bytes = crate::config::ByteSize(1024);
    let enc = Encoder::new(&c);
    let (req, m) =
        enc.build(&[delivery(meta("w"), vec![line(1, &long, StreamKind::Stdout)]).await]);
    assert_eq!(req.streams[0].entries.len(), 1);
    assert_eq!(req.streams[0].entries[0].line.len(), 1024);
    assert_eq!(m.truncated, 1);
    c.line_overflow = LineOverflow::Split;
    let enc = Encoder::new(&c);
    let (req, m) =
        enc.build(&[delivery(meta("w"), vec![line(1, &long, StreamKind::Stdout)]).await]);
    let joined: String = req.streams[0]
        .entries
        .iter()
        .map(|e| e.line.as_str())
        .collect();
    assert_eq!(joined, long);
    assert_eq!(req.streams[0].entries.len(), 2);
    assert_eq!(m.split, 1);
}

/// Slices cut a delivery between entries, even inside a split line; the sizes the worker
/// batches with are those of the entries built.
#[tokio::test]
async fn slices_cut_between_entries_of_a_split_line() {
    let mut c = config();
    c.max_line_bytes = crate::config::ByteSize(1024);
    c.line_overflow = LineOverflow::Split;
    let enc = Encoder::new(&c);
    let long = "x".repeat(2500); // 3 entries: 1024 + 1024 + 452
    let d = delivery(
        meta("w"),
        vec![
            line(1, "a", StreamKind::Stdout),
            line(2, &long, StreamKind::Stdout),
            line(3, "b", StreamKind::Stdout),
        ],
    )
    .await;
    let mut sizes = Vec::new();
    for l in &d.batch.lines {
        enc.entry_sizes(l, |n| sizes.push(n));
    }
    assert_eq!(sizes, [1, 1024, 1024, 452, 1]);
    let lines = |slice: Slice<'_>| {
        let (req, m) = enc.build_slices(&[slice]);
        let lines: Vec<usize> = req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.len())
            .collect();
        (lines, m.split)
    };
    let first = Slice {
        delivery: &d,
        line: 0,
        piece: 0,
        entries: 2,
        tenant: None,
    };
    let second = Slice {
        delivery: &d,
        line: 1,
        piece: 1,
        entries: 3,
        tenant: None,
    };
    assert_eq!(lines(first), (vec![1, 1024], 1));
    assert_eq!(lines(second), (vec![1024, 452, 1], 0), "split counted once");
}

#[tokio::test]
async fn protobuf_body_round_trips() {
    let enc = Encoder::new(&config());
    let d = delivery(
        meta("w"),
        vec![line(
            1_700_000_000_123_456_789,
            "hi \"there\"",
            StreamKind::Stdout,
        )],
    )
    .await;
    let (batch, _) = enc.encode(&[d]).expect("encode");
    assert_eq!(batch.content_type, "application/x-protobuf");
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&batch.body)
        .expect("snappy block");
    let req: PushRequest = prost::Message::decode(raw.as_slice()).expect("protobuf");
    let e = &req.streams[0].entries[0];
    assert_eq!(e.line, "hi \"there\"");
    assert_eq!(
        e.timestamp.map(|t| t.to_nanos()),
        Some(1_700_000_000_123_456_789)
    );
}

fn md(e: &EntryAdapter) -> Vec<(&str, &str)> {
    e.structured_metadata
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect()
}

/// Record labels join (and override) the configured ones, record metadata and the level
/// go to structured metadata, the event time is the entry's time, the line is the message.
#[tokio::test]
async fn records_bring_labels_metadata_level_and_event_time() {
    let mut c = config();
    c.labels = vec!["container_name".into(), "team".into()];
    let enc = Encoder::new(&c);
    let m = Arc::new(
        (*meta("web"))
            .clone()
            .with_label_fields(vec![("team".into(), "pay".into())]),
    );
    let plain = line(10, "plain", StreamKind::Stdout);
    let mut rich = line(20, "rich", StreamKind::Stdout);
    let e = rich.extra_mut();
    e.labels = vec![("app".into(), "shop".into()), ("team".into(), "ops".into())];
    e.metadata = vec![
        ("trace_id".into(), "t1".into()),
        ("image".into(), "x".into()),
    ];
    e.level = Some(crate::processing::Level::Error);
    e.event_ns = Some(5);
    let (req, _) = enc.build(&[delivery(m, vec![plain, rich]).await]);
    assert_eq!(req.streams.len(), 2);
    assert_eq!(
        req.streams[0].labels,
        r#"{container_name="web", team="pay"}"#
    );
    assert_eq!(
        md(&req.streams[0].entries[0]),
        [("container_id", "web-id"), ("image", "img:1")]
    );
    let s = &req.streams[1];
    assert_eq!(
        s.labels,
        r#"{app="shop", container_name="web", team="ops"}"#
    );
    let entry = &s.entries[0];
    assert_eq!(entry.line, "rich");
    assert_eq!(entry.timestamp.map(|t| t.to_nanos()), Some(5));
    assert_eq!(
        md(entry),
        [
            ("container_id", "web-id"),
            ("image", "x"),
            ("trace_id", "t1"),
            ("level", "error")
        ]
    );
}

/// A level that is a stream label is not repeated as metadata; a configured name finds
/// record fields; records of the same labels share a stream; bad record labels are left
/// out and counted; long values are cut and counted.
#[tokio::test]
async fn level_label_fields_and_limits() {
    let mut c = config();
    c.labels = vec!["level".into(), "app".into()];
    c.structured_metadata = vec!["user".into()];
    let enc = Encoder::new(&c);
    let mk = |ts: i64, app: &str| {
        let mut l = line(ts, "x", StreamKind::Stdout);
        let e = l.extra_mut();
        e.level = Some(crate::processing::Level::Warn);
        e.fields
            .set("app".into(), crate::processing::FieldValue::Str(app.into()));
        e.fields.set(
            "user".into(),
            crate::processing::FieldValue::Str("ann".into()),
        );
        l
    };
    let mut bad = mk(3, "a");
    bad.extra_mut().labels = vec![("bad-name".into(), "v".into())];
    let long = mk(4, &"y".repeat(MAX_LABEL_VALUE + 10));
    let lines = vec![mk(1, "a"), mk(2, "b"), bad, long];
    let (req, modified) = enc.build(&[delivery(meta("w"), lines).await]);
    let labels: Vec<&str> = req.streams.iter().map(|s| s.labels.as_str()).collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert_eq!(labels[0], r#"{app="a", level="warn"}"#);
    assert_eq!(labels[1], r#"{app="b", level="warn"}"#);
    assert_eq!(req.streams[0].entries.len(), 2, "same labels, one stream");
    assert_eq!(md(&req.streams[0].entries[0]), [("user", "ann")]);
    assert_eq!(modified.labels_invalid, 1);
    assert_eq!(modified.label_values_cut, 1);
}

/// A push carries one tenant: a slice takes only its tenant's lines.
#[tokio::test]
async fn slices_take_only_their_tenant() {
    let enc = Encoder::new(&config());
    let tenant = |ts: i64, t: Option<&str>| {
        let mut l = line(ts, &format!("l{ts}"), StreamKind::Stdout);
        if let Some(t) = t {
            l.extra_mut().tenant = Some(t.into());
        }
        l
    };
    let d = delivery(
        meta("w"),
        vec![
            tenant(1, Some("a")),
            tenant(2, None),
            tenant(3, Some("a")),
            tenant(4, Some("")),
        ],
    )
    .await;
    let lines = |slice: Slice<'_>| -> Vec<String> {
        let (req, _) = enc.build_slices(&[slice]);
        req.streams
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| e.line.clone()))
            .collect()
    };
    assert_eq!(
        lines(Slice::whole(&d)),
        ["l2", "l4"],
        "empty tenant: the sink's"
    );
    let a = Slice {
        tenant: Some("a"),
        ..Slice::whole(&d)
    };
    assert_eq!(lines(a), ["l1", "l3"]);
    let from_second = Slice {
        line: 2,
        entries: 1,
        ..a
    };
    assert_eq!(lines(from_second), ["l3"]);
}

#[test]
fn label_strings_round_trip() {
    let pairs = vec![
        ("a".to_string(), "x\"y\\z\nw".to_string()),
        ("b".to_string(), "plain".to_string()),
    ];
    let s = Encoder::label_string(&pairs);
    assert_eq!(parse_label_string(&s), pairs);
}

/// A configured label `level` and records with a `level` *field* (a json stage, no level
/// stage): each record gets its own value, not the first record's cached label set.
#[tokio::test]
async fn a_level_field_label_is_per_record() {
    let mut c = config();
    c.labels = vec!["level".into()];
    let enc = Encoder::new(&c);
    let mk = |ts: i64, lvl: &str| {
        let mut l = line(ts, "x", StreamKind::Stdout);
        l.extra_mut().fields.set(
            "level".into(),
            crate::processing::FieldValue::Str(lvl.into()),
        );
        l
    };
    let (req, _) = enc.build(&[delivery(meta("w"), vec![mk(1, "info"), mk(2, "error")]).await]);
    let labels: Vec<&str> = req.streams.iter().map(|s| s.labels.as_str()).collect();
    assert_eq!(labels, [r#"{level="info"}"#, r#"{level="error"}"#]);
}
