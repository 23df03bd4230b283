//! Record framing: `[payload length: u32 LE][CRC-32 of the payload: u32 LE][payload]`, the
//! record id (`"<segment>:<offset>"`), and reading one framed record back with its checksum
//! checked.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use super::HEADER_LEN;

/// Where a record lives: segment number and byte offset of its frame in that segment.
/// Ordered like the records themselves. Displayed as `"segment:offset"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub segment: u64,
    pub offset: u64,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// A string that is not `"<segment>:<offset>"` with two unsigned integers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseRecordIdError {
    input: String,
}

impl fmt::Display for ParseRecordIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid record id {:?}: expected \"<segment>:<offset>\" (two unsigned integers, \
             e.g. \"3:1024\")",
            self.input
        )
    }
}

impl std::error::Error for ParseRecordIdError {}

impl FromStr for RecordId {
    type Err = ParseRecordIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseRecordIdError {
            input: s.to_owned(),
        };
        let (segment, offset) = s.split_once(':').ok_or_else(err)?;
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            part.parse::<u64>().map_err(|_| err())
        };
        Ok(RecordId {
            segment: number(segment)?,
            offset: number(offset)?,
        })
    }
}

/// Adds the path to an I/O error's message.
pub(super) fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

pub(super) fn parse_header(header: &[u8; HEADER_LEN as usize]) -> (u32, u32) {
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    (
        u32::from_le_bytes([l0, l1, l2, l3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
    )
}

/// Reads the record whose frame starts at `offset` (where `reader` is positioned) and must
/// end by `limit`; checks its CRC.
pub(super) fn read_record<R: Read>(
    reader: &mut R,
    offset: u64,
    limit: u64,
    path: &Path,
) -> io::Result<Vec<u8>> {
    let corrupt = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: record at offset {offset}: {what}", path.display()),
        )
    };
    // The data was validated at open (or written by us): a short read means it changed since.
    let short = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt("file shorter than the valid data (truncated after open)".to_owned())
        } else {
            with_path(e, path)
        }
    };
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header).map_err(short)?;
    let (len, crc) = parse_header(&header);
    let end = offset + HEADER_LEN + u64::from(len);
    if end > limit {
        return Err(corrupt(format!(
            "length {len} runs past the valid data (ends at {limit})"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).map_err(short)?;
    if crc32fast::hash(&payload) != crc {
        return Err(corrupt("CRC mismatch (data changed after open)".to_owned()));
    }
    Ok(payload)
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
