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
    /// A failure whose likely cause is the setup, not the daemon being down: what went wrong,
    /// and what to do about it.
    Hinted {
        error: String,
        hint: String,
        /// The hint is part of the message (else it is shown once, by whoever retries).
        in_message: bool,
    },
}

/// What to do when a `tcp://` daemon speaks TLS and the agent was not told to.
pub const TLS_PORT_HINT: &str = "this looks like a TLS port: set DOCKER_TLS_VERIFY=1 and \
     DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem), or the docker.tls keys \
     (ca_file, cert_file, key_file)";

impl DockerError {
    /// A plain-HTTP request met a TLS daemon.
    pub fn tls_port(error: impl Into<String>) -> DockerError {
        DockerError::Hinted {
            error: error.into(),
            hint: TLS_PORT_HINT.to_string(),
            in_message: true,
        }
    }

    /// The advice for a setup problem, if this is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            DockerError::Hinted { hint, .. } => Some(hint),
            _ => None,
        }
    }
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
            DockerError::Transport(_) | DockerError::Hinted { .. } => "transport",
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
            DockerError::Hinted {
                error,
                hint,
                in_message,
            } => {
                write!(f, "connection to the Docker engine: {error}")?;
                if *in_message {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for DockerError {}

/// The Docker setup cannot be used: the endpoint (`docker.host`, `DOCKER_HOST`), its TLS
/// (`docker.tls`, `DOCKER_TLS*`) or `DOCKER_API_VERSION`. Found at start-up and before a reload;
/// the text names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The endpoint does not parse; `origin` is the setting it came from.
    #[error("{origin}: {reason}")]
    Host {
        origin: &'static str,
        reason: super::EndpointError,
    },
    /// The built-in default socket does not parse (it always does).
    #[error("{0}")]
    DefaultHost(super::EndpointError),
    /// TLS from the environment, with no directory to find its files in.
    #[error(
        "DOCKER_TLS_VERIFY/DOCKER_TLS: DOCKER_CERT_PATH is not set and there is no HOME for ~/.docker"
    )]
    NoCertPath,
    /// The CA file to verify with cannot be opened.
    #[error("{origin}: {}: {error}", path.display())]
    CaFile {
        origin: &'static str,
        path: std::path::PathBuf,
        error: String,
    },
    /// One file of the client pair exists without the other.
    #[error("{origin}: {} exists without {}", present.display(), missing.display())]
    HalfPair {
        origin: &'static str,
        present: std::path::PathBuf,
        missing: std::path::PathBuf,
    },
    /// The endpoint's host cannot be a TLS server name.
    #[error("{host:?} is not a TLS server name: {error}")]
    ServerName { host: String, error: String },
    /// The certificates cannot be loaded (the text names the file and its setting).
    #[error("{0}")]
    Certificates(String),
    /// TLS is configured, but this build has none.
    #[error("TLS to tcp://{0} is configured, but this build has no TLS (the `tls` feature)")]
    NoTlsBuild(String),
    /// `DOCKER_API_VERSION` is not an API version the agent can speak.
    #[error("{0}")]
    ApiVersion(String),
}
