//! A small Engine API client: one HTTP/1.1 connection per request or stream, the negotiated API
//! version in every path, and the exact query parameters the agent needs (fractional `since`).
//!
//! Why not bollard: it sends `since` as whole seconds (a reopen would re-send up to a second of
//! lines and lean entirely on de-duplication) and drops the version prefix. Why a connection per
//! stream: closing a stream must close its socket, and a dedicated connection makes that a drop.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::time::Duration;

use super::endpoint::Endpoint;
use super::error::{DockerError, SetupError};
use super::http_stream::{self, HttpStream};
use super::timestamp::since_param;
use super::types::{ContainerInspect, ContainerSummary, ErrorResponse, VersionResponse};

/// The oldest Engine API the agent speaks (Docker 20.10).
pub const MIN_API_VERSION: (u32, u32) = (1, 41);
/// The newest Engine API the agent was checked against; newer daemons are spoken to at this one.
pub const MAX_API_VERSION: (u32, u32) = (1, 51);

#[derive(Clone, Debug)]
pub struct DockerClient {
    endpoint: Endpoint,
    /// e.g. "v1.41", prefixed to every path.
    version: String,
    timeout: Duration,
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `DOCKER_API_VERSION`, as the Docker CLI reads it: empty or unset, negotiate.
pub fn pinned_api_version() -> Result<Option<(u32, u32)>, SetupError> {
    pinned_api_version_from(std::env::var("DOCKER_API_VERSION").ok().as_deref())
}

fn pinned_api_version_from(value: Option<&str>) -> Result<Option<(u32, u32)>, SetupError> {
    let Some(text) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let version = parse_version(text.trim_start_matches('v')).ok_or_else(|| {
        SetupError::ApiVersion(format!(
            "DOCKER_API_VERSION={text:?} is not an API version such as 1.41"
        ))
    })?;
    if version < MIN_API_VERSION {
        return Err(SetupError::ApiVersion(format!(
            "DOCKER_API_VERSION={text} is older than the oldest Engine API the agent speaks \
             ({}.{}, Docker 20.10); unset it or set {}.{} or newer",
            MIN_API_VERSION.0, MIN_API_VERSION.1, MIN_API_VERSION.0, MIN_API_VERSION.1
        )));
    }
    Ok(Some(version))
}

impl DockerClient {
    /// Connects to the engine and negotiates the API version (`/version`, floor 1.41).
    pub async fn negotiate(endpoint: Endpoint, timeout: Duration) -> Result<Self, DockerError> {
        Self::connect(endpoint, None, timeout).await
    }

    /// Connects to the engine and asks `/version` (unversioned). Without `pinned`, the
    /// version spoken is the engine's, capped at [`MAX_API_VERSION`]. With it
    /// (`DOCKER_API_VERSION`), that version is spoken whatever the cap, as the Docker CLI
    /// does; unlike the CLI, an engine too old for it is an error here, at once, rather than a
    /// 400 on every later request.
    pub async fn connect(
        endpoint: Endpoint,
        pinned: Option<(u32, u32)>,
        timeout: Duration,
    ) -> Result<Self, DockerError> {
        let mut client = DockerClient {
            endpoint,
            version: String::new(),
            timeout,
        };
        let v: VersionResponse = client.get_json("/version").await?;
        let server = parse_version(&v.api_version).ok_or_else(|| {
            DockerError::Decode(format!("API version {:?} is not N.M", v.api_version))
        })?;
        if server < MIN_API_VERSION {
            return Err(DockerError::Decode(format!(
                "the engine speaks API {}, older than the minimum {}.{}",
                v.api_version, MIN_API_VERSION.0, MIN_API_VERSION.1
            )));
        }
        let (major, minor) = match pinned {
            Some(p) if p > server => {
                return Err(DockerError::Decode(format!(
                    "DOCKER_API_VERSION={}.{} is newer than the engine's API {}",
                    p.0, p.1, v.api_version
                )));
            }
            Some(p) => p,
            None => server.min(MAX_API_VERSION),
        };
        client.version = format!("v{major}.{minor}");
        Ok(client)
    }

    /// A client that has not spoken to any engine (tests of code that holds one but does not
    /// call it).
    #[cfg(test)]
    pub(crate) fn unconnected(endpoint: Endpoint) -> Self {
        DockerClient {
            endpoint,
            version: "v1.41".to_string(),
            timeout: Duration::from_secs(1),
        }
    }

    /// The negotiated version, e.g. "v1.41".
    pub fn api_version(&self) -> &str {
        &self.version
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn path(&self, rest: &str) -> String {
        if self.version.is_empty() {
            rest.to_string()
        } else {
            format!("/{}{}", self.version, rest)
        }
    }

    /// Opens a connection and sends a GET; returns the status and the body as a stream.
    async fn send(&self, path: &str) -> Result<(u16, HttpStream), DockerError> {
        let conn = self
            .endpoint
            .connect()
            .await
            .map_err(|e| connect_error(&self.endpoint, e))?;
        http_stream::get(conn, path)
            .await
            .map_err(|e| self.tls_port_hint(e))
    }

    /// On a plain `tcp://` endpoint, a connection cut before any answer on the usual TLS
    /// port (2376) most likely is a TLS daemon dropping our plain request.
    fn tls_port_hint(&self, e: DockerError) -> DockerError {
        match (&self.endpoint, e) {
            (Endpoint::Tcp(addr), DockerError::Transport(text)) if addr.ends_with(":2376") => {
                DockerError::tls_port(format!("{}: {text}", self.endpoint))
            }
            (_, e) => e,
        }
    }

    /// GET with a short time-out; returns the whole body of a 2xx answer.
    async fn get_bytes(&self, path: &str) -> Result<Bytes, DockerError> {
        let work = async {
            let (status, mut stream) = self.send(path).await?;
            let mut body = Vec::new();
            while let Some(chunk) = stream.next_chunk().await? {
                body.extend_from_slice(&chunk);
            }
            if !(200..300).contains(&status) {
                // Go's HTTP server (dockerd) answers plain HTTP on a TLS port with this 400.
                if status == 400
                    && self.endpoint.is_plain_tcp()
                    && String::from_utf8_lossy(&body).contains("HTTP request to an HTTPS server")
                {
                    return Err(DockerError::tls_port(format!(
                        "{} answered 400: {}",
                        self.endpoint,
                        String::from_utf8_lossy(&body).trim()
                    )));
                }
                return Err(status_error(status, &body));
            }
            Ok(Bytes::from(body))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| DockerError::Timeout)?
    }

    async fn get_json<T: DeserializeOwned>(&self, rest: &str) -> Result<T, DockerError> {
        let body = self.get_bytes(&self.path(rest)).await?;
        serde_json::from_slice(&body).map_err(|e| DockerError::Decode(format!("{rest}: {e}")))
    }

    /// Opens a long-lived GET. Only the response head is subject to the time-out.
    async fn get_stream(&self, path: &str) -> Result<HttpStream, DockerError> {
        let (status, mut stream) = tokio::time::timeout(self.timeout, self.send(path))
            .await
            .map_err(|_| DockerError::Timeout)??;
        if !(200..300).contains(&status) {
            let body = tokio::time::timeout(self.timeout, async {
                let mut body = Vec::new();
                while let Ok(Some(chunk)) = stream.next_chunk().await {
                    body.extend_from_slice(&chunk);
                }
                body
            })
            .await
            .unwrap_or_default();
            return Err(status_error(status, &body));
        }
        Ok(stream)
    }

    pub async fn list_running(&self) -> Result<Vec<ContainerSummary>, DockerError> {
        self.get_json("/containers/json").await
    }

    /// Every container, running or not (used to notice ones removed while we were away).
    pub async fn list_all(&self) -> Result<Vec<ContainerSummary>, DockerError> {
        self.get_json("/containers/json?all=1").await
    }

    /// `GET /info` (the data root, for the json-file capture mode).
    pub async fn info(&self) -> Result<super::types::SystemInfo, DockerError> {
        self.get_json("/info").await
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerInspect, DockerError> {
        self.get_json(&format!("/containers/{id}/json")).await
    }

    /// Follows a container's stdout and stderr with timestamps from `since_ns` (inclusive).
    pub async fn logs(&self, id: &str, since_ns: i64) -> Result<HttpStream, DockerError> {
        let path = self.path(&format!(
            "/containers/{id}/logs?follow=1&stdout=1&stderr=1&timestamps=1&since={}",
            since_param(since_ns)
        ));
        self.get_stream(&path).await
    }

    /// Container lifecycle events, optionally replayed from `since_ns`.
    pub async fn events(&self, since_ns: Option<i64>) -> Result<HttpStream, DockerError> {
        // {"type":["container"],"event":["start","die","destroy","rename"]}, URL-encoded.
        let filters = "%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%2C%22die%22%2C%22destroy%22%2C%22rename%22%5D%7D";
        let mut rest = format!("/events?filters={filters}");
        if let Some(since) = since_ns {
            rest.push_str("&since=");
            rest.push_str(&since_param(since));
        }
        self.get_stream(&self.path(&rest)).await
    }
}

/// A connection that could not be opened; permission denied on the socket gets its advice.
fn connect_error(endpoint: &Endpoint, e: std::io::Error) -> DockerError {
    let error = format!("{endpoint}: {e}");
    match endpoint {
        Endpoint::Unix(path) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            DockerError::Hinted {
                error,
                hint: format!(
                    "permission denied on the Docker socket {}: run the agent as root or as a \
                     user in the `docker` group (the socket's group), e.g. `usermod -aG docker USER`",
                    path.display()
                ),
                in_message: false,
            }
        }
        _ => DockerError::Transport(error),
    }
}

fn status_error(status: u16, body: &[u8]) -> DockerError {
    let message = serde_json::from_slice::<ErrorResponse>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string());
    DockerError::Status { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert_eq!(parse_version("1.9"), Some((1, 9)));
        assert!(parse_version("1.9") < Some((1, 41)));
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn pinned_versions() {
        assert_eq!(pinned_api_version_from(None), Ok(None));
        assert_eq!(pinned_api_version_from(Some("")), Ok(None));
        assert_eq!(pinned_api_version_from(Some("1.41")), Ok(Some((1, 41))));
        assert_eq!(pinned_api_version_from(Some("1.45")), Ok(Some((1, 45))));
        let low = pinned_api_version_from(Some("1.40"))
            .expect_err("below the floor")
            .to_string();
        assert!(
            low.contains("DOCKER_API_VERSION=1.40") && low.contains("1.41"),
            "{low}"
        );
        let bad = pinned_api_version_from(Some("latest"))
            .expect_err("not a version")
            .to_string();
        assert!(bad.contains("DOCKER_API_VERSION"), "{bad}");
    }

    /// dockerd (Go's HTTP server) answers plain HTTP on its TLS port with a 400; a daemon that
    /// closes at once on 2376 most likely wants TLS too. Both errors say what to set.
    #[tokio::test]
    async fn plain_http_to_a_tls_daemon_gets_the_hint() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = "Client sent an HTTP request to an HTTPS server.\n";
            let answer = format!(
                "HTTP/1.0 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        });
        let err = DockerClient::negotiate(Endpoint::Tcp(addr.to_string()), Duration::from_secs(10))
            .await
            .expect_err("a 400");
        assert!(err.hint().is_some(), "{err}");
        assert!(
            err.to_string().contains("this looks like a TLS port"),
            "{err}"
        );
        server.await.expect("server");

        let client = DockerClient {
            endpoint: Endpoint::Tcp("docker.example:2376".to_string()),
            version: String::new(),
            timeout: Duration::from_secs(1),
        };
        let closed = DockerError::Transport("connection closed before the response head".into());
        let err = client.tls_port_hint(closed.clone());
        assert!(err.to_string().contains("DOCKER_TLS_VERIFY"), "{err}");
        let other_port = DockerClient {
            endpoint: Endpoint::Tcp("docker.example:2375".to_string()),
            ..client
        };
        assert!(other_port.tls_port_hint(closed).hint().is_none());
    }
}
