//! JSON encoding shared by the record and the NDJSON encoder: the per-source fields encoded
//! once when a [`ContainerMeta`] is built (so `pipeline::record` does not depend on a sink),
//! and the string escaping both use.

use super::record::{ContainerMeta, SourceKind};

/// The per-container part of every record, encoded once per container.
pub(crate) fn encode_container_fields(meta: &ContainerMeta) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |name: &str, value: &str| {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":\"");
        escape_into(&mut out, value.as_bytes());
        out.extend_from_slice(b"\",");
    };
    if let SourceKind::File { host } = &meta.kind {
        // A host file's record: `file` and `host` instead of the container's fields.
        field("file", &meta.name);
        field("host", host);
        return out;
    }
    field("container_id", &meta.id);
    field("container_name", &meta.name);
    field("image", &meta.image);
    if let Some(project) = &meta.compose_project {
        field("compose_project", project);
    }
    if let Some(service) = &meta.compose_service {
        field("compose_service", service);
    }
    out
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether 8 bytes hold anything but plain printable ASCII other than `"` and `\\` (SWAR: a
/// few instructions per 8 bytes). False positives only send bytes to the careful path.
#[inline]
fn needs_care(chunk: u64) -> bool {
    let control = chunk.wrapping_sub(ONES * 0x20) & !chunk;
    let quote = {
        let x = chunk ^ (ONES * u64::from(b'"'));
        x.wrapping_sub(ONES) & !x
    };
    let backslash = {
        let x = chunk ^ (ONES * u64::from(b'\\'));
        x.wrapping_sub(ONES) & !x
    };
    ((control | quote | backslash) & HIGH) | (chunk & HIGH) != 0
}

#[inline]
fn plain(b: u8) -> bool {
    (0x20..0x80).contains(&b) && b != b'"' && b != b'\\'
}

/// JSON string escaping of (possibly invalid) UTF-8. Plain ASCII, by far the common case, is
/// found 8 bytes at a time and copied in one go.
pub(crate) fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        if needs_care(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && plain(bytes[i]) {
        i += 1;
    }
    out.extend_from_slice(&bytes[..i]);
    if i < bytes.len() {
        // Everything before `i` is ASCII, so `i` starts a character.
        escape_careful(out, &bytes[i..]);
    }
}

fn escape_careful(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                escape_str(out, valid);
                return;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // `valid_up_to` guarantees this prefix is UTF-8.
                escape_str(out, std::str::from_utf8(valid).unwrap_or_default());
                out.extend_from_slice("\u{FFFD}".as_bytes());
                let skip = e.error_len().unwrap_or(after.len()).max(1);
                rest = &after[skip.min(after.len())..];
                if rest.is_empty() {
                    return;
                }
            }
        }
    }
}

fn escape_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_and_careful_paths_agree() {
        for b in 0u8..=255 {
            for pos in 0..12 {
                let mut text = vec![b'a'; 12];
                text[pos] = b;
                let mut fast = Vec::new();
                escape_into(&mut fast, &text);
                let mut careful = Vec::new();
                escape_careful(&mut careful, &text);
                assert_eq!(fast, careful, "byte {b:#x} at {pos}");
            }
        }
    }
}
