//! The capture hot path, per line: multiplexed frame decode → timestamp parse → line/record
//! build (with the resume filter and cursor, and the copy into one per-batch buffer) → NDJSON
//! encode. Run: `cargo bench --bench hot_path`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use log_capturer::capture::{Assembler, Cursor, Decoder, Message, ResumeFilter, compact};
use log_capturer::docker::timestamp::format_rfc3339_nanos;
use log_capturer::pipeline::{ContainerMeta, LogLine};
use log_capturer::sinks::ndjson::encode_line;

const LINES: usize = 10_000;

/// 10 000 frames of ~100-byte lines (stdout, every 10th stderr), cut into 64 KiB reads.
fn stream(line_len: usize) -> Vec<Bytes> {
    let mut all = Vec::new();
    for i in 0..LINES {
        let ts = format_rfc3339_nanos(1_795_909_748_000_000_000 + i as i64 * 1000);
        let mut text = format!("{ts} GET /api/v1/items/{i} 200 ");
        while text.len() < 31 + line_len - 1 {
            text.push('x');
        }
        text.push('\n');
        let kind = if i % 10 == 0 { 2u8 } else { 1u8 };
        all.extend_from_slice(&[kind, 0, 0, 0]);
        all.extend_from_slice(&(text.len() as u32).to_be_bytes());
        all.extend_from_slice(text.as_bytes());
    }
    all.chunks(64 * 1024).map(Bytes::copy_from_slice).collect()
}

fn run(chunks: &[Bytes], meta: &ContainerMeta, out: &mut Vec<u8>) -> usize {
    let mut decoder = Decoder::new(false);
    let mut assembler = Assembler::new(256 * 1024);
    let mut replay = ResumeFilter::new(Cursor::at(0));
    let mut lines: Vec<LogLine> = Vec::with_capacity(1024);
    let mut n = 0;
    out.clear();
    for chunk in chunks {
        decoder.push(chunk.clone());
        while let Ok(Some(Message::Log { stream, payload })) = decoder.next_message() {
            assembler.push(stream, payload, &mut lines);
        }
        replay.filter(&mut lines);
        // As capture does before handing a batch over: the messages in one right-sized buffer.
        compact(&mut lines);
        for line in lines.drain(..) {
            encode_line(out, meta, &line);
            n += 1;
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let meta = ContainerMeta::new(
        "9a92af72cf4cf93e147ea8b3bcc036000a7e46dbaa4bb834a524c6d8cfddf914".to_string(),
        "web-1".to_string(),
        "registry.example/shop/web:1.27.3".to_string(),
        Some("shop".to_string()),
        Some("web".to_string()),
    );
    let meta = Arc::new(meta);
    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Elements(LINES as u64));
    for len in [100usize, 1024] {
        let chunks = stream(len);
        let mut out = Vec::with_capacity(LINES * (len + 300));
        assert_eq!(run(&chunks, &meta, &mut out), LINES);
        group.bench_function(format!("decode_parse_build_encode/{len}B_lines"), |b| {
            b.iter(|| run(&chunks, &meta, &mut out))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
