//! Follows `GET /events` for container lifecycle events. On every (re)connection it first asks
//! the supervisor to re-list containers, so nothing that happened while the stream was down is
//! missed; it also asks the daemon to replay events since the last one it saw.

use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backoff::{Backoff, sleep_or_cancel};
use crate::clock::now_ns;
use crate::docker::DockerClient;
use crate::docker::types::Event;
use crate::observability::metrics::Metrics;
use crate::observability::reasons::StreamErrorReason;

#[derive(Debug)]
pub enum DiscoveryMsg {
    /// The events stream is (re)connected: list containers to catch up.
    Resync,
    /// The events stream cannot be opened or was lost: Docker is unreachable (not ready).
    Lost,
    /// With the container's json-file log when it was opened at its `start` (json_file mode).
    Event(Event, Option<std::fs::File>),
}

/// Hands `msg` to the supervisor; false when it is gone or we are cancelled meanwhile.
async fn send(
    tx: &mpsc::Sender<DiscoveryMsg>,
    msg: DiscoveryMsg,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        sent = tx.send(msg) => sent.is_ok(),
    }
}

pub async fn follow_events(
    client: DockerClient,
    tx: mpsc::Sender<DiscoveryMsg>,
    metrics: Arc<Metrics>,
    backoff: (Duration, Duration),
    preopen_dir: Option<std::path::PathBuf>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(backoff.0, backoff.1);
    let mut since: Option<i64> = None;
    let mut connected_before = false;
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = client.events(since) => r,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                metrics.stream_error(StreamErrorReason::EventsOpen);
                if !send(&tx, DiscoveryMsg::Lost, &cancel).await {
                    return;
                }
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "cannot follow Docker events");
                if !sleep_or_cancel(delay, &cancel).await {
                    return;
                }
                continue;
            }
        };
        if connected_before {
            metrics.events_reconnects.inc();
        }
        connected_before = true;
        since.get_or_insert_with(now_ns);
        if !send(&tx, DiscoveryMsg::Resync, &cancel).await {
            return;
        }
        let mut buf = BytesMut::new();
        let mut got_any = false;
        let why = loop {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => return,
                c = stream.next_chunk() => c,
            };
            match chunk {
                Ok(Some(bytes)) => {
                    got_any = true;
                    buf.extend_from_slice(&bytes);
                    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                        let line = buf.split_to(pos + 1);
                        let line = line.trim_ascii();
                        if line.is_empty() {
                            continue;
                        }
                        match serde_json::from_slice::<Event>(line) {
                            Ok(event) => {
                                if event.time_nano > 0 {
                                    since = Some(event.time_nano);
                                }
                                debug!(action = %event.action, id = %event.actor.id, "docker event");
                                // Here, before anything else: an `--rm` container that exits
                                // at once is removed within milliseconds of its start, and
                                // the open descriptor keeps its log readable. (Docker creates
                                // the file at start, not at create.)
                                let opened = match (&preopen_dir, event.action.as_str()) {
                                    (Some(dir), "start") => {
                                        // An open: off the async worker.
                                        crate::capture::json_file::off_worker(|| {
                                            crate::capture::json_file::preopen(dir, &event.actor.id)
                                        })
                                    }
                                    _ => None,
                                };
                                if !send(&tx, DiscoveryMsg::Event(event, opened), &cancel).await {
                                    return;
                                }
                            }
                            Err(e) => {
                                metrics.stream_error(StreamErrorReason::EventsDecode);
                                warn!(error = %e, "undecodable Docker event skipped");
                            }
                        }
                    }
                }
                Ok(None) => break "the events stream ended".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        metrics.stream_error(StreamErrorReason::EventsDropped);
        if !send(&tx, DiscoveryMsg::Lost, &cancel).await {
            return;
        }
        if got_any {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        warn!(reason = %why, retry_in = ?delay, "Docker events stream lost; reconnecting");
        if !sleep_or_cancel(delay, &cancel).await {
            return;
        }
    }
}
