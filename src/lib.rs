//! log-capturer: captures the logs of Docker containers through the Engine API and ships them
//! to sinks, with exact resume across rotations, reconnects and restarts.
//!
//! Data flow: [`docker`] (Engine API client) → [`discovery`] (which containers, lifecycle) →
//! [`capture`] (one task per container stream) → [`pipeline`] (queue, writer, acks) →
//! [`sinks`]; [`checkpoint`] persists acknowledged cursors; [`observability`] exports metrics;
//! [`agent`] wires it all and owns shutdown.

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
