//! Scenario 16 of issue 10: Loki (the test receiver of `testkit::loki`) slow (within and beyond
//! the push time-out), answering 429 with `Retry-After`, 503 and 500, resetting connections,
//! hanging, flapping between down and up, rejecting with 400, the agent stopped (SIGTERM) while
//! a push hangs, and SIGKILLed while batches sit in its on-disk buffer, each time started again.
//! Writers run all along. Afterwards every
//! line the daemon served reached Loki, or is a dead letter that `log-capturer dlq replay`
//! delivers (README: 400 is never retried, the batch goes to the dead-letter store): 0 lost. Lines
//! reach Loki in order (first arrivals); duplicates are counted and reported (README's window: a
//! timed-out push Loki had taken is sent again, and after SIGKILL the lines acknowledged since the
//! last checkpoint write are read again).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::kit::{terminate_checked, wait_until};
use crate::ctx::{Agent, AgentYaml, Ctx};
use crate::scenario::{Outcome, Scenario};
use log_capturer_testkit::docker::{Served, docker};
use log_capturer_testkit::loki::{LokiReceiver, Mode};

pub const SCENARIO: Scenario = Scenario {
    name: "loki-faults",
    what: "Loki slow, 429/5xx/400, resets, hangs, flapping, SIGKILL with a full disk buffer: 0 lost (400s as dead letters), in order, duplicates reported",
    quick: false,
    run,
};

const WRITERS: usize = 3;
/// Every 4th line also on stderr; ~80 lines per second.
const SCRIPT: &str = "i=1; while true; do echo \"lk $i\"; [ $((i % 4)) -eq 0 ] && echo \"lk-err $i\" >&2; \
    i=$((i+1)); usleep 10000; done";

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

fn status(code: u16, retry_after: Option<u64>, body: &str) -> Mode {
    Mode::Status {
        code,
        retry_after,
        body: body.to_string(),
    }
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let p = Duration::from_secs(if ctx.quick { 2 } else { 5 });
    let rx = LokiReceiver::start();
    let yaml = AgentYaml {
        sinks: format!(
            "  loki:\n    url: {}\n    timeout: 2s\n    batch:\n      max_wait: 200ms\n    \
             retry:\n      initial: 200ms\n      max: 2s\n    buffer:\n      spill_after: 2s\n",
            rx.push_url()
        ),
        checkpoint: "  interval: 1s\n".into(),
        ..AgentYaml::default()
    };
    let mut agent = ctx.start_agent("agent", &yaml)?;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        writers.push(ctx.run_container(&format!("lk{w}"), &[], SCRIPT)?);
    }
    let phases: Vec<(&str, Mode)> = vec![
        ("accept", Mode::Accept),
        (
            "slow 1s",
            Mode::Slow {
                delay: Duration::from_secs(1),
            },
        ),
        (
            "slow 3s (time-out 2s)",
            Mode::Slow {
                delay: Duration::from_secs(3),
            },
        ),
        (
            "429 Retry-After 1",
            status(429, Some(1), "too many requests"),
        ),
        ("503", status(503, None, "ingester unavailable")),
        ("500", status(500, None, "internal error")),
        ("reset", Mode::Reset),
        ("hang", Mode::Hang),
    ];
    // Where each phase's arrivals start (to tell where duplicates came from).
    let mut marks: Vec<(String, usize)> = Vec::new();
    let mut mark = |name: &str| marks.push((name.to_string(), rx.entries().len()));
    for (name, mode) in &phases {
        mark(name);
        rx.set_mode(mode.clone());
        std::thread::sleep(p);
    }
    // Flapping: down and up every half second.
    mark("flapping");
    for _ in 0..(p.as_millis() / 500).max(2) {
        rx.set_mode(Mode::Down);
        std::thread::sleep(Duration::from_millis(500));
        rx.set_mode(Mode::Accept);
        std::thread::sleep(Duration::from_millis(500));
    }
    // Rejections, until one batch became a dead letter.
    let mut problems = Vec::new();
    mark("400");
    rx.set_mode(status(400, None, "entry too far behind"));
    let dead_key = "log_capturer_dead_letters_total";
    if !wait_until(Duration::from_secs(30), || agent.metric(dead_key) >= 1.0) {
        problems.push("no dead letter within 30 s of answering 400".into());
    }
    mark("accept after 400");
    rx.set_mode(Mode::Accept);
    std::thread::sleep(p);
    // SIGTERM while a push hangs: README, the worker drops the push in flight and buffers
    // what is pending, so the stop is clean (exit 0) and nothing is lost or sent twice.
    let mut runs = Vec::new();
    mark("hang, SIGTERM");
    rx.set_mode(Mode::Hang);
    std::thread::sleep(p);
    runs.push(agent.process.metrics());
    let termed = agent.terminate(Duration::from_secs(40))?;
    if !termed.success() {
        problems.push(format!("SIGTERM while Loki hung: {termed}"));
    }
    mark("restart after SIGTERM");
    rx.set_mode(Mode::Accept);
    agent.start()?;
    std::thread::sleep(p);
    // SIGKILL while batches sit in the on-disk buffer.
    mark("down, SIGKILL");
    rx.set_mode(Mode::Down);
    let buffered_key = "log_capturer_buffer_batches";
    let buffered = wait_until(Duration::from_secs(60), || {
        agent.metric(buffered_key) >= 2.0
    });
    if !buffered {
        problems.push("nothing reached the on-disk buffer within 60 s of Loki going down".into());
    }
    std::thread::sleep(Duration::from_millis(1500)); // > a checkpoint interval
    let buffered_at_kill = agent.metric(buffered_key);
    runs.push(agent.process.metrics());
    let killed = agent.kill()?;
    std::thread::sleep(p);
    mark("restart");
    rx.set_mode(Mode::Accept);
    agent.start()?;
    std::thread::sleep(p);
    for w in &writers {
        docker(&["stop", "-t", "1", w])?;
    }
    let mut served = Vec::new();
    for w in &writers {
        ctx.wait_exited(w, Duration::from_secs(30))?;
        served.push(ctx.served(w)?);
    }
    let want: usize = served.iter().map(|s| s.stdout.len() + s.stderr.len()).sum();
    // Settled: nothing waits in the queue or the buffer, and arrivals stopped growing.
    let (mut last, mut stable) = (usize::MAX, 0);
    wait_until(Duration::from_secs(120), || {
        let now = rx.entries().len();
        let idle =
            agent.metric("log_capturer_queue_lines") == 0.0 && agent.metric(buffered_key) == 0.0;
        stable = if idle && now == last { stable + 1 } else { 0 };
        last = now;
        now >= want / 2 && stable >= 5
    });
    runs.push(agent.process.metrics());
    terminate_checked(&mut agent, Duration::from_secs(40), &mut problems)?;
    let delivered = rx.entries().len();
    let (list_ok, list) = dlq(ctx, &agent, "list");
    let dead_letters = list
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    let (replay_ok, replay) = dlq(ctx, &agent, "replay");
    if !list_ok || !replay_ok || !replay.contains(&format!("replayed {dead_letters},")) {
        problems.push(format!(
            "dlq: list {}, replay said {:?}",
            if list_ok { "ok" } else { "failed" },
            replay.trim()
        ));
    }
    mark("dlq replay");
    let entries = rx.entries();
    // Per writer and stream: (arrivals before the replay, arrivals by the replay), each with
    // its place among all arrivals.
    type Arrivals = Vec<(usize, String)>;
    let mut arrived: HashMap<(String, bool), (Arrivals, Arrivals)> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let key = (
            e.labels.get("container_name").cloned().unwrap_or_default(),
            e.labels.get("stream").map(String::as_str) == Some("stderr"),
        );
        let slot = arrived.entry(key).or_default();
        if i < delivered {
            slot.0.push((i, e.line.clone()));
        } else {
            slot.1.push((i, e.line.clone()));
        }
    }
    let mut t = Totals::default();
    for (w, s) in writers.iter().zip(&served) {
        for stderr in [false, true] {
            let (normal, replayed) = arrived.remove(&(w.clone(), stderr)).unwrap_or_default();
            t.add(&account(stream_of(s, stderr), &normal, &replayed));
        }
    }
    let strangers: usize = arrived.values().map(|(a, b)| a.len() + b.len()).sum();
    if t.lost > 0 {
        problems.push(format!("{} lines lost", t.lost));
    }
    if t.out_of_order > 0 {
        problems.push(format!(
            "{} lines reached Loki out of order",
            t.out_of_order
        ));
    }
    if t.unknown + strangers > 0 {
        problems.push(format!(
            "{} lines Loki got were never served",
            t.unknown + strangers
        ));
    }
    let metric = |k: &str| {
        let sum = |m: &HashMap<String, f64>| log_capturer_testkit::sum_prefix(m, k);
        runs.iter().map(sum).sum::<f64>()
    };
    if metric("log_capturer_buffer_corrupt_total") > 0.0 {
        problems.push("the on-disk buffer reported corrupt records".into());
    }
    // Duplicates by the phase their first copy arrived in (what caused them).
    let mut dup_by_phase: Vec<(String, usize)> = Vec::new();
    for at in &t.dup_first_at {
        let phase = marks
            .iter()
            .rev()
            .find(|(_, start)| start <= at)
            .map_or("start", |(name, _)| name.as_str());
        match dup_by_phase.iter_mut().find(|(n, _)| n == phase) {
            Some((_, c)) => *c += 1,
            None => dup_by_phase.push((phase.to_string(), 1)),
        }
    }
    let dup_by_phase = dup_by_phase
        .iter()
        .map(|(n, c)| format!("{n}:{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for r in rx.requests() {
        *statuses.entry(r.status).or_default() += 1;
    }
    let statuses = statuses
        .iter()
        .map(|(s, n)| {
            format!(
                "{}:{n}",
                if *s == 0 {
                    "none".into()
                } else {
                    s.to_string()
                }
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let reason = |r: &str| {
        metric(&format!(
            "log_capturer_sink_failures_total{{sink=\"loki\",reason=\"{r}\"}}"
        ))
    };
    // The counts chain every scenario ends with (e.g. rename_pause_restart.rs): its own names.
    Ok(Outcome::judge(
        problems,
        format!(
            "{} phases of {} s, flapping, 400 until a dead letter, SIGTERM while a push hangs ({termed}), SIGKILL ({killed}) with {buffered_at_kill} batches buffered; pushes by answer {statuses}; duplicates by the phase of their first copy: {dup_by_phase}",
            phases.len(),
            p.as_secs()
        ),
    )
    .count("served", t.served)
    .count("delivered", t.delivered)
    .count("dead_lettered", t.dead_lettered)
    .count("lost", t.lost)
    .count("dup", t.dup)
    .count("out_of_order", t.out_of_order)
    .count("dead_letters", dead_letters)
    .count("buffered_at_kill", buffered_at_kill)
    .count(
        "failures",
        format!(
            "timeout:{} 429:{} 5xx:{} connect:{}",
            reason("timeout"),
            reason("429"),
            reason("5xx"),
            reason("connect")
        ),
    )
    .count("retries", metric("log_capturer_sink_retries_total")))
}

fn stream_of(s: &Served, stderr: bool) -> &[String] {
    if stderr { &s.stderr } else { &s.stdout }
}

#[derive(Default)]
struct Totals {
    served: usize,
    /// Distinct served lines that arrived before the replay.
    delivered: usize,
    /// Distinct served lines that arrived only by the dead-letter replay.
    dead_lettered: usize,
    lost: usize,
    /// Arrivals beyond the first of a line (either way).
    dup: usize,
    /// Where the first copy of each duplicate arrived (its place among all arrivals).
    dup_first_at: Vec<usize>,
    /// First arrivals (before the replay) earlier in the served order than one before them.
    out_of_order: usize,
    /// Arrivals never served.
    unknown: usize,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.served += o.served;
        self.delivered += o.delivered;
        self.dead_lettered += o.dead_lettered;
        self.lost += o.lost;
        self.dup += o.dup;
        self.dup_first_at.extend(&o.dup_first_at);
        self.out_of_order += o.out_of_order;
        self.unknown += o.unknown;
    }
}

/// One stream: the lines served (in order, each distinct), those that arrived before the
/// dead-letter replay and those the replay brought.
fn account(served: &[String], normal: &[(usize, String)], replayed: &[(usize, String)]) -> Totals {
    let position: HashMap<&str, usize> = served
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    // Line -> where its first copy arrived.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut t = Totals {
        served: served.len(),
        ..Totals::default()
    };
    let mut last = None;
    for (at, l) in normal {
        let Some(&p) = position.get(l.as_str()) else {
            t.unknown += 1;
            continue;
        };
        if let Some(first) = seen.get(l.as_str()) {
            t.dup += 1;
            t.dup_first_at.push(*first);
            continue;
        }
        seen.insert(l, *at);
        t.delivered += 1;
        if last.is_some_and(|prev| p < prev) {
            t.out_of_order += 1;
        }
        last = Some(p);
    }
    for (at, l) in replayed {
        if !position.contains_key(l.as_str()) {
            t.unknown += 1;
        } else if let Some(first) = seen.get(l.as_str()) {
            t.dup += 1;
            t.dup_first_at.push(*first);
        } else {
            seen.insert(l, *at);
            t.dead_lettered += 1;
        }
    }
    t.lost = served.len() - t.delivered - t.dead_lettered;
    t
}

/// `log-capturer dlq ARGS -c CONFIG`: (success, stdout and stderr).
fn dlq(ctx: &Ctx, agent: &Agent, what: &str) -> (bool, String) {
    match std::process::Command::new(&ctx.agent_binary)
        .args(["dlq", "-c"])
        .arg(&agent.config)
        .arg(what)
        .output()
    {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// Arrivals numbered from `from`.
    fn a(from: usize, items: &[&str]) -> Vec<(usize, String)> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| (from + i, s.to_string()))
            .collect()
    }

    #[test]
    fn accounts_dead_letters_duplicates_and_order() {
        let served = v(&["1", "2", "3", "4", "5"]);
        let t = account(&served, &a(0, &["1", "2", "2", "4"]), &a(4, &["3"]));
        assert_eq!(
            (t.delivered, t.dead_lettered, t.lost, t.dup, t.out_of_order),
            (3, 1, 1, 1, 0)
        );
        assert_eq!(t.dup_first_at, [1]);
        // A duplicate that comes back later is a duplicate, not disorder; a first arrival out
        // of order is disorder.
        let t = account(&served, &a(0, &["1", "3", "1", "2", "4", "5", "x"]), &[]);
        assert_eq!((t.dup, t.out_of_order, t.unknown, t.lost), (1, 1, 1, 0));
    }
}
