//! NDJSON encoding of a record, written straight into the sink's buffer (no per-line
//! allocation). Invalid UTF-8 in a message is replaced with U+FFFD, never dropped.

use crate::docker::timestamp::write_rfc3339_nanos;
use crate::pipeline::{ContainerMeta, LogLine};

/// Appends one record and its newline to `out`. The container's fields come pre-encoded
/// (see [`ContainerMeta::ndjson_fields`]); the timestamp is formatted and the message escaped here.
pub fn encode_line(out: &mut Vec<u8>, meta: &ContainerMeta, line: &LogLine) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    write_rfc3339_nanos(out, line.ts_ns);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(meta.ndjson_fields());
    out.extend_from_slice(b"\"stream\":\"");
    out.extend_from_slice(line.stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":\"");
    escape_into(out, &line.message);
    out.push(b'"');
    if line.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.extend_from_slice(b"}\n");
}

/// The per-container part of every record, encoded once per container.
pub fn encode_container_fields(meta: &ContainerMeta) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |name: &str, value: &str| {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":\"");
        escape_into(&mut out, value.as_bytes());
        out.extend_from_slice(b"\",");
    };
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
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
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
    use crate::pipeline::StreamKind;
    use bytes::Bytes;

    fn meta() -> ContainerMeta {
        ContainerMeta::new(
            "abc".into(),
            "web".into(),
            "img:1".into(),
            Some("proj".into()),
            None,
        )
    }

    fn line(msg: &'static [u8]) -> LogLine {
        LogLine {
            ts_ns: 1_795_909_748_780_644_778,
            stream: StreamKind::Stderr,
            message: Bytes::from_static(msg),
            truncated: false,
            extra: None,
        }
    }

    #[test]
    fn encodes_valid_json() {
        let mut out = Vec::new();
        encode_line(
            &mut out,
            &meta(),
            &line(b"he said \"hi\"\t\\ \x01 \xff\xfe end"),
        );
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            v["message"],
            "he said \"hi\"\t\\ \u{1} \u{FFFD}\u{FFFD} end"
        );
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["container_name"], "web");
        assert_eq!(v["compose_project"], "proj");
        assert_eq!(v["timestamp"], "2026-11-28T23:49:08.780644778Z");
        assert!(v.get("compose_service").is_none());
    }

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

    proptest::proptest! {
        #[test]
        fn any_bytes_give_valid_json(msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            let mut l = line(b"");
            l.message = Bytes::from(msg.clone());
            encode_line(&mut out, &meta(), &l);
            let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            proptest::prop_assert_eq!(v["message"].as_str().map(str::to_string), Some(String::from_utf8_lossy(&msg).into_owned()));
        }
    }
}
