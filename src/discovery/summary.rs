//! The start-up summary: one line once the first container listing is reconciled, instead of
//! one `capturing container` line per container (those are at debug level during that first
//! listing; a container found later is still announced at info, one line each).

use std::path::PathBuf;
use tracing::info;

use super::Discovery;
use crate::config::Config;

/// What the summary says besides the containers: where lines go and where state is kept.
#[derive(Debug, Clone)]
pub struct StartupContext {
    pub sinks: Vec<&'static str>,
    pub state_dir: PathBuf,
}

impl StartupContext {
    pub fn new(config: &Config) -> StartupContext {
        let s = &config.sinks;
        let sinks = [
            ("stdout", s.stdout.is_some()),
            ("file", s.file.is_some()),
            ("loki", s.loki.is_some()),
            ("discard", s.discard.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        StartupContext {
            sinks,
            state_dir: config.checkpoint.state_dir.clone(),
        }
    }
}

/// Counted until the first listing is reconciled.
#[derive(Debug)]
pub(super) struct FirstListing {
    pub context: StartupContext,
    /// Containers the listing showed, and of those running.
    pub listed: usize,
    pub running: usize,
    /// Captures started from a checkpoint (the rest start per `capture.initial_position`).
    pub resumed: usize,
}

impl FirstListing {
    pub fn new(context: StartupContext) -> FirstListing {
        FirstListing {
            context,
            listed: 0,
            running: 0,
            resumed: 0,
        }
    }
}

impl Discovery {
    /// Logs the summary after the first listing that answered (once).
    pub(super) fn log_startup_summary(&mut self) {
        let Some(first) = self.first_listing.take() else {
            return;
        };
        let capturing = self
            .tracked
            .values()
            .filter(|t| t.running.is_some())
            .count();
        let unreadable = self.tracked.values().filter(|t| t.unreadable).count();
        info!(
            containers = first.listed,
            running = first.running,
            capturing,
            resumed_from_checkpoint = first.resumed,
            not_selected = self.ignored.len(),
            unreadable,
            inspect_failed_retrying = self.retry_starts.len(),
            sinks = %first.context.sinks.join(","),
            state_dir = %first.context.state_dir.display(),
            "first container listing done: capturing {capturing} of {} containers",
            first.listed
        );
    }
}
