//! Discovery's part of the json-file capture mode (`docker.capture: json_file`): which
//! containers are read from their json-file log (the others fall back to the Engine API, said
//! and counted), and the capture of an `--rm` container already removed when it is inspected,
//! from the log file opened at its `start` event.

use std::fs::File;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Discovery;
use super::filter::Seen;
use crate::capture::json_file::{JsonFileMode, JsonFileTarget};
use crate::clock::now_ns;
use crate::docker::types::ContainerInspect;
use crate::observability::reasons::JsonFileFallbackReason;
use crate::pipeline::ContainerMeta;

impl Discovery {
    fn json_mode(&self) -> Option<Arc<JsonFileMode>> {
        self.ctx.json_file.clone()
    }

    /// How an inspected container is read in json_file mode: its log files and the stop
    /// signal of its task, or None (the API: mode `api`, or a fallback, counted and logged).
    pub(super) fn json_file_target(
        &self,
        id: &str,
        info: &ContainerInspect,
        name: &str,
        preopened: Option<File>,
    ) -> Option<(JsonFileTarget, watch::Sender<bool>)> {
        let mode = self.json_mode()?;
        let driver = info.host_config.log_config.kind.as_str();
        if !mode.readable {
            self.metrics
                .json_file
                .fallback(JsonFileFallbackReason::ContainersDirUnreadable);
            debug!(container = %name, containers_dir = %mode.containers_dir.display(),
                "containers directory not readable; reading this container through the Engine API");
            return None;
        }
        if !driver.is_empty() && driver != "json-file" {
            self.metrics
                .json_file
                .fallback(JsonFileFallbackReason::LogDriver);
            info!(container = %name, container_id = %id, log_driver = %driver,
                "docker.capture is json_file, but this container's log driver is not json-file; reading it through the Engine API");
            return None;
        }
        let (tx, stopped) = watch::channel(!info.state.running);
        let target = JsonFileTarget {
            files: mode.files(id, &info.log_path),
            preopened,
            stopped,
            trim_cr: false,
        };
        Some((target, tx))
    }

    /// An `--rm` container gone before its inspect whose log was opened at its `start`: read
    /// that descriptor to its end, named and labelled by what its event said. (Whether it had
    /// a TTY is not known: its lines are read as stdout, one trailing `\r` trimmed.)
    pub(super) fn capture_removed(
        &mut self,
        id: &str,
        seen: &Seen,
        file: File,
        cancel: &CancellationToken,
    ) {
        let Some(mode) = self.json_mode() else {
            return;
        };
        let label = |k: &str| seen.labels.get(k).cloned();
        let meta = ContainerMeta::new(
            id.to_string(),
            seen.name.clone(),
            seen.image.clone(),
            label("com.docker.compose.project"),
            label("com.docker.compose.service"),
        )
        .with_label_fields(self.ctx.pipelines.label_fields(&seen.labels));
        let processor = self
            .ctx
            .pipelines
            .processor_for(&seen.candidate(), &self.metrics.processing);
        let (tx, stopped) = watch::channel(true);
        let target = JsonFileTarget {
            files: mode.files(id, ""),
            preopened: Some(file),
            stopped,
            trim_cr: true,
        };
        debug!(container = %seen.name, container_id = %id,
            "container removed before its inspect; reading the log file opened at its start");
        // Started just now: created after the agent started (its lines are all new).
        let facts = (false, false, now_ns());
        self.start_capture(
            id,
            Arc::new(meta),
            facts,
            processor,
            Some((target, tx)),
            cancel,
        );
    }
}
