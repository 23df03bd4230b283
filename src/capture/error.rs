//! The capture boundary's errors: why a session failed (the `reason` label of
//! `log_capturer_stream_errors_total`, a bounded set listed here) and what happened (the text
//! operators read in the log and on the status board).

pub use crate::observability::reasons::StreamErrorReason;

// The capture side's reasons: which open failure counts under which label.
impl StreamErrorReason {
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

    #[test]
    fn display_is_the_text_alone() {
        let e = CaptureError::failed(StreamErrorReason::Read, "connection reset");
        assert_eq!(e.to_string(), "connection reset");
        assert_eq!(CaptureError::Reopen("moved".into()).to_string(), "moved");
    }
}
