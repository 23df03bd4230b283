//! The wall clock as the agent stamps things with it (checkpoints, buffers, status, metrics).

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch now; 0 if the clock is set before 1970.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
