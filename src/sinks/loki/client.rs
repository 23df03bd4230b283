//! HTTP delivery to Loki: pooled HTTP/1.1 (HTTPS with rustls when the `tls` feature is on),
//! auth and tenant headers, a time-out per request, and a classification of every outcome into
//! "retry" (connection errors, time-outs, 429 with Retry-After, 5xx and other non-400/413
//! answers) or "rejected" (400, 413: never retried; the batch becomes a dead letter).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

use super::encode::EncodedBatch;
use super::error::LokiSetupError;
use crate::config::LokiSinkConfig;
use crate::observability::reasons::LokiSinkFailureReason;

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = hyper_util::client::legacy::connect::HttpConnector;

/// What a push to Loki came to, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("{reason}: {detail}")]
    Retryable {
        /// Bounded metric label: "connect", "timeout", "429", "5xx", "4xx".
        reason: LokiSinkFailureReason,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("rejected with {status}: {body}")]
    Rejected { status: u16, body: String },
}

/// Loki's refusal of a push for good (400/413): its status and answer, which the worker keeps
/// until the push is a dead letter. Displayed as the dead letter's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {body}")]
pub struct Rejection {
    pub status: u16,
    pub body: String,
}

pub struct LokiClient {
    client: Client<Connector, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
    timeout: Duration,
}

impl LokiClient {
    pub fn new(config: &LokiSinkConfig) -> Result<LokiClient, LokiSetupError> {
        let uri: Uri = config.url.parse().map_err(LokiSetupError::Url)?;
        let mut headers = HeaderMap::new();
        let mut put = |name: HeaderName, value: &str, what: &str| -> Result<(), LokiSetupError> {
            let v = HeaderValue::from_str(value).map_err(|_| LokiSetupError::HeaderValue {
                what: what.to_string(),
            })?;
            headers.insert(name, v);
            Ok(())
        };
        for (name, value) in &config.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| LokiSetupError::HeaderName { name: name.clone() })?;
            put(n, value.expose(), &format!("headers.{name}"))?;
        }
        if !config.tenant.is_empty() {
            put(
                HeaderName::from_static("x-scope-orgid"),
                &config.tenant,
                "tenant",
            )?;
        }
        if let Some(auth) = &config.basic_auth {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                auth.username,
                auth.password.expose()
            ));
            put(
                header::AUTHORIZATION,
                &format!("Basic {token}"),
                "basic_auth",
            )?;
        } else if !config.bearer_token.is_empty() {
            put(
                header::AUTHORIZATION,
                &format!("Bearer {}", config.bearer_token.expose()),
                "bearer_token",
            )?;
        }
        put(
            header::USER_AGENT,
            concat!("log-capturer/", env!("CARGO_PKG_VERSION")),
            "user agent",
        )?;
        let connector = connector(config)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        Ok(LokiClient {
            client,
            uri,
            headers,
            timeout: config.timeout.0,
        })
    }

    pub async fn send(&self, batch: &EncodedBatch) -> Result<(), SendError> {
        // A push's own tenant (from a record) replaces the configured one; checked first, as
        // Loki would refuse it with a 401 that is retried for ever. Refused here, the push
        // becomes a dead letter: kept, never sent to another tenant.
        let tenant = match batch.tenant.as_deref() {
            Some(t) => Some(tenant_header(t).ok_or_else(|| SendError::Rejected {
                status: 400,
                body: format!("invalid tenant (X-Scope-OrgID) {t:?}: not sent"),
            })?),
            None => None,
        };
        let mut request = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, batch.content_type)
            .body(Full::new(Bytes::from(batch.body.clone())))
            .map_err(|e| SendError::Retryable {
                reason: LokiSinkFailureReason::Connect,
                detail: e.to_string(),
                retry_after: None,
            })?;
        if let Some(enc) = batch.content_encoding {
            request
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        for (k, v) in &self.headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        if let Some(tenant) = tenant {
            request
                .headers_mut()
                .insert(HeaderName::from_static("x-scope-orgid"), tenant);
        }
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| SendError::Retryable {
                        reason: LokiSinkFailureReason::Connect,
                        detail: error_chain(&e),
                        retry_after: None,
                    })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(4096)])
                .trim()
                .to_string();
            Ok::<_, SendError>((status, retry_after, text))
        };
        let (status, retry_after, text) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Retryable {
                reason: LokiSinkFailureReason::Timeout,
                detail: format!("no answer within {:?}", self.timeout),
                retry_after: None,
            })??;
        classify(status, retry_after, text)
    }
}

/// The header value of a Loki tenant ID, if it is one: at most 150 bytes of `a-z A-Z 0-9`
/// and `!-_.*'()`, not `.` or `..` (Loki's rule).
fn tenant_header(tenant: &str) -> Option<HeaderValue> {
    // One rule with the tenant stage, which counts what it refuses (`tenant_invalid`).
    let valid = crate::processing::stages::tenant::valid_org_id(tenant);
    valid.then(|| HeaderValue::from_str(tenant).ok()).flatten()
}

fn classify(status: u16, retry_after: Option<Duration>, text: String) -> Result<(), SendError> {
    match status {
        200..=299 => Ok(()),
        400 | 413 => Err(SendError::Rejected { status, body: text }),
        429 => Err(SendError::Retryable {
            reason: LokiSinkFailureReason::TooManyRequests,
            detail: text,
            retry_after,
        }),
        500..=599 => Err(SendError::Retryable {
            reason: LokiSinkFailureReason::ServerError,
            detail: format!("{status}: {text}"),
            retry_after,
        }),
        _ => Err(SendError::Retryable {
            reason: LokiSinkFailureReason::ClientError,
            detail: format!("{status}: {text}"),
            retry_after,
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(not(feature = "tls"))]
fn connector(_config: &LokiSinkConfig) -> Result<Connector, LokiSetupError> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    Ok(http)
}

#[cfg(feature = "tls")]
fn connector(config: &LokiSinkConfig) -> Result<Connector, LokiSetupError> {
    let tls = tls::client_config(&config.tls)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

#[cfg(feature = "tls")]
mod tls {
    use crate::config::TlsConfig;
    use crate::tls::{ClientTls, PemFile};

    pub fn client_config(c: &TlsConfig) -> Result<rustls::ClientConfig, crate::tls::TlsError> {
        let file = |p: &Option<std::path::PathBuf>, key: &str| {
            p.as_deref()
                .map(|p| PemFile::new(p, format!("sinks.loki.tls.{key}")))
        };
        crate::tls::client_config(&ClientTls {
            ca: file(&c.ca_file, "ca_file"),
            ca_only: false,
            cert: file(&c.cert_file, "cert_file"),
            key: file(&c.key_file, "key_file"),
            verify: !c.insecure_skip_verify,
            origin: "sinks.loki.tls".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(tenant_header("team-a_1.prod").is_some());
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a|b",
            "a/b",
            "é",
            "a\nb",
            &"x".repeat(151),
        ] {
            assert!(tenant_header(bad).is_none(), "{bad:?}");
        }
    }

    /// A push with an invalid tenant is refused without being sent (it becomes a dead letter).
    #[tokio::test]
    async fn invalid_tenant_is_rejected_without_sending() {
        let config = LokiSinkConfig {
            // Nothing listens there: a send would fail as retryable.
            url: "http://127.0.0.1:9/loki/api/v1/push".to_string(),
            ..LokiSinkConfig::default()
        };
        let client = LokiClient::new(&config).expect("client");
        let batch = EncodedBatch {
            body: Vec::new(),
            content_type: "application/json",
            content_encoding: None,
            entries: 0,
            tenant: Some("a/b".to_string()),
        };
        assert!(matches!(
            client.send(&batch).await,
            Err(SendError::Rejected { status: 400, .. })
        ));
    }

    #[test]
    fn classification() {
        assert_eq!(classify(204, None, String::new()), Ok(()));
        assert!(matches!(
            classify(400, None, "bad".into()),
            Err(SendError::Rejected { status: 400, .. })
        ));
        assert!(matches!(
            classify(413, None, String::new()),
            Err(SendError::Rejected { status: 413, .. })
        ));
        assert!(matches!(
            classify(429, Some(Duration::from_secs(7)), String::new()),
            Err(SendError::Retryable { reason: LokiSinkFailureReason::TooManyRequests, retry_after: Some(d), .. }) if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(503, None, String::new()),
            Err(SendError::Retryable {
                reason: LokiSinkFailureReason::ServerError,
                ..
            })
        ));
        assert!(matches!(
            classify(401, None, String::new()),
            Err(SendError::Retryable {
                reason: LokiSinkFailureReason::ClientError,
                ..
            })
        ));
    }
}
