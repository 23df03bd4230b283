//! One line of Docker's json-file log: `{"log":"…","stream":"stdout","time":"…"}`.
//!
//! Docker writes these with a fixed field order, so a purpose-built scanner reads them without
//! building a JSON value: the `log` string is unescaped straight into the read's output buffer
//! (one allocation per read, not per line). Anything else (extra `attrs`, other field orders, a
//! different encoder) goes through serde_json; a line neither can read is malformed, and the
//! caller keeps it as raw text.

use serde::Deserialize;

use crate::docker::timestamp::{SecondCache, parse_rfc3339_nanos_cached};

/// The stream an entry names (`stdout` or `stderr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryStream {
    Stdout,
    Stderr,
}

/// What a parsed entry carried besides its `log` text (appended to the output buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub stream: EntryStream,
    pub ts_ns: i64,
}

const LOG_PREFIX: &[u8] = br#"{"log":""#;
const STREAM_KEY: &[u8] = br#","stream":""#;
const TIME_KEY: &[u8] = br#"","time":""#;

/// Parses `line` (without its `\n`); on success the `log` text is appended to `out`. On
/// failure `out` is left as it was.
pub fn parse_line(line: &[u8], out: &mut Vec<u8>, seconds: &mut SecondCache) -> Option<Entry> {
    let start = out.len();
    if let Some(entry) = parse_fast(line, out, seconds) {
        return Some(entry);
    }
    out.truncate(start);
    let entry = parse_slow(line, out, seconds);
    if entry.is_none() {
        out.truncate(start);
    }
    entry
}

fn parse_fast(line: &[u8], out: &mut Vec<u8>, seconds: &mut SecondCache) -> Option<Entry> {
    let rest = line.strip_prefix(LOG_PREFIX)?;
    let used = unescape(rest, out)?;
    let rest = rest[used..].strip_prefix(STREAM_KEY)?;
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout") {
        (EntryStream::Stdout, r)
    } else {
        (EntryStream::Stderr, rest.strip_prefix(b"stderr")?)
    };
    let rest = rest.strip_prefix(TIME_KEY)?;
    let time = rest.strip_suffix(b"\"}")?;
    let ts_ns = parse_rfc3339_nanos_cached(time, seconds)?;
    Some(Entry { stream, ts_ns })
}

/// Unescapes a JSON string body up to its closing quote into `out`; returns the bytes of
/// `s` consumed, closing quote included. None on anything invalid (the slow path decides).
fn unescape(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut i = 0;
    loop {
        let run = s[i..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        out.extend_from_slice(&s[i..i + run]);
        i += run;
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let esc = *s.get(i + 1)?;
                i += 2;
                let byte = match esc {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'u' => {
                        let (c, used) = unicode_escape(&s[i..])?;
                        i += used;
                        let mut utf8 = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                        continue;
                    }
                    _ => return None,
                };
                out.push(byte);
            }
            // A raw control character is not valid JSON.
            _ => return None,
        }
    }
}

/// `XXXX` (after `\u`), or a surrogate pair `XXXX\uYYYY`: the character and bytes consumed.
fn unicode_escape(s: &[u8]) -> Option<(char, usize)> {
    let hi = hex4(s)?;
    if (0xD800..0xDC00).contains(&hi) {
        let rest = s.get(4..)?.strip_prefix(b"\\u")?;
        let lo = hex4(rest)?;
        if !(0xDC00..0xE000).contains(&lo) {
            return None;
        }
        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        return Some((char::from_u32(c)?, 10));
    }
    Some((char::from_u32(hi)?, 4))
}

fn hex4(s: &[u8]) -> Option<u32> {
    let digits = s.get(..4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + (d as char).to_digit(16)?;
    }
    Some(v)
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
}

fn parse_slow(line: &[u8], out: &mut Vec<u8>, seconds: &mut SecondCache) -> Option<Entry> {
    let raw: RawEntry = serde_json::from_slice(line).ok()?;
    let stream = match raw.stream.as_ref() {
        "stdout" => EntryStream::Stdout,
        "stderr" => EntryStream::Stderr,
        _ => return None,
    };
    let ts_ns = parse_rfc3339_nanos_cached(raw.time.as_bytes(), seconds)?;
    out.extend_from_slice(raw.log.as_bytes());
    Some(Entry { stream, ts_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<(Entry, String)> {
        let mut out = b"prefix".to_vec();
        let mut cache = SecondCache::default();
        let entry = parse_line(line.as_bytes(), &mut out, &mut cache);
        let text = String::from_utf8(out[6..].to_vec()).unwrap();
        if entry.is_none() {
            assert_eq!(text, "", "a failed parse leaves the buffer as it was");
        }
        entry.map(|e| (e, text))
    }

    const T: &str = "2026-12-01T10:29:29.123456789Z";
    const T_NS: i64 = 1_796_120_969_123_456_789;

    #[test]
    fn docker_lines_with_escapes_and_unicode() {
        let (e, text) = parse(&format!(
            r#"{{"log":"a \"q\" \\ \/ \t\u003cb\u003e \u0026 é \u00e9 \ud83d\ude00 \u2028\n","stream":"stderr","time":"{T}"}}"#
        ))
        .unwrap();
        assert_eq!(
            e,
            Entry {
                stream: EntryStream::Stderr,
                ts_ns: T_NS
            }
        );
        assert_eq!(text, "a \"q\" \\ / \t<b> & é é 😀 \u{2028}\n");
    }

    #[test]
    fn a_piece_of_a_long_line_has_no_newline() {
        let (e, text) = parse(&format!(
            r#"{{"log":"xxxx","stream":"stdout","time":"{T}"}}"#
        ))
        .unwrap();
        assert_eq!(e.stream, EntryStream::Stdout);
        assert_eq!(text, "xxxx");
        let (_, text) = parse(&format!(
            r#"{{"log":"\r\n","stream":"stdout","time":"{T}"}}"#
        ))
        .unwrap();
        assert_eq!(text, "\r\n");
    }

    #[test]
    fn other_layouts_go_through_serde() {
        let (e, text) = parse(&format!(
            r#"{{"log":"hi\n","stream":"stdout","attrs":{{"tag":"x"}},"time":"{T}"}}"#
        ))
        .unwrap();
        assert_eq!((e.ts_ns, text.as_str()), (T_NS, "hi\n"));
        let (e, text) = parse(&format!(
            r#"{{ "time": "{T}", "stream": "stderr", "log": "z\n" }}"#
        ))
        .unwrap();
        assert_eq!((e.stream, text.as_str()), (EntryStream::Stderr, "z\n"));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for line in [
            "plain text".to_string(),
            r#"{"log":"cut"#.to_string(),
            format!(r#"{{"log":"x\n","stream":"stdin","time":"{T}"}}"#),
            r#"{"log":"x\n","stream":"stdout","time":"yesterday"}"#.to_string(),
            format!(r#"{{"log":"bad \x","stream":"stdout","time":"{T}"}}"#),
            format!(r#"{{"log":"lone \ud83d","stream":"stdout","time":"{T}"}}"#),
            String::new(),
        ] {
            assert!(parse(&line).is_none(), "{line:?} parsed");
        }
    }
}
