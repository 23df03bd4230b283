//! idle: 1 000 idle follow streams: memory per stream, tasks, FDs, a full rotation, shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use log_capturer_testkit::{status_field, sum_prefix};

use crate::agent::{Agent, AgentConfig};
use crate::{Row, dir_ready, fake_engine, median};

pub(crate) fn idle(
    binary: &Path,
    out: &Path,
    runs: usize,
    quick: bool,
) -> Result<Vec<Row>, String> {
    let n = if quick { 200 } else { 1000 };
    let rotation = 20.0;
    let (
        mut per_stream,
        mut tasks,
        mut fds,
        mut rot,
        mut open_wave,
        mut back,
        mut shut,
        mut base_rss,
    ) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    // The same agent on the null sink, rotating every `rotation` seconds, for the baseline and
    // for the measured run.
    let rotation_setting = format!("{rotation}s");
    let start_idle_agent = |engine: &fake_engine::FakeEngine, dir: &Path| {
        Agent::start(
            binary,
            dir,
            AgentConfig {
                docker_host: Some(engine.docker_host()),
                sink: "null",
                rotation: &rotation_setting,
                include_label: None,
                fsync: None,
                processing: None,
                extra: "",
            },
        )
    };
    for run in 0..runs {
        // Baseline: the same agent with no container at all.
        let dir = out.join(format!("idle-base-{run}"));
        let engine = fake_engine::FakeEngine::start(&dir_ready(&dir)?, 0, None)?;
        let agent = start_idle_agent(&engine, &dir)?;
        std::thread::sleep(Duration::from_secs(1));
        let base = status_field(agent.pid(), "VmRSS:");
        agent.terminate()?;
        engine.stop();

        let dir = out.join(format!("idle-{run}"));
        let engine = fake_engine::FakeEngine::start(&dir_ready(&dir)?, n, None)?;
        let agent = start_idle_agent(&engine, &dir)?;
        let opened = agent.wait_metric(
            "log_capturer_container_streams_active",
            n as f64,
            Duration::from_secs(120),
        )?;
        open_wave.push(opened.as_secs_f64());
        std::thread::sleep(Duration::from_secs(2));
        let before = tasks_and_fds(&agent);
        let rss = status_field(agent.pid(), "VmRSS:");
        per_stream.push((rss - base) / n as f64);
        base_rss.push(base / 1024.0);
        tasks.push(before.0);
        fds.push(before.1);
        // The rotation wave: from the first rotation until every stream has rotated and is
        // open again.
        let deadline = Instant::now() + Duration::from_secs_f64(rotation * 3.0);
        let mut first = None;
        let mut done = None;
        while Instant::now() < deadline {
            let m = agent.metrics();
            let r = sum_prefix(&m, "log_capturer_container_stream_rotations_total");
            let active = m
                .get("log_capturer_container_streams_active")
                .copied()
                .unwrap_or(0.0);
            if r > 0.0 && first.is_none() {
                first = Some(Instant::now());
            }
            if r >= n as f64 && active >= n as f64 {
                done = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (Some(f), Some(d)) = (first, done) else {
            return Err("the idle streams did not all rotate".into());
        };
        rot.push((d - f).as_secs_f64());
        std::thread::sleep(Duration::from_millis(500));
        let after = tasks_and_fds(&agent);
        back.push(if after == before { 1.0 } else { 0.0 });
        shut.push(agent.terminate()?.as_secs_f64());
        engine.stop();
    }
    let case = format!("{n} idle streams, null sink");
    Ok(vec![
        Row::new(
            "idle",
            &case,
            "empty agent RSS",
            "MiB",
            median(base_rss),
            None,
        ),
        Row::new(
            "idle",
            &case,
            "RSS per idle stream",
            "KiB",
            median(per_stream),
            Some(("<=", 48.0)),
        ),
        Row::new("idle", &case, "tasks alive", "tasks", median(tasks), None),
        Row::new("idle", &case, "FDs open", "FDs", median(fds), None),
        Row::new(
            "idle",
            &case,
            "time to open all streams (from agent start)",
            "s",
            median(open_wave),
            None,
        ),
        Row::new(
            "idle",
            &case,
            "full rotation of all streams",
            "s",
            median(rot),
            Some(("<=", 2.0)),
        ),
        Row::new(
            "idle",
            &case,
            "tasks and FDs back at pre-rotation count",
            "runs ok/total",
            back.iter().sum::<f64>() / back.len() as f64,
            Some((">=", 1.0)),
        ),
        Row::new(
            "idle",
            &case,
            "shutdown (SIGTERM → exit)",
            "s",
            median(shut),
            Some(("<=", 2.0)),
        ),
    ])
}

/// The agent's live tasks and open FDs (0 where a gauge is missing): compared before and after
/// the rotation wave.
fn tasks_and_fds(agent: &Agent) -> (f64, f64) {
    let m = agent.metrics();
    let gauge = |name: &str| m.get(name).copied().unwrap_or(0.0);
    (
        gauge("log_capturer_tasks_alive"),
        gauge("log_capturer_file_descriptors_open"),
    )
}
