//! `docker.tls`: TLS to a `tcp://` Docker daemon, the config-file twin of the Docker CLI's
//! `--tlscacert/--tlscert/--tlskey/--tlsverify` (the environment's `DOCKER_TLS_VERIFY`,
//! `DOCKER_TLS` and `DOCKER_CERT_PATH` apply only when this section is absent: see
//! `docker::tls`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::InvalidConfig;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerTlsConfig {
    /// PEM CA certificates that sign the daemon's certificate (the only roots trusted, as with
    /// the CLI's `--tlscacert`). Absent: the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key (both or neither), for a daemon started with
    /// `--tlsverify`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Verify the daemon's certificate and name (the CLI's `--tlsverify`). `false` only
    /// encrypts (the CLI's `--tls`); the agent warns at start.
    pub verify: bool,
}

impl Default for DockerTlsConfig {
    fn default() -> Self {
        DockerTlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify: true,
        }
    }
}

impl DockerTlsConfig {
    /// Files that are missing or unreadable, and a certificate without its key, named with
    /// their key path.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = path
                && let Err(e) = std::fs::File::open(path)
            {
                return Err(at!("docker.tls.{key}"; "{}: {e}", path.display()));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(at!("docker.tls"; "cert_file and key_file go together"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(yaml: &str) -> Result<Config, String> {
        Config::parse(yaml, "test.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn keys_are_validated_with_their_paths() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").expect("ca");
        let ok = parse(&format!(
            "docker:\n  host: tcp://h:2376\n  tls:\n    ca_file: {}\n",
            ca.display()
        ))
        .expect("valid");
        let tls = ok.docker.tls.expect("tls");
        assert!(tls.verify, "verify defaults to true");
        assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));

        let missing = dir.path().join("nope.pem");
        let err = parse(&format!(
            "docker:\n  tls:\n    cert_file: {}\n    key_file: {}\n",
            missing.display(),
            ca.display()
        ))
        .expect_err("missing file");
        assert!(
            err.contains("docker.tls.cert_file") && err.contains(&missing.display().to_string()),
            "{err}"
        );
        let err = parse(&format!(
            "docker:\n  tls:\n    cert_file: {}\n",
            ca.display()
        ))
        .expect_err("cert without key");
        assert!(
            err.contains("docker.tls: cert_file and key_file go together"),
            "{err}"
        );
        let err = parse("docker:\n  tls:\n    verfy: false\n").expect_err("unknown key");
        assert!(err.contains("verfy"), "{err}");
    }
}
