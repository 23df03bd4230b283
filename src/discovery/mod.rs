//! Discovery and supervision: knows every container, starts one capture task per selected
//! running container, keeps cursors across stops and starts, and reacts to lifecycle events.
//! It owns every capture task (in a `JoinSet`) and the events follower; on shutdown it cancels
//! and awaits all of them.

mod events;
pub mod filter;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::capture::{CaptureContext, CaptureExit, CaptureTask, Cursor, SharedCursor};
use crate::checkpoint::{CheckpointStore, now_ns};
use crate::config::{FilterConfig, InitialPosition};
use crate::docker::timestamp::parse_rfc3339_nanos;
use crate::docker::types::{ContainerInspect, Event};
use crate::observability::metrics::Metrics;
use crate::pipeline::{ContainerMeta, Delivery};
use events::{DiscoveryMsg, follow_events};
use filter::{Candidate, selected};

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
    /// Set once the first listing succeeded.
    ready: Arc<AtomicBool>,
    agent_start_ns: i64,
    tracked: HashMap<String, Tracked>,
    ignored: HashSet<String>,
    tasks: JoinSet<(String, CaptureExit)>,
    first_resync_done: bool,
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
            agent_start_ns: now_ns(),
            tracked: HashMap::new(),
            ignored: HashSet::new(),
            tasks: JoinSet::new(),
            first_resync_done: false,
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
        // A listing that fails is retried with back-off (the events stream may be healthy and
        // never reconnect, so nothing else would list again).
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
                    Some(DiscoveryMsg::Resync) => true,
                    Some(DiscoveryMsg::Event(event)) => {
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            () = self.on_event(event, &cancel) => false,
                        }
                    }
                    None => break,
                },
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match joined {
                        Ok((id, exit)) => {
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                () = self.on_exit(id, exit, &cancel) => false,
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "capture task failed");
                            false
                        }
                    }
                }
            };
            if resync {
                let listed = tokio::select! {
                    _ = cancel.cancelled() => break,
                    ok = self.resync(&cancel) => ok,
                };
                resync_at = if listed {
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

    /// Lists containers and reconciles: start what is running and not captured, drop what no
    /// longer exists.
    async fn resync(&mut self, cancel: &CancellationToken) -> bool {
        let client = self.ctx.client.clone();
        let running = match client.list_running().await {
            Ok(list) => list,
            Err(e) => {
                self.metrics.stream_error("list");
                warn!(error = %e, "cannot list containers");
                return false;
            }
        };
        for c in &running {
            let busy = self.tracked.get(&c.id).is_some_and(|t| t.running.is_some());
            if !busy && !self.ignored.contains(&c.id) {
                self.consider(&c.id, None, false, cancel).await;
            }
        }
        if let Ok(all) = client.list_all().await {
            let exists: HashSet<&str> = all.iter().map(|c| c.id.as_str()).collect();
            // Stopped containers we hold a cursor for (they stopped while the agent was down or
            // the events stream was lost): read what they wrote since, up to their end.
            let running_ids: HashSet<&str> = running.iter().map(|c| c.id.as_str()).collect();
            let stopped_with_cursor: Vec<String> = all
                .iter()
                .map(|c| c.id.as_str())
                .filter(|id| !running_ids.contains(id) && self.checkpoints.get(id).is_some())
                .filter(|id| self.tracked.get(*id).is_none_or(|t| t.running.is_none()))
                .map(str::to_string)
                .collect();
            for id in stopped_with_cursor {
                self.consider(&id, None, true, cancel).await;
            }
            let gone: Vec<String> = self
                .tracked
                .keys()
                .filter(|id| !exists.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                self.forget(&id);
            }
            if !self.first_resync_done {
                // Checkpoints of containers removed while the agent was not running.
                for id in self.checkpoints.ids() {
                    if !exists.contains(id.as_str()) {
                        info!(container_id = %id, "container no longer exists; dropping its checkpoint");
                        self.checkpoints.forget(&id);
                    }
                }
            }
        }
        self.first_resync_done = true;
        self.ready.store(true, Ordering::Relaxed);
        self.metrics
            .containers_tracked
            .set(self.tracked.len() as i64);
        true
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
                    self.consider(&id, Some(event.time_nano), false, cancel)
                        .await;
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
                    // Filters may select it under its new name.
                    self.consider(&id, Some(event.time_nano), false, cancel)
                        .await;
                }
            }
            _ => {}
        }
        self.metrics
            .containers_tracked
            .set(self.tracked.len() as i64);
    }

    async fn on_exit(&mut self, id: String, exit: CaptureExit, cancel: &CancellationToken) {
        let Some(t) = self.tracked.get_mut(&id) else {
            return;
        };
        t.running = None;
        if matches!(exit, CaptureExit::Stopped | CaptureExit::Gone) {
            // Behind the container's last lines: sinks may close its output once written.
            let marker = Delivery::end_of_stream(Arc::clone(&t.meta.borrow()));
            let _ = self.ctx.pipeline.try_send(marker);
        }
        if t.destroyed {
            self.forget(&id);
            return;
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
                if let Ok(c) = self.ctx.client.inspect(&id).await
                    && c.state.running
                    && !cancel.is_cancelled()
                {
                    self.consider(&id, None, false, cancel).await;
                }
            }
        }
    }

    /// Inspects a container and, if selected, starts capturing it. `drain`: also when it is
    /// not running (its logs are then read up to their end).
    async fn consider(
        &mut self,
        id: &str,
        event_ns: Option<i64>,
        drain: bool,
        cancel: &CancellationToken,
    ) {
        if self.settings.own_id.as_deref() == Some(id) {
            self.ignored.insert(id.to_string());
            return;
        }
        let info = match self.ctx.client.inspect(id).await {
            Ok(info) => info,
            Err(e) => {
                if e.status() != Some(404) {
                    self.metrics.stream_error("inspect");
                    warn!(container_id = %id, error = %e, "cannot inspect container");
                }
                return;
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
            return;
        }
        if !info.state.running && event_ns.is_none() && !drain {
            return;
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
                let start = self.start_position(id, &info, event_ns);
                self.checkpoints.init(id, start);
                let cursor = Arc::new(std::sync::Mutex::new(start));
                info!(container = %meta.name, container_id = %id, tty = info.config.tty,
                    since = start.ts_ns, "capturing container");
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
            return;
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
        self.tasks
            .spawn(async move { (owned_id, task.run().await) });
    }

    /// Where to start a container seen for the first time.
    fn start_position(&self, id: &str, info: &ContainerInspect, event_ns: Option<i64>) -> Cursor {
        if let Some(saved) = self.checkpoints.get(id) {
            return saved;
        }
        let created_ns = parse_rfc3339_nanos(info.created.as_bytes()).unwrap_or(0);
        // Created while we run, or while we were stopped after an earlier run: all of it.
        if created_ns >= self.agent_start_ns || self.checkpoints.had_previous_run {
            return Cursor::at(0);
        }
        match self.settings.initial_position {
            InitialPosition::Beginning => Cursor::at(0),
            // A start we saw happen: from that instant. Already running: from now.
            InitialPosition::End => Cursor::at(event_ns.unwrap_or_else(now_ns)),
        }
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
