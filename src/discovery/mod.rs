//! Discovery and supervision: knows every container, starts one capture task per selected
//! running container, keeps cursors across stops and starts, and reacts to lifecycle events.
//! It owns every capture task (in a `JoinSet`) and the events follower; on shutdown it cancels
//! and awaits all of them.

mod events;
pub mod filter;
mod position;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::capture::{CaptureContext, CaptureExit, CaptureTask, SharedCursor};
use crate::checkpoint::{CheckpointStore, now_ns};
use crate::config::{FilterConfig, InitialPosition};
use crate::docker::timestamp::parse_rfc3339_nanos;
use crate::docker::types::{ContainerInspect, Event};
use crate::observability::metrics::Metrics;
use crate::pipeline::ContainerMeta;
use events::{DiscoveryMsg, follow_events};
use filter::{Candidate, selected};
use position::{StartFacts, start_position};

pub struct DiscoverySettings {
    pub include: FilterConfig,
    pub exclude: FilterConfig,
    pub initial_position: InitialPosition,
    /// Never capture this container (the agent's own).
    pub own_id: Option<String>,
    pub backoff: (Duration, Duration),
}

struct Tracked {
    meta: watch::Sender<Arc<ContainerMeta>>,
    tty: bool,
    cursor: SharedCursor,
    /// Token of the running capture task, if one runs.
    running: Option<CancellationToken>,
    unreadable: bool,
    /// Removed by the daemon while its task still drains what the stream had.
    destroyed: bool,
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
    tracked: HashMap<String, Tracked>,
    /// Existing containers the filters do not select; pruned at every listing.
    ignored: HashSet<String>,
    tasks: JoinSet<(String, CaptureExit)>,
    /// The container of each capture task (to know whose task panicked).
    task_ids: HashMap<tokio::task::Id, String>,
}

/// How a resync went.
#[derive(Debug, PartialEq, Eq)]
enum ResyncOutcome {
    /// Both listings answered and every container was reconciled.
    Done,
    /// The listings answered, but a container could not be inspected: retry later, or it
    /// might never be read.
    Incomplete,
    /// A listing failed: Docker is unreachable or failing.
    Failed,
}

impl Discovery {
    pub fn new(
        ctx: Arc<CaptureContext>,
        checkpoints: Arc<CheckpointStore>,
        settings: DiscoverySettings,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let metrics = Arc::clone(&ctx.metrics);
        Discovery {
            ctx,
            checkpoints,
            metrics,
            settings,
            ready,
            events_connected: false,
            agent_start_ns: now_ns(),
            tracked: HashMap::new(),
            ignored: HashSet::new(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let (tx, mut rx) = mpsc::channel(1024);
        let follower_cancel = cancel.child_token();
        let follower = tokio::spawn(follow_events(
            self.ctx.client.clone(),
            tx,
            Arc::clone(&self.metrics),
            self.settings.backoff,
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
                    Some(DiscoveryMsg::Event(event)) => {
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            () = self.on_event(event, &cancel) => false,
                        }
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
        debug!("discovery stopped");
    }

    fn set_ready(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::Relaxed) != ready {
            info!(ready, "readiness changed");
        }
    }

    /// Lists containers and reconciles: reads every container that was listed as running or
    /// has a cursor and has no capture task (to its end if it is found stopped by then), and
    /// drops what no longer exists (tracked containers, checkpoints, ignored ids).
    async fn resync(&mut self, cancel: &CancellationToken) -> ResyncOutcome {
        let client = self.ctx.client.clone();
        let listed = match client.list_running().await {
            Ok(running) => client.list_all().await.map(|all| (running, all)),
            Err(e) => Err(e),
        };
        let (running, all) = match listed {
            Ok(lists) => lists,
            Err(e) => {
                self.metrics.stream_error("list");
                warn!(error = %e, "cannot list containers");
                return ResyncOutcome::Failed;
            }
        };
        let exists: HashSet<&str> = all.iter().map(|c| c.id.as_str()).collect();
        let gone: Vec<String> = self
            .tracked
            .keys()
            .filter(|id| !exists.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.forget(&id);
        }
        // Checkpoints of containers removed while the agent was not running or the events
        // stream was down. Every container holding a checkpoint is tracked after a listing,
        // so this is only ever stale state.
        for id in self.checkpoints.ids() {
            if !exists.contains(id.as_str()) {
                info!(container_id = %id, "container no longer exists; dropping its checkpoint");
                self.checkpoints.forget(&id);
            }
        }
        self.ignored.retain(|id| exists.contains(id.as_str()));

        // Listed as running: read it, and if it has stopped since (it may exit between the
        // listing and the inspect), read it to its end. Holding a cursor: it stopped while
        // the agent was down or the events stream was lost; read what it wrote since.
        let mut to_read: Vec<String> = running.iter().map(|c| c.id.clone()).collect();
        let listed_running: HashSet<&str> = running.iter().map(|c| c.id.as_str()).collect();
        to_read.extend(
            all.iter()
                .map(|c| c.id.as_str())
                .filter(|id| !listed_running.contains(id) && self.checkpoints.get(id).is_some())
                .map(str::to_string),
        );
        let mut complete = true;
        for id in to_read {
            let busy = self.tracked.get(&id).is_some_and(|t| t.running.is_some());
            if !busy && !self.ignored.contains(&id) {
                complete &= self.consider(&id, true, cancel).await;
            }
        }
        self.update_gauges();
        if complete {
            ResyncOutcome::Done
        } else {
            ResyncOutcome::Incomplete
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

    async fn on_event(&mut self, event: Event, cancel: &CancellationToken) {
        let id = event.actor.id.clone();
        match event.action.as_str() {
            "start" => {
                if let Some(t) = self.tracked.get(&id)
                    && t.running.is_some()
                {
                    return;
                }
                if !self.ignored.contains(&id) {
                    // It started: read it, to its end if it has already stopped again.
                    self.consider(&id, true, cancel).await;
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
                    self.consider(&id, false, cancel).await;
                }
            }
            _ => {}
        }
        self.update_gauges();
    }

    /// A capture task ended. Returns true when a resync is needed (the container's state
    /// could not be checked, so it might still run, or have been started again).
    async fn on_exit(&mut self, id: String, exit: CaptureExit, cancel: &CancellationToken) -> bool {
        let Some(t) = self.tracked.get_mut(&id) else {
            return false;
        };
        t.running = None;
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
                        return !self.consider(&id, false, cancel).await;
                    }
                    Ok(_) => {}
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => {
                        self.metrics.stream_error("inspect");
                        warn!(container_id = %id, error = %e,
                            "cannot inspect container after its stream ended; listing again");
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Inspects a container and, if selected, starts capturing it. `drain`: also when it is
    /// not running (its logs are then read up to their end). Returns false when the inspect
    /// failed for a reason other than the container being gone (the caller retries).
    async fn consider(&mut self, id: &str, drain: bool, cancel: &CancellationToken) -> bool {
        if self.settings.own_id.as_deref() == Some(id) {
            self.ignored.insert(id.to_string());
            return true;
        }
        let info = match self.ctx.client.inspect(id).await {
            Ok(info) => info,
            Err(e) if e.status() == Some(404) => return true,
            Err(e) => {
                self.metrics.stream_error("inspect");
                warn!(container_id = %id, error = %e, "cannot inspect container");
                return false;
            }
        };
        let meta = container_meta(&info);
        let no_labels = HashMap::new();
        let candidate = Candidate {
            name: &meta.name,
            image: &meta.image,
            labels: info.config.labels.as_ref().unwrap_or(&no_labels),
        };
        if !selected(&self.settings.include, &self.settings.exclude, &candidate) {
            debug!(container = %meta.name, "container not selected by filters");
            self.ignored.insert(id.to_string());
            return true;
        }
        if !info.state.running && !drain {
            return true;
        }
        let meta = Arc::new(meta);
        let (cursor, tty) = match self.tracked.get_mut(id) {
            Some(t) => {
                if **t.meta.borrow() != *meta {
                    t.meta.send_replace(Arc::clone(&meta));
                }
                if t.unreadable {
                    t.unreadable = false;
                    self.metrics.containers_unreadable.dec();
                }
                (Arc::clone(&t.cursor), t.tty)
            }
            None => {
                let start = start_position(&StartFacts {
                    checkpoint: self.checkpoints.get(id),
                    created_ns: parse_rfc3339_nanos(info.created.as_bytes()).unwrap_or(0),
                    agent_start_ns: self.agent_start_ns,
                    had_previous_run: self.checkpoints.had_previous_run,
                    initial_position: self.settings.initial_position,
                });
                self.checkpoints.init(id, start);
                let cursor = Arc::new(std::sync::Mutex::new(start));
                info!(container = %meta.name, container_id = %id, tty = info.config.tty,
                    running = info.state.running, since = start.ts_ns, "capturing container");
                self.tracked.insert(
                    id.to_string(),
                    Tracked {
                        meta: watch::Sender::new(Arc::clone(&meta)),
                        tty: info.config.tty,
                        cursor: Arc::clone(&cursor),
                        running: None,
                        unreadable: false,
                        destroyed: false,
                    },
                );
                (cursor, info.config.tty)
            }
        };
        let Some(t) = self.tracked.get_mut(id) else {
            return true;
        };
        let token = cancel.child_token();
        let task = CaptureTask {
            ctx: Arc::clone(&self.ctx),
            id: id.to_string(),
            tty,
            meta: t.meta.subscribe(),
            cursor,
            cancel: token.clone(),
        };
        t.running = Some(token);
        let owned_id = id.to_string();
        let handle = self
            .tasks
            .spawn(async move { (owned_id, task.run().await) });
        self.task_ids.insert(handle.id(), id.to_string());
        true
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
