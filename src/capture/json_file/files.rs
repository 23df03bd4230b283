//! A container's json-file log and Docker's rotated copies of it: `<id>-json.log` (written),
//! `<id>-json.log.1` (the newest rotated) … `.N`, each possibly gzip-compressed (`.N.gz`,
//! `--log-opt compress=true`). Docker rotates by renaming every file one number up, so a
//! file's name says nothing lasting about it: a file is known by its first entry (which carries
//! a nanosecond timestamp), the same before and after compression.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::capture::REORDER_SLACK_NS;
use crate::docker::timestamp::SecondCache;

use super::parse::parse_line;

/// At most this much of a file's first entry identifies it: an entry holds a piece of at most
/// 16 KiB, escaped (up to 6 bytes a byte), plus its keys.
pub const FIRST_LINE_MAX: usize = 16 * 1024 * 6 + 1024;

/// Where one container's log files are.
#[derive(Clone, Debug)]
pub struct LogFiles {
    pub dir: PathBuf,
    /// `<id>-json.log`.
    pub base: String,
}

/// One file of the chain, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFile {
    pub path: PathBuf,
    pub compressed: bool,
}

impl LogFiles {
    /// The log of container `id` under `containers_dir` (`<dir>/<id>/<id>-json.log`).
    pub fn of(containers_dir: &Path, id: &str) -> LogFiles {
        LogFiles {
            dir: containers_dir.join(id),
            base: format!("{id}-json.log"),
        }
    }

    /// From Docker's `LogPath` (its directory and file name as they are).
    pub fn at(log_path: &Path) -> Option<LogFiles> {
        Some(LogFiles {
            dir: log_path.parent()?.to_path_buf(),
            base: log_path.file_name()?.to_str()?.to_string(),
        })
    }

    pub fn current(&self) -> PathBuf {
        self.dir.join(&self.base)
    }

    /// The files that exist, oldest first, the written one last (if it exists). Of `.N` and
    /// `.N.gz` both present (Docker is compressing `.N`), the plain one: the other is not
    /// complete until the plain one is deleted.
    pub fn list(&self) -> io::Result<Vec<ChainFile>> {
        let mut numbered: Vec<(u32, bool)> = Vec::new();
        let mut current = false;
        let prefix = format!("{}.", self.base);
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == self.base {
                current = true;
                continue;
            }
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let (num, compressed) = match rest.strip_suffix(".gz") {
                Some(n) => (n, true),
                None => (rest, false),
            };
            if let Ok(n) = num.parse::<u32>() {
                numbered.push((n, compressed));
            }
        }
        // Highest number (oldest) first; plain before compressed, then deduplicated.
        numbered.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        numbered.dedup_by_key(|f| f.0);
        let mut files: Vec<ChainFile> = numbered
            .into_iter()
            .map(|(n, compressed)| ChainFile {
                path: self.dir.join(format!(
                    "{}.{n}{}",
                    self.base,
                    if compressed { ".gz" } else { "" }
                )),
                compressed,
            })
            .collect();
        if current {
            files.push(ChainFile {
                path: self.current(),
                compressed: false,
            });
        }
        Ok(files)
    }
}

/// A file's first entry (its first line, newline included; what there is if shorter, up to
/// `FIRST_LINE_MAX`): as stored, or decompressed. It identifies the file: its timestamp comes
/// after the text, and files that begin with pieces of long lines of the same character have
/// the same first hundreds of bytes. Positional reads: the file's read position (shared with
/// any clone of it) does not move.
pub fn first_line(file: &File, compressed: bool) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut at = At { file, pos: 0 };
    let mut reader: Box<dyn Read + '_> = if compressed {
        Box::new(MultiGzDecoder::new(&mut at))
    } else {
        Box::new(&mut at)
    };
    let mut chunk = [0u8; 8192];
    while buf.len() < FIRST_LINE_MAX {
        let want = chunk.len().min(FIRST_LINE_MAX - buf.len());
        match reader.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(nl) = chunk[..n].iter().position(|&b| b == b'\n') {
                    buf.extend_from_slice(&chunk[..=nl]);
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

/// Reads a file from a position of its own (`pread`).
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The timestamp of a file's first entry (None: empty, or not readable as an entry).
pub fn first_ts(file: &File, compressed: bool) -> io::Result<Option<i64>> {
    let line = first_line(file, compressed)?;
    let Some(line) = line.strip_suffix(b"\n") else {
        return Ok(None);
    };
    let mut scratch = Vec::new();
    Ok(parse_line(line, &mut scratch, &mut SecondCache::default()).map(|e| e.ts_ns))
}

/// Which file to start reading at, to serve every entry stamped at or after `since_ns`:
/// `firsts` are the files' first timestamps, oldest first (computed lazily, newest first; a
/// file that cannot tell counts as holding what is asked). A file's entries were written
/// before the next file's first entry, so they are stamped at most the reorder slack after it
/// (see `cursor`): a file whose successor starts more than the slack before `since_ns` holds
/// nothing still wanted, nor does any older one. So at most one file of old entries is read.
pub fn start_index(
    count: usize,
    since_ns: i64,
    mut first: impl FnMut(usize) -> Option<i64>,
) -> usize {
    let mut start = count.saturating_sub(1);
    while start > 0 {
        match first(start) {
            Some(ts) if ts.saturating_add(REORDER_SLACK_NS) < since_ns => break,
            _ => start -= 1,
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lists_oldest_first_preferring_plain_over_a_compression_in_progress() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let files = LogFiles::of(dir.path(), "abc");
        std::fs::create_dir(&files.dir)?;
        for name in [
            "abc-json.log",
            "abc-json.log.1",
            "abc-json.log.2",
            "abc-json.log.2.gz",
            "abc-json.log.10.gz",
            "abc-json.log.x",
            "other.log",
        ] {
            File::create(files.dir.join(name))?.write_all(b"x")?;
        }
        let names: Vec<String> = files
            .list()?
            .iter()
            .map(|f| f.path.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "abc-json.log.10.gz",
                "abc-json.log.2",
                "abc-json.log.1",
                "abc-json.log"
            ]
        );
        Ok(())
    }

    #[test]
    fn start_file_is_the_oldest_that_can_hold_the_cursor() {
        const S: i64 = REORDER_SLACK_NS;
        // Four files starting at 0, 10 s, 20 s, 30 s (oldest first).
        let firsts = [0, 10 * S, 20 * S, 30 * S];
        let pick = |since| start_index(4, since, |i| Some(firsts[i]));
        assert_eq!(pick(0), 0, "from the start of the log: every file");
        assert_eq!(pick(5 * S), 0);
        // Within the slack after file 1's first entry: file 0 may still hold it.
        assert_eq!(pick(10 * S + S / 2), 0);
        assert_eq!(pick(12 * S), 1);
        assert_eq!(pick(25 * S), 2);
        assert_eq!(pick(40 * S), 3, "past every rotated file: the written one");
        // A file that cannot tell its first entry is read (never skipped on a guess).
        let pick_unknown = |since| start_index(4, since, |i| (i != 2).then(|| firsts[i]));
        assert_eq!(pick_unknown(25 * S), 1);
        assert_eq!(start_index(1, 40 * S, |_| None), 0);
        assert_eq!(start_index(0, 40 * S, |_| None), 0);
    }

    #[test]
    fn head_and_first_timestamp_of_plain_and_compressed_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let line = br#"{"log":"a\n","stream":"stdout","time":"1970-01-01T00:00:01.5Z"}"#;
        let plain = dir.path().join("p");
        File::create(&plain)?.write_all(&[&line[..], b"\n"].concat())?;
        let gz = dir.path().join("p.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz)?, flate2::Compression::fast());
        enc.write_all(&[&line[..], b"\n"].concat())?;
        enc.finish()?;
        for (path, compressed) in [(&plain, false), (&gz, true)] {
            let f = File::open(path)?;
            assert_eq!(first_ts(&f, compressed)?, Some(1_500_000_000));
            assert_eq!(first_line(&f, compressed)?, [&line[..], b"\n"].concat());
        }
        Ok(())
    }
}
