//! What the stage tests share: a container, records, counters.

use bytes::Bytes;
use std::sync::Arc;

use crate::pipeline::{ContainerMeta, LogLine, StreamKind};
use crate::processing::metrics::{ProcessingMetrics, StageEventLabels};
use crate::processing::record::FieldValue;
use crate::processing::stage::StageContext;

/// Container `web-1` (id `c0ffee`, image `nginx:1`, compose `shop`/`web`) with the copied
/// labels `com.example.tenant=acme` and `team=payments`.
pub fn meta() -> ContainerMeta {
    ContainerMeta::new(
        "c0ffee".into(),
        "web-1".into(),
        "nginx:1".into(),
        Some("shop".into()),
        Some("web".into()),
    )
    .with_label_fields(vec![
        ("com.example.tenant".into(), "acme".into()),
        ("team".into(), "payments".into()),
    ])
}

pub fn cx(meta: &ContainerMeta, now_ns: i64) -> StageContext<'_> {
    StageContext {
        container: meta,
        now_ns,
    }
}

/// A stdout record with these (text) fields.
pub fn line(message: &[u8], fields: &[(&str, &str)]) -> LogLine {
    let mut l = LogLine {
        ts_ns: 1,
        stream: StreamKind::Stdout,
        message: Bytes::copy_from_slice(message),
        truncated: false,
        extra: None,
    };
    for (k, v) in fields {
        l.extra_mut()
            .fields
            .set(Arc::from(*k), FieldValue::Str(v.to_string()));
    }
    l
}

/// The count of a stage event of pipeline `p`.
pub fn event(metrics: &ProcessingMetrics, stage: &str, event: &'static str) -> u64 {
    metrics
        .events
        .get_or_create(&StageEventLabels {
            pipeline: Arc::from("p"),
            stage: Arc::from(stage),
            event,
        })
        .get()
}
