//! End-to-end tests of capture against the real dockerd, with the agent as a process: long lines
//! whose pieces are interleaved with the other stream across rotations and a restart, a big
//! backlog read with a short rotation interval, and containers gone before they could be read.

mod support;

use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::docker::Containers;
use support::wait_until;

fn options(containers: &Containers, extra_capture: &str) -> AgentOptions {
    AgentOptions {
        capture: format!("{}{}", containers.include_yaml(), extra_capture),
        ..AgentOptions::default()
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The messages of one stream of a container's records.
fn stream_messages(agent: &Agent, name: &str, stream: &str) -> Vec<String> {
    agent
        .records(name)
        .iter()
        .filter(|r| r["stream"] == stream)
        .map(|r| r["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The long stdout line of iteration `i`: 20 000 bytes without a newline, then (after `err-i`
/// went to stderr) `tail-i` and the newline.
fn long_line(i: usize) -> String {
    format!("L{i:05}{}tail-{i}", "x".repeat(19_994))
}

/// Item 5 of issue 9. dockerd stamps both 16 KiB pieces of the long line with the first one's
/// timestamp t1 and writes `err` (t2) between them, so a reopen with `since` past t1 never
/// serves the tail piece again. With a 1 s rotation, the 300 ms between `err` and `tail` are hit
/// by rotations many times, and the agent is restarted once in the middle.
#[test]
fn long_lines_interleaved_with_stderr_survive_rotations_and_a_restart() {
    let mut containers = Containers::new("interleave");
    let dir = tempdir();
    let mut agent = Agent::start(
        dir.path(),
        options(&containers, "  rotation_interval: 1s\n"),
    );
    let name = containers.name("interleave");
    let n = 40;
    containers.run(
        "interleave",
        &[],
        &format!(
            "i=1; while [ $i -le {n} ]; do printf 'L%05d' $i; head -c 19994 /dev/zero | tr '\\0' x; \
             echo err-$i >&2; usleep 300000; echo tail-$i; usleep 50000; i=$((i+1)); done; exec sleep 3600"
        ),
    );
    assert!(
        wait_until(Duration::from_secs(60), || agent.records(&name).len() >= n),
        "half the records never arrived; log:\n{}",
        agent.log()
    );
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status:?}");
    let at_stop = agent.records(&name).len();
    std::thread::sleep(Duration::from_millis(1500));
    agent.restart();
    let done = wait_until(Duration::from_secs(90), || {
        stream_messages(&agent, &name, "stderr").len() >= n
            && stream_messages(&agent, &name, "stdout").len() >= n
    });
    // Some more rotations over the finished output: still nothing new.
    std::thread::sleep(Duration::from_secs(3));
    let out = stream_messages(&agent, &name, "stdout");
    let err = stream_messages(&agent, &name, "stderr");
    let rotations = agent.metric(&format!(
        "log_capturer_container_stream_rotations_total{{container_name=\"{name}\"}}"
    ));
    let expected_err: Vec<String> = (1..=n).map(|i| format!("err-{i}")).collect();
    assert_eq!(err, expected_err, "every err exactly once, in order");
    let lens: Vec<usize> = out.iter().map(String::len).collect();
    let expected_out: Vec<String> = (1..=n).map(long_line).collect();
    assert!(
        out == expected_out,
        "every long line one record of its exact length, exactly once (done: {done}); \
         {} stdout records of lengths {lens:?}",
        out.len()
    );
    println!(
        "interleaved long lines: {n} long lines and {n} err lines exactly once; \
         {at_stop} records before the restart; {rotations} rotations after it"
    );
}
