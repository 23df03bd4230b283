//! One agent per state directory: an exclusive advisory lock on `<state_dir>/lock`, held for
//! the life of the process (also taken by `dlq` commands, so they never race the agent).

use std::fs::File;
use std::path::Path;

pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<StateLock, String> {
        crate::checkpoint::create_private_dir(state_dir)
            .map_err(|e| format!("checkpoint.state_dir {}: {e}", state_dir.display()))?;
        let path = state_dir.join("lock");
        let file = crate::checkpoint::open_private_file(&path, false)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "{} is in use by another log-capturer (one agent per state_dir; stop it first)",
                state_dir.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StateLock::acquire(dir.path()).expect("first");
        let second = StateLock::acquire(dir.path());
        assert!(second.is_err_and(|e| e.contains("in use")));
        drop(first);
        StateLock::acquire(dir.path()).expect("after release");
    }
}
