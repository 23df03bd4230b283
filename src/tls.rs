//! rustls client configurations from PEM files, shared by the Loki sink (HTTPS) and the Docker
//! client (`tcp://` daemons with TLS), so both read certificates, name the file and the setting
//! that gave it in every error, and skip verification the same way.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A PEM file and the setting it came from (a key path such as `docker.tls.ca_file`, or an
/// environment variable), to name both in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub origin: String,
}

impl PemFile {
    pub fn new(path: &Path, origin: impl Into<String>) -> PemFile {
        PemFile {
            path: path.to_path_buf(),
            origin: origin.into(),
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            origin: self.origin.clone(),
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}

/// Why a client TLS configuration cannot be built; the text names the file and the setting.
/// Causes are kept as text: rustls' and pem's errors are neither `Clone` nor `Eq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{origin} {}: {reason}", .path.display())]
    File {
        origin: String,
        path: PathBuf,
        reason: String,
    },
    /// The crypto provider refuses the default protocol versions.
    #[error("TLS: {0}")]
    Protocols(String),
    /// The client certificate and key do not go together; `origin` is the TLS setting.
    #[error("{origin}: client certificate: {reason}")]
    ClientCert { origin: String, reason: String },
    #[error("{origin}: a client certificate needs both cert_file and key_file")]
    HalfPair { origin: String },
}

/// What a client trusts and presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates to trust.
    pub ca: Option<PemFile>,
    /// Trust the CA file only (the Docker CLI's rule), rather than it plus the built-in roots.
    pub ca_only: bool,
    /// Client certificate chain and key, for mutual TLS (both or neither).
    pub cert: Option<PemFile>,
    pub key: Option<PemFile>,
    /// Verify the server's certificate. Off: any certificate is accepted (signatures are
    /// still checked), the connection is only encrypted.
    pub verify: bool,
    /// The setting named when the client certificate and key do not match (e.g.
    /// `sinks.loki.tls`).
    pub origin: String,
}

pub fn client_config(c: &ClientTls) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if !(c.ca_only && c.ca.is_some()) {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(ca) = &c.ca {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(&ca.path).map_err(|e| ca.error(e))? {
            roots
                .add(cert.map_err(|e| ca.error(e))?)
                .map_err(|e| ca.error(e))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca.error("no PEM certificate in the file"));
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Protocols(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| cert.error(e))?;
            if chain.is_empty() {
                return Err(cert.error("no PEM certificate in the file"));
            }
            let key = PrivateKeyDer::from_pem_file(&key.path).map_err(|e| key.error(e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::ClientCert {
                    origin: c.origin.clone(),
                    reason: e.to_string(),
                })?
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(TlsError::HalfPair {
                origin: c.origin.clone(),
            });
        }
        (None, None) => builder.with_no_client_auth(),
    };
    if !c.verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
    }
    Ok(config)
}

/// Verification off: any certificate is accepted (signatures still checked).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
