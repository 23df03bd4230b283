//! Metrics, resource counts and the HTTP endpoints that expose them.

pub mod exposition;
pub mod http;
pub mod kafka_metrics;
pub mod metrics;
pub mod process;
pub mod reasons;
pub mod resources;
pub mod status;
pub mod status_client;
