//! Runs `log-capturer process` as a process (shared by `process_cli` and
//! `process_cli_files`).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_log-capturer");

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `process -c CONFIG ARGS` with `input` on stdin (a file, so the command sees its end).
pub fn process(dir: &Path, config: &str, args: &[&str], input: &str) -> Run {
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let input_path = dir.join("input.log");
    std::fs::write(&input_path, input).expect("write input");
    let stdin = std::fs::File::open(&input_path).expect("open input");
    run_with(&config_path, args, Stdio::from(stdin))
}

pub fn run_with(config: &Path, args: &[&str], stdin: Stdio) -> Run {
    let out = Command::new(BIN)
        .arg("process")
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("LOG_CAPTURER_STATE_DIR")
        .env_remove("LOG_CAPTURER_HTTP_LISTEN")
        .env_remove("LOG_CAPTURER_DOCKER_HOST")
        .env_remove("LOG_CAPTURER_LOG_LEVEL")
        .stdin(stdin)
        .output()
        .expect("run the binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}
