//! daemon: K real containers print into json-file and the agent reads them back, its CPU
//! beside dockerd's; reopen: what one reopen of a container's logs costs dockerd.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use log_capturer_testkit::docker::docker;
use log_capturer_testkit::{cpu_seconds, status_field};

use crate::agent::{Agent, AgentConfig};
use crate::{Row, median};

fn dockerd_pid() -> Result<u32, String> {
    let o = Command::new("pgrep")
        .args(["-xo", "dockerd"])
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|_| "no dockerd process found".to_string())
}

pub(crate) fn daemon(
    binary: &Path,
    out: &Path,
    runs: usize,
    quick: bool,
) -> Result<Vec<Row>, String> {
    docker(&["image", "inspect", "lc-test:busybox"]).map_err(|_| {
        "test image lc-test:busybox missing: run scripts/build-test-image (needs a running dockerd)".to_string()
    })?;
    let dockerd = dockerd_pid()?;
    let per = if quick { 20_000 } else { 200_000 };
    let mut rows = Vec::new();
    for k in [1usize, 10] {
        let (mut secs, mut agent_cpu, mut daemon_cpu, mut rss) = (vec![], vec![], vec![], vec![]);
        for run in 0..runs {
            let label = format!("lc.bench=daemon-{}-{k}-{run}", std::process::id());
            let dir = out.join(format!("daemon-{k}-{run}"));
            // The agent follows the containers live, from their first line; the window covers
            // dockerd receiving, storing and serving the lines, and the agent reading them.
            let agent = Agent::start(
                binary,
                &dir,
                AgentConfig {
                    docker_host: None,
                    sink: "file",
                    rotation: "1h",
                    include_label: Some(&label),
                    fsync: None,
                    processing: None,
                    extra: "",
                },
            )?;
            let d0 = cpu_seconds(dockerd);
            let a0 = cpu_seconds(agent.pid());
            let t0 = Instant::now();
            let mut names = Vec::new();
            for i in 0..k {
                let name = format!("bench-{}-{k}-{run}-{i}", std::process::id());
                docker(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--label",
                    &label,
                    "lc-test:busybox",
                    "seq",
                    "1",
                    &per.to_string(),
                ])?;
                names.push(name);
            }
            let result = (|| {
                agent.wait_metric(
                    "log_capturer_sink_lines_total{sink=\"file\"}",
                    (k * per) as f64,
                    Duration::from_secs(600),
                )?;
                let took = t0.elapsed().as_secs_f64();
                let cpu = cpu_seconds(agent.pid()) - a0;
                let d1 = cpu_seconds(dockerd);
                let peak = status_field(agent.pid(), "VmHWM:") / 1024.0;
                Ok::<_, String>((took, cpu, d1 - d0, peak))
            })();
            agent.terminate()?;
            let mut rm = vec!["rm", "-f"];
            rm.extend(names.iter().map(String::as_str));
            let _ = docker(&rm);
            let _ = std::fs::remove_dir_all(dir.join("out"));
            let (took, cpu, dcpu, peak) = result?;
            secs.push(took);
            agent_cpu.push(cpu);
            daemon_cpu.push(dcpu);
            rss.push(peak);
        }
        let case = format!("{k} container(s) × {per} lines → file");
        let (a, d) = (median(agent_cpu), median(daemon_cpu));
        rows.push(Row::new(
            "daemon",
            &case,
            "time until every line captured",
            "s",
            median(secs),
            None,
        ));
        rows.push(Row::new("daemon", &case, "agent CPU", "s", a, None));
        rows.push(Row::new(
            "daemon",
            &case,
            "dockerd CPU (same window)",
            "s",
            d,
            None,
        ));
        rows.push(Row::new(
            "daemon",
            &case,
            "agent CPU / dockerd CPU",
            "%",
            if d > 0.0 { 100.0 * a / d } else { 0.0 },
            Some(("<=", 15.0)),
        ));
        rows.push(Row::new(
            "daemon",
            &case,
            "peak RSS",
            "MiB",
            median(rss),
            None,
        ));
        eprintln!("bench: daemon {k} done");
    }
    Ok(rows)
}

/// What one reopen of a container's logs costs dockerd, against the size of its json log: a
/// rotation asks for `since=<cursor>`, and the daemon reads the file from its start up to there
/// before it sends anything. Measured with `since=now` and no `follow`, so each request ends when
/// that scan does.
pub(crate) fn reopen(runs: usize, quick: bool) -> Result<Vec<Row>, String> {
    docker(&["image", "inspect", "lc-test:busybox"]).map_err(|_| {
        "test image lc-test:busybox missing: run scripts/build-test-image (needs a running dockerd)".to_string()
    })?;
    let dockerd = dockerd_pid()?;
    let sizes: &[u64] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 300_000, 1_000_000]
    };
    let reopens = if quick { 3 } else { 5 };
    let mut rows = Vec::new();
    for &lines in sizes {
        let name = format!("bench-reopen-{}-{lines}", std::process::id());
        docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "lc-test:busybox",
            "sh",
            "-c",
            &format!("seq 1 {lines}; exec sleep 3600"),
        ])?;
        let result = (|| {
            let t0 = Instant::now();
            while docker(&["logs", "--tail", "1", &name])? != lines.to_string() {
                if t0.elapsed() > Duration::from_secs(300) {
                    return Err(format!("{name}: {lines} lines not written after 300 s"));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let (mut cpu, mut wall) = (vec![], vec![]);
            for _ in 0..runs * reopens {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let url = format!(
                    "http://docker/containers/{name}/logs?stdout=1&stderr=1&timestamps=1&since={now:.9}"
                );
                let d0 = cpu_seconds(dockerd);
                let t = Instant::now();
                let o = Command::new("curl")
                    .args([
                        "-sf",
                        "--unix-socket",
                        "/var/run/docker.sock",
                        "-o",
                        "/dev/null",
                        &url,
                    ])
                    .status()
                    .map_err(|e| format!("curl: {e}"))?;
                if !o.success() {
                    return Err(format!("curl {url}: {o}"));
                }
                wall.push(t.elapsed().as_secs_f64());
                cpu.push(cpu_seconds(dockerd) - d0);
            }
            Ok((median(cpu), median(wall)))
        })();
        let _ = docker(&["rm", "-f", &name]);
        let (cpu, wall) = result?;
        let case = format!("json log of {lines} lines, since=now");
        rows.push(Row::new(
            "reopen",
            &case,
            "dockerd CPU per reopen",
            "s",
            cpu,
            None,
        ));
        rows.push(Row::new(
            "reopen",
            &case,
            "time until the first line could come",
            "s",
            wall,
            None,
        ));
        eprintln!("bench: reopen {lines} done");
    }
    Ok(rows)
}
