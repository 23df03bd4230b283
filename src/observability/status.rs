//! The status board: what `GET /api/v1/containers`, `/api/v1/sinks` and `/api/v1/config` serve
//! (and `log-capturer status` prints). It lives as long as the process, across pipeline
//! generations (a config reload drains the capture pipeline and starts a new one): entries are
//! keyed by container id and by sink name, not by whoever created them.
//!
//! - **Containers**: discovery `track`s a container when it starts a capture task for it (the
//!   same entry again for a later task or a later pipeline generation, so counters go on) and
//!   `forget`s it when the container is destroyed, no longer selected, or no longer listed.
//!   The capture task updates its entry per stream and per batch (a few relaxed atomics per
//!   batch, never per line). The *delivered* cursor is the task's shared cursor itself and the
//!   *acknowledged* one is the checkpoint store's: both are read only when someone asks.
//! - **Sinks**: each sink worker gets its entry from `sink(name)`, which replaces any older one
//!   of that name (a restarted sink starts afresh); `retain_sinks` drops the ones no longer
//!   configured.
//! - **Config**: `set_config` stores the effective config, serialized with its secrets
//!   redacted (`config::Secret` serializes as `***`).
//!
//! **Lag** (`lag_seconds`, metric `log_capturer_container_lag_seconds`, computed when asked):
//! 0 when every line handed to the pipeline is acknowledged by every sink (the delivered
//! cursor equals the acknowledged one). Otherwise, now minus the timestamp of the last
//! acknowledged line (or, if none was acknowledged yet, of the first line delivered in this
//! process), at least 0. So it grows while a sink holds lines back or while capture works
//! through a backlog, and is about the flush interval for a busy container that keeps up. A
//! container whose lines are all acknowledged has lag 0, busy or idle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::watch;

use super::metrics::{ContainerLabels, Metrics};
use crate::capture::DeliveredCursor;
use crate::checkpoint::CheckpointStore;
use crate::clock::now_ns;
use crate::config::Config;
use crate::pipeline::ContainerMeta;

mod container;
mod sink;

use container::Source;
pub use container::{CaptureState, ContainerStatus, ContainerView, CursorView, last_line_ns};
pub use sink::{SinkStatus, SinkView};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
pub struct StatusBoard {
    containers: Mutex<HashMap<String, Arc<ContainerStatus>>>,
    sinks: Mutex<BTreeMap<&'static str, Arc<SinkStatus>>>,
    config: Mutex<serde_json::Value>,
    checkpoints: OnceLock<Arc<CheckpointStore>>,
    /// Container names whose lag gauge the last scrape set (to drop the ones gone since).
    lag_series: Mutex<HashSet<String>>,
}

impl StatusBoard {
    pub fn new() -> Self {
        StatusBoard::default()
    }

    /// Where acknowledged cursors are read from (set once; the store lives as long as the
    /// process).
    pub fn attach_checkpoints(&self, store: Arc<CheckpointStore>) {
        let _ = self.checkpoints.set(store);
    }

    /// The effective config, with its secrets redacted (call again after a reload).
    pub fn set_config(&self, config: &Config) {
        let value = serde_json::to_value(config)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
        *lock(&self.config) = value;
    }

    pub fn config_json(&self) -> serde_json::Value {
        lock(&self.config).clone()
    }

    /// Host files with a stored position (`GET /api/v1/files`). Blocking (`stat`s).
    pub fn files(&self) -> Vec<crate::sources::files::status::FileView> {
        self.checkpoints
            .get()
            .map(|s| crate::sources::files::status::file_views(s))
            .unwrap_or_default()
    }

    /// A capture task starts for `id`: its entry (the existing one, with its counters, or a
    /// new one), now reading from this task's metadata and cursor. Containers only: a host
    /// file (which the file source never tracks here) gets an entry on no board, so it can
    /// never show in `/api/v1/containers` or the container lag metric.
    pub fn track(
        &self,
        id: &str,
        meta: watch::Receiver<Arc<ContainerMeta>>,
        delivered: DeliveredCursor,
    ) -> Arc<ContainerStatus> {
        if meta.borrow().is_file() {
            return ContainerStatus::detached(id, meta, delivered);
        }
        let mut containers = lock(&self.containers);
        match containers.get(id) {
            Some(entry) => {
                *lock(&entry.source) = Source { meta, delivered };
                entry.set_state(CaptureState::Waiting);
                Arc::clone(entry)
            }
            None => {
                let entry = Arc::new(ContainerStatus::new(id, Source { meta, delivered }));
                containers.insert(id.to_string(), Arc::clone(&entry));
                entry
            }
        }
    }

    pub fn container(&self, id: &str) -> Option<Arc<ContainerStatus>> {
        lock(&self.containers).get(id).cloned()
    }

    /// The container is no longer captured (destroyed, not selected, not listed).
    pub fn forget(&self, id: &str) {
        lock(&self.containers).remove(id);
    }

    /// Drops every container for which `keep` is false.
    pub fn retain_containers(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.containers).retain(|id, _| keep(id));
    }

    /// A sink worker starts: a fresh entry, replacing any older one of that name.
    pub fn sink(&self, name: &'static str, has_stores: bool) -> Arc<SinkStatus> {
        let entry = Arc::new(SinkStatus::new(name, has_stores));
        lock(&self.sinks).insert(name, Arc::clone(&entry));
        entry
    }

    /// Drops the sinks not named (no longer configured).
    pub fn retain_sinks(&self, names: &[&str]) {
        lock(&self.sinks).retain(|name, _| names.contains(name));
    }

    /// Every container, by name.
    pub fn containers(&self) -> Vec<ContainerView> {
        let entries: Vec<Arc<ContainerStatus>> = lock(&self.containers).values().cloned().collect();
        let now = now_ns();
        let store = self.checkpoints.get();
        let mut views: Vec<ContainerView> = entries
            .iter()
            .map(|e| e.view(store.and_then(|s| s.get(&e.id)), now))
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        views
    }

    /// Every sink, by name.
    pub fn sinks(&self) -> Vec<SinkView> {
        let entries: Vec<Arc<SinkStatus>> = lock(&self.sinks).values().cloned().collect();
        entries.iter().map(|s| s.view()).collect()
    }

    /// Sets `log_capturer_container_lag_seconds` for every container on the board and removes
    /// the series of containers gone since the last call (called at each scrape).
    pub fn refresh_lag_metric(&self, metrics: &Metrics) {
        let views = self.containers();
        let mut series = lock(&self.lag_series);
        let now: HashSet<String> = views.iter().map(|v| v.name.clone()).collect();
        for gone in series.difference(&now) {
            metrics.container_lag_seconds.remove(&ContainerLabels {
                container_name: gone.clone(),
            });
        }
        for v in &views {
            metrics
                .container_lag_seconds
                .get_or_create(&ContainerLabels {
                    container_name: v.name.clone(),
                })
                .set(v.lag_seconds);
        }
        *series = now;
    }
}

#[cfg(test)]
mod tests;
