//! The queue operations on an open store: append, peek (and read ahead), consume, list,
//! purge, and the byte counts.

use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use tracing::warn;

use super::files::{sync_dir, write_position};
use super::format::{read_record, with_path};
use super::{FsyncPolicy, HEADER_LEN, RecordId, SegmentStore, StoreError};

impl SegmentStore {
    /// Appends one record (payload must not be empty) and returns its id.
    pub fn append(&mut self, payload: &[u8]) -> Result<RecordId, StoreError> {
        let len = payload.len();
        let Ok(len32) = u32::try_from(len) else {
            return Err(StoreError::TooLarge { len });
        };
        let size = HEADER_LEN + u64::from(len32);
        if size > self.options.max_bytes {
            return Err(StoreError::TooLarge { len });
        }
        if len == 0 {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty payloads cannot be buffered",
            )));
        }
        let used = self.used_bytes();
        if used + size > self.options.max_bytes {
            return Err(StoreError::Full {
                used,
                max: self.options.max_bytes,
            });
        }
        let roll = match (&self.writer, self.segments.back()) {
            (Some(_), Some(last)) => {
                last.file_len > 0 && last.file_len + size > self.options.segment_bytes
            }
            _ => true,
        };
        if roll {
            self.start_segment()?;
        }
        let fsync = self.options.fsync == FsyncPolicy::Always;
        let (Some(writer), Some(last)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Err(StoreError::Io(io::Error::other(
                "segment store has no segment to append to",
            )));
        };
        let offset = last.file_len;
        let number = last.number;
        let mut frame = Vec::with_capacity(payload.len() + HEADER_LEN as usize);
        frame.extend_from_slice(&len32.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        let written = writer
            .write_all(&frame)
            .and_then(|()| if fsync { writer.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Cut off the partial frame so later appends follow valid data.
            let rolled_back = writer
                .set_len(offset)
                .and_then(|()| if fsync { writer.sync_data() } else { Ok(()) });
            if let Err(e2) = rolled_back {
                warn!(
                    segment = number,
                    error = %e2,
                    "cannot truncate a failed append; sealing the segment"
                );
                last.file_len = offset + size;
                self.writer = None;
            }
            return Err(StoreError::Io(with_path(e, &self.segment_path(number))));
        }
        last.file_len += size;
        last.valid_len += size;
        last.records += 1;
        self.pending_records += 1;
        Ok(RecordId {
            segment: number,
            offset,
        })
    }

    /// The oldest unconsumed record, without consuming it. Re-validates its CRC: data that
    /// went bad after `open` is an `InvalidData` error (and stays one).
    pub fn peek(&mut self) -> io::Result<Option<(RecordId, Vec<u8>)>> {
        if self.pending_records == 0 {
            return Ok(None);
        }
        let id = self.read;
        let Some(segment) = self.segments.front() else {
            return Err(io::Error::other(
                "segment store counts pending records but has no segment",
            ));
        };
        let limit = segment.valid_len;
        let payload = self.read_at(id, limit)?;
        self.head = Some((id, id.offset + HEADER_LEN + payload.len() as u64));
        Ok(Some((id, payload)))
    }

    /// Consumes the record `peek` returned: persists the position past it (atomically) and
    /// deletes segments that are now fully consumed. `id` must be the oldest unconsumed record
    /// (`InvalidInput` otherwise). On error nothing is consumed.
    pub fn consume(&mut self, id: RecordId) -> io::Result<()> {
        if self.pending_records == 0 || id != self.read {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "record {id} is not the oldest unconsumed record of {} ({})",
                    self.dir.display(),
                    if self.pending_records == 0 {
                        "the store is empty".to_owned()
                    } else {
                        format!("that is {}", self.read)
                    }
                ),
            ));
        }
        let end = match self.head {
            Some((head, end)) if head == id => end,
            _ => {
                let payload_len = match self.peek()? {
                    Some((_, payload)) => payload.len() as u64,
                    None => return Err(io::Error::other("pending record vanished")),
                };
                id.offset + HEADER_LEN + payload_len
            }
        };
        let next = RecordId {
            segment: id.segment,
            offset: end,
        };
        write_position(&self.dir, next)?;
        self.read = next;
        self.pending_records -= 1;
        if let Some(front) = self.segments.front_mut() {
            front.records = front.records.saturating_sub(1);
        }
        self.head = None;
        self.drop_consumed_segments();
        self.retry_orphans();
        Ok(())
    }

    /// Consumes the `count` oldest records at once, the last of them `last` (`len` its
    /// payload's length): one persisted position for all. They must all be in the segment
    /// being read (`InvalidInput` otherwise, and nothing is consumed); the caller read them
    /// with `peek`/`peek_next`, so it knows `count`. On error nothing is consumed.
    pub fn consume_through(&mut self, last: RecordId, len: usize, count: u64) -> io::Result<()> {
        let front_records = self.segments.front().map_or(0, |s| s.records);
        if count == 0
            || count > front_records
            || last.segment != self.read.segment
            || last.offset < self.read.offset
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot consume {count} records through {last} of {}: the oldest unconsumed is {} ({front_records} in its segment)",
                    self.dir.display(),
                    self.read
                ),
            ));
        }
        let next = RecordId {
            segment: last.segment,
            offset: last.offset + HEADER_LEN + len as u64,
        };
        write_position(&self.dir, next)?;
        self.read = next;
        self.pending_records -= count;
        if let Some(front) = self.segments.front_mut() {
            front.records -= count;
        }
        self.head = None;
        self.drop_consumed_segments();
        self.retry_orphans();
        Ok(())
    }

    /// The record after `after` (one `peek` or `peek_next` returned, `len` its payload's
    /// length), without consuming anything: a reader may work ahead of `consume` (which still
    /// goes oldest first). `None` past the last record. Re-validates the CRC as `peek` does
    /// (`InvalidData`: read no further ahead; `peek` reports it once it is the oldest).
    pub fn peek_next(
        &mut self,
        after: RecordId,
        len: usize,
    ) -> io::Result<Option<(RecordId, Vec<u8>)>> {
        let mut id = RecordId {
            segment: after.segment,
            offset: after.offset + HEADER_LEN + len as u64,
        };
        let limit = loop {
            let Some(i) = self.segments.iter().position(|s| s.number == id.segment) else {
                return Ok(None);
            };
            if id.offset < self.segments[i].valid_len {
                break self.segments[i].valid_len;
            }
            match self.segments.get(i + 1) {
                Some(next) => {
                    id = RecordId {
                        segment: next.number,
                        offset: 0,
                    }
                }
                None => return Ok(None),
            }
        };
        let payload = self.read_at(id, limit)?;
        Ok(Some((id, payload)))
    }

    /// The record `id` (its frame ending by `limit`), read with the cached read handle of its
    /// segment; checks its CRC.
    fn read_at(&mut self, id: RecordId, limit: u64) -> io::Result<Vec<u8>> {
        let path = self.segment_path(id.segment);
        let file = match &mut self.reader {
            Some((number, file)) if *number == id.segment => file,
            slot => {
                let file = File::open(&path).map_err(|e| with_path(e, &path))?;
                &mut slot.insert((id.segment, file)).1
            }
        };
        file.seek(SeekFrom::Start(id.offset))
            .map_err(|e| with_path(e, &path))?;
        read_record(file, id.offset, limit, &path)
    }

    /// After `peek` failed with `InvalidData` (data that went bad after `open`): skips the
    /// rest of the segment being read, as `open` does for an earlier segment (a corrupt frame's
    /// length cannot be trusted, so neither can anything after it). Persists the new position
    /// when it can (if not, `open` finds the same damage after a restart). Returns how many
    /// records were skipped (the bad one included).
    pub fn skip_corrupt_head(&mut self) -> u64 {
        let Some(front) = self.segments.front_mut() else {
            return 0;
        };
        let skipped = front.records;
        front.records = 0;
        // The segment's good bytes end here; appends (if it is the last) continue after it.
        front.valid_len = front.valid_len.max(self.read.offset);
        let next = RecordId {
            segment: front.number,
            offset: front.valid_len,
        };
        self.read = next;
        self.pending_records = self.pending_records.saturating_sub(skipped);
        self.head = None;
        self.reader = None;
        if self.segments.len() == 1 {
            // Being appended to: the file may not end where we think; start a fresh one.
            self.writer = None;
        }
        if let Err(e) = write_position(&self.dir, next) {
            warn!(dir = %self.dir.display(), error = %e, "cannot persist the position past a corrupt segment");
        }
        self.drop_consumed_segments();
        skipped
    }

    pub fn pending_records(&self) -> u64 {
        self.pending_records
    }

    /// Bytes of unconsumed records, framing included.
    pub fn pending_bytes(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.valid_len).sum();
        total.saturating_sub(self.front_consumed())
    }

    /// Bytes on disk not yet reclaimable: every segment file minus the consumed prefix of the
    /// one being read (so skipped corrupt regions count until their segment is deleted).
    /// This is what `max_bytes` limits.
    pub fn used_bytes(&self) -> u64 {
        let files: u64 = self.segments.iter().map(|s| s.file_len).sum();
        let orphans: u64 = self.orphans.iter().map(|&(_, len)| len).sum();
        (files + orphans).saturating_sub(self.front_consumed())
    }

    /// Every unconsumed record, oldest first (for `dlq list`/`show`), without consuming.
    pub fn records(&self) -> io::Result<Vec<(RecordId, Vec<u8>)>> {
        let mut out = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            let start = if i == 0 { self.read.offset } else { 0 };
            if start >= segment.valid_len {
                continue;
            }
            let path = self.segment_path(segment.number);
            let mut file = File::open(&path).map_err(|e| with_path(e, &path))?;
            file.seek(SeekFrom::Start(start))
                .map_err(|e| with_path(e, &path))?;
            let mut reader = BufReader::new(file);
            let mut offset = start;
            while offset < segment.valid_len {
                let payload = read_record(&mut reader, offset, segment.valid_len, &path)?;
                let id = RecordId {
                    segment: segment.number,
                    offset,
                };
                offset += HEADER_LEN + payload.len() as u64;
                out.push((id, payload));
            }
        }
        Ok(out)
    }

    /// Removes every record and segment (for `dlq purge`). The `position` file stays (it
    /// points past everything); segment numbering continues where it was. If some segment
    /// file cannot be deleted the records are still gone (they are behind the position) and
    /// the error is returned.
    pub fn purge(&mut self) -> io::Result<()> {
        let fence = RecordId {
            segment: self.next_segment,
            offset: 0,
        };
        write_position(&self.dir, fence)?;
        self.writer = None;
        self.reader = None;
        self.head = None;
        self.read = fence;
        self.pending_records = 0;
        let segments = std::mem::take(&mut self.segments);
        for segment in segments {
            // Failures are kept in `orphans` and reported below.
            let _ = self.remove_segment_file(segment.number, segment.file_len);
        }
        self.retry_orphans();
        if let Some(&(number, _)) = self.orphans.first() {
            return Err(io::Error::other(format!(
                "purge: {} consumed segment file(s) could not be deleted, e.g. {}",
                self.orphans.len(),
                self.segment_path(number).display()
            )));
        }
        sync_dir(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
