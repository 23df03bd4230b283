//! Captures what `log_capturer_build_info` reports: the git commit and the compiler version.
//! Without git or a checkout (a source tarball, a container build without `.git`) the commit
//! is "unknown"; `LOG_CAPTURER_GIT_COMMIT` in the build environment overrides it.

use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LOG_CAPTURER_GIT_COMMIT");
    let commit = std::env::var("LOG_CAPTURER_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves (a commit or a checkout); `logs/HEAD` changes on both.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(p) = output("git", &["rev-parse", "--git-path", path])
            && std::path::Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    // "rustc 1.95.0 (hash date)" → "1.95.0".
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=LOG_CAPTURER_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=LOG_CAPTURER_RUSTC_VERSION={rustc_version}");
}
