//! Resource counts the agent watches in itself: a leak shows here first.

/// Tokio tasks alive in the current runtime (0 outside one).
pub fn tasks_alive() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0)
}

/// Open file descriptors of this process (Linux; 0 where /proc is missing).
pub fn open_fds() -> usize {
    // The directory handle used to list /proc/self/fd is itself one entry: subtract it.
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}
