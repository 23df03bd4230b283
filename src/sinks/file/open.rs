//! Opening an output file: directories and file created with the configured modes (further
//! restricted by the umask, as open(2) does), and a torn last record cut away so that the next
//! record never glues onto it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::warn;

use super::{FileSink, OpenFile, UPKEPT_REMEMBERED, WriteError};

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

// The sink's side of opening: which failures are the container's own, which the sink's.

impl FileSink {
    /// Opens `path` for the sink (closing the least recently used file to make room), rotating
    /// a file found due; a failure in the container's own part of the path is
    /// [`WriteError::Container`], any other [`WriteError::Sink`].
    pub(super) fn open(&mut self, path: &Path) -> Result<(), WriteError> {
        if self.files.len() >= self.settings.max_open_files && !self.close_least_recently_used() {
            return Err(WriteError::Sink(io::Error::other(format!(
                "{}: {} files open (sinks.file.max_open_files) and none can be closed before \
                 the next flush",
                path.display(),
                self.files.len()
            ))));
        }
        // A failure in the part of the path every container shares (or in the one file all
        // share) is the sink's: retried, in order, nothing held. Only a failure in the
        // container's own part can be that container's alone.
        let (shared_dir, per_container) = self.settings.template.shared_part();
        if let Some(dir) = shared_dir {
            // As many components of this path: `{date}` in the shared part is this path's day
            // (placeholders never add a `/`: names are encoded).
            let dir: PathBuf = path.components().take(dir.components().count()).collect();
            let mut changed = Vec::new();
            super::open::create_dirs(&dir, self.settings.modes.dir, &mut changed)
                .map_err(|e| WriteError::Sink(with_path(&dir, e)))?;
            self.dirs_to_sync.extend(changed);
        }
        let mut rotated_at_open = false;
        loop {
            match super::open::open_for_append(path, self.settings.modes) {
                Ok(opened) => {
                    if opened.torn_bytes > 0 {
                        self.metrics
                            .sink_torn_records
                            .get_or_create(&Self::labels())
                            .inc();
                        warn!(file = %path.display(), bytes = opened.torn_bytes,
                            "output file ended in a torn record (an earlier run stopped mid-write); cut it away");
                    }
                    self.dirs_to_sync.extend(opened.changed_dirs);
                    let meta = opened
                        .file
                        .metadata()
                        .map_err(|e| WriteError::Sink(with_path(path, e)))?;
                    // An empty file (new, or created by an external logrotate) ages from now.
                    let created = match meta.created() {
                        Ok(t) if meta.len() > 0 => t,
                        _ => (self.clock)(),
                    };
                    let age = (self.clock)().duration_since(created).unwrap_or_default();
                    // A file left due by an earlier run (or while it was closed) rotates
                    // before anything is written to it: it holds only acknowledged records.
                    if !rotated_at_open
                        && let Some(reason) = self.settings.rotate.due(meta.len(), age)
                    {
                        rotated_at_open = true;
                        // Renamed while open, then closed: the loop opens a new file. If the
                        // rename failed, writing goes on into this one.
                        if self.rotate_file(path, reason) {
                            continue;
                        }
                    }
                    if let Some(u) = &self.upkeeper
                        && !self.upkept.contains(path)
                    {
                        // Leftovers of an earlier run (a crash mid-compression, files beyond
                        // max_files) are looked after once per path and run. Bounded: with
                        // many short-lived containers it is forgotten now and then (a path
                        // is then looked after once more, which is harmless).
                        if self.upkept.len() >= UPKEPT_REMEMBERED {
                            self.upkept.clear();
                        }
                        u.request(path);
                        self.upkept.insert(path.to_path_buf());
                    }
                    self.files.insert(
                        path.to_path_buf(),
                        OpenFile {
                            file: opened.file,
                            buf: Vec::with_capacity(64 * 1024),
                            last_write: Instant::now(),
                            last_use: self.uses,
                            uncommitted: 0,
                            unsynced: false,
                            ended: false,
                            size: meta.len(),
                            created,
                            date: self.today(),
                            dev_ino: (meta.dev(), meta.ino()),
                            rotate_failed: None,
                        },
                    );
                    self.update_open_gauge();
                    return Ok(());
                }
                // Out of file descriptors: make room by closing idle files, then try again.
                Err(e) if is_fd_limit(&e) && self.close_least_recently_used() => {}
                Err(e) if per_container && is_permanent_for_path(&e) => {
                    return Err(WriteError::Container(with_path(path, e)));
                }
                Err(e) => return Err(WriteError::Sink(with_path(path, e))),
            }
        }
    }
}

/// EMFILE or ENFILE.
pub(super) fn is_fd_limit(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::MFILE.raw_os_error())
        || code == Some(rustix::io::Errno::NFILE.raw_os_error())
}

/// Failures of opening one path that retrying will not cure and that say nothing about the
/// other containers' files: permission, name too long or invalid, a file where a directory
/// should be (or the reverse), a symlink loop. Disk full, I/O errors and a read-only file
/// system are not: they are the sink's, and are retried.
fn is_permanent_for_path(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::PermissionDenied
            | K::InvalidFilename
            | K::NotADirectory
            | K::IsADirectory
            | K::AlreadyExists
            | K::InvalidInput
    ) || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

pub(super) fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
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
