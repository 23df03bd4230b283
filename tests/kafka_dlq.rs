//! `log-capturer dlq … --sink kafka` through the real binary against the librdkafka mock
//! cluster: dead letters written as the Kafka sink writes them are listed, shown, replayed
//! (delivered ones consumed back, refused ones kept with the new reason, an unreachable
//! cluster stops the replay with nothing lost) and purged; `--sink` picks the sink.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use log_capturer::buffer::SharedStore;
use log_capturer::config::Config;
use log_capturer::sinks::kafka::store::encode_record;
use log_capturer::sinks::kafka::{self, Message};
use log_capturer_testkit::kafka::{Consumed, KafkaMock, consume_all};

const BIN: &str = env!("CARGO_BIN_EXE_log-capturer");

fn config(dir: &Path, brokers: &str, loki_too: bool) -> PathBuf {
    let path = dir.join("config.yaml");
    let loki = if loki_too {
        "  loki:\n    url: http://127.0.0.1:9/loki/api/v1/push\n"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "sinks:\n  kafka:\n    brokers: [\"{brokers}\"]\n    topic: t\n    \
             message_max_bytes: 1KiB\n    timeout: 2s\n{loki}\
             checkpoint:\n  state_dir: {}\nhttp:\n  listen: \"\"\n",
            dir.join("state").display()
        ),
    )
    .expect("write config");
    path
}

/// `dlq -c CONFIG ARGS…`: (success, stdout, stderr).
fn dlq(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("dlq")
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("LOG_CAPTURER_STATE_DIR")
        .output()
        .expect("run log-capturer dlq");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn message(key: Option<&str>, value: &str) -> Message {
    Message {
        topic: Arc::from("t"),
        key: key.map(|k| Arc::from(k.as_bytes())),
        value: value.as_bytes().to_vec(),
    }
}

/// The Kafka sink's dead-letter store (`<state_dir>/dlq/kafka`), opened as the sink opens it.
fn open_dlq(config: &Path) -> SharedStore {
    let c = Config::load(config).expect("config");
    let k = c.sinks.kafka.as_ref().expect("kafka");
    let dir = kafka::dlq_dir(&c.checkpoint.state_dir);
    let (store, _) = SharedStore::open(&dir, kafka::dlq_options(k)).expect("open dlq");
    store
}

/// Appends dead letters to `<state_dir>/dlq/kafka` as the sink does.
fn write_dead_letters(config: &Path, records: &[(&str, Vec<Message>)]) {
    let store = open_dlq(config);
    for (reason, messages) in records {
        store
            .lock()
            .append(&encode_record(Some(reason.to_string()), messages))
            .expect("append");
    }
}

/// The id of the first dead letter of a `dlq list`.
fn first_id(list: &str) -> String {
    list.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("an id")
        .to_string()
}

/// What topic `t` holds: up to `want` messages, as `consume_all` reads them.
fn consume_t(mock: &KafkaMock, want: usize) -> Vec<Consumed> {
    consume_all(
        mock.bootstrap_servers(),
        "t",
        want,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .expect("consume")
}

fn record_count(list: &str) -> usize {
    list.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn kafka_dead_letters_are_listed_shown_replayed_and_purged() {
    let mock = KafkaMock::start(1);
    mock.create_topic("t", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), mock.bootstrap_servers(), false);
    let big = "x".repeat(2000);
    write_dead_letters(
        &config,
        &[
            (
                "broker: InvalidRecord",
                vec![
                    message(Some("c1"), "{\"message\":\"one\"}"),
                    message(Some("c1"), "{\"message\":\"two\"}"),
                    message(None, "three"),
                ],
            ),
            (
                "message of 2000 bytes is over message_max_bytes (1024)",
                vec![message(Some("c2"), &big), message(Some("c2"), "four")],
            ),
        ],
    );

    let (ok, out, err) = dlq(&config, &["list"]);
    assert!(ok, "{err}");
    assert_eq!(record_count(&out), 2, "{out}");
    assert!(out.starts_with("id") && out.contains("messages"), "{out}");
    assert!(out.contains("broker: InvalidRecord"), "{out}");
    let first = first_id(&out);

    let (ok, out, err) = dlq(&config, &["show", &first]);
    assert!(ok, "{err}");
    assert!(out.contains("reason:   broker: InvalidRecord"), "{out}");
    assert!(out.contains("messages: 3"), "{out}");
    assert!(
        out.contains("topic=t key=\"c1\" {\"message\":\"one\"}\n"),
        "{out}"
    );
    assert!(out.contains("topic=t key=- three\n"), "{out}");

    // The cluster is down: the replay stops, nothing is lost.
    mock.down(-1);
    let (ok, out, err) = dlq(&config, &["replay"]);
    assert!(!ok, "replay against a down cluster succeeded: {out}");
    assert!(err.contains("Kafka is not accepting"), "{err}");
    assert!(out.contains("stopped"), "{out}");
    let (_, out, _) = dlq(&config, &["list"]);
    assert_eq!(record_count(&out), 2, "{out}");
    mock.up(-1);

    let (ok, out, err) = dlq(&config, &["replay"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("replayed 4 messages, refused again 1 (kept)"),
        "{out}"
    );
    let got = consume_t(&mock, 4);
    let mut values: Vec<(Option<String>, String)> = got
        .iter()
        .map(|c| {
            (
                c.key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(&c.value).into_owned(),
            )
        })
        .collect();
    // In order within a key (one partition); sorted across partitions for the comparison.
    let c1: Vec<&str> = (values.iter())
        .filter(|(k, _)| k.as_deref() == Some("c1"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(c1, ["{\"message\":\"one\"}", "{\"message\":\"two\"}"]);
    values.sort();
    assert_eq!(
        values,
        [
            (None, "three".to_string()),
            (Some("c1".into()), "{\"message\":\"one\"}".into()),
            (Some("c1".into()), "{\"message\":\"two\"}".into()),
            (Some("c2".into()), "four".into()),
        ]
    );

    // The too-large message stays, alone, with the reason of this replay.
    let (_, out, _) = dlq(&config, &["list"]);
    assert_eq!(record_count(&out), 1, "{out}");
    assert!(out.contains("over message_max_bytes (1024)"), "{out}");
    let id = first_id(&out);
    let (_, shown, _) = dlq(&config, &["show", &id]);
    assert!(
        shown.contains("messages: 1") && shown.contains(&big),
        "{shown}"
    );

    let (ok, out, err) = dlq(&config, &["purge"]);
    assert!(ok, "{err}");
    assert_eq!(out, "purged 1 dead letters\n");
    let (_, out, _) = dlq(&config, &["list"]);
    assert_eq!(out, "no dead letters\n");
}

/// An unreadable record does not stop the replay: it is skipped with a warning, counted and
/// kept; the records around it are delivered.
#[test]
fn an_unreadable_dead_letter_is_skipped_and_kept() {
    let mock = KafkaMock::start(1);
    mock.create_topic("t", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), mock.bootstrap_servers(), false);
    write_dead_letters(&config, &[("r1", vec![message(Some("a"), "one")])]);
    open_dlq(&config)
        .lock()
        .append(b"not a record")
        .expect("append");
    write_dead_letters(&config, &[("r2", vec![message(Some("a"), "two")])]);

    let (ok, out, err) = dlq(&config, &["replay"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("replayed 2 messages, refused again 0 (kept), skipped 1 unreadable"),
        "{out}"
    );
    assert!(err.contains("is unreadable"), "{err}");
    let got = consume_t(&mock, 2);
    let values: Vec<&[u8]> = got.iter().map(|c| c.value.as_slice()).collect();
    assert_eq!(values, [b"one".as_slice(), b"two".as_slice()]);
    let (_, out, _) = dlq(&config, &["list"]);
    assert_eq!(record_count(&out), 1, "{out}");
    assert!(out.contains("unreadable record"), "{out}");
}

/// With both network sinks configured, `--sink` is required; it picks the store.
#[test]
fn sink_option_chooses_between_loki_and_kafka() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), "127.0.0.1:9", true);
    write_dead_letters(&config, &[("refused", vec![message(Some("k"), "v")])]);
    let (ok, _, err) = dlq(&config, &["list"]);
    assert!(!ok);
    assert!(
        err.contains("sinks.loki and sinks.kafka") && err.contains("--sink loki or --sink kafka"),
        "{err}"
    );
    let (ok, out, err) = dlq(&config, &["list", "--sink", "kafka"]);
    assert!(ok, "{err}");
    assert_eq!(record_count(&out), 1, "{out}");
    let (ok, out, err) = dlq(&config, &["--sink", "loki", "list"]);
    assert!(ok, "{err}");
    assert_eq!(out, "no dead letters\n");

    // Only Kafka configured: it is the default; --sink loki says there is no Loki sink.
    let kafka_only = tempfile::tempdir().expect("tempdir");
    let config = self::config(kafka_only.path(), "127.0.0.1:9", false);
    write_dead_letters(&config, &[("refused", vec![message(None, "v")])]);
    let (ok, out, err) = dlq(&config, &["list"]);
    assert!(ok, "{err}");
    assert_eq!(record_count(&out), 1, "{out}");
    let (ok, _, err) = dlq(&config, &["list", "--sink", "loki"]);
    assert!(!ok && err.contains("no sinks.loki"), "{err}");
}
