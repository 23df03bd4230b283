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

/// Raises the soft open-files limit to the hard one: every followed container holds a socket
/// (and a file with the file sink), and the common soft default of 1024 is too low for a busy
/// host.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|soft| soft < hard)
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = hard, "raised the open-files limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
        }
    }
}
