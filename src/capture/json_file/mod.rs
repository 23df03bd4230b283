//! The `json_file` capture mode (`docker.capture: json_file`): a container's lines read from
//! Docker's json-file log (and its rotated files) instead of an Engine API follow stream, with
//! the same cursor, resume filter and processing as the API mode.

pub mod metrics;
