//! firehose: a fake Engine API serves N containers' pre-generated frames as fast as the socket
//! takes them; the agent writes to the null sink and, separately, to the file sink.

use std::path::Path;
use std::time::Duration;

use log_capturer_testkit::{cpu_seconds, status_field};

use crate::agent::{Agent, AgentConfig};
use crate::{Args, Row, fake_engine, median};

pub(crate) fn firehose(
    binary: &Path,
    out: &Path,
    runs: usize,
    args: &Args,
) -> Result<Vec<Row>, String> {
    let quick = args.quick;
    let mut rows = Vec::new();
    // (sink, fsync policy): the file sink once per policy asked for.
    let mut outputs: Vec<(&str, Option<&str>)> = Vec::new();
    for sink in &args.sinks {
        match sink.as_str() {
            "null" => outputs.push(("null", None)),
            "file" => outputs.extend(args.fsync.iter().map(|f| ("file", Some(f.as_str())))),
            other => return Err(format!("unknown sink {other:?} (null, file)")),
        }
    }
    let cases: &[(usize, usize)] = &[(1, 100), (10, 100), (100, 100), (10, 1024)];
    for &(containers, line_bytes) in cases {
        let total = match (quick, line_bytes) {
            (true, _) => 200_000,
            (false, 100) => 3_000_000,
            _ => 600_000,
        };
        let per = total / containers;
        let total = per * containers;
        let (body, message_bytes) = fake_engine::frames(per, line_bytes);
        let mb = (message_bytes * containers) as f64 / 1e6;
        for &(sink, fsync) in &outputs {
            let (mut rate, mut mbs, mut cpu, mut rss) = (vec![], vec![], vec![], vec![]);
            for run in 0..runs {
                let dir = out.join(format!(
                    "firehose-{containers}x{line_bytes}-{sink}{}-{run}",
                    fsync.map(|f| format!("-{f}")).unwrap_or_default()
                ));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let engine = fake_engine::FakeEngine::start(&dir, containers, Some(body.clone()))?;
                let agent = Agent::start(
                    binary,
                    &dir,
                    AgentConfig {
                        docker_host: Some(engine.docker_host()),
                        sink,
                        rotation: "1h",
                        include_label: None,
                        fsync,
                        processing: None,
                        extra: "",
                    },
                )?;
                let key = format!("log_capturer_sink_lines_total{{sink=\"{sink}\"}}");
                let took = agent.wait_metric(&key, total as f64, Duration::from_secs(600))?;
                let secs = took.as_secs_f64();
                cpu.push(cpu_seconds(agent.pid()) / (total as f64 / 1e6));
                rss.push(status_field(agent.pid(), "VmHWM:") / 1024.0);
                rate.push(total as f64 / secs);
                mbs.push(mb / secs);
                agent.terminate()?;
                engine.stop();
                let _ = std::fs::remove_dir_all(dir.join("out"));
            }
            let case = match fsync {
                Some(f) => {
                    format!("{containers} containers, {line_bytes} B lines → {sink} (fsync {f})")
                }
                None => format!("{containers} containers, {line_bytes} B lines → {sink}"),
            };
            let target_rate = match (line_bytes, sink) {
                (100, "null") => Some((">=", 1_000_000.0)),
                (100, "file") => Some((">=", 700_000.0)),
                _ => None,
            };
            rows.push(Row::new(
                "firehose",
                &case,
                "throughput",
                "lines/s",
                median(rate),
                target_rate,
            ));
            rows.push(Row::new(
                "firehose",
                &case,
                "throughput",
                "MB/s",
                median(mbs),
                None,
            ));
            let cpu_target = (line_bytes == 100 && sink == "null").then_some(("<=", 0.5));
            rows.push(Row::new(
                "firehose",
                &case,
                "agent CPU per million lines",
                "s",
                median(cpu),
                cpu_target,
            ));
            rows.push(Row::new(
                "firehose",
                &case,
                "peak RSS",
                "MiB",
                median(rss),
                None,
            ));
            eprintln!("bench: firehose {containers}x{line_bytes} {sink} done");
        }
    }
    Ok(rows)
}
