//! Reconciliation: list containers, read every one that must be read (also to its end when it
//! was found stopped), forget what no longer exists. `consider` is the single place where a
//! capture task is started.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::filter::{Candidate, selected};
use super::position::{StartFacts, start_position};
use super::{Discovery, Tracked, container_meta};
use crate::capture::CaptureTask;
use crate::docker::timestamp::parse_rfc3339_nanos;

/// How a resync went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ResyncOutcome {
    /// Both listings answered and every container was reconciled.
    Done,
    /// The listings answered, but a container could not be inspected: retry later, or it
    /// might never be read.
    Incomplete,
    /// A listing failed: Docker is unreachable or failing.
    Failed,
}

impl Discovery {
    /// Lists containers and reconciles: reads every container that was listed as running or
    /// has a cursor and has no capture task (to its end if it is found stopped by then), and
    /// drops what no longer exists (tracked containers, checkpoints, ignored ids).
    pub(super) async fn resync(&mut self, cancel: &CancellationToken) -> ResyncOutcome {
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
        // stream was down (at every listing: a failed first listing must not keep them).
        for id in self.checkpoints.ids() {
            if !exists.contains(id.as_str()) {
                info!(container_id = %id, "container no longer exists; dropping its checkpoint");
                self.checkpoints.forget(&id);
            }
        }
        self.ignored.retain(|id| exists.contains(id.as_str()));

        // Listed as running: read it, and if it has stopped since (it may exit between the
        // listing and the inspect), read it to its end. Holding a cursor: it stopped while
        // the agent was down or the events stream was lost; read what it wrote since. Its
        // cursor set aside as corrupt: the same, from where a container without one starts.
        let mut to_read: Vec<String> = running.iter().map(|c| c.id.clone()).collect();
        let listed_running: HashSet<&str> = running.iter().map(|c| c.id.as_str()).collect();
        to_read.extend(
            all.iter()
                .map(|c| c.id.as_str())
                .filter(|id| {
                    !listed_running.contains(id)
                        && (self.checkpoints.get(id).is_some() || self.checkpoints.lost_cursor(id))
                })
                .map(str::to_string),
        );
        // Started (an event) but not inspectable then: read them now, to their end if they
        // have stopped meanwhile (they may hold no cursor, so nothing else would).
        self.retry_starts.retain(|id| exists.contains(id.as_str()));
        for id in &self.retry_starts {
            if !to_read.contains(id) {
                to_read.push(id.clone());
            }
        }
        // Listed running and never read: if it is removed before its inspect, its lines are
        // lost, which `consider` reports under this name.
        let never_read: HashMap<String, String> = running
            .iter()
            .filter(|c| self.checkpoints.get(&c.id).is_none())
            .filter_map(|c| Some((c.id.clone(), c.name()?.to_string())))
            .collect();
        let mut complete = true;
        for id in to_read {
            let busy = self.tracked.get(&id).is_some_and(|t| t.running.is_some());
            if !busy && !self.ignored.contains(&id) {
                let name = never_read.get(&id).map(String::as_str);
                if self.consider(&id, true, name, cancel).await {
                    self.retry_starts.remove(&id);
                } else {
                    self.retry_starts.insert(id);
                    complete = false;
                }
            }
        }
        self.update_gauges();
        if complete {
            ResyncOutcome::Done
        } else {
            ResyncOutcome::Incomplete
        }
    }

    /// Inspects a container and, if selected, starts capturing it. `drain`: also when it is
    /// not running (its logs are then read up to their end). Returns false when the inspect
    /// failed for a reason other than the container being gone (the caller retries).
    pub(super) async fn consider(
        &mut self,
        id: &str,
        drain: bool,
        name: Option<&str>,
        cancel: &CancellationToken,
    ) -> bool {
        if self.settings.own_id.as_deref() == Some(id) {
            self.ignored.insert(id.to_string());
            return true;
        }
        let info = match self.ctx.client.inspect(id).await {
            Ok(info) => info,
            Err(e) if e.status() == Some(404) => {
                // Started (or listed) and already removed: an instant `--rm`. Nothing of it
                // can be read; say so, as capture does for a 404/409 at open.
                if let Some(name) = name {
                    self.metrics.stream_error("gone_before_read");
                    warn!(container = %name, container_id = %id,
                        "container gone before it could be read (removed before its inspect); its lines are lost");
                }
                return true;
            }
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
                    running = info.state.running, since = start.since_ns(), "capturing container");
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
}
