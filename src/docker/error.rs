use std::fmt;

#[derive(Debug, Clone)]
pub enum DockerError {
    /// Could not connect, or the connection broke.
    Transport(String),
    /// The engine answered with an error status.
    Status { status: u16, message: String },
    /// The engine answered something we could not decode.
    Decode(String),
    /// A short request took longer than `docker.request_timeout`.
    Timeout,
}

impl DockerError {
    pub fn status(&self) -> Option<u16> {
        match self {
            DockerError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DockerError::Transport(_) => "transport",
            DockerError::Status { status: 404, .. } => "not_found",
            DockerError::Status { status: 409, .. } => "conflict",
            DockerError::Status { status: 501, .. } => "unreadable_log_driver",
            DockerError::Status { status, .. } if *status >= 500 => "server_error",
            DockerError::Status { .. } => "client_error",
            DockerError::Decode(_) => "decode",
            DockerError::Timeout => "timeout",
        }
    }
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerError::Transport(e) => write!(f, "connection to the Docker engine: {e}"),
            DockerError::Status { status, message } => {
                write!(f, "Docker engine answered {status}: {message}")
            }
            DockerError::Decode(e) => write!(f, "unexpected answer from the Docker engine: {e}"),
            DockerError::Timeout => write!(f, "the Docker engine did not answer in time"),
        }
    }
}

impl std::error::Error for DockerError {}
