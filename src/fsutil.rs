//! Private state files: directories 0700, files 0600, written atomically (state files hold
//! positions and log bodies). Used by the checkpoints and the state lock.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700 whatever the umask, and makes `dir`
/// itself 0700 if it already existed: state files hold positions and log bodies.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Opens `path` for writing (created if missing, truncated when `truncate`) with mode 0600
/// whatever the umask; a file left by an older version with wider bits is narrowed too.
pub fn open_private_file(path: &Path, truncate: bool) -> io::Result<fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// temp file + fsync + rename + fsync(dir): after a crash the file is either old or new.
/// The file is 0600 (see `open_private_file`). A failed write removes its temp file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = open_private_file(&tmp, true)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Not left behind: nothing else removes the file of a container forgotten meanwhile,
        // and on a full disk it holds space.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
