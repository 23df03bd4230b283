//! log-capturer: captures the logs of Docker containers (through the Engine API) and of host
//! log files, and ships them to sinks (NDJSON file and stdout, Loki, Kafka), with exact resume
//! across stream rotations, reconnects, outages and restarts.
//!
//! Data flow: [`docker`] (Engine API client) → [`discovery`] (which containers, lifecycle) →
//! [`capture`] (one task per container stream; [`sources`] for host files) → [`processing`]
//! (per-source stages) → [`pipeline`] (byte-budgeted queue, router, ledger) → [`sinks`]
//! (one worker per sink; [`buffer`] holds the on-disk outage buffer and dead letters) →
//! acknowledgements → [`checkpoint`]; [`observability`] exports metrics and the status API;
//! [`agent`] wires it all and owns shutdown; [`config`] and [`reload`] read the YAML.
//!
//! # Glossary (one word per concept, in code, metrics and the README)
//!
//! - **line** ([`pipeline::LogLine`]): one captured log line with its timestamp and stream.
//!   **record**: a line as a sink writes it (the NDJSON record, a Loki entry, a Kafka message).
//! - **batch** ([`pipeline::Batch`]): lines of one source. **delivery** ([`pipeline::Delivery`]):
//!   a batch handed to the pipeline with its sequence number `seq`, charged to the budget.
//! - **session**: one open follow stream of a container (`GET /containers/{id}/logs?follow=1`).
//!   **stream rotation**: closing a session and opening the next one on purpose (every
//!   `docker.rotation_interval`); not to be confused with the file sink's **file rotation**
//!   or a host log file's rotation by logrotate.
//! - **cursor** ([`capture::Cursor`]): where a container's log stands (per stream, the last
//!   line's timestamp and how many lines carried it). Three of them, never mixed:
//!   the session's own, inside the **resume filter** ([`capture::ResumeFilter`], which drops
//!   the lines a reopened session serves again); the **delivered cursor**
//!   ([`capture::DeliveredCursor`]), handed over with each delivery; the **acked cursor**
//!   ([`capture::AckedCursor`]), what every sink acknowledged, stored by the checkpoint.
//!   A host file's counterpart is its [`checkpoint::FilePosition`].
//! - **acknowledge**: a sink is done with a delivery — every line written, delivered to the
//!   remote (Loki 204, Kafka delivery report), durably in its buffer, or durably a dead
//!   letter ([`pipeline::AckLedger`]). The checkpoint advances only over acknowledged
//!   deliveries of every sink.
//! - **budget** ([`pipeline::QueueBudget`]): the bytes of lines captured and not yet
//!   acknowledged; capture pauses when it is spent. **queue**: a sink's in-memory input.
//! - **buffer**: only the on-disk outage buffer of a sink ([`buffer`]; config key `buffer`).
//!   **spill**: moving what a failing remote does not take into it. **buffer replay**: sending
//!   its records again, oldest first, before anything new.
//! - **dead letter**: a record the remote refused for good, kept in the dead-letter store
//!   ([`buffer::dlq`]); `log-capturer dlq replay` sends them again.
//! - **drain** / **abandon**: shutdown's two phases — finish or keep what is in memory within
//!   `pipeline.shutdown_timeout`, then stop acknowledging anything.
//!
//! # Where to change X
//!
//! - **How a line is parsed**: multiplexed frames in `capture/decoder.rs`, pieces of a long
//!   line and the timestamp in `capture/assembler.rs` (stamps: `docker/timestamp.rs`); the
//!   json-file capture mode in `capture/json_file/`; host files in `sources/files/tail.rs`.
//! - **Where a stream is opened, rotated and cancelled**: `capture/task.rs` (the owner) and
//!   `capture/task/session.rs` (one session: every wait races the cancellation token);
//!   rotation deadlines in `capture/rotation.rs`.
//! - **Where a cursor is stored**: `checkpoint/` (`CheckpointStore::ack`, files written with
//!   `fsutil::write_atomically`); the resume position and its filter in `capture/cursor.rs`.
//! - **Where a sink acknowledges**: `AckLedger::acknowledge` in `pipeline/ledger.rs`, called by
//!   the local sinks' writer (`pipeline/writer.rs`), the Loki worker
//!   (`sinks/loki/worker/send.rs`) and the Kafka worker (`sinks/kafka/worker/reports.rs`).
//! - **A new sink**: a worker under `sinks/` fed by the router (`pipeline/router.rs`), wired in
//!   `agent/`; its on-disk buffer and dead letters through `buffer::SharedStore`.
//! - **A new metric or failure reason**: `observability/metrics.rs` (families; registered in
//!   `observability/metrics/register.rs`) and `observability/reasons.rs` (every reason label,
//!   one enum per family; the call sites take the enums).
//! - **Errors**: one type per boundary, next to it — `agent::AgentError` (start-up; `main`
//!   maps it to the exit code), `config::ConfigError` (+ `InvalidConfig`, and a small typed
//!   reason per value validator), `docker::DockerError` / `SetupError` / `EndpointError`,
//!   `capture::CaptureError`, `checkpoint::CheckpointError`,
//!   `buffer::StoreError`, `dlq::DlqError`, the sinks' (`loki::SinkError`, `LokiSetupError`,
//!   `kafka::error`, `file::FileSinkError`), `processing::ProcessingError`.
//! - **A config key**: `config/` (schema, defaults in `config/default.yaml`, validation naming
//!   the key path), documented in `examples/config.yaml` and the README.

pub mod agent;
pub mod backoff;
pub mod buffer;
pub mod capture;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod discovery;
pub use buffer::dlq;
pub mod docker;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod observability;
pub mod pipeline;
pub mod processing;
pub mod reload;
pub mod sinks;
pub mod sources;
pub mod state_lock;
#[cfg(feature = "tls")]
pub mod tls;
