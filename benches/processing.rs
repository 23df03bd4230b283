//! Processing stages (issue 12), per record: each stage alone on a record shaped for it, and
//! whole pipelines through `Processor::push`. Run: `cargo bench --bench processing`.
//!
//! A stage that does not build (not implemented yet, in a tree where it is still a stub) is
//! skipped with a note on stderr rather than measured.

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use log_capturer::capture::Position;
use log_capturer::config::Config;
use log_capturer::pipeline::{ContainerMeta, LogLine, StreamKind};
use log_capturer::processing::config::StageConfig;
use log_capturer::processing::metrics::StageMetrics;
use log_capturer::processing::{FieldValue, Pipelines, ProcessingMetrics, Stage, StageContext};

const TS: i64 = 1_795_909_748_000_000_000;

fn line(message: &str) -> LogLine {
    LogLine {
        ts_ns: TS,
        stream: StreamKind::Stdout,
        message: Bytes::copy_from_slice(message.as_bytes()),
        truncated: false,
        extra: None,
    }
}

/// A record with these fields already set (as an earlier stage would have left it).
fn with_fields(message: &str, fields: &[(&str, &str)]) -> LogLine {
    let mut l = line(message);
    for (k, v) in fields {
        l.extra_mut()
            .fields
            .set(Arc::from(*k), FieldValue::Str(v.to_string()));
    }
    l
}

fn stage(yaml: &str) -> Result<Stage, String> {
    let config: StageConfig = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
    Stage::build(&config, &StageMetrics::detached("bench", "stage")).map_err(|e| e.message)
}

const JSON_LINE: &str = r#"{"time":"2026-12-01T06:00:00.123456Z","level":"info","service":"api","msg":"GET /api/v1/items/42 200","rt":0.012}"#;
const LOGFMT_LINE: &str = r#"time=2026-12-01T06:00:00.123456Z level=info service=api msg="GET /api/v1/items/42" rt=0.012"#;
const ACCESS_LINE: &str = "GET /api/v1/items/42 200 rt=0.012 ua=curl/8.5.0";
const PLAIN_LINE: &str = "2026-12-01 06:00:00.123 ERROR [worker-3] c.e.Orders - order 42 failed";

/// The container of every bench record (for templates and lookups).
fn meta() -> ContainerMeta {
    ContainerMeta::new(
        "9a92af72cf4cf93e147ea8b3bcc036000a7e46dbaa4bb834a524c6d8cfddf914".to_string(),
        "web-1".to_string(),
        "registry.example/shop/web:1.27.3".to_string(),
        Some("shop".to_string()),
        Some("web".to_string()),
    )
}

fn stages(c: &mut Criterion) {
    let meta = meta();
    let cx = StageContext {
        container: &meta,
        now_ns: TS,
    };
    let cases: Vec<(&str, &str, LogLine)> = vec![
        ("json/all_keys", "json: {}", line(JSON_LINE)),
        (
            "json/3_fields",
            "json: { fields: [level, service, msg] }",
            line(JSON_LINE),
        ),
        ("json/not_json", "json: {}", line(PLAIN_LINE)),
        ("logfmt/all_keys", "logfmt: {}", line(LOGFMT_LINE)),
        (
            "regex/3_captures",
            r"regex: { expression: '^(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) ' }",
            line(ACCESS_LINE),
        ),
        (
            "regex/no_match",
            r"regex: { expression: '^(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) ' }",
            line(PLAIN_LINE),
        ),
        ("level/in_message", "level: {}", line(PLAIN_LINE)),
        (
            "level/from_field",
            "level: { source: level }",
            with_fields(PLAIN_LINE, &[("level", "WARNING")]),
        ),
        (
            "timestamp/rfc3339_field",
            "timestamp: { source: time, format: rfc3339 }",
            with_fields(PLAIN_LINE, &[("time", "2026-12-01T06:00:00.123456Z")]),
        ),
        (
            "drop/no_match",
            "drop: { expression: '^DEBUG ' }",
            line(PLAIN_LINE),
        ),
        (
            "drop/match",
            "drop: { expression: '^DEBUG ' }",
            line("DEBUG cache lookup key=item:42 hit=true shard=3 took=3us"),
        ),
        (
            "fields/add_rename_remove",
            "fields: { add: { env: prod, host: '{container_name}' }, rename: { msg: message_text }, remove: [rt] }",
            with_fields(PLAIN_LINE, &[("msg", "x"), ("rt", "0.012")]),
        ),
        (
            "labels/2_fields",
            "labels: { fields: [level, service] }",
            with_fields(PLAIN_LINE, &[("level", "info"), ("service", "api")]),
        ),
    ];
    let mut group = c.benchmark_group("processing_stage");
    group.throughput(Throughput::Elements(1));
    for (name, yaml, record) in cases {
        let mut built = match stage(yaml) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("processing_stage/{name}: skipped, the stage does not build: {e}");
                continue;
            }
        };
        // The clone (an Arc bump, and the extras' box when the record has fields) is made
        // outside the measured routine.
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || record.clone(),
                |r| built.apply(r, &cx),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// 10-line stack traces (header, exception, 8 frames), pushed line by line.
fn trace_lines() -> Vec<LogLine> {
    (0..10)
        .map(|k| match k {
            0 => line(PLAIN_LINE),
            1 => line("java.lang.IllegalStateException: order 42 has no items"),
            k => line(&format!(
                "\tat com.example.orders.Service.step{k}(Service.java:{})",
                40 + k
            )),
        })
        .collect()
}

fn pipelines(c: &mut Criterion) {
    let meta = meta();
    let cx = StageContext {
        container: &meta,
        now_ns: TS,
    };
    let cases: Vec<(&str, &str, Vec<LogLine>)> = vec![
        (
            "multiline/10_line_traces",
            r"- multiline: { start: '^\d{4}-\d\d-\d\d ' }",
            trace_lines(),
        ),
        (
            "json_level_labels",
            "- json: { fields: [level, service, msg] }\n        - level: { source: level }\n        \
             - labels: { fields: [level, service] }",
            vec![line(JSON_LINE)],
        ),
        (
            "drop_90_percent",
            "- drop: { expression: '^DEBUG ' }",
            (0..10)
                .map(|i| {
                    if i == 9 {
                        line(ACCESS_LINE)
                    } else {
                        line("DEBUG cache lookup key=item:42 hit=true shard=3 took=3us")
                    }
                })
                .collect(),
        ),
    ];
    let mut group = c.benchmark_group("processing_pipeline");
    for (name, stages, input) in cases {
        let yaml = format!(
            "processing:\n  pipelines:\n    - name: bench\n      stages:\n        {stages}\n"
        );
        let processor = Config::parse(&yaml, "bench")
            .map_err(|e| e.to_string())
            .and_then(|config| Pipelines::compile(&config.processing).map_err(|e| e.to_string()))
            .and_then(|p| {
                p.processor_named("bench", &ProcessingMetrics::default())
                    .map(|r| r.map_err(|e| e.to_string()))
                    .unwrap_or_else(|| Err("no pipeline".into()))
            });
        let mut processor = match processor {
            Ok(p) => p,
            Err(e) => {
                eprintln!("processing_pipeline/{name}: skipped, the pipeline does not build: {e}");
                continue;
            }
        };
        group.throughput(Throughput::Elements(input.len() as u64));
        let mut out = Vec::with_capacity(16);
        group.bench_function(name, |b| {
            b.iter(|| {
                for l in &input {
                    processor.push(l.clone(), Position::default(), &cx, &mut out);
                }
                let n = out.len();
                out.clear();
                processor.take_finished();
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, stages, pipelines);
criterion_main!(benches);
