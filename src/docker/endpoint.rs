//! Where the Docker Engine listens, and how to open a byte stream to it.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio::net::{TcpStream, UnixStream};

pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path` or `tcp://host:port` (the `DOCKER_HOST` syntax).
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{text:?} has no socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if addr.is_empty() || !addr.contains(':') {
                return Err(format!("{text:?} must be tcp://host:port"));
            }
            return Ok(Endpoint::Tcp(addr.to_string()));
        }
        Err(format!(
            "{text:?} is not a Docker endpoint (unix:///path or tcp://host:port)"
        ))
    }

    /// The configured host, else `$DOCKER_HOST`, else the local socket.
    pub fn resolve(configured: &str) -> Result<Endpoint, String> {
        if !configured.is_empty() {
            return Endpoint::parse(configured);
        }
        match std::env::var("DOCKER_HOST") {
            Ok(v) if !v.is_empty() => Endpoint::parse(&v).map_err(|e| format!("DOCKER_HOST: {e}")),
            _ => Endpoint::parse(DEFAULT_SOCKET),
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
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// One connection to the engine. Dropping it closes the socket: that is how a stream is
/// cancelled, whatever its reader is waiting for.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    /// Waits until a read may make progress (data, end of input or an error).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.readable().await,
            Conn::Tcp(s) => s.readable().await,
        }
    }

    /// One non-blocking read into `buf`'s spare capacity (`WouldBlock` when nothing is there).
    pub fn try_read_buf<B: bytes::BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.try_read_buf(buf),
            Conn::Tcp(s) => s.try_read_buf(buf),
        }
    }

    /// Takes the connection out of the reactor (an `epoll_ctl` DEL).
    pub fn park(self) -> io::Result<ParkedConn> {
        match self {
            Conn::Unix(s) => s.into_std().map(ParkedConn::Unix),
            Conn::Tcp(s) => s.into_std().map(ParkedConn::Tcp),
        }
    }
}

/// A connection taken out of the reactor: nothing watches its readiness, so the peer's writes
/// wake nobody, but it can still be read without blocking (the socket stays non-blocking).
pub enum ParkedConn {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl ParkedConn {
    /// Puts the connection back under the reactor, to wait on it.
    pub fn unpark(self) -> io::Result<Conn> {
        match self {
            ParkedConn::Unix(s) => UnixStream::from_std(s).map(Conn::Unix),
            ParkedConn::Tcp(s) => TcpStream::from_std(s).map(Conn::Tcp),
        }
    }

    /// One non-blocking read into `buf`, growing it by at most `max` bytes.
    pub fn try_read_buf(&self, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
        use std::io::Read;
        let start = buf.len();
        // Zeroing the room first keeps this free of `unsafe`; it costs about a microsecond per
        // read of a busy stream, next to the hundreds of lines the read brings.
        buf.resize(start + max, 0);
        let read = match self {
            ParkedConn::Unix(s) => (&*s).read(&mut buf[start..]),
            ParkedConn::Tcp(s) => (&*s).read(&mut buf[start..]),
        };
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
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
    }
}
