//! What came out of a [`super::Rig`]'s run: metric samples, the topic read back, and the
//! exactly-once check of what was consumed against what was sent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use log_capturer_testkit::kafka::{Consumed, KafkaMock, consume_all};

use super::{TOPIC, line, text};

/// The sum of the samples of `name` in an exposition whose labels include every `labels` pair.
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for l in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// Reads the topic back (on a blocking thread): stops after `want` messages, or 10 s without
/// a new one (librdkafka's reconnect back-off after an outage reaches 10 s), or `deadline`.
pub async fn consume(mock: &KafkaMock, want: usize, deadline: Duration) -> Vec<Consumed> {
    let bootstrap = mock.bootstrap_servers().to_string();
    tokio::task::spawn_blocking(move || {
        consume_all(&bootstrap, TOPIC, want, Duration::from_secs(10), deadline)
    })
    .await
    .expect("consumer thread")
    .expect("consume")
}

/// Exactly `expect` (container → its lines, in order) came out: one partition per key, each
/// line once, in capture order, nothing else. The message names the first difference.
pub fn check_exactly_once(
    got: &[Consumed],
    expect: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    let mut by_key: BTreeMap<String, Vec<&Consumed>> = BTreeMap::new();
    for c in got {
        let key = c
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_else(|| "<no key>".to_string());
        by_key.entry(key).or_default().push(c);
    }
    let mut problems = Vec::new();
    for key in by_key.keys() {
        if !expect.contains_key(key) {
            problems.push(format!("unexpected key {key}"));
        }
    }
    for (key, want) in expect {
        let msgs = by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        let mut partitions: Vec<i32> = msgs.iter().map(|c| c.partition).collect();
        partitions.dedup();
        if partitions.len() > 1 {
            problems.push(format!("{key}: in several partitions {partitions:?}"));
        }
        // `got` is in (partition, offset) order, so `msgs` is in partition order.
        let lines: Vec<String> = msgs.iter().map(|c| text(&c.value)).collect();
        if &lines != want {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for l in &lines {
                *seen.entry(l.as_str()).or_default() += 1;
            }
            let dups = seen.values().filter(|&&n| n > 1).count();
            let missing = want
                .iter()
                .filter(|l| !seen.contains_key(l.as_str()))
                .count();
            let first = lines
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(lines.len().min(want.len()));
            problems.push(format!(
                "{key}: {} lines read, {} expected; {dups} duplicated, {missing} missing; \
                 first difference at #{first}: got {:?}, want {:?}",
                lines.len(),
                want.len(),
                lines.get(first),
                want.get(first)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Lines `1..=n` of each container ([`line`]).
pub fn expected(sent: &BTreeMap<String, usize>) -> BTreeMap<String, Vec<String>> {
    sent.iter()
        .map(|(c, &n)| (c.clone(), (1..=n).map(|i| line(c, i)).collect()))
        .collect()
}
