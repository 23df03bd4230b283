//! An agent whose stdout sink is blocked for good: its stdout is a pipe nobody reads, full
//! after the first batches. Used to check that a stop or a reload that runs into
//! `pipeline.shutdown_timeout` checkpoints only lines that really reached stdout.

use std::io::Read;
use std::process::ChildStdout;
use std::time::Duration;

use super::agent::{Agent, AgentOptions};
use super::fake_engine::{BASE_NS, Container, FakeEngine, Line, LogsPlan};
use super::wait_until;

/// Lines the firehose container has; far more than the pipe (64 KiB) takes.
pub const LINES: usize = 2000;

/// Line `i` (0-based) of the firehose: one timestamp per line, 1 ms apart.
pub fn line_ts(i: usize) -> i64 {
    BASE_NS + 1_000_000_000 + i as i64 * 1_000_000
}

/// The persisted position of a container's stdout, `(timestamp_ns, count)` of its last line
/// acknowledged, if the checkpoint file exists and parses.
pub fn checkpoint(agent: &Agent, id: &str) -> Option<(i64, u64)> {
    let path = agent
        .dir
        .join("state/checkpoints")
        .join(format!("{id}.json"));
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let stdout = &v["streams"]["stdout"];
    Some((stdout["timestamp_ns"].as_i64()?, stdout["count"].as_u64()?))
}

pub struct BlockedStdout {
    pub agent: Agent,
    pub stdout: ChildStdout,
    /// The firehose container's id.
    pub id: String,
    _engine: FakeEngine,
    _dir: tempfile::TempDir,
}

impl BlockedStdout {
    /// Starts the agent (stdout sink only, `shutdown_timeout: 2s`, `flush_interval: 50ms`)
    /// on a fake Engine API serving one container of `LINES` lines, and waits until capture
    /// has read them all, some were acknowledged and checkpointed, and the pipe is full.
    pub fn start() -> BlockedStdout {
        let lines = (0..LINES)
            .map(|i| Line::stdout(line_ts(i), format!("line {i:05} {}", "x".repeat(200))))
            .collect();
        let firehose = Container::new(
            "firehose",
            lines,
            // 100 lines (~30 KB of NDJSON) at a time: the first batches fit in the pipe and
            // are acknowledged, then the pipe is full and the sink blocks in its write.
            vec![LogsPlan::LineByLine {
                every: 100,
                pause: Duration::from_millis(100),
            }],
        );
        let id = firehose.id.clone();
        let engine = FakeEngine::start(vec![firehose]);
        let dir = tempfile::tempdir().expect("tempdir");
        let (agent, stdout) = Agent::start_with_stdout_pipe(
            dir.path(),
            AgentOptions {
                docker_host: Some(engine.docker_host()),
                capture: "  initial_position: beginning\n".to_string(),
                file_sink: false,
                sinks: "  stdout: {}\n".to_string(),
                pipeline: "  shutdown_timeout: 2s\n".to_string(),
                ..AgentOptions::default()
            },
        );
        let collected =
            "log_capturer_logs_collected_total{container_name=\"firehose\",stream=\"stdout\"}";
        assert!(
            wait_until(Duration::from_secs(60), || agent.metric(collected) as usize
                == LINES),
            "capture did not read every line; log:\n{}",
            agent.log()
        );
        assert!(
            wait_until(Duration::from_secs(30), || {
                checkpoint(&agent, &id).is_some_and(|(ts, _)| ts >= line_ts(0))
            }),
            "no checkpoint of written lines; log:\n{}",
            agent.log()
        );
        let flushed = agent.metric("log_capturer_sink_lines_total{sink=\"stdout\"}") as usize;
        assert!(
            flushed < LINES,
            "the pipe never filled ({flushed} lines flushed)"
        );
        BlockedStdout {
            agent,
            stdout,
            id,
            _engine: engine,
            _dir: dir,
        }
    }

    /// After the agent exited: what reached the pipe is whole, consecutive records from line 0
    /// (maybe followed by a torn one), not every line, and the checkpoint covers no line
    /// after the last one written.
    pub fn assert_checkpoint_covers_only_what_was_written(&mut self) {
        let mut written = Vec::new();
        self.stdout
            .read_to_end(&mut written)
            .expect("read the pipe");
        let text = String::from_utf8_lossy(&written);
        let mut last_written = None;
        for record in text.split_inclusive('\n').filter(|r| r.ends_with('\n')) {
            let v: serde_json::Value = serde_json::from_str(record).expect("NDJSON record");
            let message = v["message"].as_str().expect("message");
            let index: usize = message[5..10].parse().expect("line number");
            assert_eq!(
                Some(index),
                last_written.map_or(Some(0), |i: usize| Some(i + 1))
            );
            last_written = Some(index);
        }
        let last_written = last_written.expect("some lines were written");
        assert!(last_written + 1 < LINES, "every line was written");
        let (ts, count) = checkpoint(&self.agent, &self.id).expect("checkpoint after exit");
        assert!(
            ts <= line_ts(last_written) && !(ts == line_ts(last_written) && count > 1),
            "checkpoint ({ts}, {count}) covers lines never written (last written: line {last_written} at {})",
            line_ts(last_written)
        );
    }
}
