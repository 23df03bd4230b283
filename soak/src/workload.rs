//! The containers of a soak run: a realistic mix, each line carrying the container's name and a
//! sequence number, so that every line can be accounted for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log_capturer_testkit::docker::{Served, docker, served_logs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A few hundred lines, then silence forever: what broke the old agent.
    BurstIdle,
    /// A line every 100–1000 ms.
    Steady,
    /// Thousands of lines at once, then quiet, again and again.
    Bursty,
    /// Mostly stderr, 50 lines/s.
    NoisyStderr,
    /// `-t`: raw TTY stream.
    Tty,
    /// Exits every ~20 s under `--restart always`; the sequence continues across runs.
    Restarting,
    /// `--log-driver none`: nothing can be read; one warning expected.
    DriverNone,
    /// Short-lived, created and removed throughout the run.
    Churn,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BurstIdle => "burst-idle",
            Kind::Steady => "steady",
            Kind::Bursty => "bursty",
            Kind::NoisyStderr => "stderr",
            Kind::Tty => "tty",
            Kind::Restarting => "restarting",
            Kind::DriverNone => "driver-none",
            Kind::Churn => "churn",
        }
    }

    /// Long-lived containers must rotate on schedule.
    pub fn long_lived(self) -> bool {
        matches!(
            self,
            Kind::BurstIdle | Kind::Steady | Kind::Bursty | Kind::NoisyStderr | Kind::Tty
        )
    }
}

pub struct Container {
    pub name: String,
    pub kind: Kind,
}

/// The mix for `n` (at least 8) long-running containers, one of them `--log-driver none`.
pub fn mix(n: usize) -> Vec<Kind> {
    let n = n.max(8);
    let share = |pct: usize| (n * pct / 100).max(1);
    let mut kinds = Vec::new();
    for (kind, pct) in [
        (Kind::BurstIdle, 30),
        (Kind::Bursty, 10),
        (Kind::NoisyStderr, 10),
        (Kind::Tty, 10),
        (Kind::Restarting, 10),
    ] {
        kinds.extend(std::iter::repeat_n(kind, share(pct)));
    }
    kinds.push(Kind::DriverNone);
    while kinds.len() < n {
        kinds.push(Kind::Steady);
    }
    kinds
}

fn script(kind: Kind, index: usize) -> String {
    // NAME is set per container; every line is "<name> seq=<n>".
    match kind {
        Kind::BurstIdle => {
            "i=1; while [ $i -le 300 ]; do echo \"$NAME seq=$i\"; i=$((i+1)); done; exec sleep 1000000"
                .to_string()
        }
        Kind::Steady | Kind::DriverNone => {
            let us = 100_000 + (index * 137_000) % 900_000;
            format!("i=1; while true; do echo \"$NAME seq=$i\"; i=$((i+1)); usleep {us}; done")
        }
        Kind::Bursty => "i=1; while true; do j=0; while [ $j -lt 2000 ]; do echo \"$NAME seq=$i\"; \
             i=$((i+1)); j=$((j+1)); done; sleep 20; done"
            .to_string(),
        Kind::NoisyStderr => {
            "i=1; while true; do echo \"$NAME seq=$i\" >&2; i=$((i+1)); usleep 20000; done".to_string()
        }
        Kind::Tty => {
            "i=1; while true; do echo \"$NAME seq=$i\"; i=$((i+1)); usleep 200000; done".to_string()
        }
        Kind::Restarting => "n=$(cat /tmp/seq 2>/dev/null || echo 0); end=$((n+200)); \
             while [ $n -lt $end ]; do n=$((n+1)); echo \"$NAME seq=$n\"; echo $n > /tmp/seq; \
             usleep 100000; done; exit 0"
            .to_string(),
        Kind::Churn => {
            "i=1; while [ $i -le 50 ]; do echo \"$NAME seq=$i\"; i=$((i+1)); usleep 20000; done"
                .to_string()
        }
    }
}

/// Starts one container; returns its name.
pub fn start(
    run_id: &str,
    label: &str,
    image: &str,
    kind: Kind,
    index: usize,
) -> Result<Container, String> {
    let name = format!("soak-{run_id}-{}-{index}", kind.as_str());
    let env = format!("NAME={name}");
    let mut args = vec!["run", "-d", "--name", &name, "--label", label, "-e", &env];
    match kind {
        Kind::Tty => args.push("-t"),
        Kind::Restarting => args.extend(["--restart", "always"]),
        Kind::DriverNone => args.extend(["--log-driver", "none"]),
        _ => {}
    }
    let text = script(kind, index);
    args.extend([image, "sh", "-c", &text]);
    docker(&args)?;
    Ok(Container { name, kind })
}

/// A finished churn container and what the daemon served for it before removal.
pub struct ChurnRecord {
    pub name: String,
    pub served: Served,
}

/// Creates short-lived containers every `every` until `stop`; each one is waited for, its
/// served logs recorded, then removed.
pub fn spawn_churn(
    run_id: String,
    label: String,
    image: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(Vec<ChurnRecord>, Vec<String>)> {
    std::thread::spawn(move || {
        let mut done = Vec::new();
        let mut errors = Vec::new();
        let mut index = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            index += 1;
            match start(&run_id, &label, &image, Kind::Churn, index) {
                Ok(c) => {
                    let _ = docker(&["wait", &c.name]);
                    match served_logs(&c.name) {
                        Ok(served) => done.push(ChurnRecord {
                            name: c.name.clone(),
                            served,
                        }),
                        Err(e) => errors.push(e),
                    }
                    if let Err(e) = docker(&["rm", "-f", &c.name]) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
            let rest = every.saturating_sub(started.elapsed());
            let until = Instant::now() + rest;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        (done, errors)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_has_every_kind() {
        for n in [8, 20, 55] {
            let m = mix(n);
            assert_eq!(m.len(), n);
            assert_eq!(m.iter().filter(|k| **k == Kind::DriverNone).count(), 1);
            for k in [
                Kind::BurstIdle,
                Kind::Steady,
                Kind::Bursty,
                Kind::NoisyStderr,
                Kind::Tty,
                Kind::Restarting,
            ] {
                assert!(m.contains(&k), "{n}: no {k:?}");
            }
        }
    }
}
