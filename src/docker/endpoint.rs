//! Where the Docker Engine listens, and how to open a byte stream to it.

use std::io;
use std::path::PathBuf;
#[cfg(feature = "tls")]
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

use super::SetupError;
#[cfg(feature = "tls")]
use super::tls::{ParkedTls, TlsClient, TlsConn};
use crate::config::DockerConfig;

pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`
    Tcp(String),
    /// `host:port`, spoken to with TLS.
    #[cfg(feature = "tls")]
    Tls(String, Arc<TlsClient>),
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Endpoint::Unix(a), Endpoint::Unix(b)) => a == b,
            (Endpoint::Tcp(a), Endpoint::Tcp(b)) => a == b,
            #[cfg(feature = "tls")]
            (Endpoint::Tls(a, x), Endpoint::Tls(b, y)) => a == b && x.spec == y.spec,
            _ => false,
        }
    }
}

impl Eq for Endpoint {}

/// Why a `docker.host` / `DOCKER_HOST` text is not an endpoint (the text is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?} has no socket path")]
    NoSocketPath(String),
    #[error("{0:?} must be tcp://host:port")]
    NotHostPort(String),
    #[error("{0:?} is not a Docker endpoint (unix:///path or tcp://host:port)")]
    UnknownScheme(String),
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Endpoint, EndpointError> {
        Endpoint::parse(text)
    }
}

impl Endpoint {
    /// Parses `unix:///path` or `tcp://host:port` (the `DOCKER_HOST` syntax).
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(EndpointError::NoSocketPath(text.to_string()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if addr.is_empty() || !addr.contains(':') {
                return Err(EndpointError::NotHostPort(text.to_string()));
            }
            return Ok(Endpoint::Tcp(addr.to_string()));
        }
        Err(EndpointError::UnknownScheme(text.to_string()))
    }

    /// The configured host, else `$DOCKER_HOST`, else the local socket.
    pub fn resolve(configured: &str) -> Result<Endpoint, SetupError> {
        Self::pick(configured, |k| std::env::var(k).ok())
    }

    fn pick(
        configured: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Endpoint, SetupError> {
        if !configured.is_empty() {
            return Endpoint::parse(configured).map_err(|reason| SetupError::Host {
                origin: "docker.host",
                reason,
            });
        }
        match env("DOCKER_HOST") {
            Some(v) if !v.is_empty() => Endpoint::parse(&v).map_err(|reason| SetupError::Host {
                origin: "DOCKER_HOST",
                reason,
            }),
            _ => Endpoint::parse(DEFAULT_SOCKET).map_err(SetupError::DefaultHost),
        }
    }

    /// Like [`Endpoint::resolve`] for `docker.host`, with TLS for a `tcp://` endpoint from
    /// `docker.tls` or the `DOCKER_TLS*` environment (see `docker::tls`). Certificate files
    /// are read now, so their errors come at start-up.
    pub fn resolve_with(config: &DockerConfig) -> Result<Endpoint, SetupError> {
        Self::resolve_with_env(config, |k| std::env::var(k).ok())
    }

    pub fn resolve_with_env(
        config: &DockerConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Endpoint, SetupError> {
        let addr = match Self::pick(&config.host, &env)? {
            Endpoint::Tcp(addr) => addr,
            other => {
                if config.tls.is_some() {
                    tracing::warn!(endpoint = %other, "docker.tls is ignored: the endpoint is not tcp://");
                }
                return Ok(other);
            }
        };
        #[cfg(feature = "tls")]
        {
            let Some(spec) = super::tls::settings(config.tls.as_ref(), env)? else {
                return Ok(Endpoint::Tcp(addr));
            };
            let client = TlsClient::new(spec, &addr)?;
            if !client.spec.verify {
                tracing::warn!(
                    endpoint = %format!("tcp://{addr}"),
                    "TLS to Docker without verification ({}): the daemon's certificate is NOT checked",
                    client.spec.origin
                );
            }
            Ok(Endpoint::Tls(addr, Arc::new(client)))
        }
        #[cfg(not(feature = "tls"))]
        {
            let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
            if config.tls.is_some() || set("DOCKER_TLS_VERIFY") || set("DOCKER_TLS") {
                return Err(SetupError::NoTlsBuild(addr));
            }
            Ok(Endpoint::Tcp(addr))
        }
    }

    pub async fn connect(&self) -> io::Result<Conn> {
        match self {
            Endpoint::Unix(path) => Ok(Conn::Unix(UnixStream::connect(path).await?)),
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Conn::Tcp(stream))
            }
            #[cfg(feature = "tls")]
            Endpoint::Tls(addr, client) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Conn::Tls(Box::new(client.connect(stream).await?)))
            }
        }
    }

    /// A plain-TCP endpoint, where a daemon answering TLS means TLS is not configured.
    pub fn is_plain_tcp(&self) -> bool {
        matches!(self, Endpoint::Tcp(_))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            #[cfg(feature = "tls")]
            Endpoint::Tls(a, _) => write!(f, "tcp://{a} (TLS)"),
        }
    }
}

/// One connection to the engine. Dropping it closes the socket: that is how a stream is
/// cancelled, whatever its reader is waiting for.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<TlsConn>),
}

impl Conn {
    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.write_all(bytes).await,
            Conn::Tcp(s) => s.write_all(bytes).await,
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.send(bytes).await,
        }
    }

    /// Waits until a read may make progress (data, end of input or an error).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.readable().await,
            Conn::Tcp(s) => s.readable().await,
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.readable().await,
        }
    }

    /// One non-blocking read into `buf`'s spare capacity (`WouldBlock` when nothing is there).
    pub fn try_read_buf<B: bytes::BufMut>(&mut self, buf: &mut B) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.try_read_buf(buf),
            Conn::Tcp(s) => s.try_read_buf(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.try_read_buf(buf),
        }
    }

    /// Takes the connection out of the reactor (an `epoll_ctl` DEL).
    pub fn park(self) -> io::Result<ParkedConn> {
        match self {
            Conn::Unix(s) => s.into_std().map(ParkedConn::Unix),
            Conn::Tcp(s) => s.into_std().map(ParkedConn::Tcp),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.park().map(|p| ParkedConn::Tls(Box::new(p))),
        }
    }

    /// A plain TCP connection (no TLS).
    pub fn is_plain_tcp(&self) -> bool {
        matches!(self, Conn::Tcp(_))
    }
}

/// A connection taken out of the reactor: nothing watches its readiness, so the peer's writes
/// wake nobody, but it can still be read without blocking (the socket stays non-blocking).
pub enum ParkedConn {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<ParkedTls>),
}

impl ParkedConn {
    /// Puts the connection back under the reactor, to wait on it.
    pub fn unpark(self) -> io::Result<Conn> {
        match self {
            ParkedConn::Unix(s) => UnixStream::from_std(s).map(Conn::Unix),
            ParkedConn::Tcp(s) => TcpStream::from_std(s).map(Conn::Tcp),
            #[cfg(feature = "tls")]
            ParkedConn::Tls(s) => s.unpark().map(|c| Conn::Tls(Box::new(c))),
        }
    }

    /// One non-blocking read into `buf`, growing it by at most `max` bytes.
    pub fn try_read_buf(&mut self, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
        match self {
            ParkedConn::Unix(s) => read_plain(&*s, buf, max),
            ParkedConn::Tcp(s) => read_plain(&*s, buf, max),
            #[cfg(feature = "tls")]
            ParkedConn::Tls(s) => s.try_read_buf(buf, max),
        }
    }
}

/// One read of a non-blocking socket into `buf`, growing it by at most `max` bytes.
fn read_plain(
    mut socket: impl std::io::Read,
    buf: &mut bytes::BytesMut,
    max: usize,
) -> io::Result<usize> {
    let start = buf.len();
    // Zeroing the room first keeps this free of `unsafe`; it costs about a microsecond per
    // read of a busy stream, next to the hundreds of lines the read brings.
    buf.resize(start + max, 0);
    let read = socket.read(&mut buf[start..]);
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock"),
            Ok(Endpoint::Unix(PathBuf::from("/var/run/docker.sock")))
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375"),
            Ok(Endpoint::Tcp("127.0.0.1:2375".to_string()))
        );
        assert!(Endpoint::parse("tcp://nohost").is_err());
        assert!(Endpoint::parse("http://x").is_err());
        assert!(Endpoint::parse("unix://").is_err());
        // The texts config validation and overrides print.
        for (text, message) in [
            ("unix://", r#""unix://" has no socket path"#),
            ("tcp://nohost", r#""tcp://nohost" must be tcp://host:port"#),
            (
                "http://x",
                r#""http://x" is not a Docker endpoint (unix:///path or tcp://host:port)"#,
            ),
        ] {
            assert_eq!(
                Endpoint::parse(text).map_err(|e| e.to_string()),
                Err(message.to_string())
            );
        }
    }

    #[test]
    fn the_configured_host_wins_and_tls_applies_to_tcp_only() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let mut config = DockerConfig::default();
        assert_eq!(
            Endpoint::resolve_with_env(&config, env(&[])),
            Endpoint::parse(DEFAULT_SOCKET).map_err(SetupError::DefaultHost)
        );
        assert_eq!(
            Endpoint::resolve_with_env(&config, env(&[("DOCKER_HOST", "tcp://e:2375")])),
            Ok(Endpoint::Tcp("e:2375".to_string()))
        );
        config.host = "unix:///run/d.sock".to_string();
        // TLS settings do not apply to a unix socket.
        assert_eq!(
            Endpoint::resolve_with_env(
                &config,
                env(&[("DOCKER_HOST", "tcp://e:2375"), ("DOCKER_TLS", "1")])
            ),
            Ok(Endpoint::Unix(PathBuf::from("/run/d.sock")))
        );
        let err =
            Endpoint::resolve_with_env(&DockerConfig::default(), env(&[("DOCKER_HOST", "x")]))
                .expect_err("bad DOCKER_HOST")
                .to_string();
        assert!(err.starts_with("DOCKER_HOST:"), "{err}");
        #[cfg(feature = "tls")]
        {
            config.host = "tcp://127.0.0.1:2376".to_string();
            let tls = Endpoint::resolve_with_env(
                &config,
                env(&[("DOCKER_TLS", "1"), ("DOCKER_CERT_PATH", "/nonexistent")]),
            )
            .expect("TLS without verification needs no files");
            assert!(matches!(tls, Endpoint::Tls(ref a, _) if a == "127.0.0.1:2376"));
            assert_eq!(tls.to_string(), "tcp://127.0.0.1:2376 (TLS)");
            assert!(!tls.is_plain_tcp());
        }
    }
}
