//! The Loki sink's encode boundary error. (What a send to Loki comes to is
//! [`SendError`](super::SendError): retry, or rejected for good.)

/// Why a batch could not be encoded as configured. The worker then sends it as plain JSON,
/// which cannot fail (see `Encoder::encode_slices_plain_json`).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("snappy: {0}")]
    Snappy(#[source] snap::Error),
    #[error("gzip: {0}")]
    Gzip(#[source] std::io::Error),
    /// Tests: a compression bug, injected (`Encoder::fail_for_test`).
    #[cfg(test)]
    #[error("compression failure injected by a test")]
    InjectedForTest,
}
