//! The store's error at its boundary: [`StoreError`], what `append` returns (and what a
//! [`SharedStore`](crate::buffer::SharedStore) append returns when its blocking task fails).
//!
//! `open` and the read side (`peek`, `peek_next`, `consume`, `consume_through`, `records`,
//! `purge`) still return `io::Error`: the Loki and Kafka sinks match on its kind
//! (`InvalidData` is a record that went bad after `open`), the Kafka sink's read-ahead passes
//! it on as an `io::Error`, and both sinks match `append`'s errors exhaustively, so an
//! open/read variant here would change their code.

use std::io;

/// Why a record was not stored. The messages are the ones operators and tests know
/// (`buffer full: …`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Storing the record would take `used_bytes()` over `max_bytes`.
    #[error("buffer full: {used} of {max} bytes in use")]
    Full { used: u64, max: u64 },
    /// The payload can never be stored: longer than `u32::MAX`, or its frame (payload + 8
    /// bytes of header) is larger than `max_bytes`.
    #[error("record of {len} bytes is larger than the buffer can ever hold")]
    TooLarge { len: usize },
    /// An append's I/O failure (the record is not stored), or an empty payload
    /// (`InvalidInput`).
    #[error("buffer I/O error: {0}")]
    Io(#[from] io::Error),
}

/// The name the sinks match on for `append`'s errors (`AppendError::Full` …).
pub type AppendError = StoreError;
