//! Stream labels and metadata of host-file records (`ContainerMeta::for_file`).

use std::sync::Arc;

use super::*;
use crate::checkpoint::{FileId, FilePosition, Fingerprint};
use crate::config::MAX_LABEL_VALUE;
use crate::pipeline::{AckPosition, ContainerMeta};
use crate::processing::FieldValue;

fn file(path: &str, fields: &[(&str, &str)]) -> Arc<ContainerMeta> {
    Arc::new(ContainerMeta::for_file(
        "file-2049-131".into(),
        path.into(),
        "node-7".into(),
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}

fn line(ts: i64, text: &str) -> LogLine {
    super::tests::line(ts, text, StreamKind::Stdout)
}

async fn delivery(meta: Arc<ContainerMeta>, lines: Vec<LogLine>) -> Arc<Delivery> {
    let position = AckPosition::File(FilePosition {
        path: meta.name.clone(),
        id: FileId {
            dev: 2049,
            ino: 131,
        },
        fingerprint: Fingerprint::default(),
        offset: 10,
    });
    super::tests::delivery_at(meta, lines, position).await
}

fn config(tweak: impl FnOnce(&mut LokiSinkConfig)) -> LokiSinkConfig {
    let mut c = LokiSinkConfig {
        host: "h1".to_string(),
        ..LokiSinkConfig::default()
    };
    tweak(&mut c);
    c
}

/// The label strings of the streams built for these deliveries, in stream order.
fn labels_of(enc: &Encoder, deliveries: &[Arc<Delivery>]) -> Vec<String> {
    let (req, _) = enc.build(deliveries);
    req.streams.into_iter().map(|s| s.labels).collect()
}

/// With the default labels, a file's stream is `{filename, host}`: the container labels
/// and `stream` resolve to nothing, the path goes in Promtail's `filename`; each file is its
/// own stream, and a container's stream is unchanged beside them.
#[tokio::test]
async fn default_labels_give_filename_and_host() {
    let enc = Encoder::new(&config(|_| {}));
    let syslog = delivery(file("/var/log/syslog", &[]), vec![line(1, "a")]).await;
    let kern = delivery(file("/var/log/kern.log", &[]), vec![line(2, "b")]).await;
    let container = Arc::new(ContainerMeta::new(
        "c-id".into(),
        "web".into(),
        "img".into(),
        None,
        None,
    ));
    let web = delivery(container, vec![line(3, "c")]).await;
    assert_eq!(
        labels_of(&enc, &[syslog, kern, web]),
        [
            r#"{filename="/var/log/syslog", host="h1"}"#,
            r#"{filename="/var/log/kern.log", host="h1"}"#,
            r#"{container_name="web", host="h1", stream="stdout"}"#,
        ]
    );
}

/// `labels: [file]` sends the path as `file` (and no `filename`); `labels: [filename]` as
/// `filename`; a `static_labels.filename` stands in for it. Without any of them, even a sink
/// whose labels all resolve to nothing for a file gives its stream a label.
#[tokio::test]
async fn the_operator_chooses_the_path_label() {
    let d = delivery(file("/var/log/syslog", &[]), vec![line(1, "a")]).await;
    let with = |labels: &[&str], statics: &[(&str, &str)]| {
        Encoder::new(&config(|c| {
            c.labels = labels.iter().map(|s| s.to_string()).collect();
            c.static_labels = statics
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }))
    };
    let d = std::slice::from_ref(&d);
    assert_eq!(
        labels_of(&with(&["file", "stream"], &[]), d),
        [r#"{file="/var/log/syslog"}"#]
    );
    assert_eq!(
        labels_of(&with(&["filename"], &[]), d),
        [r#"{filename="/var/log/syslog"}"#]
    );
    assert_eq!(
        labels_of(&with(&["container_name"], &[("filename", "fixed")]), d),
        [r#"{filename="fixed"}"#]
    );
    assert_eq!(
        labels_of(&with(&["container_name", "compose_project"], &[]), d),
        [r#"{filename="/var/log/syslog"}"#]
    );
}

/// Group fields named in `labels` are labels like copied container labels; a record field
/// replaces a group field of its name, and a record field `filename` the path.
#[tokio::test]
async fn group_fields_are_labels_and_record_fields_win() {
    let enc = Encoder::new(&config(|c| c.labels.push("job".into())));
    let meta = file("/var/log/syslog", &[("job", "syslog"), ("env", "prod")]);
    let mut renamed = line(2, "b");
    renamed
        .extra_mut()
        .fields
        .set("job".into(), FieldValue::Str("cron".into()));
    let mut moved = line(3, "c");
    moved
        .extra_mut()
        .fields
        .set("filename".into(), FieldValue::Str("syslog".into()));
    let d = delivery(meta, vec![line(1, "a"), renamed, moved]).await;
    assert_eq!(
        labels_of(&enc, &[d]),
        [
            r#"{filename="/var/log/syslog", host="h1", job="syslog"}"#,
            r#"{filename="/var/log/syslog", host="h1", job="cron"}"#,
            r#"{filename="syslog", host="h1", job="syslog"}"#,
        ]
    );
}

/// Structured metadata may name `file`; the container fields (`container_id`, `image` by
/// default) give nothing for a file; the entry's time is the event time a stage set.
#[tokio::test]
async fn metadata_and_time_of_a_file_record() {
    let enc = Encoder::new(&config(|c| c.structured_metadata.push("file".into())));
    let mut l = line(5, "hello");
    l.extra_mut().event_ns = Some(1_700_000_000_000_000_000);
    let d = delivery(file("/var/log/app.log", &[]), vec![l]).await;
    let (req, _) = enc.build(&[d]);
    let e = &req.streams[0].entries[0];
    let md: Vec<(&str, &str)> = e
        .structured_metadata
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(md, [("file", "/var/log/app.log")]);
    assert_eq!(e.line, "hello");
    assert_eq!(
        e.timestamp.map(|t| t.to_nanos()),
        Some(1_700_000_000_000_000_000)
    );
}

/// A path longer than Loki's label value limit is cut (and counted), never refused.
#[tokio::test]
async fn a_very_long_path_is_cut_to_the_label_limit() {
    let enc = Encoder::new(&config(|_| {}));
    let path = format!("/var/log/{}", "d/".repeat(1500));
    let d = delivery(file(&path, &[]), vec![line(1, "a")]).await;
    let (req, modified) = enc.build(&[d]);
    let labels = parse_label_string(&req.streams[0].labels);
    let value = &labels
        .iter()
        .find(|(k, _)| k == "filename")
        .expect("filename")
        .1;
    assert_eq!(value.len(), MAX_LABEL_VALUE);
    assert!(path.starts_with(value.as_str()));
    assert_eq!(modified.label_values_cut, 1);
}
