//! The capture boundary's errors: why a session failed (the `reason` label of
//! `log_capturer_stream_errors_total`, a bounded set listed here) and what happened (the text
//! operators read in the log and on the status board).

/// A reason of `log_capturer_stream_errors_total`. Its labels are the whole family
/// (`STREAM_ERROR_REASONS` lists them for the metric's start at 0; a test keeps both equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamErrorReason {
    /// Reading the open stream or log file failed.
    Read,
    /// The stream's framing could not be decoded.
    Decode,
    /// The daemon sent an error frame in the stream.
    DaemonStreamError,
    /// Opening the stream failed at the transport.
    OpenTransport,
    /// Opening the stream timed out.
    OpenTimeout,
    /// The daemon refused to open the stream.
    OpenFailed,
    /// The container's log driver cannot be read (501).
    UnreadableLogDriver,
    /// The container was gone before a line of it could be read.
    GoneBeforeRead,
    /// The events stream could not be opened.
    EventsOpen,
    /// The events stream lost events.
    EventsDropped,
    /// An event could not be decoded.
    EventsDecode,
    /// Listing the containers failed.
    List,
    /// Inspecting a container failed.
    Inspect,
    /// A line came without a Docker timestamp.
    LineWithoutTimestamp,
    /// No sub-millisecond timer for a pause.
    PauseTimer,
}

impl StreamErrorReason {
    /// Every reason, in the order of `STREAM_ERROR_REASONS`.
    pub const ALL: [StreamErrorReason; 15] = [
        Self::Read,
        Self::Decode,
        Self::DaemonStreamError,
        Self::OpenTransport,
        Self::OpenTimeout,
        Self::OpenFailed,
        Self::UnreadableLogDriver,
        Self::GoneBeforeRead,
        Self::EventsOpen,
        Self::EventsDropped,
        Self::EventsDecode,
        Self::List,
        Self::Inspect,
        Self::LineWithoutTimestamp,
        Self::PauseTimer,
    ];

    /// The metric label (unchanged from the strings counted before this type).
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Decode => "decode",
            Self::DaemonStreamError => "daemon_stream_error",
            Self::OpenTransport => "open_transport",
            Self::OpenTimeout => "open_timeout",
            Self::OpenFailed => "open_failed",
            Self::UnreadableLogDriver => "unreadable_log_driver",
            Self::GoneBeforeRead => "gone_before_read",
            Self::EventsOpen => "events_open",
            Self::EventsDropped => "events_dropped",
            Self::EventsDecode => "events_decode",
            Self::List => "list",
            Self::Inspect => "inspect",
            Self::LineWithoutTimestamp => "line_without_timestamp",
            Self::PauseTimer => "pause_timer",
        }
    }

    /// The reason a failure to open a stream is counted under.
    pub fn of_open(e: &crate::docker::DockerError) -> Self {
        use crate::docker::DockerError;
        match e {
            DockerError::Timeout => Self::OpenTimeout,
            DockerError::Transport(_) | DockerError::Hinted { .. } => Self::OpenTransport,
            _ => Self::OpenFailed,
        }
    }
}

impl std::fmt::Display for StreamErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_label())
    }
}

/// Why a capture session ended other than cleanly. `Display` is the text alone (the reason is
/// the metric's label; the status board shows `"{reason}: {text}"`).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A failure, counted under `reason`; the session is reopened from the cursor after a
    /// back-off.
    #[error("{text}")]
    Failed {
        reason: StreamErrorReason,
        text: String,
    },
    /// The json-file log's place in Docker's rotation is ambiguous: reopened from the cursor at
    /// once (nothing failed, nothing counted as an error).
    #[error("{0}")]
    Reopen(String),
}

impl CaptureError {
    pub fn failed(reason: StreamErrorReason, text: impl Into<String>) -> Self {
        CaptureError::Failed {
            reason,
            text: text.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::metrics::STREAM_ERROR_REASONS;

    /// The enum and the metric's list are the same set, in the same order.
    #[test]
    fn every_reason_is_the_metrics_list() {
        let labels: Vec<&str> = StreamErrorReason::ALL
            .iter()
            .map(|r| r.as_label())
            .collect();
        assert_eq!(labels, STREAM_ERROR_REASONS);
    }

    #[test]
    fn display_is_the_text_alone() {
        let e = CaptureError::failed(StreamErrorReason::Read, "connection reset");
        assert_eq!(e.to_string(), "connection reset");
        assert_eq!(CaptureError::Reopen("moved".into()).to_string(), "moved");
    }
}
