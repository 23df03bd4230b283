//! Reconciliation: list containers, read every one that must be read (also to its end when it
//! was found stopped), forget what no longer exists. `consider` is the single place where a
//! capture task is started.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::filter::{Candidate, Seen, selected};
use super::position::{StartFacts, start_position};
use super::{Discovery, Tracked, container_meta};
use crate::capture::CaptureTask;
use crate::capture::json_file::JsonFileTarget;
use crate::clock::now_ns;
use crate::docker::timestamp::parse_rfc3339_nanos;
use crate::docker::types::ContainerSummary;
use crate::observability::reasons::StreamErrorReason;
use crate::pipeline::ContainerMeta;
use crate::processing::Processor;

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
        let listed_at = now_ns();
        let listed = match client.list_running().await {
            Ok(running) => client.list_all().await.map(|all| (running, all)),
            Err(e) => Err(e),
        };
        let (running, all) = match listed {
            Ok(lists) => lists,
            Err(e) => {
                self.metrics.stream_error(StreamErrorReason::List);
                warn!(error = %e, "cannot list containers");
                return ResyncOutcome::Failed;
            }
        };
        if let Some(first) = &mut self.first_listing {
            (first.listed, first.running) = (all.len(), running.len());
        }
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
        self.ctx
            .status
            .retain_containers(|id| exists.contains(id) && !self.ignored.contains(id));

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
        // Those removed meanwhile whose log was opened at their start: read from there.
        let removed: Vec<String> = self
            .retry_files
            .keys()
            .filter(|id| !exists.contains(id.as_str()))
            .cloned()
            .collect();
        for id in removed {
            if let Some((seen, file)) = self.retry_files.remove(&id) {
                self.retry_starts.remove(&id);
                if !self
                    .consider(&id, true, seen.as_ref(), Some(file), cancel)
                    .await
                {
                    self.retry_starts.insert(id);
                }
            }
        }
        self.retry_starts.retain(|id| exists.contains(id.as_str()));
        let retry_starts = &self.retry_starts;
        self.retry_files.retain(|id, _| retry_starts.contains(id));
        for id in &self.retry_starts {
            if !to_read.contains(id) {
                to_read.push(id.clone());
            }
        }
        // Listed running and never read: if it is removed before its inspect, its lines are
        // lost, which `consider` reports under this name (if the filters select it).
        let never_read: HashMap<String, Seen> = running
            .iter()
            .filter(|c| self.checkpoints.get(&c.id).is_none())
            .filter_map(|c| Some((c.id.clone(), Seen::from_summary(c)?)))
            .collect();
        let mut complete = true;
        for id in to_read {
            let busy = self.tracked.get(&id).is_some_and(|t| t.running.is_some());
            if !busy && !self.ignored.contains(&id) {
                complete &= self.read_or_retry(&id, never_read.get(&id), cancel).await;
            }
        }
        // After the running containers: inspecting many old stopped ones must not delay them.
        if let Some(from_ns) = self.catch_up_from_ns {
            let (ran, all_checked) = self.ran_unwatched(&all, from_ns).await;
            complete &= all_checked;
            for (id, seen) in ran {
                complete &= self.read_or_retry(&id, Some(&seen), cancel).await;
                if self.tracked.get(&id).is_some_and(|t| t.running.is_some()) {
                    self.metrics.containers_caught_up.inc();
                }
            }
        }
        self.update_gauges();
        if complete {
            if self.events_connected {
                // From here on, events and listings see every container: a later run needs
                // to look for containers that ran unwatched only from this time.
                self.catch_up_from_ns = None;
                if !self.watch_recorded {
                    self.checkpoints.watching(listed_at);
                    self.watch_recorded = true;
                }
            }
            ResyncOutcome::Done
        } else {
            ResyncOutcome::Incomplete
        }
    }

    /// `consider` (draining) for a resync; false when it must be retried (remembered in
    /// `retry_starts`).
    async fn read_or_retry(
        &mut self,
        id: &str,
        seen: Option<&Seen>,
        cancel: &CancellationToken,
    ) -> bool {
        let (kept_seen, preopened) = match self.retry_files.remove(id) {
            Some((kept, file)) => (kept, Some(file)),
            None => (None, None),
        };
        let seen = seen.or(kept_seen.as_ref());
        if self.consider(id, true, seen, preopened, cancel).await {
            self.retry_starts.remove(id);
            true
        } else {
            self.retry_starts.insert(id.to_string());
            false
        }
    }

    /// Stopped containers without checkpoint that ran (started or stopped) at or after
    /// `from_ns`: while no agent watched (between runs) or before this run's first listing.
    /// No event and no listing of a running container showed them, so without this their
    /// lines would never be read. The second value is false when an inspect failed (the
    /// resync is retried). Containers the listing already shows unselected, never started,
    /// or as tracked are not inspected.
    async fn ran_unwatched(
        &mut self,
        all: &[ContainerSummary],
        from_ns: i64,
    ) -> (Vec<(String, Seen)>, bool) {
        let mut ran = Vec::new();
        let mut all_checked = true;
        for c in all {
            let stopped = matches!(c.state.as_str(), "exited" | "dead");
            if !stopped
                || self.tracked.contains_key(&c.id)
                || self.ignored.contains(&c.id)
                || self.checkpoints.get(&c.id).is_some()
                || self.checkpoints.lost_cursor(&c.id)
                || self.settings.own_id.as_deref() == Some(c.id.as_str())
            {
                continue;
            }
            let Some(seen) = Seen::from_summary(c) else {
                continue;
            };
            // The listing shows the image's id instead of its name once the name points to
            // another image (re-pulled, untagged): then only the inspect can tell.
            let image_known = !c.image.starts_with("sha256:");
            if image_known
                && !selected(
                    &self.settings.include,
                    &self.settings.exclude,
                    &seen.candidate(),
                )
            {
                continue;
            }
            let info = match self.ctx.client.inspect(&c.id).await {
                Ok(info) => info,
                Err(e) if e.status() == Some(404) => continue,
                Err(e) => {
                    self.metrics.stream_error(StreamErrorReason::Inspect);
                    warn!(container_id = %c.id, error = %e, "cannot inspect stopped container");
                    all_checked = false;
                    continue;
                }
            };
            let at_or_after =
                |t: &str| parse_rfc3339_nanos(t.as_bytes()).is_some_and(|t| t >= from_ns);
            if at_or_after(&info.state.started_at) || at_or_after(&info.state.finished_at) {
                info!(container = %seen.name, container_id = %c.id,
                    started_at = %info.state.started_at, finished_at = %info.state.finished_at,
                    "stopped container ran while no agent was watching; reading it");
                ran.push((c.id.clone(), seen));
            }
        }
        (ran, all_checked)
    }

    /// Inspects a container and, if selected, starts capturing it. `drain`: also when it is
    /// not running (its logs are then read up to their end). Returns false when the inspect
    /// failed for a reason other than the container being gone (the caller retries).
    pub(super) async fn consider(
        &mut self,
        id: &str,
        drain: bool,
        seen: Option<&Seen>,
        preopened: Option<std::fs::File>,
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
                // can be read; say so, as capture does for a 404/409 at open, if the filters
                // select it by what its event or listing said.
                match seen {
                    Some(seen)
                        if selected(
                            &self.settings.include,
                            &self.settings.exclude,
                            &seen.candidate(),
                        ) =>
                    {
                        if let Some(file) = preopened {
                            // Its json-file log was opened at its start: read it from there.
                            self.capture_removed(id, seen, file, cancel);
                            return true;
                        }
                        self.metrics.stream_error(StreamErrorReason::GoneBeforeRead);
                        warn!(container = %seen.name, container_id = %id,
                            "container gone before it could be read (removed before its inspect); its lines are lost");
                    }
                    Some(seen) => {
                        debug!(container = %seen.name, container_id = %id,
                            "container not selected by filters, gone before its inspect");
                    }
                    None => {}
                }
                return true;
            }
            Err(e) => {
                self.metrics.stream_error(StreamErrorReason::Inspect);
                warn!(container_id = %id, error = %e, "cannot inspect container");
                // Kept for the retry (an `--rm` container may be removed by then).
                if let Some(file) = preopened {
                    self.retry_files
                        .insert(id.to_string(), (seen.cloned(), file));
                }
                return false;
            }
        };
        let no_labels = HashMap::new();
        let labels = info.config.labels.as_ref().unwrap_or(&no_labels);
        let meta = container_meta(&info).with_label_fields(self.ctx.pipelines.label_fields(labels));
        let candidate = Candidate {
            name: &meta.name,
            image: &meta.image,
            labels,
        };
        if !selected(&self.settings.include, &self.settings.exclude, &candidate) {
            debug!(container = %meta.name, "container not selected by filters");
            self.ctx.status.forget(id);
            // Captured before a config reload excluded it: its series end here. Its
            // checkpoint stays: selected again, it resumes from there.
            self.metrics.forget_container(&meta.name);
            self.ignored.insert(id.to_string());
            return true;
        }
        if !info.state.running && !drain {
            return true;
        }
        // Chosen at start by name, labels and image; a rename keeps it. Only for a container
        // that is captured (building one creates its pipeline's metric series).
        let processor = self
            .ctx
            .pipelines
            .processor_for(&candidate, &self.metrics.processing);
        let meta = Arc::new(meta);
        let json_file = self.json_file_target(id, &info, &meta.name, preopened);
        let created_ns = parse_rfc3339_nanos(info.created.as_bytes()).unwrap_or(0);
        let facts = (info.config.tty, info.state.running, created_ns);
        self.start_capture(id, meta, facts, processor, json_file, cancel);
        true
    }

    /// Starts the capture task of a selected container (tracking it if it is new). `facts`:
    /// TTY, running, created (ns).
    pub(super) fn start_capture(
        &mut self,
        id: &str,
        meta: Arc<ContainerMeta>,
        (tty, running, created_ns): (bool, bool, i64),
        processor: Option<Processor>,
        json_file: Option<(JsonFileTarget, watch::Sender<bool>)>,
        cancel: &CancellationToken,
    ) {
        let (cursor, tty) = match self.tracked.get_mut(id) {
            Some(t) => {
                if **t.meta.borrow() != *meta {
                    t.meta.send_replace(Arc::clone(&meta));
                }
                if t.unreadable {
                    t.unreadable = false;
                    self.metrics.containers_unreadable.dec();
                }
                (t.cursor.clone(), t.tty)
            }
            None => {
                let start = start_position(&StartFacts {
                    checkpoint: self.checkpoints.get(id),
                    created_ns,
                    agent_start_ns: self.agent_start_ns,
                    had_previous_run: self.checkpoints.had_previous_run,
                    initial_position: self.settings.initial_position,
                });
                let resumed = self.checkpoints.get(id).is_some();
                self.checkpoints.init(id, start);
                let cursor = crate::capture::DeliveredCursor::new(start);
                // During the first listing the start-up summary counts these (see `summary`).
                if let Some(first) = &mut self.first_listing {
                    first.resumed += usize::from(resumed);
                    debug!(container = %meta.name, container_id = %id, tty,
                        running, resumed, since = %start.since_text(),
                        since_ns = start.since_ns(), "capturing container");
                } else {
                    info!(container = %meta.name, container_id = %id, tty,
                        running, resumed, since = %start.since_text(),
                        since_ns = start.since_ns(), "capturing container");
                }
                self.tracked.insert(
                    id.to_string(),
                    Tracked {
                        meta: watch::Sender::new(Arc::clone(&meta)),
                        tty,
                        cursor: cursor.clone(),
                        running: None,
                        unreadable: false,
                        destroyed: false,
                        stopped: None,
                    },
                );
                (cursor, tty)
            }
        };
        let Some(t) = self.tracked.get_mut(id) else {
            return;
        };
        let (json_file, stopped) = json_file.unzip();
        t.stopped = stopped;
        let token = cancel.child_token();
        self.ctx
            .status
            .track(id, t.meta.subscribe(), cursor.clone());
        let task = CaptureTask {
            ctx: Arc::clone(&self.ctx),
            id: id.to_string(),
            tty,
            meta: t.meta.subscribe(),
            cursor,
            cancel: token.clone(),
            processor,
            json_file,
        };
        t.running = Some(token);
        let owned_id = id.to_string();
        let handle = self
            .tasks
            .spawn(async move { (owned_id, task.run().await) });
        self.task_ids.insert(handle.id(), id.to_string());
    }
}
