//! Where reading a file starts, and finding a file again after it moved: the decisions made
//! on (device, inode) plus fingerprint. Blocking (small reads): call from a blocking thread.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::checkpoint::{FileId, FilePosition, Fingerprint};
use crate::sources::follow::fingerprint_of;

/// How a file's reading starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The stored position is this file's: resume at its offset.
    Resume {
        offset: u64,
        fingerprint: Fingerprint,
    },
    /// No usable position: read as a new file from `offset` (0, or the last line boundary
    /// for `initial_position: end`). `reused`: a stored position of this inode belonged to
    /// another file (other fingerprint); `truncated`: it was this file, now shorter than
    /// the position (truncated while the agent was down).
    New {
        offset: u64,
        fingerprint: Fingerprint,
        reused: bool,
        truncated: bool,
    },
}

/// Decides where the open `file` starts. `stored`: the position kept for its identity;
/// `at_end`: a new file starts at its last line boundary (it existed before the agent's
/// first run and its group says `initial_position: end`).
pub fn decide(
    file: &File,
    stored: Option<&FilePosition>,
    fingerprint_bytes: u64,
    at_end: bool,
) -> io::Result<Start> {
    let size = file.metadata()?.len();
    let (mut reused, mut truncated) = (false, false);
    if let Some(p) = stored {
        if fingerprint_of(file, p.fingerprint.len)? == p.fingerprint {
            if size >= p.offset {
                return Ok(Start::Resume {
                    offset: p.offset,
                    fingerprint: p.fingerprint,
                });
            }
            truncated = true;
        } else {
            reused = true;
        }
    }
    let offset = if at_end && stored.is_none() {
        last_line_boundary(file, size)?
    } else {
        0
    };
    Ok(Start::New {
        offset,
        fingerprint: fingerprint_of(file, fingerprint_bytes)?,
        reused,
        truncated,
    })
}

/// The offset just past the last `\n` of the first `size` bytes (0 if none).
pub fn last_line_boundary(file: &File, size: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let want = (end - start) as usize;
        file.read_exact_at(&mut buf[..want], start)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..want]) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn id_of(meta: &fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// The regular files in `path`'s directory (not `path` itself), most recently modified first.
fn siblings(path: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, fs::Metadata)> = entries
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let m = fs::metadata(&p).ok()?;
            (m.is_file() && p != path).then_some((p, m))
        })
        .collect();
    out.sort_by_key(|(_, m)| std::cmp::Reverse(m.mtime_nsec() + m.mtime() * 1_000_000_000));
    out
}

/// Whether `candidate` is named like a rotated copy of `original`: same directory, its name
/// the original's plus a suffix (`app.log.1`, `app.log-20261201`).
pub fn rotated_name_of(candidate: &Path, original: &Path) -> bool {
    let (Some(name), Some(orig)) = (candidate.file_name(), original.file_name()) else {
        return false;
    };
    candidate.parent() == original.parent()
        && name.len() > orig.len()
        && name.as_encoded_bytes().starts_with(orig.as_encoded_bytes())
}

/// The copy logrotate's `copytruncate` made of the file we read before it was truncated: a
/// regular file named like a rotated copy of `path`, not `ours`, at least `min_size` long,
/// whose first `fingerprint.len` bytes match ours (the caller makes sure that is enough).
pub fn find_copy(
    path: &Path,
    ours: FileId,
    fingerprint: Fingerprint,
    min_size: u64,
) -> Option<(PathBuf, File)> {
    siblings(path).into_iter().find_map(|(p, m)| {
        if id_of(&m) == ours
            || !rotated_name_of(&p, path)
            || m.len() < min_size
            || m.len() < fingerprint.len
        {
            return None;
        }
        let f = File::open(&p).ok()?;
        (fingerprint_of(&f, fingerprint.len).ok()? == fingerprint).then_some((p, f))
    })
}

/// Where the file `id` is now, if it was renamed within the same directory to a name `keep`
/// accepts (a glob of the same group, e.g. `app.log` → `app.log.1` with `app.log*`).
pub fn find_renamed(path: &Path, id: FileId, keep: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    siblings(path)
        .into_iter()
        .find(|(p, m)| id_of(m) == id && keep(p))
        .map(|(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn position(file: &File, offset: u64, len: u64) -> FilePosition {
        let m = file.metadata().expect("stat");
        FilePosition {
            path: String::new(),
            id: id_of(&m),
            fingerprint: fingerprint_of(file, len).expect("fp"),
            offset,
        }
    }

    #[test]
    fn resume_only_when_the_fingerprint_matches() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        fs::write(&path, "first line\nsecond\nthird without newline")?;
        let f = File::open(&path)?;
        let p = position(&f, 11, 8);
        assert_eq!(
            decide(&f, Some(&p), 1024, true)?,
            Start::Resume {
                offset: 11,
                fingerprint: p.fingerprint
            }
        );
        // Same inode, other content (a reused inode): new, from 0 even when `at_end`.
        fs::write(&path, "other content\n")?;
        let f = File::open(&path)?;
        match decide(&f, Some(&p), 1024, true)? {
            Start::New {
                offset: 0,
                reused: true,
                truncated: false,
                fingerprint,
            } => assert_eq!(fingerprint.len, 14),
            other => panic!("{other:?}"),
        }
        // The same file, now shorter than the position: truncated while down.
        fs::write(&path, "first line\n")?;
        let f = File::open(&path)?;
        let p = position(&f, 30, 8);
        assert!(matches!(
            decide(&f, Some(&p), 1024, false)?,
            Start::New {
                offset: 0,
                truncated: true,
                reused: false,
                ..
            }
        ));
        Ok(())
    }

    #[test]
    fn a_new_file_at_end_starts_at_its_last_line_boundary() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        let mut w = File::create(&path)?;
        let long = "x".repeat(100_000);
        write!(w, "a\n{long}\nheld")?;
        let f = File::open(&path)?;
        match decide(&f, None, 1024, true)? {
            Start::New { offset, .. } => assert_eq!(offset, 2 + 100_001),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&f, None, 1024, false)?,
            Start::New { offset: 0, .. }
        ));
        fs::write(&path, "no newline at all")?;
        assert_eq!(last_line_boundary(&File::open(&path)?, 17)?, 0);
        Ok(())
    }

    #[test]
    fn the_copy_of_a_truncated_file_is_found_by_fingerprint() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        fs::write(&path, "one\ntwo\nthree\n")?;
        let f = File::open(&path)?;
        let ours = id_of(&f.metadata()?);
        let fp = fingerprint_of(&f, 1024)?;
        // What copytruncate leaves: a copy with what we read and what came after, and the
        // original emptied (and written again).
        fs::write(dir.path().join("app.log.1"), "one\ntwo\nthree\nfour\n")?;
        fs::write(dir.path().join("other.log"), "one\ntwo\nthreX\nfour\n")?;
        fs::write(&path, "five\n")?;
        let (copy, file) = find_copy(&path, ours, fp, 14).expect("found");
        assert_eq!(copy, dir.path().join("app.log.1"));
        let mut rest = vec![0u8; 11];
        file.read_exact_at(&mut rest, 8)?;
        assert_eq!(rest, b"three\nfour\n");
        // Not when shorter than what we read, nor ourselves.
        assert!(find_copy(&path, ours, fp, 100).is_none());
        Ok(())
    }

    #[test]
    fn a_file_renamed_within_the_globs_is_found_again() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        fs::write(&path, "x\n")?;
        let id = id_of(&fs::metadata(&path)?);
        fs::rename(&path, dir.path().join("app.log.1"))?;
        fs::write(&path, "new\n")?;
        assert_eq!(
            find_renamed(&path, id, |_| true),
            Some(dir.path().join("app.log.1"))
        );
        assert_eq!(find_renamed(&path, id, |p| p.ends_with("app.log")), None);
        Ok(())
    }
}
