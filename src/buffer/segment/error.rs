//! The store's errors.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum AppendError {
    /// Storing the record would take `used_bytes()` over `max_bytes`.
    Full { used: u64, max: u64 },
    /// The payload can never be stored: longer than `u32::MAX`, or its frame (payload + 8
    /// bytes of header) is larger than `max_bytes`.
    TooLarge { len: usize },
    /// I/O failure (the record is not stored), or an empty payload (`InvalidInput`).
    Io(io::Error),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Full { used, max } => {
                write!(f, "buffer full: {used} of {max} bytes in use")
            }
            AppendError::TooLarge { len } => write!(
                f,
                "record of {len} bytes is larger than the buffer can ever hold"
            ),
            AppendError::Io(e) => write!(f, "buffer I/O error: {e}"),
        }
    }
}

impl std::error::Error for AppendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppendError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        AppendError::Io(e)
    }
}
