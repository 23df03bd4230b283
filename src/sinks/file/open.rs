//! Opening an output file: directories and file created with the configured modes (further
//! restricted by the umask, as open(2) does), and a torn last record cut away so that the next
//! record never glues onto it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Permission bits of what the sink creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    pub file: u32,
    pub dir: u32,
}

impl Default for Modes {
    fn default() -> Self {
        Modes {
            file: 0o640,
            dir: 0o750,
        }
    }
}

/// An output file ready to append to.
pub struct Opened {
    pub file: File,
    /// Bytes of a torn last record that were cut away (0 when the tail was whole).
    pub torn_bytes: u64,
    /// Directories whose entries changed (a file or directory was created in them): they are
    /// fsynced before the next acknowledgement when the fsync policy asks for durability.
    pub changed_dirs: Vec<PathBuf>,
}

/// Opens `path` for appending, creating it and its directories as needed.
pub fn open_for_append(path: &Path, modes: Modes) -> io::Result<Opened> {
    let mut changed_dirs = Vec::new();
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        create_dirs(dir, modes.dir, &mut changed_dirs)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).append(true).mode(modes.file);
    let file = match options.clone().create_new(true).open(path) {
        Ok(f) => {
            changed_dirs.push(parent_or_dot(path));
            f
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(path)?,
        Err(e) => return Err(e),
    };
    let torn_bytes = cut_torn_tail(&file)?;
    Ok(Opened {
        file,
        torn_bytes,
        changed_dirs,
    })
}

fn parent_or_dot(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `create_dir_all` with a mode; records the parent of every directory it created.
pub fn create_dirs(dir: &Path, mode: u32, changed: &mut Vec<PathBuf>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dirs(parent, mode, changed)?;
    }
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            changed.push(parent_or_dot(dir));
            Ok(())
        }
        // Created meanwhile by someone else: fine if it is a directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// If the file does not end with a newline, cuts it back to just after its last newline (or
/// to empty). Returns how many bytes were cut.
pub fn cut_torn_tail(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.read_exact_at(part, start)?;
        if end == len && part.last() == Some(&b'\n') {
            return Ok(0);
        }
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            file.set_len(keep)?;
            return Ok(len - keep);
        }
        if start == 0 {
            file.set_len(0)?;
            return Ok(len);
        }
        end = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_torn_tail_is_cut_back_to_the_last_whole_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").expect("write");
        let opened = open_for_append(&path, Modes::default()).expect("open");
        assert_eq!(opened.torn_bytes, 5);
        drop(opened);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"{\"a\":1}\n{\"a\":2}\n"
        );
        // A whole tail is left alone; a file with no newline at all is emptied.
        let opened = open_for_append(&path, Modes::default()).expect("open");
        assert_eq!(opened.torn_bytes, 0);
        let lone = dir.path().join("lone.log");
        std::fs::write(&lone, vec![b'x'; 200_000]).expect("write");
        assert_eq!(
            open_for_append(&lone, Modes::default())
                .expect("open")
                .torn_bytes,
            200_000
        );
        assert_eq!(std::fs::metadata(&lone).expect("meta").len(), 0);
    }

    #[test]
    fn files_and_directories_get_the_configured_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/c.log");
        let opened = open_for_append(&path, Modes::default()).expect("open");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        // The umask may take bits away (as with open(2)); it is 022 almost everywhere, and
        // then the modes are exactly the configured ones.
        let umask = process_umask();
        assert_eq!(mode(&path), 0o640 & !umask);
        assert_eq!(mode(&dir.path().join("a")), 0o750 & !umask);
        assert_eq!(mode(&dir.path().join("a/b")), 0o750 & !umask);
        assert_eq!(
            opened.changed_dirs,
            vec![
                dir.path().to_path_buf(),
                dir.path().join("a"),
                dir.path().join("a/b")
            ]
        );
        let strict = dir.path().join("d/e.log");
        open_for_append(
            &strict,
            Modes {
                file: 0o600,
                dir: 0o700,
            },
        )
        .expect("open");
        assert_eq!(mode(&strict), 0o600 & !umask);
        assert_eq!(mode(&dir.path().join("d")), 0o700 & !umask);
    }

    fn process_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            .expect("Umask line")
    }
}
