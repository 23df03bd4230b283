//! One agent per state directory: an exclusive advisory lock on `<state_dir>/lock`, held for
//! the life of the process (also taken by `dlq` commands, so they never race the agent).

use std::fs::File;
use std::path::{Path, PathBuf};

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    /// Another process holds the lock.
    #[error(
        "{} is in use by another log-capturer (one agent per state_dir; stop it first)",
        .0.display()
    )]
    InUse(PathBuf),
    /// The directory or its lock file cannot be created or locked; the text is
    /// [`state_dir_error`]'s (names the key and, for permissions, how to choose another).
    #[error("{0}")]
    StateDir(String),
}

pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StateLockError> {
        let dir_error = |path: &Path, e: &std::io::Error| {
            StateLockError::StateDir(state_dir_error(state_dir, path, e))
        };
        crate::fsutil::create_private_dir(state_dir).map_err(|e| dir_error(state_dir, &e))?;
        let path = state_dir.join("lock");
        let file =
            crate::fsutil::open_private_file(&path, false).map_err(|e| dir_error(&path, &e))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(StateLockError::InUse(state_dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(dir_error(&path, &e)),
        }
    }
}

/// Names the key an unusable state directory comes from and, when this user may not write
/// there (the default `/var/lib/log-capturer` run as non-root), how to choose another.
pub fn state_dir_error(state_dir: &Path, path: &Path, e: &std::io::Error) -> String {
    let mut message = if path == state_dir {
        format!("checkpoint.state_dir {}: {e}", state_dir.display())
    } else {
        format!(
            "checkpoint.state_dir {}: {}: {e}",
            state_dir.display(),
            path.display()
        )
    };
    if matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    ) {
        message.push_str(
            " (choose a directory this user can write: checkpoint.state_dir in the config, \
             --state-dir DIR or LOG_CAPTURER_STATE_DIR=DIR)",
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StateLock::acquire(dir.path()).expect("first");
        let second = StateLock::acquire(dir.path());
        assert!(second.is_err_and(|e| e.to_string().contains("in use")));
        drop(first);
        StateLock::acquire(dir.path()).expect("after release");
    }

    #[test]
    fn unwritable_state_dir_names_the_key_and_the_ways_to_change_it() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let dir = Path::new("/var/lib/log-capturer");
        let m = state_dir_error(dir, &dir.join("lock"), &e);
        assert!(
            m.starts_with(
                "checkpoint.state_dir /var/lib/log-capturer: /var/lib/log-capturer/lock: "
            ),
            "{m}"
        );
        for hint in ["--state-dir", "LOG_CAPTURER_STATE_DIR"] {
            assert!(m.contains(hint), "{m}");
        }
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!state_dir_error(dir, dir, &e).contains("--state-dir"));
    }
}
