//! Discovery and supervision: knows every container, starts one capture task per selected
//! running container, keeps cursors across stops and starts, and reacts to lifecycle events.
//! It owns every capture task (in a `JoinSet`) and the events follower; on shutdown it cancels
//! and awaits all of them. It is the only writer of the readiness flag: ready while the events
//! stream is connected and the last listing succeeded.
//!
//! Files: `reconcile.rs` (listing and starting captures), `position.rs` (where a container
//! without checkpoint starts), `events.rs` (the events follower), `filter.rs`.

mod events;
pub mod filter;
mod json_file;
mod position;
mod reconcile;
mod summary;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::capture::{CaptureContext, CaptureExit, DeliveredCursor};
use crate::checkpoint::CheckpointStore;
use crate::clock::now_ns;
use crate::config::{FilterConfig, InitialPosition};
use crate::docker::types::{ContainerInspect, Event};
use crate::observability::metrics::Metrics;
use crate::observability::reasons::StreamErrorReason;
use crate::pipeline::{ContainerMeta, Delivery};
use events::{DiscoveryMsg, follow_events};
use reconcile::ResyncOutcome;
use summary::FirstListing;
pub use summary::StartupContext;

pub struct DiscoverySettings {
    pub include: FilterConfig,
    pub exclude: FilterConfig,
    pub initial_position: InitialPosition,
    /// Never capture this container (the agent's own).
    pub own_id: Option<String>,
    pub backoff: (Duration, Duration),
    /// When this process started (`now_ns()`), kept across config reloads: where a container
    /// without checkpoint starts (`position::start_position`).
    pub agent_start_ns: i64,
    /// Look for stopped containers without checkpoint that ran from this time on (see
    /// `reconcile::ran_unwatched`). None: since the previous run started watching (the
    /// `watching_since` marker), else since `agent_start_ns`. After a config reload, what the
    /// previous generation returned from `run`.
    pub catch_up_from_ns: Option<i64>,
    /// For the start-up summary (sinks, state directory).
    pub startup: StartupContext,
}

struct Tracked {
    meta: watch::Sender<Arc<ContainerMeta>>,
    tty: bool,
    cursor: DeliveredCursor,
    /// Token of the running capture task, if one runs.
    running: Option<CancellationToken>,
    unreadable: bool,
    /// Removed by the daemon while its task still drains what the stream had.
    destroyed: bool,
    /// json_file mode: tells the running task the container has stopped (`die`).
    stopped: Option<watch::Sender<bool>>,
}

pub struct Discovery {
    ctx: Arc<CaptureContext>,
    checkpoints: Arc<CheckpointStore>,
    metrics: Arc<Metrics>,
    settings: DiscoverySettings,
    /// True while Docker answers: the events stream is connected and the last listing
    /// succeeded (`/ready`).
    ready: Arc<AtomicBool>,
    /// The events stream is connected (a `Resync` came after the last `Lost`).
    events_connected: bool,
    agent_start_ns: i64,
    /// When this discovery (this pipeline generation) started.
    generation_start_ns: i64,
    /// Until a resync completes: look for stopped containers without checkpoint that ran
    /// at or after this time (see `reconcile::ran_unwatched`).
    catch_up_from_ns: Option<i64>,
    /// This run's watching start is recorded for the next run (`CheckpointStore::watching`).
    watch_recorded: bool,
    tracked: HashMap<String, Tracked>,
    /// Existing containers the filters do not select; pruned at every listing.
    ignored: HashSet<String>,
    /// Containers whose `start` event could not be acted on (the inspect failed): the next
    /// resync, scheduled with back-off, reads them.
    retry_starts: HashSet<String>,
    /// Of those, json_file mode: the log file opened at the `start` event (and what the event
    /// said), kept for the retry: an `--rm` container removed meanwhile is read from it.
    retry_files: HashMap<String, (Option<filter::Seen>, std::fs::File)>,
    tasks: JoinSet<(String, CaptureExit)>,
    /// The container of each capture task (to know whose task panicked).
    task_ids: HashMap<tokio::task::Id, String>,
    /// Until the first listing is reconciled: what the start-up summary counts.
    first_listing: Option<FirstListing>,
}

impl Discovery {
    pub fn new(
        ctx: Arc<CaptureContext>,
        checkpoints: Arc<CheckpointStore>,
        settings: DiscoverySettings,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let metrics = Arc::clone(&ctx.metrics);
        let agent_start_ns = settings.agent_start_ns;
        // Since the previous run started watching (it may have missed its own start-up gap
        // too), else since this run started; after a reload, what the previous generation
        // left to look at.
        let catch_up_from_ns = Some(
            settings
                .catch_up_from_ns
                .unwrap_or(checkpoints.previous_start_ns.unwrap_or(agent_start_ns)),
        );
        let first_listing = Some(FirstListing::new(settings.startup.clone()));
        Discovery {
            generation_start_ns: now_ns(),
            ctx,
            checkpoints,
            metrics,
            settings,
            ready,
            events_connected: false,
            agent_start_ns,
            catch_up_from_ns,
            watch_recorded: false,
            tracked: HashMap::new(),
            ignored: HashSet::new(),
            retry_starts: HashSet::new(),
            retry_files: HashMap::new(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            first_listing,
        }
    }

    /// Runs until `cancel`, then stops every capture task. Returns the time from which the
    /// next generation (a config reload) must look for stopped containers that ran without
    /// being read: its own start (events still queued at the cancel are not handled, and
    /// containers start and stop between two generations), or earlier if its own catch-up
    /// never completed.
    pub async fn run(mut self, cancel: CancellationToken) -> i64 {
        let (tx, mut rx) = mpsc::channel(1024);
        let follower_cancel = cancel.child_token();
        let follower = tokio::spawn(follow_events(
            self.ctx.client.clone(),
            tx,
            Arc::clone(&self.metrics),
            self.settings.backoff,
            self.ctx
                .json_file
                .as_ref()
                .filter(|m| m.readable)
                .map(|m| m.containers_dir.clone()),
            follower_cancel.clone(),
        ));
        // A resync that fails (or is incomplete) is retried with back-off (the events stream
        // may be healthy and never reconnect, so nothing else would list again).
        let mut retry = Backoff::new(self.settings.backoff.0, self.settings.backoff.1);
        let mut resync_at: Option<tokio::time::Instant> = None;
        loop {
            let retry_due = async {
                match resync_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let resync = tokio::select! {
                _ = cancel.cancelled() => break,
                () = retry_due => true,
                msg = rx.recv() => match msg {
                    Some(DiscoveryMsg::Resync) => {
                        self.events_connected = true;
                        true
                    }
                    Some(DiscoveryMsg::Lost) => {
                        // Not ready until the stream is back and a listing succeeded.
                        self.events_connected = false;
                        self.set_ready(false);
                        false
                    }
                    Some(DiscoveryMsg::Event(event, opened)) => {
                        let failed = tokio::select! {
                            _ = cancel.cancelled() => break,
                            failed = self.on_event(event, opened, &cancel) => failed,
                        };
                        if failed && resync_at.is_none() {
                            resync_at = Some(tokio::time::Instant::now() + retry.next_delay());
                        }
                        false
                    }
                    None => break,
                },
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    let (id, exit) = match joined {
                        Ok((task, (id, exit))) => {
                            self.task_ids.remove(&task);
                            (id, exit)
                        }
                        Err(e) => {
                            // A panicked task: its container must not stay marked as
                            // captured forever. Treat it as a stream that ended.
                            warn!(error = %e, "capture task failed");
                            match self.task_ids.remove(&e.id()) {
                                Some(id) => (id, CaptureExit::Stopped),
                                None => continue,
                            }
                        }
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        resync = self.on_exit(id, exit, &cancel) => resync,
                    }
                }
            };
            if resync {
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => break,
                    outcome = self.resync(&cancel) => outcome,
                };
                let listed = outcome != ResyncOutcome::Failed;
                self.set_ready(listed && self.events_connected);
                if listed {
                    self.log_startup_summary();
                }
                resync_at = if outcome == ResyncOutcome::Done {
                    retry.reset();
                    None
                } else {
                    Some(tokio::time::Instant::now() + retry.next_delay())
                };
            }
        }
        // Shutdown: every task token is a child of `cancel`; wait for all of them.
        follower_cancel.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                warn!(error = %e, "capture task failed during shutdown");
            }
        }
        if let Err(e) = follower.await {
            warn!(error = %e, "events follower failed");
        }
        self.metrics.containers_tracked.set(0);
        // The next generation (a config reload) counts them again when it finds them so.
        let unreadable = self.tracked.values().filter(|t| t.unreadable).count();
        self.metrics.containers_unreadable.dec_by(unreadable as i64);
        debug!("discovery stopped");
        self.catch_up_from_ns
            .map_or(self.generation_start_ns, |from| {
                from.min(self.generation_start_ns)
            })
    }

    fn set_ready(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::Relaxed) != ready {
            info!(ready, "readiness changed");
        }
    }

    fn update_gauges(&self) {
        self.metrics
            .containers_tracked
            .set(self.tracked.len() as i64);
        self.metrics
            .containers_ignored
            .set(self.ignored.len() as i64);
    }

    /// Returns true when the event could not be acted on (an inspect failed) and a resync
    /// must be scheduled to retry it.
    async fn on_event(
        &mut self,
        event: Event,
        opened: Option<std::fs::File>,
        cancel: &CancellationToken,
    ) -> bool {
        let id = event.actor.id.clone();
        let mut retry = false;
        match event.action.as_str() {
            "start" => {
                if let Some(t) = self.tracked.get(&id)
                    && t.running.is_some()
                {
                    return false;
                }
                // It started: read it, to its end if it has already stopped again.
                // What the event says decides, if it is already gone (an instant `--rm`),
                // whether it is named in a warning: only if the filters select it.
                let seen = filter::Seen::from_event_attributes(&event.actor.attributes);
                if !self.ignored.contains(&id)
                    && !self
                        .consider(&id, true, seen.as_ref(), opened, cancel)
                        .await
                {
                    self.retry_starts.insert(id);
                    retry = true;
                }
            }
            // json_file mode: the file has no end; the container's lines are complete once it
            // has stopped and its file is read to the end (dockerd drains the log copier and
            // closes the log before it emits `die`).
            "die" => {
                if let Some(tx) = self.tracked.get(&id).and_then(|t| t.stopped.as_ref()) {
                    tx.send_replace(true);
                }
            }
            "destroy" => {
                self.ignored.remove(&id);
                // A short-lived container can be removed while its stream is still being
                // read: let the task drain (it ends at EOF or on 404), then forget.
                match self.tracked.get_mut(&id) {
                    Some(t) if t.running.is_some() => t.destroyed = true,
                    _ => self.forget(&id),
                }
            }
            "rename" => {
                let new_name = event
                    .actor
                    .attributes
                    .get("name")
                    .map(|n| n.trim_start_matches('/').to_string());
                if let (Some(t), Some(new_name)) = (self.tracked.get(&id), new_name) {
                    let old = t.meta.borrow().name.clone();
                    t.meta
                        .send_modify(|m| *m = Arc::new(m.renamed(new_name.clone())));
                    self.metrics.forget_container(&old);
                    info!(container_id = %id, from = %old, to = %new_name, "container renamed");
                } else if self.ignored.remove(&id) {
                    // Filters may select it under its new name (if it is not running, its
                    // next `start` decides).
                    // Not inspectable now: the scheduled resync reads it if it runs.
                    retry = !self.consider(&id, false, None, None, cancel).await;
                }
            }
            _ => {}
        }
        self.update_gauges();
        retry
    }

    /// A capture task ended. Returns true when a resync is needed (the container's state
    /// could not be checked, so it might still run, or have been started again).
    async fn on_exit(&mut self, id: String, exit: CaptureExit, cancel: &CancellationToken) -> bool {
        let Some(t) = self.tracked.get_mut(&id) else {
            return false;
        };
        t.running = None;
        if matches!(exit, CaptureExit::Stopped | CaptureExit::Gone) {
            // Behind the container's last lines: sinks may close its output once written.
            let marker = Delivery::end_of_stream(Arc::clone(&t.meta.borrow()));
            // Never waits: discovery must not block behind a full queue. A marker that does
            // not fit only costs an open file until the sink's `idle_close`.
            if self.ctx.pipeline.try_send(marker).is_err() {
                debug!(container_id = %id, "queue full: end-of-stream marker not sent; its file closes at idle_close");
            }
        }
        if t.destroyed {
            self.forget(&id);
            self.update_gauges();
            return false;
        }
        match exit {
            CaptureExit::Cancelled => {}
            CaptureExit::Unreadable => {
                if !t.unreadable {
                    t.unreadable = true;
                    self.metrics.containers_unreadable.inc();
                }
            }
            CaptureExit::Gone => {}
            CaptureExit::Stopped => {
                // A `start` may have been handled while the task was finishing: check again.
                match self.ctx.client.inspect(&id).await {
                    Ok(c) if c.state.running && !cancel.is_cancelled() => {
                        return !self.consider(&id, false, None, None, cancel).await;
                    }
                    Ok(_) => {}
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => {
                        self.metrics.stream_error(StreamErrorReason::Inspect);
                        warn!(container_id = %id, error = %e,
                            "cannot inspect container after its stream ended; listing again");
                        return true;
                    }
                }
            }
        }
        false
    }

    fn forget(&mut self, id: &str) {
        if let Some(t) = self.tracked.remove(id) {
            if let Some(token) = t.running {
                token.cancel();
            }
            if t.unreadable {
                self.metrics.containers_unreadable.dec();
            }
            let name = t.meta.borrow().name.clone();
            self.metrics.forget_container(&name);
            debug!(container = %name, container_id = %id, "container removed; forgotten");
        }
        self.ctx.status.forget(id);
        self.checkpoints.forget(id);
    }
}

fn container_meta(info: &ContainerInspect) -> ContainerMeta {
    let label = |k: &str| info.config.labels.as_ref().and_then(|l| l.get(k)).cloned();
    ContainerMeta::new(
        info.id.clone(),
        info.name.trim_start_matches('/').to_string(),
        info.config.image.clone(),
        label("com.docker.compose.project"),
        label("com.docker.compose.service"),
    )
}
