//! Configuration of the Loki sink.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{ByteSize, HumanDuration, InvalidConfig, Secret};

/// Dynamic labels and structured-metadata fields of records: a container's (`container_name`
/// … `stream`), a host file's (`file` and `filename`: its path) and every record's (`host`).
/// A name a record does not have gives no label. Besides these, `labels` and
/// `structured_metadata` may name `level`, a record field (set by processing), a container
/// label copied by `processing.container_labels` or a field of a `sources.files` group, by a
/// Loki label name.
pub const RECORD_FIELDS: &[&str] = &[
    "container_name",
    "container_id",
    "image",
    "compose_project",
    "compose_service",
    "stream",
    "host",
    "file",
    "filename",
];

/// The label a host file's stream carries its path in unless `labels` names one: Promtail's
/// and Alloy's name, so their dashboards and queries keep working.
pub const FILE_LABEL: &str = "filename";

/// Loki's defaults (`max_label_names_per_series`, `max_label_name_length`,
/// `max_label_value_length`).
pub const MAX_LABELS: usize = 15;
pub const MAX_LABEL_NAME: usize = 1024;
pub const MAX_LABEL_VALUE: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LokiEncoding {
    Protobuf,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LineOverflow {
    Truncate,
    Split,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LokiBatchConfig {
    pub max_entries: usize,
    pub max_bytes: ByteSize,
    pub max_wait: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial: HumanDuration,
    pub max: HumanDuration,
}

impl RetryConfig {
    /// Checks the back-off of the network sink at key `sink` (`sinks.loki`, `sinks.kafka`).
    pub(super) fn validate(&self, sink: &str) -> Result<(), InvalidConfig> {
        if self.initial.0.is_zero() || self.initial.0 > self.max.0 {
            return Err(at!("{sink}.retry.initial"; "must be > 0 and <= retry.max"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust in addition to the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for tests; the agent warns at start.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// A batch that cannot be delivered for this long goes to the on-disk buffer.
    pub spill_after: HumanDuration,
    pub max_bytes: ByteSize,
    pub segment_bytes: ByteSize,
    pub fsync: FsyncMode,
}

impl BufferConfig {
    /// Checks the on-disk buffer of the network sink at key `sink` (`sinks.loki`, `sinks.kafka`).
    pub(super) fn validate(&self, sink: &str) -> Result<(), InvalidConfig> {
        if self.max_bytes.0 < self.segment_bytes.0 {
            return Err(
                at!("{sink}.buffer.max_bytes"; "must be >= buffer.segment_bytes"
                ),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LokiSinkConfig {
    /// Serialized with the password of a `user:password@` part replaced by `***`.
    #[serde(serialize_with = "serialize_url_redacted")]
    pub url: String,
    pub encoding: LokiEncoding,
    /// gzip request bodies (json encoding only; protobuf is always snappy-compressed).
    pub gzip: bool,
    /// `X-Scope-OrgID`; empty: none.
    pub tenant: String,
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token: Secret,
    /// Extra request headers. Every value is treated as a secret (auth headers, cookies and
    /// API keys go here): never shown in `Debug`, logs or errors.
    pub headers: BTreeMap<String, Secret>,
    /// Record fields sent as stream labels.
    pub labels: Vec<String>,
    pub static_labels: BTreeMap<String, String>,
    /// Record fields sent as structured metadata (high-cardinality values belong here).
    pub structured_metadata: Vec<String>,
    /// Value of the `host` field; empty: this machine's hostname.
    pub host: String,
    pub max_line_bytes: ByteSize,
    pub line_overflow: LineOverflow,
    pub batch: LokiBatchConfig,
    pub timeout: HumanDuration,
    pub retry: RetryConfig,
    pub tls: TlsConfig,
    pub buffer: BufferConfig,
}

/// `http://user:secret@host/…` → `http://user:***@host/…` (the effective config is served over
/// HTTP); any other URL unchanged.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &authority[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn serialize_url_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url_password(url))
}

impl Default for LokiSinkConfig {
    fn default() -> Self {
        LokiSinkConfig {
            url: "http://127.0.0.1:3100/loki/api/v1/push".to_string(),
            encoding: LokiEncoding::Protobuf,
            gzip: false,
            tenant: String::new(),
            basic_auth: None,
            bearer_token: Secret::default(),
            headers: BTreeMap::new(),
            labels: [
                "container_name",
                "compose_project",
                "compose_service",
                "stream",
                "host",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            static_labels: BTreeMap::new(),
            structured_metadata: vec!["container_id".to_string(), "image".to_string()],
            host: String::new(),
            max_line_bytes: ByteSize(256 * 1024),
            line_overflow: LineOverflow::Truncate,
            batch: LokiBatchConfig::default(),
            timeout: HumanDuration(Duration::from_secs(10)),
            retry: RetryConfig::default(),
            tls: TlsConfig::default(),
            buffer: BufferConfig::default(),
        }
    }
}

impl Default for LokiBatchConfig {
    fn default() -> Self {
        LokiBatchConfig {
            max_entries: 2000,
            max_bytes: ByteSize(1024 * 1024),
            max_wait: HumanDuration(Duration::from_secs(1)),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: HumanDuration(Duration::from_millis(500)),
            max: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            spill_after: HumanDuration(Duration::from_secs(10)),
            max_bytes: ByteSize(1024 * 1024 * 1024),
            segment_bytes: ByteSize(16 * 1024 * 1024),
            fsync: FsyncMode::Always,
        }
    }
}

/// A name `labels` / `structured_metadata` may use: a record field, or a processing field
/// named like a Loki label (never the message, which is the line).
fn label_source(name: &str) -> bool {
    RECORD_FIELDS.contains(&name) || (valid_label_name(name) && name != "message")
}

pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_LABEL_NAME
}

impl LokiSinkConfig {
    /// The label a host file's stream gets `filename="<path>"` in: [`FILE_LABEL`], unless
    /// `labels` already names `file` or `filename` (the operator chose how the path is sent)
    /// or `static_labels` has `filename`. Every file stream so has a label, and one per file.
    pub fn file_path_label(&self) -> Option<&'static str> {
        let named = self.labels.iter().any(|l| l == "file" || l == FILE_LABEL)
            || self.static_labels.contains_key(FILE_LABEL);
        (!named).then_some(FILE_LABEL)
    }

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let k = "sinks.loki";
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || self.url.parse::<hyper::Uri>().is_err() {
            return Err(at!("{k}.url"; "{:?} is not an http:// or https:// URL",
                self.url
            ));
        }
        if self.url.starts_with("https://") && !cfg!(feature = "tls") {
            return Err(at!("{k}.url"; "https needs a build with the `tls` feature"
            ));
        }
        for (i, l) in self.labels.iter().enumerate() {
            if !label_source(l) {
                return Err(
                    at!("{k}.labels[{i}]"; "{l:?} is neither one of {RECORD_FIELDS:?} nor a field \
                         named like a Loki label ([a-zA-Z_][a-zA-Z0-9_]*, not message)"
                    ),
                );
            }
            if l == "container_id" {
                return Err(
                    at!("{k}.labels[{i}]"; "container_id is high-cardinality; put it in structured_metadata"
                    ),
                );
            }
        }
        for (i, f) in self.structured_metadata.iter().enumerate() {
            if !label_source(f) {
                return Err(
                    at!("{k}.structured_metadata[{i}]"; "{f:?} is neither one of {RECORD_FIELDS:?} \
                         nor a field named like a Loki label ([a-zA-Z_][a-zA-Z0-9_]*, not message)"
                    ),
                );
            }
        }
        for (name, value) in &self.static_labels {
            if !valid_label_name(name) {
                return Err(
                    at!("{k}.static_labels.{name}"; "not a Loki label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                    ),
                );
            }
            if value.is_empty() || value.len() > MAX_LABEL_VALUE {
                return Err(
                    at!("{k}.static_labels.{name}"; "value must be 1..{MAX_LABEL_VALUE} bytes"
                    ),
                );
            }
            if self.labels.iter().any(|l| l == name) {
                return Err(at!("{k}.static_labels.{name}"; "also a dynamic label"));
            }
        }
        if self.labels.len() + self.static_labels.len() > MAX_LABELS {
            return Err(at!("{k}"; "more than {MAX_LABELS} labels per stream"));
        }
        if self.labels.is_empty() && self.static_labels.is_empty() {
            return Err(at!("{k}.labels"; "a Loki stream needs at least one label"
            ));
        }
        if self.basic_auth.is_some() && !self.bearer_token.is_empty() {
            return Err(at!("{k}"; "basic_auth and bearer_token are exclusive"));
        }
        for name in self.headers.keys() {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(at!("{k}.headers.{name}"; "not a valid header name"));
            }
        }
        if self.gzip && self.encoding == LokiEncoding::Protobuf {
            return Err(
                at!("{k}.gzip"; "only for encoding: json (protobuf uses snappy)"
                ),
            );
        }
        if self.max_line_bytes.0 < 1024 {
            return Err(at!("{k}.max_line_bytes"; "must be at least 1KiB"));
        }
        if self.batch.max_entries == 0 || self.batch.max_bytes.0 < 1024 {
            return Err(at!("{k}.batch"; "max_entries >= 1 and max_bytes >= 1KiB"));
        }
        if self.max_line_bytes.0 > self.batch.max_bytes.0 {
            // batch.max_bytes is a hard cap per push: one entry must fit in it.
            return Err(
                at!("{k}.max_line_bytes"; "must be <= batch.max_bytes ({} > {})",
                    self.max_line_bytes.0, self.batch.max_bytes.0
                ),
            );
        }
        self.retry.validate(k)?;
        if self.timeout.0.is_zero() {
            return Err(at!("{k}.timeout"; "must be > 0"));
        }
        self.buffer.validate(k)?;
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(at!("{k}.tls"; "cert_file and key_file go together"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `batch.max_bytes` is a hard cap per push, so one entry (at most `max_line_bytes`) must
    /// fit in it.
    #[test]
    fn max_line_bytes_must_fit_in_a_batch() {
        let mut c = LokiSinkConfig::default();
        assert!(c.validate().is_ok());
        c.batch.max_bytes = ByteSize(64 * 1024);
        let err = c
            .validate()
            .expect_err("256KiB lines cannot fit 64KiB pushes")
            .to_string();
        assert!(err.contains("max_line_bytes"), "{err}");
        c.max_line_bytes = ByteSize(64 * 1024);
        assert!(c.validate().is_ok());
    }

    /// A host file's path goes in `filename` unless the operator's labels send it.
    #[test]
    fn the_file_path_label_is_filename_unless_labels_name_one() {
        let mut c = LokiSinkConfig::default();
        assert_eq!(c.file_path_label(), Some("filename"));
        for name in ["file", "filename"] {
            let mut named = c.clone();
            named.labels.push(name.into());
            assert!(named.validate().is_ok());
            assert_eq!(named.file_path_label(), None, "{name}");
        }
        c.static_labels.insert("filename".into(), "x".into());
        assert_eq!(c.file_path_label(), None);
        assert!(RECORD_FIELDS.contains(&"file") && RECORD_FIELDS.contains(&"host"));
    }

    /// Processing fields (`team` from a container label, `level`) may be labels or metadata;
    /// the message and names Loki cannot take may not.
    #[test]
    fn labels_may_name_processing_fields() {
        let mut c = LokiSinkConfig::default();
        c.labels.push("team".into());
        c.structured_metadata.push("level".into());
        assert!(c.validate().is_ok());
        for bad in ["message", "com.example.team", "1x", ""] {
            let mut c = LokiSinkConfig::default();
            c.labels.push(bad.into());
            let err = c.validate().expect_err(bad).to_string();
            assert!(err.contains("sinks.loki.labels[5]"), "{err}");
            let mut c = LokiSinkConfig::default();
            c.structured_metadata.push(bad.into());
            let err = c.validate().expect_err(bad).to_string();
            assert!(err.contains("sinks.loki.structured_metadata[2]"), "{err}");
        }
    }
}
