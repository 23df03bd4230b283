//! The `docker` CLI, the same way an operator would drive the daemon.

use std::process::Command;

/// Runs `docker ARGS`; stdout on success, the error text otherwise.
pub fn docker(args: &[&str]) -> Result<String, String> {
    docker_at(None, args)
}

/// `docker` against the daemon at `host` (`unix://…`, as `-H`; `DOCKER_HOST` is then ignored),
/// or the default one; the error text names the host too.
pub fn docker_at(host: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("docker");
    if let Some(host) = host {
        cmd.args(["-H", host]).env_remove("DOCKER_HOST");
    }
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let at = host.map(|h| format!("-H {h} ")).unwrap_or_default();
        Err(format!(
            "docker {at}{}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes (`rm -f`) every container carrying `label` (`key=value`); returns how many.
pub fn remove_labelled(label: &str) -> Result<usize, String> {
    let ids = docker(&["ps", "-aq", "--filter", &format!("label={label}")])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut rm = vec!["rm", "-f"];
        rm.extend(ids.iter().copied());
        docker(&rm)?;
    }
    Ok(ids.len())
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

/// `docker logs --timestamps`, the daemon's own stamped view, with the stamps taken off.
pub fn served_logs(container: &str) -> Result<Served, String> {
    served_logs_at(None, container)
}

/// `served_logs` from the daemon at `host` (`unix://…`), or the default one.
pub fn served_logs_at(host: Option<&str>, container: &str) -> Result<Served, String> {
    let mut cmd = Command::new("docker");
    if let Some(host) = host {
        cmd.args(["-H", host]).env_remove("DOCKER_HOST");
    }
    let out = cmd
        .args(["logs", "--timestamps", container])
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
            .map(|l| strip_stamp(l).trim_end_matches('\r').to_string())
            .collect()
    };
    Ok(Served {
        stdout: lines(&out.stdout),
        stderr: lines(&out.stderr),
    })
}

/// A `docker logs --timestamps` line without its leading RFC 3339 stamp and space. A line with
/// no stamp (the second line of one TTY chunk) is kept whole, even if it looks a little like one.
fn strip_stamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((stamp, rest)) if is_stamp(stamp) => rest,
        _ => line,
    }
}

/// `2026-11-30T19:00:00.123456789Z` (the fraction may be shorter or absent).
fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && s.ends_with('Z')
        && b.iter().all(|c| c.is_ascii_digit() || b"-T:.Z".contains(c))
}

#[cfg(test)]
mod tests {
    use super::strip_stamp;

    #[test]
    fn strips_the_daemon_stamp_only() {
        assert_eq!(strip_stamp("2026-11-30T19:00:00.123456789Z a b"), "a b");
        assert_eq!(strip_stamp("2026-11-30T19:00:00.123456789Z "), "");
        assert_eq!(strip_stamp("no stamp here"), "no stamp here");
        assert_eq!(strip_stamp("2026-11-30T19:00:00Z a"), "a");
        let unstamped = "abcdefghijklmnopqrstuvwxyZ seq=3";
        assert_eq!(strip_stamp(unstamped), unstamped);
    }
}
