//! Encoding + compression throughput of the Loki sink: a batch of 2000 lines of ~100 B from
//! 10 containers, as protobuf + snappy and as JSON (+ gzip). Run: `cargo bench --bench loki_encode`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use log_capturer::capture::Cursor;
use log_capturer::config::{LokiEncoding, LokiSinkConfig};
use log_capturer::observability::metrics::Metrics;
use log_capturer::pipeline::{Batch, ContainerMeta, Delivery, LogLine, QueueBudget, StreamKind};
use log_capturer::sinks::loki::Encoder;

const LINES: usize = 2000;

fn deliveries() -> (Vec<Arc<Delivery>>, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let budget = QueueBudget::new(1 << 30, Arc::new(Metrics::new()));
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for c in 0..10 {
        let meta = Arc::new(ContainerMeta::new(
            format!("{c:064x}"),
            format!("web-{c}"),
            "registry.example/shop/web:1.27.3".to_string(),
            Some("shop".to_string()),
            Some("web".to_string()),
        ));
        let lines: Vec<LogLine> = (0..LINES / 10)
            .map(|i| {
                let text = format!(
                    "10.0.{c}.{i} - - [28/Nov/2026:23:49:08 +0000] \"GET /api/v1/items/{i} HTTP/1.1\" 200 {} \"-\"",
                    i * 7
                );
                bytes += text.len() as u64;
                LogLine {
                    ts_ns: 1_795_909_748_000_000_000 + i as i64 * 1000,
                    stream: if i % 10 == 0 { StreamKind::Stderr } else { StreamKind::Stdout },
                    message: Bytes::from(text),
                    truncated: false,
                    extra: None,
                }
            })
            .collect();
        let permit = runtime
            .block_on(budget.acquire(1, lines.len()))
            .expect("permit");
        out.push(Arc::new(Delivery::new(
            Batch {
                container: meta,
                lines,
                position: Cursor::at(0).into(),
            },
            permit,
        )));
    }
    (out, bytes)
}

fn bench(c: &mut Criterion) {
    let (items, bytes) = deliveries();
    let mut group = c.benchmark_group("loki_encode_2000_lines");
    for (name, encoding, gzip) in [
        ("protobuf_snappy", LokiEncoding::Protobuf, false),
        ("json", LokiEncoding::Json, false),
        ("json_gzip", LokiEncoding::Json, true),
    ] {
        let config = LokiSinkConfig {
            encoding,
            gzip,
            host: "bench".to_string(),
            ..LokiSinkConfig::default()
        };
        let encoder = Encoder::new(&config);
        group.throughput(Throughput::Elements(LINES as u64));
        group.bench_function(format!("{name}/lines"), |b| {
            b.iter(|| encoder.encode(&items).map(|(e, _)| e.body.len()))
        });
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("{name}/bytes"), |b| {
            b.iter(|| encoder.encode(&items).map(|(e, _)| e.body.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
