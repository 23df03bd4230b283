//! Per-source processing: pipelines of stages (multiline, json, logfmt, regex, level,
//! timestamp, drop/keep, fields, labels, structured metadata, tenant) chosen per container.
//!
//! ```text
//! capture: decode → assemble → resume filter → Processor (multiline → stages) → batch
//! ```
//!
//! Processing runs inside each container's capture task, after the resume filter: dropped
//! lines never cost queue budget, and the cursor of a batch is exact — it covers dropped
//! lines (acknowledged, never re-read) and stops before the first line of a multiline group
//! that is still open (see `multiline`).

pub mod config;
mod engine;
pub mod metrics;
mod multiline;
pub mod record;
pub mod stage;
pub mod stages;
#[cfg(test)]
mod tests;
pub mod try_run;

pub use config::ProcessingConfig;
pub use engine::{Pipelines, ProcessingError, Processor};
pub use metrics::ProcessingMetrics;
pub use multiline::Multiline;
pub use record::{Extra, FieldValue, Fields, Level, lookup};
pub use stage::{BuildError, Stage, StageContext, Verdict};
