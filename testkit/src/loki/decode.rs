//! What a push body means, read as Loki reads it: content encodings, JSON and protobuf bodies,
//! and Loki's label syntax.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;

use prost::Message;

use super::Entry;
use super::proto;

/// Decodes a push body as Loki does: `Content-Encoding` "" / "snappy" (nothing to undo:
/// the protobuf form is snappy anyway), "gzip" or "deflate" (anything else is an error, as in
/// Loki); then `application/json` or `application/x-protobuf` (snappy block). Every stream
/// needs at least one label; label names are `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn decode_push(
    content_type: &str,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<Vec<Entry>, String> {
    let body: Cow<[u8]> = match content_encoding.unwrap_or("") {
        "" | "snappy" => Cow::Borrowed(body),
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip: {e}"))?;
            Cow::Owned(out)
        }
        "deflate" => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("flate: {e}"))?;
            Cow::Owned(out)
        }
        other => return Err(format!("Content-Encoding {other:?} not supported")),
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => entries_from_json(&body),
        "application/x-protobuf" => {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body)
                .map_err(|e| format!("snappy (block format): {e}"))?;
            let req = proto::PushRequest::decode(raw.as_slice())
                .map_err(|e| format!("protobuf PushRequest: {e}"))?;
            entries_from_proto(req)
        }
        "" => Err("mime: no media type".to_string()),
        other => Err(format!(
            "unsupported Content-Type {other:?} (application/x-protobuf or application/json)"
        )),
    }
}

fn entries_from_proto(req: proto::PushRequest) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (i, stream) in req.streams.into_iter().enumerate() {
        let labels = parse_labels(&stream.labels)
            .map_err(|e| format!("stream {i}: couldn't parse labels {:?}: {e}", stream.labels))?;
        if labels.is_empty() {
            return Err(format!("stream {i}: stream without labels"));
        }
        for (j, e) in stream.entries.into_iter().enumerate() {
            let ts = e
                .timestamp
                .ok_or_else(|| format!("stream {i} entry {j}: no timestamp"))?;
            if !(0..1_000_000_000).contains(&ts.nanos) {
                return Err(format!(
                    "stream {i} entry {j}: timestamp nanos {} out of range",
                    ts.nanos
                ));
            }
            let ts_ns = ts
                .seconds
                .checked_mul(1_000_000_000)
                .and_then(|s| s.checked_add(i64::from(ts.nanos)))
                .ok_or_else(|| format!("stream {i} entry {j}: timestamp out of range"))?;
            out.push(Entry {
                labels: labels.clone(),
                ts_ns,
                line: String::from_utf8_lossy(&e.line).into_owned(),
                metadata: e
                    .structured_metadata
                    .into_iter()
                    .map(|p| (p.name, p.value))
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// `{"streams":[{"stream":{..},"values":[["<ns>","<line>"(,{metadata})],..]},..]}`.
fn entries_from_json(body: &[u8]) -> Result<Vec<Entry>, String> {
    use serde_json::Value;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON push request: {e}"))?;
    let obj = v.as_object().ok_or("push request is not a JSON object")?;
    let streams = match obj.get("streams") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("\"streams\" is not an array".to_string()),
    };
    let mut out = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        let stream = stream
            .as_object()
            .ok_or_else(|| format!("stream {i} is not an object"))?;
        let labels =
            string_map(stream.get("stream")).map_err(|e| format!("stream {i}: \"stream\": {e}"))?;
        if labels.is_empty() {
            return Err(format!("stream {i}: stream without labels"));
        }
        if let Some(name) = labels.keys().find(|n| !valid_label_name(n)) {
            return Err(format!("stream {i}: invalid label name {name:?}"));
        }
        let values = match stream.get("values") {
            None | Some(Value::Null) => &Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(format!("stream {i}: \"values\" is not an array")),
        };
        for (j, value) in values.iter().enumerate() {
            let err = |what: &str| format!("stream {i} value {j}: {what}");
            let value = value
                .as_array()
                .filter(|a| a.len() == 2 || a.len() == 3)
                .ok_or_else(|| err("not an array of 2 or 3 elements"))?;
            let ts_ns = value[0]
                .as_str()
                .ok_or_else(|| err("timestamp is not a string"))?
                .parse::<i64>()
                .map_err(|e| err(&format!("timestamp: {e}")))?;
            let line = value[1]
                .as_str()
                .ok_or_else(|| err("line is not a string"))?
                .to_string();
            let metadata = match value.get(2) {
                Some(m) => string_map(Some(m)).map_err(|e| err(&format!("metadata: {e}")))?,
                None => BTreeMap::new(),
            };
            out.push(Entry {
                labels: labels.clone(),
                ts_ns,
                line,
                metadata,
            });
        }
    }
    Ok(out)
}

/// A JSON object of strings (absent or null: empty).
fn string_map(v: Option<&serde_json::Value>) -> Result<BTreeMap<String, String>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(BTreeMap::new()),
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => Ok((k.clone(), s.to_string())),
                None => Err(format!("value of {k:?} is not a string")),
            })
            .collect(),
        Some(_) => Err("not an object".to_string()),
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses Loki's label syntax `{name="value", other="v\"q"}`: names
/// `[a-zA-Z_][a-zA-Z0-9_]*`, values Go string literals (`"..."` with escapes, or `` `raw` ``),
/// whitespace around tokens, no duplicate names, no trailing comma. `{}` is an empty map.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut p = LabelParser {
        chars: s.chars().collect(),
        pos: 0,
    };
    let mut labels = BTreeMap::new();
    p.skip_ws();
    p.expect('{')?;
    p.skip_ws();
    if p.peek() == Some('}') {
        p.pos += 1;
    } else {
        loop {
            p.skip_ws();
            let name = p.name()?;
            p.skip_ws();
            p.expect('=')?;
            p.skip_ws();
            let value = p.string()?;
            if labels.insert(name.clone(), value).is_some() {
                return Err(format!("duplicate label name {name:?}"));
            }
            p.skip_ws();
            match p.next() {
                Some(',') => {}
                Some('}') => break,
                Some(c) => {
                    return Err(format!(
                        "expected ',' or '}}' at {}, found {c:?}",
                        p.pos - 1
                    ));
                }
                None => return Err("unexpected end, expected ',' or '}'".to_string()),
            }
        }
    }
    p.skip_ws();
    if let Some(c) = p.peek() {
        return Err(format!("unexpected {c:?} after '}}' at {}", p.pos));
    }
    Ok(labels)
}

struct LabelParser {
    chars: Vec<char>,
    pos: usize,
}

impl LabelParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        match self.next() {
            Some(c) if c == want => Ok(()),
            Some(c) => Err(format!(
                "expected {want:?} at {}, found {c:?}",
                self.pos - 1
            )),
            None => Err(format!("unexpected end, expected {want:?}")),
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        if valid_label_name(&name) {
            Ok(name)
        } else {
            Err(format!("invalid label name {name:?} at {start}"))
        }
    }

    /// A Go string literal: `"..."` (strconv.Unquote escapes) or `` `...` ``.
    fn string(&mut self) -> Result<String, String> {
        let start = self.pos;
        match self.next() {
            Some('`') => {
                let mut out = String::new();
                loop {
                    match self.next() {
                        Some('`') => return Ok(out),
                        Some(c) => out.push(c),
                        None => return Err(format!("unterminated raw string at {start}")),
                    }
                }
            }
            Some('"') => {}
            Some(c) => return Err(format!("expected a quoted value at {start}, found {c:?}")),
            None => return Err("unexpected end, expected a quoted value".to_string()),
        }
        // Bytes: `\x..` and octal escapes may write single bytes.
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self
                .next()
                .ok_or_else(|| format!("unterminated string at {start}"))?;
            match c {
                '"' => break,
                '\n' => return Err(format!("newline in string at {}", self.pos - 1)),
                '\\' => {
                    let e = self
                        .next()
                        .ok_or_else(|| format!("unterminated string at {start}"))?;
                    let simple = match e {
                        'a' => Some(0x07),
                        'b' => Some(0x08),
                        'f' => Some(0x0c),
                        'n' => Some(b'\n'),
                        'r' => Some(b'\r'),
                        't' => Some(b'\t'),
                        'v' => Some(0x0b),
                        '\\' => Some(b'\\'),
                        '"' => Some(b'"'),
                        _ => None,
                    };
                    if let Some(b) = simple {
                        out.push(b);
                        continue;
                    }
                    match e {
                        'x' => out.push(self.hex(2)? as u8),
                        'u' | 'U' => {
                            let v = self.hex(if e == 'u' { 4 } else { 8 })?;
                            let ch = char::from_u32(v)
                                .ok_or_else(|| format!("invalid code point {v:#x}"))?;
                            let mut b = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        }
                        '0'..='7' => {
                            let mut v = e.to_digit(8).unwrap_or(0);
                            for _ in 0..2 {
                                let d = self
                                    .next()
                                    .and_then(|c| c.to_digit(8))
                                    .ok_or_else(|| format!("bad octal escape at {}", self.pos))?;
                                v = v * 8 + d;
                            }
                            let b = u8::try_from(v)
                                .map_err(|_| format!("octal escape {v:#o} above 255"))?;
                            out.push(b);
                        }
                        other => {
                            return Err(format!("unknown escape \\{other} at {}", self.pos - 2));
                        }
                    }
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        String::from_utf8(out).map_err(|_| format!("string at {start} is not UTF-8"))
    }

    fn hex(&mut self, digits: usize) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..digits {
            let d = self
                .next()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| format!("bad hex escape at {}", self.pos))?;
            v = v * 16 + d;
        }
        Ok(v)
    }
}
