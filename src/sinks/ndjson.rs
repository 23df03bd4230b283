//! NDJSON encoding of a record, written straight into the sink's buffer (no per-line
//! allocation). Invalid UTF-8 in a message is replaced with U+FFFD, never dropped.

use crate::pipeline::{ContainerMeta, LogLine};

/// Appends one record and its newline to `out`.
pub fn encode_line(out: &mut Vec<u8>, meta: &ContainerMeta, line: &LogLine) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    escape_into(out, &line.timestamp);
    out.extend_from_slice(b"\",\"container_id\":\"");
    escape_into(out, meta.id.as_bytes());
    out.extend_from_slice(b"\",\"container_name\":\"");
    escape_into(out, meta.name.as_bytes());
    out.extend_from_slice(b"\",\"image\":\"");
    escape_into(out, meta.image.as_bytes());
    out.extend_from_slice(b"\",\"stream\":\"");
    out.extend_from_slice(line.stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":\"");
    escape_into(out, &line.message);
    out.push(b'"');
    if let Some(project) = &meta.compose_project {
        out.extend_from_slice(b",\"compose_project\":\"");
        escape_into(out, project.as_bytes());
        out.push(b'"');
    }
    if let Some(service) = &meta.compose_service {
        out.extend_from_slice(b",\"compose_service\":\"");
        escape_into(out, service.as_bytes());
        out.push(b'"');
    }
    if line.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.extend_from_slice(b"}\n");
}

/// JSON string escaping of (possibly invalid) UTF-8.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                escape_str(out, valid);
                return;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // SAFETY-free: `valid_up_to` guarantees this prefix is UTF-8.
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
        ContainerMeta {
            id: "abc".into(),
            name: "web".into(),
            image: "img:1".into(),
            compose_project: Some("proj".into()),
            compose_service: None,
        }
    }

    fn line(msg: &'static [u8]) -> LogLine {
        LogLine {
            timestamp: Bytes::from_static(b"2026-11-28T23:49:08.780644778Z"),
            ts_ns: 0,
            stream: StreamKind::Stderr,
            message: Bytes::from_static(msg),
            truncated: false,
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
