//! Shared helpers of the stage tests, and config-level tests: what `Pipelines::compile`
//! (through `Config::parse`) says about the parse stages' settings.

use crate::pipeline::{ContainerMeta, LogLine, StreamKind};
use crate::processing::stage::{StageContext, Verdict};

/// Docker's timestamp of [`line`]'s records: 2026-11-28T23:49:08Z.
pub(crate) const TS_NS: i64 = 1_795_909_748_000_000_000;

pub(crate) fn line(message: &str) -> LogLine {
    LogLine {
        ts_ns: TS_NS,
        stream: StreamKind::Stdout,
        message: bytes::Bytes::copy_from_slice(message.as_bytes()),
        truncated: false,
        extra: None,
    }
}

/// A container (with the label field `team=pay`) and a wall clock.
pub(crate) fn cx_meta() -> (ContainerMeta, i64) {
    let meta = ContainerMeta::new(
        "0123456789ab".into(),
        "web-1".into(),
        "nginx:1".into(),
        None,
        None,
    )
    .with_label_fields(vec![("team".into(), "pay".into())]);
    (meta, TS_NS + 1_000_000_000)
}

/// One stage over one line (asserting it passes).
pub(crate) fn run(
    apply: impl FnOnce(&mut LogLine, &StageContext<'_>) -> Verdict,
    mut line: LogLine,
) -> LogLine {
    let (meta, now_ns) = cx_meta();
    let cx = StageContext {
        container: &meta,
        now_ns,
    };
    assert_eq!(apply(&mut line, &cx), Verdict::Pass);
    line
}
