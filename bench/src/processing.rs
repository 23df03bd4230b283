//! `processing`: the firehose (fake Engine API → release agent → null sink) with processing
//! pipelines (issue 12), each against the same input without a pipeline:
//!
//! - json: JSON lines through `json` + `level` + `labels`;
//! - multiline: stack-trace-shaped input (a header line and 9 continuation lines, all on
//!   stdout) through `multiline`;
//! - drop: lines of which 9 in 10 match a `drop` stage's regex.
//!
//! Throughput counts *input* lines: the run ends when the pipeline has handed over every line
//! (`log_capturer_pipeline_lines_in`, which counts lines once the batch that covers them is
//! handed over) and the null sink has written every record the pipeline handed out
//! (`log_capturer_pipeline_records_out`). Each container's last stack trace stays an open group
//! until its stream has been quiet a while (`flush_after`); those last lines are not waited
//! for. Without a pipeline: when the null sink has written every line. Start-up is included,
//! as in `firehose`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentConfig};
use crate::{Row, fake_engine, median};
use log_capturer_testkit::{cpu_seconds, status_field};

const CONTAINERS: usize = 10;

struct Case {
    name: &'static str,
    input: Input,
    /// The `processing:` section; None: the baseline without a pipeline.
    processing: Option<&'static str>,
    /// Input lines/s this case should reach (issue 12's targets).
    target: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    Json,
    StackTraces,
    NinetyPercentDebug,
}

const JSON_PIPELINE: &str = "processing:
  pipelines:
    - name: bench
      stages:
        - json: { fields: [level, service, msg] }
        - level: { source: level }
        - labels: { fields: [level, service] }
";

const MULTILINE_PIPELINE: &str = "processing:
  pipelines:
    - name: bench
      stages:
        - multiline: { start: '^\\d{4}-\\d\\d-\\d\\d ' }
";

const DROP_PIPELINE: &str = "processing:
  pipelines:
    - name: bench
      stages:
        - drop: { expression: '^DEBUG ' }
";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "JSON lines, no pipeline",
            input: Input::Json,
            processing: None,
            target: None,
        },
        Case {
            name: "JSON lines → json + level + labels",
            input: Input::Json,
            processing: Some(JSON_PIPELINE),
            target: Some(1_000_000.0),
        },
        Case {
            name: "stack traces (10 lines each), no pipeline",
            input: Input::StackTraces,
            processing: None,
            target: None,
        },
        Case {
            name: "stack traces (10 lines each) → multiline",
            input: Input::StackTraces,
            processing: Some(MULTILINE_PIPELINE),
            target: Some(1_000_000.0),
        },
        Case {
            name: "90 % DEBUG lines, no pipeline",
            input: Input::NinetyPercentDebug,
            processing: None,
            target: None,
        },
        Case {
            name: "90 % DEBUG lines → drop (90 % dropped)",
            input: Input::NinetyPercentDebug,
            processing: Some(DROP_PIPELINE),
            target: Some(3_000_000.0),
        },
    ]
}

/// One container's logs body of `lines` lines of this input, and its message bytes.
fn body(input: Input, lines: usize) -> (Vec<u8>, usize) {
    const LEVELS: [&str; 4] = ["info", "info", "warn", "error"];
    match input {
        // ~120 B.
        Input::Json => fake_engine::frames_of(lines, |i, t| {
            t.push_str(&format!(
                r#"{{"time":"2026-12-01T06:00:00.{:06}Z","level":"{}","service":"api","msg":"GET /api/v1/items/{i} 200","rt":0.0{}}}"#,
                i % 1_000_000,
                LEVELS[i % 4],
                i % 97
            ));
        }),
        // A header, the exception, 8 frames: ~60 B a line.
        Input::StackTraces => fake_engine::frames_on(lines, true, |i, t| match i % 10 {
            0 => t.push_str(&format!(
                "2026-12-01 06:00:00.{:03} ERROR [worker-{}] c.e.Orders - order {i} failed",
                i % 1000,
                i % 8
            )),
            1 => t.push_str(&format!(
                "java.lang.IllegalStateException: order {i} has no items"
            )),
            k => t.push_str(&format!(
                "\tat com.example.orders.Service.step{k}(Service.java:{})",
                40 + k
            )),
        }),
        // ~100 B; lines 0..9 of every 10 are DEBUG, line 9 is INFO.
        Input::NinetyPercentDebug => fake_engine::frames_of(lines, |i, t| {
            if i % 10 == 9 {
                t.push_str(&format!(
                    "INFO  request {i} served in 12 ms status=200 path=/api/v1/items/{i}"
                ));
            } else {
                t.push_str(&format!(
                    "DEBUG cache lookup key=item:{i} hit=true shard={} took=3us",
                    i % 16
                ));
            }
        }),
    }
}

pub fn scenario(binary: &Path, out: &Path, runs: usize, quick: bool) -> Result<Vec<Row>, String> {
    let total = if quick { 200_000 } else { 3_000_000 };
    let per = total / CONTAINERS;
    let total = per * CONTAINERS;
    let mut rows = Vec::new();
    let mut bodies: HashMap<u8, Vec<u8>> = HashMap::new();
    for case in cases() {
        let body = bodies
            .entry(case.input as u8)
            .or_insert_with(|| body(case.input, per).0)
            .clone();
        let (mut rate, mut cpu, mut rss) = (vec![], vec![], vec![]);
        for run in 0..runs {
            let dir = out.join(format!(
                "processing-{}-{}-{run}",
                case.input as u8,
                case.processing.is_some()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let engine = fake_engine::FakeEngine::start(&dir, CONTAINERS, Some(body.clone()))?;
            let agent = Agent::start(
                binary,
                &dir,
                AgentConfig {
                    docker_host: Some(engine.docker_host()),
                    sink: "null",
                    rotation: "1h",
                    include_label: None,
                    fsync: None,
                    processing: case.processing,
                    extra: "",
                },
            )?;
            // Lines each container's last, still open, group may hold.
            let open = if case.input == Input::StackTraces && case.processing.is_some() {
                10 * CONTAINERS
            } else {
                0
            };
            let took = wait_done(
                &agent,
                total as f64,
                (total - open) as f64,
                case.processing.is_some(),
            )?;
            cpu.push(cpu_seconds(agent.pid()) / (total as f64 / 1e6));
            rss.push(status_field(agent.pid(), "VmHWM:") / 1024.0);
            rate.push(total as f64 / took.as_secs_f64());
            agent.terminate()?;
            engine.stop();
        }
        let case_name = format!("{CONTAINERS} containers, {}", case.name);
        rows.push(Row::new(
            "processing",
            &case_name,
            "input throughput",
            "lines/s",
            median(rate),
            case.target.map(|t| (">=", t)),
        ));
        rows.push(Row::new(
            "processing",
            &case_name,
            "agent CPU per million input lines",
            "s",
            median(cpu),
            None,
        ));
        rows.push(Row::new(
            "processing",
            &case_name,
            "peak RSS",
            "MiB",
            median(rss),
            None,
        ));
        eprintln!("bench: processing {} done", case.name);
    }
    Ok(rows)
}

/// Waits until every input line went through (see the module comment); the time since the
/// agent was spawned.
fn wait_done(
    agent: &Agent,
    total: f64,
    handed_over: f64,
    pipeline: bool,
) -> Result<Duration, String> {
    const SINK: &str = "log_capturer_sink_lines_total{sink=\"null\"}";
    const LINES_IN: &str = "log_capturer_pipeline_lines_in_total{pipeline=\"bench\"}";
    const RECORDS_OUT: &str = "log_capturer_pipeline_records_out_total{pipeline=\"bench\"}";
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let m = agent.metrics();
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        let done = if pipeline {
            get(LINES_IN) >= handed_over && get(RECORDS_OUT) > 0.0 && get(SINK) >= get(RECORDS_OUT)
        } else {
            get(SINK) >= total
        };
        if done {
            return Ok(agent.started.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not done in 600 s: {LINES_IN} = {}, {RECORDS_OUT} = {}, {SINK} = {} (of {total} lines); \
                 is processing wired into capture and its metrics registered?",
                get(LINES_IN),
                get(RECORDS_OUT),
                get(SINK)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs have the shapes the cases claim (what the targets are about).
    #[test]
    fn inputs_have_their_shapes() {
        let messages = |input| {
            let (body, _) = body(input, 100);
            let mut out = Vec::new();
            let mut rest = &body[..];
            while rest.len() >= 8 {
                let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
                let text = String::from_utf8_lossy(&rest[8..8 + len]).to_string();
                // Past the timestamp and its space.
                let message = text.split_once(' ').map(|(_, m)| m.trim_end().to_string());
                out.push((rest[0], message.unwrap_or_default()));
                rest = &rest[8 + len..];
            }
            out
        };
        let json = messages(Input::Json);
        assert_eq!(json.len(), 100);
        for (_, m) in &json {
            let v: serde_json::Value = serde_json::from_str(m).expect("a JSON line");
            assert!(v["level"].is_string() && v["service"] == "api", "{m}");
        }
        let traces = messages(Input::StackTraces);
        assert!(traces.iter().all(|(stream, _)| *stream == 1));
        let re_start = |m: &str| {
            m.len() > 11
                && m.as_bytes()[..10].iter().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        *b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                })
                && m.as_bytes()[10] == b' '
        };
        let starts = traces.iter().filter(|(_, m)| re_start(m)).count();
        assert_eq!(starts, 10, "one group start in 10 lines");
        let debug = messages(Input::NinetyPercentDebug);
        let dropped = debug
            .iter()
            .filter(|(_, m)| m.starts_with("DEBUG "))
            .count();
        assert_eq!(dropped, 90);
    }
}
