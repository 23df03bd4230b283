//! Pipeline generations: the first on the start-up config, then one per reload that changes
//! what the pipeline reads (see the module doc of `agent`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::docker::Endpoint;
use crate::observability::metrics::Metrics;
use crate::observability::metrics::ResultLabels;
use crate::observability::reasons::ReloadOutcome;
use crate::reload::{Change, ReloadError, ReloadReceiver, ReloadRequest, ReloadResult};
use crate::sinks::loki::LokiClient;

use super::pipeline::*;
use super::sinks::*;
use super::{AgentError, Outcome, Process};

/// How a generation ended.
pub(super) struct GenerationEnd {
    pub(super) outcome: Outcome,
    /// Capture stopped and every sink drained within `pipeline.shutdown_timeout`.
    pub(super) drained: bool,
    /// Where the next generation's catch-up starts (`Discovery::run`); None if discovery
    /// never ran.
    pub(super) catch_up_from_ns: Option<i64>,
}

/// What a reload request asks for, once the new config is read and compared.
pub(super) enum Verdict {
    /// Answered; the generation keeps running (with `Some`, on this config: log level only).
    Done(ReloadResult, Option<Config>),
    /// Drain the generation and start one on this config.
    NewGeneration(Config, Vec<&'static str>),
}

/// Runs pipeline generations: the first on `config`, then one per reload that changes what
/// the pipeline reads. Returns when the process must stop.
pub(super) async fn run_generations(
    mut config: Config,
    process: &Process,
    requests: &mut ReloadReceiver,
) -> Result<Outcome, AgentError> {
    let mut catch_up_from_ns = None;
    // The reload that started this generation: its requests (answered once it runs) and the
    // config to go back to if it cannot start.
    let mut reloading: Option<(Vec<ReloadRequest>, Config)> = None;
    loop {
        let prepared = match prepare_sinks(&config, &process.metrics).await {
            Ok(prepared) => prepared,
            Err(e) => match reloading.take() {
                Some((batch, previous)) => {
                    let message = format!(
                        "{}: the new config could not be started: {e}; running the previous config again",
                        process.source.name
                    );
                    error!(%message, "config reload failed");
                    record_reload(&process.metrics, ReloadOutcome::Failed);
                    answer(
                        batch,
                        Err(ReloadError {
                            status: 500,
                            message,
                        }),
                    );
                    config = previous;
                    continue;
                }
                None => return Err(e.into()),
            },
        };
        if let Some((batch, _)) = reloading.take() {
            record_reload(&process.metrics, ReloadOutcome::Applied);
            process.status.set_config(&config);
            let message = format!("{}: configuration reloaded", process.source.name);
            info!("{message}");
            answer(batch, Ok(message));
        }

        let stop = process.shutdown.child_token();
        let generation = run_pipeline(
            config.clone(),
            prepared,
            process,
            stop.clone(),
            catch_up_from_ns,
        );
        tokio::pin!(generation);
        let mut next = None;
        let end = loop {
            let request = tokio::select! {
                end = &mut generation => break end,
                request = requests.recv() => request,
            };
            let Some(request) = request else {
                // No sender left (cannot happen while main.rs holds one): wait for the end.
                break (&mut generation).await;
            };
            // Coalesce: everything queued meanwhile is answered by this reload.
            let mut batch = vec![request];
            while let Ok(more) = requests.try_recv() {
                batch.push(more);
            }
            let origins: Vec<&str> = batch.iter().map(|r| r.origin).collect();
            info!(from = ?origins, file = %process.source.name, "reloading the configuration");
            // Reading the file may hang (a stuck network file system): a shutdown must still
            // drain the running generation (which is not polled meanwhile).
            let verdict = tokio::select! {
                verdict = evaluate(&config, process) => verdict,
                _ = process.shutdown.cancelled() => {
                    answer(batch, Err(ReloadError {
                        status: 503,
                        message: "the agent is stopping; the reload was not applied".to_string(),
                    }));
                    break (&mut generation).await;
                }
            };
            match verdict {
                Verdict::Done(result, applied) => {
                    if let Some(applied) = applied {
                        process.status.set_config(&applied);
                        config = applied;
                    }
                    answer(batch, result);
                }
                Verdict::NewGeneration(new, sections) => {
                    info!(changed = ?sections,
                        "reload: draining the capture pipeline to start it on the new config");
                    if sections.contains(&"docker") {
                        // Connected anew: not ready until Docker has answered and been listed.
                        process.ready.store(false, Ordering::Relaxed);
                    }
                    stop.cancel();
                    next = Some((batch, new));
                    break (&mut generation).await;
                }
            }
        };
        catch_up_from_ns = end.catch_up_from_ns.or(catch_up_from_ns);
        let Some((batch, new)) = next else {
            return Ok(end.outcome);
        };
        if process.shutdown.is_cancelled() {
            answer(
                batch,
                Err(ReloadError {
                    status: 503,
                    message: "the agent is stopping; the reload was not applied".to_string(),
                }),
            );
            return Ok(end.outcome);
        }
        if !end.drained {
            // A sink thread may still be blocked in a write and may yet write and acknowledge:
            // a new generation writing the same lines again beside it could duplicate them.
            // Stop as a shutdown does: nothing unacknowledged is checkpointed, the restart
            // (by the service manager) reads it again, on the new file.
            error!(
                "reload: the drain did not finish within pipeline.shutdown_timeout; stopping \
                 the agent (exit 3) so that a restart resumes from what was acknowledged"
            );
            record_reload(&process.metrics, ReloadOutcome::Failed);
            answer(
                batch,
                Err(ReloadError {
                    status: 500,
                    message: "the pipeline did not drain within pipeline.shutdown_timeout; \
                              the agent stops (exit 3); restart it to run the new config"
                        .to_string(),
                }),
            );
            process.shutdown.cancel();
            return Ok(end.outcome);
        }
        if let Outcome::Incomplete(problems) = &end.outcome {
            // Drained, but a sink gave up on batches or a checkpoint write failed: what was
            // not acknowledged is read again by the next generation, as after a restart.
            for problem in problems {
                warn!(%problem, "reload: the drain left this behind; the new pipeline reads it again");
            }
        }
        let previous = std::mem::replace(&mut config, new);
        reloading = Some((batch, previous));
    }
}

/// Reads the config again and decides what the reload does; applies a log-level-only change
/// at once. Counts the result and sets the reload metrics (except for a new generation,
/// counted once it starts).
pub(super) async fn evaluate(running: &Config, process: &Process) -> Verdict {
    let metrics = &process.metrics;
    let source = Arc::clone(&process.source);
    let loaded = tokio::task::spawn_blocking(move || (source.load)()).await;
    let name = &process.source.name;
    let fail = |result: ReloadOutcome, status: u16, message: String| {
        error!(file = %name, problem = %message, "config reload failed; the running config is kept");
        record_reload(metrics, result);
        Verdict::Done(Err(ReloadError { status, message }), None)
    };
    let new = match loaded {
        Ok(Ok(new)) => new,
        Ok(Err(e)) => {
            return fail(
                ReloadOutcome::Invalid,
                500,
                format!("invalid configuration: {e}"),
            );
        }
        Err(e) => {
            return fail(
                ReloadOutcome::Invalid,
                500,
                format!("invalid configuration: the config loader failed: {e}"),
            );
        }
    };
    match crate::reload::diff(running, &new) {
        Err(e) => fail(ReloadOutcome::Refused, 409, format!("{name}: {e}")),
        Ok(Change::Unchanged) => {
            record_reload(metrics, ReloadOutcome::Unchanged);
            let message = if process.source.fixed {
                format!("{name}: nothing to reload (no -c FILE); the same configuration runs")
            } else {
                format!("{name}: configuration unchanged")
            };
            info!("{message}");
            Verdict::Done(Ok(message), None)
        }
        Ok(Change::LogLevel) => {
            let applied = match &process.set_log_level {
                Some(set) => set(&new.log.level),
                None => Ok(Some("no reloadable log filter in this process".to_string())),
            };
            match applied {
                Ok(note) => {
                    record_reload(metrics, ReloadOutcome::Applied);
                    let mut message = format!("{name}: log.level is now {:?}", new.log.level);
                    if let Some(note) = note {
                        message.push_str(&format!(" ({note})"));
                    }
                    info!("{message}");
                    Verdict::Done(Ok(message), Some(new))
                }
                Err(e) => fail(
                    ReloadOutcome::Failed,
                    500,
                    format!("{name}: log.level: {e}"),
                ),
            }
        }
        Ok(Change::Pipeline(sections)) => {
            // What can be checked without stopping anything is checked before the drain.
            if let Some(loki) = &new.sinks.loki
                && let Err(e) = LokiClient::new(loki)
            {
                return fail(
                    ReloadOutcome::Failed,
                    500,
                    format!("{name}: sinks.loki: {e}"),
                );
            }
            #[cfg(feature = "kafka")]
            if let Some(kafka) = &new.sinks.kafka
                && let Err(e) =
                    crate::sinks::kafka::client_config::checked_client_config(kafka).await
            {
                return fail(ReloadOutcome::Failed, 500, format!("{name}: {e}"));
            }
            if let Err(e) = Endpoint::resolve_with(&new.docker) {
                return fail(
                    ReloadOutcome::Failed,
                    500,
                    format!("{name}: docker.host: {e}"),
                );
            }
            Verdict::NewGeneration(new, sections)
        }
    }
}

/// Counts a reload attempt; sets the success gauges.
pub(super) fn record_reload(metrics: &Metrics, result: ReloadOutcome) {
    metrics
        .config_reloads
        .get_or_create(&ResultLabels {
            result: result.as_label(),
        })
        .inc();
    if matches!(result, ReloadOutcome::Applied | ReloadOutcome::Unchanged) {
        metrics.config_loaded();
    } else {
        metrics.config_last_reload_successful.set(0);
    }
}

pub(super) fn answer(batch: Vec<ReloadRequest>, result: ReloadResult) {
    for request in batch {
        if let Some(reply) = request.reply {
            // The client may have gone: nobody to tell.
            let _ = reply.send(result.clone());
        }
    }
}
