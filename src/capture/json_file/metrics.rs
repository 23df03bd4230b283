//! Metrics of the json-file capture mode (`log_capturer_json_file_*`).

use prometheus_client::registry::Registry;

#[derive(Default)]
pub struct JsonFileMetrics {}

impl JsonFileMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let _ = registry;
    }
}
