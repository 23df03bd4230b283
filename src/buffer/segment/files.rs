//! The files of a store directory: creating and deleting segment files, and replacing the
//! `position` file atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::format::with_path;
use super::{
    FsyncPolicy, MAX_SEGMENT, POSITION_FILE, POSITION_TMP, RecordId, SEGMENT_DIGITS,
    SEGMENT_SUFFIX, Segment, SegmentStore,
};

impl SegmentStore {
    pub(super) fn segment_path(&self, number: u64) -> PathBuf {
        self.dir
            .join(format!("{number:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}"))
    }

    /// Consumed prefix of the segment being read.
    pub(super) fn front_consumed(&self) -> u64 {
        if self.segments.is_empty() {
            0
        } else {
            self.read.offset
        }
    }

    /// Creates the next segment and makes it the append target.
    pub(super) fn start_segment(&mut self) -> io::Result<()> {
        let number = self.next_segment;
        if number > MAX_SEGMENT {
            // Only after a hand-made segment file numbered `MAX_SEGMENT`: a file above it
            // would not be listed by the next open, and its records would be lost.
            return Err(io::Error::other(format!(
                "segment numbers exhausted (a segment file numbered {MAX_SEGMENT} exists in {})",
                self.dir.display()
            )));
        }
        // Burn the number even if creation fails, so a stray file cannot wedge us.
        self.next_segment = number
            .checked_add(1)
            .ok_or_else(|| io::Error::other("segment numbers exhausted"))?;
        let path = self.segment_path(number);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| with_path(e, &path))?;
        if self.segments.is_empty() {
            self.read = RecordId {
                segment: number,
                offset: 0,
            };
        }
        self.segments.push_back(Segment {
            number,
            valid_len: 0,
            file_len: 0,
            records: 0,
        });
        self.writer = Some(file);
        // The previous last segment may have been fully consumed already.
        self.drop_consumed_segments();
        if self.options.fsync == FsyncPolicy::Always {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Deletes leading segments that are fully consumed, except the last one, and moves the
    /// read position to the start of the next. Needs no position write: a position naming a
    /// deleted segment means "from the start of the next one" on `open`.
    pub(super) fn drop_consumed_segments(&mut self) {
        while self.segments.len() > 1 {
            let Some(front) = self.segments.front() else {
                break;
            };
            if self.read.offset < front.valid_len {
                break;
            }
            let (number, file_len) = (front.number, front.file_len);
            self.segments.pop_front();
            if self.reader.as_ref().is_some_and(|(n, _)| *n == number) {
                self.reader = None;
            }
            // A failure is kept in `orphans`, logged and retried.
            let _ = self.remove_segment_file(number, file_len);
            if let Some(next) = self.segments.front() {
                self.read = RecordId {
                    segment: next.number,
                    offset: 0,
                };
            }
        }
    }

    /// Deletes a consumed segment file; on failure remembers it in `orphans`.
    pub(super) fn remove_segment_file(
        &mut self,
        number: u64,
        file_len: u64,
    ) -> Result<(), RemoveSegmentError> {
        let path = self.segment_path(number);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot delete consumed segment");
                self.orphans.push((number, file_len));
                Err(RemoveSegmentError { path, source: e })
            }
        }
    }

    pub(super) fn retry_orphans(&mut self) {
        if self.orphans.is_empty() {
            return;
        }
        let dir = self.dir.clone();
        self.orphans.retain(|&(number, _)| {
            let path = dir.join(format!("{number:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}"));
            match fs::remove_file(&path) {
                Ok(()) => false,
                Err(e) => e.kind() != io::ErrorKind::NotFound,
            }
        });
    }
}

/// A consumed segment file that could not be deleted (it is remembered in `orphans` and
/// retried); recovery reports it as one of the open's problems.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot delete consumed segment: {source}", path.display())]
pub(super) struct RemoveSegmentError {
    path: PathBuf,
    source: io::Error,
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, dir))
}

/// Replaces the `position` file atomically: temp file + fsync + rename + fsync(dir); after a
/// crash it holds either the old or the new position.
pub(super) fn write_position(dir: &Path, position: RecordId) -> io::Result<()> {
    let tmp = dir.join(POSITION_TMP);
    let path = dir.join(POSITION_FILE);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| with_path(e, &tmp))?;
        f.write_all(format!("{position}\n").as_bytes())
            .map_err(|e| with_path(e, &tmp))?;
        f.sync_all().map_err(|e| with_path(e, &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(|e| with_path(e, &path))?;
    sync_dir(dir)
}
