//! The `docker` CLI, the same way an operator would drive the daemon.

use std::process::Command;

/// Runs `docker ARGS`; stdout on success, the error text otherwise.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Checks dockerd answers and the test image exists (built like the e2e tests do).
pub fn ensure_ready(image: &str, build_script: &std::path::Path) -> Result<(), String> {
    docker(&["info", "--format", "{{.ServerVersion}}"]).map_err(|e| {
        format!("no reachable dockerd ({e}); `bash scripts/test` installs and starts one")
    })?;
    if docker(&["image", "inspect", image]).is_err() {
        let status = Command::new("bash")
            .arg(build_script)
            .arg(image)
            .status()
            .map_err(|e| format!("{}: {e}", build_script.display()))?;
        if !status.success() {
            return Err(format!("{} failed", build_script.display()));
        }
    }
    Ok(())
}

/// What the daemon serves for a container, per stream: the ground truth.
pub struct Served {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

pub fn served_logs(container: &str) -> Result<Served, String> {
    let out = Command::new("docker")
        .args(["logs", container])
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker logs {container}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let lines = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect()
    };
    Ok(Served {
        stdout: lines(&out.stdout),
        stderr: lines(&out.stderr),
    })
}
