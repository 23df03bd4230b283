//! TLS to a `tcp://` Docker daemon: which certificates (the `docker.tls` keys, else the Docker
//! CLI's environment), the handshake, and a TLS session read the way `HttpStream` reads a
//! plain socket (non-blocking reads, parking out of the reactor).
//!
//! Precedence, as the Docker CLI (flags win over the environment): a `docker.tls` section is
//! used alone and the `DOCKER_TLS*` variables are then ignored. Without it:
//! - `DOCKER_TLS_VERIFY` non-empty: TLS, verifying the daemon against `$DOCKER_CERT_PATH/ca.pem`
//!   (required), presenting `cert.pem`/`key.pem` from there if both exist;
//! - else `DOCKER_TLS` non-empty: TLS without verification (the CLI's `--tls`), presenting
//!   `cert.pem`/`key.pem` if both exist;
//! - `DOCKER_CERT_PATH` defaults to `~/.docker` and alone does not turn TLS on.
//!
//! TLS settings do not apply to `unix://` endpoints (as with the CLI).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConnection;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::SetupError;
use crate::config::DockerTlsConfig;
use crate::tls::{ClientTls, PemFile};

/// The most plaintext one non-blocking read hands over (one TLS record holds at most 16 KiB).
const SCRATCH: usize = 16 * 1024;

/// Where the TLS settings come from: the config section or the environment.
pub fn settings(
    config: Option<&DockerTlsConfig>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ClientTls>, SetupError> {
    if let Some(c) = config {
        let file = |p: &Option<PathBuf>, key: &str| {
            p.as_deref()
                .map(|p| PemFile::new(p, format!("docker.tls.{key}")))
        };
        return Ok(Some(ClientTls {
            ca: file(&c.ca_file, "ca_file"),
            ca_only: true,
            cert: file(&c.cert_file, "cert_file"),
            key: file(&c.key_file, "key_file"),
            verify: c.verify,
            origin: "docker.tls".to_string(),
        }));
    }
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    let verify = set("DOCKER_TLS_VERIFY");
    if !verify && !set("DOCKER_TLS") {
        return Ok(None);
    }
    let dir = match env("DOCKER_CERT_PATH").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match env("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Path::new(&home).join(".docker"),
            None => {
                return Err(SetupError::NoCertPath);
            }
        },
    };
    let origin = if verify {
        "DOCKER_TLS_VERIFY with DOCKER_CERT_PATH"
    } else {
        "DOCKER_TLS with DOCKER_CERT_PATH"
    };
    let pem = |name: &str| PemFile::new(&dir.join(name), origin);
    let ca = if verify {
        let ca = pem("ca.pem");
        if let Err(e) = std::fs::File::open(&ca.path) {
            return Err(SetupError::CaFile {
                origin,
                path: ca.path.clone(),
                error: e.to_string(),
            });
        }
        Some(ca)
    } else {
        None
    };
    // Like the CLI: the client certificate is presented when both files exist.
    let (cert, key) = (pem("cert.pem"), pem("key.pem"));
    let (cert, key) = match (cert.path.exists(), key.path.exists()) {
        (true, true) => (Some(cert), Some(key)),
        (false, false) => (None, None),
        (true, false) => {
            return Err(SetupError::HalfPair {
                origin,
                present: cert.path,
                missing: key.path,
            });
        }
        (false, true) => {
            return Err(SetupError::HalfPair {
                origin,
                present: key.path,
                missing: cert.path,
            });
        }
    };
    Ok(Some(ClientTls {
        ca,
        ca_only: true,
        cert,
        key,
        verify,
        origin: origin.to_string(),
    }))
}

/// What a TLS endpoint needs to open sessions.
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    /// The settings, for `Debug` and equality.
    pub spec: ClientTls,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("spec", &self.spec)
            .finish()
    }
}

impl TlsClient {
    /// Reads the certificates now (errors name the file and its setting). `addr` is the
    /// endpoint's `host:port`; the host is the name the daemon's certificate must carry.
    pub fn new(spec: ClientTls, addr: &str) -> Result<TlsClient, SetupError> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name =
            ServerName::try_from(host.to_string()).map_err(|e| SetupError::ServerName {
                host: host.to_string(),
                error: e.to_string(),
            })?;
        let config = crate::tls::client_config(&spec)
            .map_err(|e| SetupError::Certificates(e.to_string()))?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
            spec,
        })
    }

    /// Completes a handshake on `tcp`.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<TlsConn> {
        let tls = ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
            .map_err(io::Error::other)?;
        let mut conn = TlsConn {
            tcp,
            session: Session {
                tls: Box::new(tls),
                pending: false,
                scratch: vec![0; SCRATCH].into_boxed_slice(),
            },
        };
        conn.handshake().await?;
        Ok(conn)
    }
}

/// The rustls state of one connection, whichever way its socket is held.
pub struct Session {
    tls: Box<ClientConnection>,
    /// The last read did not end in "nothing more on the socket": decrypted bytes may be
    /// waiting inside rustls. The reactor's cached readiness happens to cover this today (it
    /// is only cleared by a `WouldBlock`, which comes only once rustls is empty), but that is
    /// tokio's detail, and a socket re-registered after parking starts without it.
    pending: bool,
    scratch: Box<[u8]>,
}

/// A plain socket read as `io::Read` without blocking (tokio's `try_read` keeps its readiness
/// right).
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

struct TryWrite<'a>(&'a TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Session {
    /// One non-blocking read of plaintext into `out`: `Ok(0)` at the end of the stream,
    /// `WouldBlock` when the socket has nothing more.
    fn try_read<R: Read, W: Write>(
        &mut self,
        sock: &mut R,
        mut write_back: W,
        out: &mut [u8],
    ) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(out) {
                Ok(n) => {
                    self.pending = true;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: an end like a plain
                // socket's (the HTTP framing above tells a cut body from a complete one).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.pending = true;
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(sock) {
                Ok(0) => {
                    self.pending = true;
                    return Ok(0);
                }
                Ok(_) => {
                    let processed = self.tls.process_new_packets();
                    // Alerts, key updates: best effort, the socket is writable almost always.
                    while self.tls.wants_write() {
                        if self.tls.write_tls(&mut write_back).is_err() {
                            break;
                        }
                    }
                    processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.pending = false;
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// A TLS session on a tokio socket.
pub struct TlsConn {
    tcp: TcpStream,
    session: Session,
}

impl TlsConn {
    async fn flush(&mut self) -> io::Result<()> {
        while self.session.tls.wants_write() {
            match self.session.tls.write_tls(&mut TryWrite(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn handshake(&mut self) -> io::Result<()> {
        while self.session.tls.is_handshaking() {
            self.flush().await?;
            if !self.session.tls.wants_read() {
                continue;
            }
            self.tcp.readable().await?;
            match self.session.tls.read_tls(&mut TryRead(&self.tcp)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the daemon closed the connection during the TLS handshake",
                    ));
                }
                Ok(_) => {
                    if let Err(e) = self.session.tls.process_new_packets() {
                        // Tell the daemon why (an alert), then report it.
                        let _ = self.flush().await;
                        let hint = if matches!(e, rustls::Error::InvalidMessage(_)) {
                            " (the daemon does not answer TLS on this port: is it a plain \
                             HTTP port such as 2375? TLS comes from docker.tls or \
                             DOCKER_TLS_VERIFY/DOCKER_TLS)"
                        } else {
                            ""
                        };
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("TLS handshake: {e}{hint}"),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        self.flush().await
    }

    /// Writes all of `bytes` (encrypted).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.session.tls.writer().write_all(bytes)?;
        self.flush().await
    }

    pub async fn readable(&self) -> io::Result<()> {
        if self.session.pending {
            return Ok(());
        }
        self.tcp.readable().await
    }

    pub fn try_read_buf<B: bytes::BufMut>(&mut self, buf: &mut B) -> io::Result<usize> {
        let room = buf.chunk_mut().len().min(SCRATCH);
        let Session { scratch, .. } = &mut self.session;
        let mut scratch = std::mem::take(scratch);
        let read = self.session.try_read(
            &mut TryRead(&self.tcp),
            TryWrite(&self.tcp),
            &mut scratch[..room],
        );
        if let Ok(n) = read {
            buf.put_slice(&scratch[..n]);
        }
        self.session.scratch = scratch;
        read
    }

    pub fn park(self) -> io::Result<ParkedTls> {
        Ok(ParkedTls {
            tcp: self.tcp.into_std()?,
            session: self.session,
        })
    }
}

/// A TLS session whose socket is out of the reactor (see `ParkedConn`).
pub struct ParkedTls {
    tcp: std::net::TcpStream,
    session: Session,
}

impl ParkedTls {
    pub fn unpark(self) -> io::Result<TlsConn> {
        Ok(TlsConn {
            tcp: TcpStream::from_std(self.tcp)?,
            session: self.session,
        })
    }

    pub fn try_read_buf(&mut self, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
        let start = buf.len();
        buf.resize(start + max.min(SCRATCH), 0);
        let (mut reader, writer): (&std::net::TcpStream, &std::net::TcpStream) =
            (&self.tcp, &self.tcp);
        let read = self
            .session
            .try_read(&mut reader, writer, &mut buf[start..]);
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
