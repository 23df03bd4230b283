//! Opening a store directory: reading the position, listing and scanning the segments,
//! repairing torn tails and skipping corrupt data (see the crash semantics in [`super`]).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use tracing::warn;

use super::format::{parse_header, with_path};
use super::{
    HEADER_LEN, MAX_SEGMENT, OpenReport, POSITION_FILE, POSITION_TMP, RecordId, SCAN_CHUNK,
    SEGMENT_DIGITS, SEGMENT_SUFFIX, Segment, SegmentStore, StoreOptions,
};

impl SegmentStore {
    /// Opens (creating) `dir`, validates the data from the read position on, repairs torn
    /// tails and deletes segments consumed before a crash. Fails only on I/O errors; what it
    /// skipped or repaired is listed in the report.
    pub fn open(dir: &Path, options: StoreOptions) -> io::Result<(SegmentStore, OpenReport)> {
        // Records hold log bodies: directories 0700 and files 0600, whatever the umask.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| with_path(e, dir))?;
        let mut report = OpenReport::default();
        match fs::remove_file(dir.join(POSITION_TMP)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(dir = %dir.display(), error = %e, "cannot remove stale position.tmp"),
        }
        // "No position" orders before every record: start at the oldest segment.
        let position = read_position(dir, &mut report)?.unwrap_or(RecordId {
            segment: 0,
            offset: 0,
        });
        let numbers = list_segments(dir)?;
        let highest = numbers.last().copied().unwrap_or(0).max(position.segment);
        let mut store = SegmentStore {
            dir: dir.to_path_buf(),
            options,
            segments: VecDeque::new(),
            read: position,
            pending_records: 0,
            writer: None,
            reader: None,
            head: None,
            next_segment: highest.saturating_add(1),
            orphans: Vec::new(),
        };
        let last = numbers.last().copied();
        for number in numbers {
            let path = store.segment_path(number);
            let mut file_len = fs::metadata(&path).map_err(|e| with_path(e, &path))?.len();
            if number < position.segment {
                // Fully consumed; a crash came between persisting the position and deleting.
                if let Err(e) = store.remove_segment_file(number, file_len) {
                    report.problems.push(e.to_string());
                }
                continue;
            }
            let is_last = Some(number) == last;
            let start = if number == position.segment {
                position.offset
            } else {
                0
            };
            if start > file_len {
                report.problems.push(format!(
                    "{}: read position {position} is past the end of the file ({file_len} \
                     bytes); treating the segment as consumed",
                    path.display()
                ));
                if store.segments.is_empty() {
                    store.read = RecordId {
                        segment: number,
                        offset: file_len,
                    };
                }
                store.segments.push_back(Segment {
                    number,
                    valid_len: file_len,
                    file_len,
                    records: 0,
                });
                // Not appendable: new records there would sort before the read position.
                continue;
            }
            let scan = scan_segment(&path, start, file_len)?;
            if let Some(problem) = scan.problem {
                if is_last {
                    truncate(&path, scan.valid_end)?;
                    report.problems.push(format!(
                        "{}: {problem}; truncated the file from {file_len} to {} bytes",
                        path.display(),
                        scan.valid_end
                    ));
                    file_len = scan.valid_end;
                } else {
                    report.problems.push(format!(
                        "{}: {problem}; skipping the remaining {} bytes of the segment",
                        path.display(),
                        file_len - scan.valid_end
                    ));
                }
            }
            if is_last {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| with_path(e, &path))?;
                store.writer = Some(file);
            }
            if store.segments.is_empty() {
                store.read = RecordId {
                    segment: number,
                    offset: start,
                };
            }
            store.pending_records += scan.records;
            store.segments.push_back(Segment {
                number,
                valid_len: scan.valid_end,
                file_len,
                records: scan.records,
            });
        }
        store.drop_consumed_segments();
        report.pending_records = store.pending_records;
        Ok((store, report))
    }
}

/// Reads the `position` file: `None` when it is missing or unparsable (the latter reported).
fn read_position(dir: &Path, report: &mut OpenReport) -> io::Result<Option<RecordId>> {
    let path = dir.join(POSITION_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(with_path(e, &path)),
    };
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().parse::<RecordId>() {
        Ok(id) if id.segment >= MAX_SEGMENT => {
            report.problems.push(format!(
                "{}: implausible read position {id:?} (segment number {MAX_SEGMENT} or above); \
                 reading from the start of the oldest segment, consumed records still on disk \
                 will be returned again",
                path.display()
            ));
            Ok(None)
        }
        Ok(id) => Ok(Some(id)),
        Err(e) => {
            report.problems.push(format!(
                "{}: unparsable read position ({e}); reading from the start of the oldest \
                 segment, consumed records still on disk will be returned again",
                path.display()
            ));
            Ok(None)
        }
    }
}

/// Numbers of the segment files in `dir`, ascending. Other files are ignored.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let entry = entry.map_err(|e| with_path(e, dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if stem.len() != SEGMENT_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(number) = stem.parse::<u64>() else {
            continue;
        };
        if number > MAX_SEGMENT {
            continue; // not one of ours (see MAX_SEGMENT): left alone, like other files
        }
        if entry.file_type().map_err(|e| with_path(e, dir))?.is_file() {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

struct Scan {
    /// Offset just past the last valid record.
    valid_end: u64,
    records: u64,
    /// What is wrong at `valid_end`, if the valid data does not reach the end of the file.
    problem: Option<String>,
}

/// Validates the records of a segment file from `start` (a record boundary) to `file_len`.
fn scan_segment(path: &Path, start: u64, file_len: u64) -> io::Result<Scan> {
    let mut file = File::open(path).map_err(|e| with_path(e, path))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| with_path(e, path))?;
    let mut reader = BufReader::with_capacity(SCAN_CHUNK, file);
    let mut chunk = vec![0u8; SCAN_CHUNK];
    let mut offset = start;
    let mut records = 0;
    loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            return Ok(Scan {
                valid_end: offset,
                records,
                problem: None,
            });
        }
        let problem = if remaining < HEADER_LEN {
            Some(format!(
                "torn record header at offset {offset} ({remaining} of {HEADER_LEN} bytes)"
            ))
        } else {
            let mut header = [0u8; HEADER_LEN as usize];
            reader
                .read_exact(&mut header)
                .map_err(|e| with_path(e, path))?;
            let (len, crc) = parse_header(&header);
            let available = remaining - HEADER_LEN;
            if len == 0 {
                Some(format!(
                    "zero-length record at offset {offset} (zero-filled or corrupt data)"
                ))
            } else if u64::from(len) > available {
                Some(format!(
                    "torn record at offset {offset}: {len} payload bytes declared, \
                     {available} present"
                ))
            } else {
                let mut hasher = crc32fast::Hasher::new();
                let mut left = len as usize;
                while left > 0 {
                    let n = left.min(chunk.len());
                    reader
                        .read_exact(&mut chunk[..n])
                        .map_err(|e| with_path(e, path))?;
                    hasher.update(&chunk[..n]);
                    left -= n;
                }
                let actual = hasher.finalize();
                if actual == crc {
                    records += 1;
                    offset += HEADER_LEN + u64::from(len);
                    continue;
                }
                Some(format!(
                    "CRC mismatch in record at offset {offset} ({len} payload bytes, \
                     stored {crc:08x}, computed {actual:08x})"
                ))
            }
        };
        return Ok(Scan {
            valid_end: offset,
            records,
            problem,
        });
    }
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    file.set_len(len).map_err(|e| with_path(e, path))?;
    file.sync_all().map_err(|e| with_path(e, path))
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
