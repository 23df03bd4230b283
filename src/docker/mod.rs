//! Docker Engine API client: endpoints, version negotiation, requests and streams.

pub(crate) mod body;
mod client;
mod endpoint;
mod error;
pub(crate) mod http_stream;
pub mod read_pool;
pub mod timestamp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod types;

pub use client::{DockerClient, MAX_API_VERSION, MIN_API_VERSION, pinned_api_version};
pub use endpoint::{Conn, DEFAULT_SOCKET, Endpoint, EndpointError, ParkedConn};
pub use error::{DockerError, SetupError, TLS_PORT_HINT};
pub use http_stream::HttpStream;
