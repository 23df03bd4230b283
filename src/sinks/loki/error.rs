//! The Loki sink's set-up error ([`LokiSetupError`]) and its encode boundary error. (What a send to Loki comes to is
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

/// Why a Loki client cannot be built from its config (at start, on reload, for `dlq replay`).
/// The text names the setting.
#[derive(Debug, thiserror::Error)]
pub enum LokiSetupError {
    #[error("sinks.loki.url: {0}")]
    Url(#[source] hyper::http::uri::InvalidUri),
    #[error("sinks.loki.headers.{name}: invalid name")]
    HeaderName { name: String },
    /// `what` is the setting under `sinks.loki.` (`tenant`, `headers.X`, `basic_auth`, …).
    #[error("sinks.loki.{what}: not a valid header value")]
    HeaderValue { what: String },
    /// `sinks.loki.tls` (its text names the file and the key).
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}
