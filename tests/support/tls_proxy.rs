//! A TLS-terminating TCP proxy, to put HTTPS in front of the plain-HTTP Loki test receiver
//! (`loki.rs`): it listens on 127.0.0.1 with rustls (tokio-rustls, the ring provider),
//! optionally requires client certificates signed by a given CA (mutual TLS), and forwards the
//! decrypted bytes to a plain TCP address, both directions, until either side closes. It
//! records every handshake that succeeded or failed (with the error text).
//!
//! Also a certificate helper (`Certs`): a private CA, a server certificate for `localhost` and
//! 127.0.0.1 and a client certificate, both signed by the CA, written as PEM files (the agent
//! reads PEM files).
//!
//! Like `LokiReceiver` and `FakeEngine`, the proxy runs on a tokio runtime it owns; tests stay
//! synchronous.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;

/// How long a client gets to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Certificates

/// A private CA, a server certificate and a client certificate, in memory and as PEM files.
pub struct Certs {
    /// The CA certificate (PEM), to trust as `tls.ca_file`.
    pub ca_file: PathBuf,
    /// The server certificate chain (leaf then CA) and its PKCS#8 key.
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
    /// The client certificate chain (leaf then CA) and its PKCS#8 key, for mutual TLS.
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl Certs {
    /// Generates the CA and both certificates and writes them under `dir` (created if needed).
    pub fn generate(dir: &Path) -> Certs {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };

        std::fs::create_dir_all(dir).expect("certificate dir");
        let named = |cn: &str| {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            dn
        };

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name = named("log-capturer test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(sans).expect("leaf params");
            params.distinguished_name = named(cn);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &issuer).expect("leaf certificate");
            (cert, key)
        };
        let (server_cert, server_key) = leaf(
            "localhost",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            "log-capturer test client",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
            path
        };
        let ca_file = write("ca.pem", ca_cert.pem());
        let server_cert_file = write(
            "server.pem",
            format!("{}{}", server_cert.pem(), ca_cert.pem()),
        );
        let server_key_file = write("server-key.pem", server_key.serialize_pem());
        let client_cert_file = write(
            "client.pem",
            format!("{}{}", client_cert.pem(), ca_cert.pem()),
        );
        let client_key_file = write("client-key.pem", client_key.serialize_pem());
        Certs {
            ca_file,
            server_cert_file,
            server_key_file,
            client_cert_file,
            client_key_file,
            ca_der: ca_cert.der().clone(),
            server_chain: vec![server_cert.der().clone(), ca_cert.der().clone()],
            server_key: server_key.serialize_der(),
        }
    }

    /// Proxy options serving the server certificate, no client certificate asked for.
    pub fn server_options(&self) -> TlsProxyOptions {
        TlsProxyOptions {
            cert_chain: self.server_chain.clone(),
            key: PrivatePkcs8KeyDer::from(self.server_key.clone()).into(),
            client_ca: None,
        }
    }

    /// Proxy options serving the server certificate and requiring a client certificate
    /// signed by the CA.
    pub fn mutual_options(&self) -> TlsProxyOptions {
        TlsProxyOptions {
            client_ca: Some(vec![self.ca_der.clone()]),
            ..self.server_options()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Proxy

pub struct TlsProxyOptions {
    /// Server certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Some: client certificates are required, and must chain to one of these CAs.
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
}

/// What the proxy saw.
#[derive(Clone, Debug, Default)]
pub struct TlsProxyStats {
    /// TCP connections accepted.
    pub connections: usize,
    /// Handshakes completed.
    pub handshakes_ok: usize,
    /// Error text of each failed handshake, in order.
    pub handshake_errors: Vec<String>,
    /// Connections to the upstream address that failed (after a handshake succeeded).
    pub upstream_errors: Vec<String>,
}

struct Shared {
    stats: Mutex<TlsProxyStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, TlsProxyStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct TlsProxy {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    port: u16,
}

impl TlsProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection, once its handshake
    /// succeeds, to `upstream` (plain TCP).
    pub fn start(upstream: SocketAddr, options: TlsProxyOptions) -> TlsProxy {
        TlsProxy::start_to(Upstream::Tcp(upstream), options)
    }

    /// Like `start`, forwarding to a unix socket (e.g. the Docker daemon's).
    pub fn start_unix(upstream: &Path, options: TlsProxyOptions) -> TlsProxy {
        TlsProxy::start_to(Upstream::Unix(upstream.to_path_buf()), options)
    }

    fn start_to(upstream: Upstream, options: TlsProxyOptions) -> TlsProxy {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match options.client_ca {
            None => builder.with_no_client_auth(),
            Some(cas) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in cas {
                    roots.add(ca).expect("client CA");
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(options.cert_chain, options.key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));

        // The same runtime set-up as testkit's LokiReceiver::start; kept: four builder lines,
        // and the listener here is bound another way (a std one, made non-blocking).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = {
            let _guard = runtime.enter();
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TLS proxy");
            std_listener.set_nonblocking(true).expect("nonblocking");
            TcpListener::from_std(std_listener).expect("TLS proxy listener")
        };
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            stats: Mutex::new(TlsProxyStats::default()),
        });
        runtime.spawn(accept_loop(
            listener,
            acceptor,
            upstream,
            Arc::clone(&shared),
        ));
        TlsProxy {
            runtime: Some(runtime),
            shared,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://HOST:PORT/loki/api/v1/push` (`host`: "localhost" or "127.0.0.1", the names
    /// the server certificate is for).
    pub fn push_url(&self, host: &str) -> String {
        format!("https://{host}:{}{}", self.port, super::loki::PUSH_PATH)
    }

    pub fn stats(&self) -> TlsProxyStats {
        self.shared.lock().clone()
    }

    pub fn handshakes_ok(&self) -> usize {
        self.shared.lock().handshakes_ok
    }

    pub fn handshake_errors(&self) -> Vec<String> {
        self.shared.lock().handshake_errors.clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Where the decrypted bytes go.
#[derive(Clone, Debug)]
enum Upstream {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    upstream: Upstream,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        shared.lock().connections += 1;
        tokio::spawn(forward(
            stream,
            acceptor.clone(),
            upstream.clone(),
            Arc::clone(&shared),
        ));
    }
}

async fn forward(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    upstream: Upstream,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            shared.lock().handshakes_ok += 1;
            tls
        }
        Ok(Err(e)) => {
            shared.lock().handshake_errors.push(e.to_string());
            return;
        }
        Err(_) => {
            shared
                .lock()
                .handshake_errors
                .push(format!("no handshake within {HANDSHAKE_TIMEOUT:?}"));
            return;
        }
    };
    // Both directions until each side has closed (a half-close is passed on); errors (a
    // client leaving without close_notify, a reset) just end the connection.
    match &upstream {
        Upstream::Tcp(addr) => match TcpStream::connect(addr).await {
            Ok(mut plain) => {
                let _ = plain.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            }
            Err(e) => shared
                .lock()
                .upstream_errors
                .push(format!("connect {addr}: {e}")),
        },
        Upstream::Unix(path) => match tokio::net::UnixStream::connect(path).await {
            Ok(mut plain) => {
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            }
            Err(e) => shared
                .lock()
                .upstream_errors
                .push(format!("connect {}: {e}", path.display())),
        },
    }
}
