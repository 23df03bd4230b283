use super::*;

/// The string literals that follow `marker` in `text` (e.g. `stream_error("` → the reason).
fn literals_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.match_indices(marker)
        .filter_map(|(i, _)| {
            let rest = text[i + marker.len()..].trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(&rest[..rest.find('"')?])
        })
        .collect()
}

fn source(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Every reason the code counts is in its family's list, so it starts at 0 (a reason
/// added without listing it would appear only after its first failure).
/// A sink removed by a config reload leaves no gauge behind (a "buffer above 80 %" alert
/// would fire for ever); a new worker starts with no held container.
#[test]
fn a_removed_sink_leaves_no_gauges_and_a_new_worker_holds_nothing() {
    let metrics = Metrics::new();
    let loki = SinkLabels { sink: "loki" };
    metrics.buffer_bytes.get_or_create(&loki).set(900);
    metrics.buffer_max_bytes.get_or_create(&loki).set(1000);
    let file = SinkLabels { sink: "file" };
    metrics.sink_containers_held.get_or_create(&file).set(2);
    metrics.file_sink_files_open.set(5);
    metrics.forget_sink_gauges("loki");
    let text = metrics.render();
    assert!(!text.contains("buffer_bytes{sink=\"loki\"}"), "{text}");
    assert!(!text.contains("buffer_max_bytes{sink=\"loki\"}"), "{text}");
    assert!(text.contains("log_capturer_sink_containers_held{sink=\"file\"} 2"));
    metrics.init_sink("file", false);
    let text = metrics.render();
    assert!(
        text.contains("log_capturer_sink_containers_held{sink=\"file\"} 0"),
        "{text}"
    );
    metrics.forget_sink_gauges("file");
    let text = metrics.render();
    assert!(
        !text.contains("sink_containers_held{sink=\"file\"}"),
        "{text}"
    );
    assert!(
        text.contains("log_capturer_file_sink_files_open 0"),
        "{text}"
    );
}

#[test]
fn every_counted_reason_is_listed_and_starts_at_zero() {
    let mut stream = Vec::new();
    for path in [
        "src/capture/task.rs",
        "src/discovery/events.rs",
        "src/discovery/mod.rs",
        "src/discovery/reconcile.rs",
        "src/agent/mod.rs",
        "src/agent/generations.rs",
        "src/agent/pipeline.rs",
        "src/agent/sinks.rs",
    ] {
        let text = source(path);
        stream.extend(
            literals_after(&text, "stream_error(")
                .into_iter()
                .chain(literals_after(&text, "SessionEnd::Error("))
                .chain(literals_after(&text, "=> \"open_"))
                .map(str::to_string),
        );
    }
    assert!(stream.len() >= 10, "too few found: {stream:?}");
    for reason in &stream {
        assert!(
            STREAM_ERROR_REASONS.contains(&reason.as_str()),
            "stream error reason {reason:?} missing from STREAM_ERROR_REASONS"
        );
    }
    let loki: String = [
        "src/sinks/loki/client.rs",
        "src/sinks/loki/worker.rs",
        "src/sinks/loki/worker/send.rs",
        "src/sinks/loki/worker/spill.rs",
        "src/sinks/loki/worker/buffer_replay.rs",
        "src/sinks/loki/worker/dead_letters.rs",
    ]
    .iter()
    .map(|p| source(p))
    .collect();
    let known: Vec<&str> = [
        LOKI_SINK_FAILURE_REASONS,
        DEAD_LETTER_REASONS,
        BUFFER_ERROR_REASONS,
        LINES_MODIFIED_REASONS,
    ]
    .concat();
    let used: Vec<&str> = literals_after(&loki, "reason: ")
        .into_iter()
        .chain(literals_after(&loki, "Self::reason("))
        .chain(literals_after(&loki, "let label = if status == 413 {"))
        .chain(literals_after(&loki, "{ \"413\" } else {"))
        .filter(|r| !r.is_empty())
        .collect();
    assert!(used.len() >= 8, "too few found: {used:?}");
    for reason in used {
        assert!(known.contains(&reason), "Loki reason {reason:?} not listed");
    }
    let kafka: String = [
        "src/sinks/kafka/worker.rs",
        "src/sinks/kafka/worker/reports.rs",
        "src/sinks/kafka/worker/produce.rs",
        "src/sinks/kafka/worker/stores.rs",
    ]
    .iter()
    .map(|p| source(p))
    .collect();
    let kafka_known: Vec<&str> = [
        crate::observability::kafka_metrics::KAFKA_SINK_FAILURE_REASONS,
        crate::observability::kafka_metrics::KAFKA_DEAD_LETTER_REASONS,
        BUFFER_ERROR_REASONS,
    ]
    .concat();
    let used: Vec<&str> = literals_after(&kafka, "self.failed(")
        .into_iter()
        .chain(literals_after(&kafka, "self.sink_failure("))
        .chain(literals_after(&kafka, "Self::reason("))
        .chain(literals_after(&kafka, "label: "))
        .chain(literals_after(&kafka, "buffer_error(m, "))
        .chain(literals_after(&kafka, "kept_dead_letter(id, "))
        .collect();
    assert!(used.len() >= 12, "too few found: {used:?}");
    for reason in used {
        assert!(
            kafka_known.contains(&reason),
            "Kafka reason {reason:?} not listed"
        );
    }
    let writer = source("src/pipeline/writer.rs");
    for reason in literals_after(&writer, "reason: ") {
        assert!(
            LOCAL_SINK_FAILURE_REASONS.contains(&reason),
            "local sink reason {reason:?} not listed"
        );
    }

    let metrics = Metrics::new();
    metrics.init_sink("loki", true);
    metrics.init_sink("file", false);
    metrics.init_sink("kafka", true);
    let text = metrics.render();
    for reason in crate::observability::kafka_metrics::KAFKA_SINK_FAILURE_REASONS {
        for key in [
            format!("log_capturer_sink_failures_total{{sink=\"kafka\",reason=\"{reason}\"}} 0\n"),
            format!("log_capturer_kafka_messages_failed_total{{reason=\"{reason}\"}} 0\n"),
        ] {
            assert!(text.contains(&key), "{key} not in:\n{text}");
        }
    }
    for reason in crate::observability::kafka_metrics::KAFKA_DEAD_LETTER_REASONS {
        let key =
            format!("log_capturer_dead_letters_total{{sink=\"kafka\",reason=\"{reason}\"}} 0\n");
        assert!(text.contains(&key), "{key} not in:\n{text}");
    }
    for family in [
        "log_capturer_kafka_messages_produced_total 0\n",
        "log_capturer_kafka_messages_acknowledged_total 0\n",
        "log_capturer_kafka_messages_retried_total 0\n",
        "log_capturer_kafka_messages_in_flight 0\n",
        "log_capturer_kafka_delivery_seconds_count 0\n",
        "log_capturer_buffer_full_total{sink=\"kafka\"} 0\n",
    ] {
        assert!(text.contains(family), "{family} not in:\n{text}");
    }
    for reason in STREAM_ERROR_REASONS {
        let key = format!("log_capturer_container_stream_errors_total{{reason=\"{reason}\"}} 0\n");
        assert!(text.contains(&key), "{key} not in:\n{text}");
    }
    for (sink, reasons) in [
        ("loki", LOKI_SINK_FAILURE_REASONS),
        ("file", LOCAL_SINK_FAILURE_REASONS),
    ] {
        for reason in reasons {
            let key = format!(
                "log_capturer_sink_failures_total{{sink=\"{sink}\",reason=\"{reason}\"}} 0\n"
            );
            assert!(text.contains(&key), "{key} not in:\n{text}");
        }
    }
    for (family, reasons) in [
        ("log_capturer_dead_letters_total", DEAD_LETTER_REASONS),
        ("log_capturer_buffer_errors_total", BUFFER_ERROR_REASONS),
    ] {
        for reason in reasons {
            let key = format!("{family}{{sink=\"loki\",reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&key), "{key} not in:\n{text}");
        }
    }
    for reason in HTTP_CLOSE_REASONS {
        let key = format!("log_capturer_http_connections_closed_total{{reason=\"{reason}\"}} 0\n");
        assert!(text.contains(&key), "{key} not in:\n{text}");
    }
}
