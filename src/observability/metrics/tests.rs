use super::*;

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

/// Every reason of every failure family starts at 0 (an alert on a reason must not wait for
/// its first failure). The code can only count a reason its family's enum lists
/// (`observability::reasons`: the call sites take the enums), so the lists are complete.
#[test]
fn every_reason_starts_at_zero() {
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
