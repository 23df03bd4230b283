//! The few fields of Engine API responses that the agent uses.

use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
pub struct VersionResponse {
    #[serde(rename = "ApiVersion")]
    pub api_version: String,
}

#[derive(Debug, Deserialize)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
    /// `/name` (with the leading slash the API gives names).
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "Labels", default)]
    pub labels: Option<HashMap<String, String>>,
    /// `created` (never started), `running`, `paused`, `restarting`, `removing`, `exited`
    /// or `dead`.
    #[serde(rename = "State", default)]
    pub state: String,
}

impl ContainerSummary {
    pub fn name(&self) -> Option<&str> {
        self.names.first().map(|n| n.trim_start_matches('/'))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerInspect {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Created", default)]
    pub created: String,
    #[serde(rename = "State", default)]
    pub state: ContainerState,
    #[serde(rename = "Config", default)]
    pub config: ContainerConfig,
    /// The json-file log's path (empty with another log driver).
    #[serde(rename = "LogPath", default)]
    pub log_path: String,
    #[serde(rename = "HostConfig", default)]
    pub host_config: HostConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostConfig {
    #[serde(rename = "LogConfig", default)]
    pub log_config: LogConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogConfig {
    /// The log driver: `json-file`, `local`, `none`, `journald` …
    #[serde(rename = "Type", default)]
    pub kind: String,
}

/// The few fields of `GET /info` the agent uses.
#[derive(Debug, Deserialize)]
pub struct SystemInfo {
    /// Docker's data root (`/var/lib/docker`).
    #[serde(rename = "DockerRootDir", default)]
    pub docker_root_dir: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerState {
    #[serde(rename = "Running", default)]
    pub running: bool,
    /// RFC 3339; `0001-01-01T00:00:00Z` when it never started.
    #[serde(rename = "StartedAt", default)]
    pub started_at: String,
    /// RFC 3339; `0001-01-01T00:00:00Z` while it has never stopped.
    #[serde(rename = "FinishedAt", default)]
    pub finished_at: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "Tty", default)]
    pub tty: bool,
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "Labels", default)]
    pub labels: Option<HashMap<String, String>>,
}

/// One message of `GET /events`.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(rename = "Action", default)]
    pub action: String,
    #[serde(rename = "Actor", default)]
    pub actor: EventActor,
    #[serde(rename = "timeNano", default)]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventActor {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "Attributes", default)]
    pub attributes: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub message: String,
}
