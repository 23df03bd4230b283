//! The release binary, when it was built from the current sources.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// `target/release/log-capturer` when it exists and is at least as new as every source file
/// (`bash scripts/test` builds it before the tests); None otherwise.
pub fn fresh_release_binary() -> Option<PathBuf> {
    let test_build = PathBuf::from(env!("CARGO_BIN_EXE_log-capturer"));
    let release = test_build
        .parent()
        .and_then(Path::parent)?
        .join("release/log-capturer");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest_source = newest_mtime(&root.join("src"))
        .max(mtime(&root.join("Cargo.toml")))
        .max(mtime(&root.join("Cargo.lock")));
    (release.exists() && mtime(&release) >= newest_source).then_some(release)
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            mtime(&path)
        };
        newest = newest.max(t);
    }
    newest
}
