//! A Loki-compatible push receiver, for the agent's Loki sink: it decodes what Grafana Loki
//! accepts on `POST /loki/api/v1/push` (snappy-block protobuf, or JSON with optional gzip /
//! deflate) and can be told to answer slowly, answer an error status, hang, reset connections
//! or go down.
//!
//! Hand-rolled HTTP/1.1 on a tokio `TcpListener` on 127.0.0.1, on a runtime the
//! `LokiReceiver` owns (tests themselves stay synchronous, like `agent.rs` and
//! `fake_engine.rs`). Connections are kept alive for as many requests as the client sends.
//! The port is chosen at start and kept across `Mode::Down` and back, so the URL the agent
//! was configured with stays valid.
//!
//! The protobuf schema below is written from Loki's `pkg/push/push.proto` field numbers,
//! independently of the agent's encoder on purpose.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The push endpoint.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (after de-chunking, before decompression).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long leaving `Mode::Down` keeps retrying to bind the same port.
const REBIND_FOR: Duration = Duration::from_secs(5);
/// How long `set_mode` waits for the server to apply a mode (a rebind included).
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Loki's push messages (`logproto.PushRequest` of grafana/loki `pkg/push/push.proto`).
pub mod proto {
    /// `logproto.PushRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
        #[prost(string, tag = "2")]
        pub format: String,
    }

    /// `logproto.StreamAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        /// Loki label syntax: `{name="value", ...}`.
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    /// `logproto.EntryAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        /// A `string` in push.proto, read as bytes (same wire format): Loki does not check
        /// that a line is UTF-8, so neither does the receiver (it stores it lossily).
        #[prost(bytes = "vec", tag = "2")]
        pub line: Vec<u8>,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
        #[prost(message, repeated, tag = "4")]
        pub parsed: Vec<LabelPairAdapter>,
    }

    /// `logproto.LabelPairAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// How the receiver treats the next push requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Decode; 204 and store the entries, or 400 with the error as text.
    Accept,
    /// As `Accept`, but the answer is written `delay` after the request was read. The entries
    /// are stored when the request is read, as a slow Loki has ingested them whether or not
    /// the client waits for the answer (a client time-out then makes a duplicate).
    Slow { delay: Duration },
    /// Answer `code` (with `Retry-After` when given) and `body`; store nothing.
    Status {
        code: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// Read the request, never answer: the connection stays open until the client closes
    /// it or the mode is set again.
    Hang,
    /// Read the request, then close the connection without answering (SO_LINGER 0: a RST).
    Reset,
    /// Not listening: connections are refused, the open ones are closed.
    Down,
}

/// One accepted log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub labels: BTreeMap<String, String>,
    pub ts_ns: i64,
    pub line: String,
    /// Structured metadata.
    pub metadata: BTreeMap<String, String>,
}

/// One push request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    /// The status answered; 0 when not answered (Hang, Reset, Down).
    pub status: u16,
    pub content_type: String,
    pub content_encoding: Option<String>,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
    pub authorization: Option<String>,
    /// Every header, names as sent, in order.
    pub headers: Vec<(String, String)>,
    /// Entries the body decodes to (stored only when answered 204).
    pub entries: usize,
    /// Body size as sent (compressed, de-chunked).
    pub body_bytes: usize,
    /// Sum of the decoded entries' line lengths (bytes), 0 when the body does not decode.
    pub line_bytes: usize,
    /// When the request was read.
    pub at: Instant,
    /// Why the body does not decode (or the request is malformed).
    pub error: Option<String>,
}

impl RequestInfo {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    mode: Mode,
    /// `(requests left, mode)` of `set_mode_after`.
    pending: Option<(usize, Mode)>,
    /// Bumped on every mode change; `applied` is the last one the server acted upon.
    epoch: u64,
    applied: u64,
    bind_error: Option<String>,
    entries: Vec<Entry>,
    requests: Vec<RequestInfo>,
    connections: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the listener and hanging connections on a mode change.
    notify: watch::Sender<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(epoch, mode is Down)`.
    fn snapshot(&self) -> (u64, bool) {
        let st = self.lock();
        (st.epoch, st.mode == Mode::Down)
    }

    fn ack(&self, epoch: u64) {
        let mut st = self.lock();
        st.applied = st.applied.max(epoch);
    }
}

pub struct LokiReceiver {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    port: u16,
}

impl LokiReceiver {
    /// Starts listening on a free port of 127.0.0.1, in `Mode::Accept`.
    pub fn start() -> LokiReceiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = {
            let _guard = runtime.enter();
            bind(0).expect("bind Loki receiver")
        };
        let port = listener.local_addr().expect("local addr").port();
        let (notify, _) = watch::channel(());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Accept,
                pending: None,
                epoch: 0,
                applied: 0,
                bind_error: None,
                entries: Vec::new(),
                requests: Vec::new(),
                connections: 0,
            }),
            notify,
        });
        // Subscribed here, not in the task: a mode set before the task first runs is seen.
        let rx = shared.notify.subscribe();
        runtime.spawn(supervise(listener, port, Arc::clone(&shared), rx));
        LokiReceiver {
            runtime: Some(runtime),
            shared,
            port,
        }
    }

    /// `http://127.0.0.1:PORT` (the same for the receiver's whole life).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The full push URL.
    pub fn push_url(&self) -> String {
        format!("{}{PUSH_PATH}", self.url())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mode(&self) -> Mode {
        self.shared.lock().mode.clone()
    }

    /// Switches the mode for the requests read from now on (and cancels a `set_mode_after`).
    /// Returns once the server has applied it: after `Down`, connecting is refused and the
    /// connections that were open are closed; after leaving `Down`, the same port listens
    /// again (panics if it cannot be bound within a few seconds). Setting any mode ends the
    /// connections hanging in `Hang`.
    pub fn set_mode(&self, mode: Mode) {
        let epoch = {
            let mut st = self.shared.lock();
            st.mode = mode;
            st.pending = None;
            st.bind_error = None;
            st.epoch += 1;
            st.epoch
        };
        self.shared.notify.send_replace(());
        let deadline = Instant::now() + APPLY_TIMEOUT;
        loop {
            {
                let st = self.shared.lock();
                if let Some(e) = &st.bind_error {
                    panic!("Loki receiver: {e}");
                }
                if st.applied >= epoch {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Loki receiver: mode change not applied within {APPLY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The next `n_requests` push requests are handled in the current mode, then the mode
    /// becomes `mode` (the switch happens as the n-th request is read, so a retry on any
    /// connection sees the new mode; to `Down`, the n-th answer is written first). A request
    /// that hangs keeps hanging after its own switch, until the client closes it or the mode
    /// is set again. `n_requests == 0` is `set_mode`.
    pub fn set_mode_after(&self, n_requests: usize, mode: Mode) {
        if n_requests == 0 {
            self.set_mode(mode);
        } else {
            self.shared.lock().pending = Some((n_requests, mode));
        }
    }

    /// Every accepted entry, in arrival order (the order within a request kept).
    pub fn entries(&self) -> Vec<Entry> {
        self.shared.lock().entries.clone()
    }

    /// The lines of `entries()`.
    pub fn lines(&self) -> Vec<String> {
        self.shared
            .lock()
            .entries
            .iter()
            .map(|e| e.line.clone())
            .collect()
    }

    /// Every push request seen, answered or not, in arrival order.
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.shared.lock().requests.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Forgets the entries, requests and connection count (not the mode).
    pub fn clear(&self) {
        let mut st = self.shared.lock();
        st.entries.clear();
        st.requests.clear();
        st.connections = 0;
    }
}

impl Drop for LokiReceiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding

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

/// Snappy-block-compressed protobuf `PushRequest` of `(labels, [(ts_ns, line)])` streams.
pub fn encode_push_protobuf(streams: &[(String, Vec<(i64, String)>)]) -> Vec<u8> {
    let req = proto::PushRequest {
        streams: streams
            .iter()
            .map(|(labels, entries)| proto::StreamAdapter {
                labels: labels.clone(),
                entries: entries
                    .iter()
                    .map(|(ts_ns, line)| proto::EntryAdapter {
                        timestamp: Some(timestamp(*ts_ns)),
                        line: line.clone().into_bytes(),
                        structured_metadata: Vec::new(),
                        parsed: Vec::new(),
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
        format: String::new(),
    };
    encode_push_request(&req)
}

/// Snappy-block-compressed protobuf of any `PushRequest`.
pub fn encode_push_request(req: &proto::PushRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compress")
}

/// A protobuf timestamp of nanoseconds since the UNIX epoch.
pub fn timestamp(ts_ns: i64) -> proto::Timestamp {
    proto::Timestamp {
        seconds: ts_ns.div_euclid(1_000_000_000),
        nanos: ts_ns.rem_euclid(1_000_000_000) as i32,
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

// ---------------------------------------------------------------------------------------
// Listening

fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

/// Binds `port` again, retrying for `REBIND_FOR` (another socket may hold it for a while).
async fn rebind(port: u16) -> Result<TcpListener, String> {
    let deadline = Instant::now() + REBIND_FOR;
    loop {
        match bind(port) {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("cannot bind 127.0.0.1:{port} again: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Serves while up; while down, waits to be brought up and binds the same port again.
async fn supervise(
    mut listener: TcpListener,
    port: u16,
    shared: Arc<Shared>,
    mut rx: watch::Receiver<()>,
) {
    loop {
        if !serve(listener, &shared, &mut rx).await {
            return;
        }
        listener = loop {
            if rx.changed().await.is_err() {
                return;
            }
            let (epoch, down) = shared.snapshot();
            if down {
                shared.ack(epoch);
                continue;
            }
            match rebind(port).await {
                Ok(l) => {
                    shared.ack(epoch);
                    break l;
                }
                Err(e) => {
                    let mut st = shared.lock();
                    st.bind_error = Some(e);
                    st.applied = st.applied.max(epoch);
                }
            }
        };
    }
}

/// Accepts connections until the mode becomes `Down`; then closes the listener and every
/// connection, and acknowledges. Returns false when the receiver is gone.
async fn serve(listener: TcpListener, shared: &Arc<Shared>, rx: &mut watch::Receiver<()>) -> bool {
    let mut conns = JoinSet::new();
    let (epoch, alive) = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, Arc::clone(shared)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            changed = rx.changed() => {
                let (epoch, down) = shared.snapshot();
                if changed.is_err() {
                    break (epoch, false);
                }
                if down {
                    break (epoch, true);
                }
                shared.ack(epoch);
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    };
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    shared.ack(epoch);
    alive
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1

enum HttpError {
    /// The client went away (or the socket failed).
    Gone,
    /// Malformed request: answer this status and text, then close.
    Bad(u16, String),
}

struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    /// Close after answering (`Connection: close`, or HTTP/1.0 without keep-alive).
    close: bool,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not consumed yet (the start of a pipelined request).
    buf: Vec<u8>,
}

impl Conn {
    /// Reads more bytes into `buf`; Ok(false) at EOF.
    async fn fill(&mut self) -> Result<bool, HttpError> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(_) => Err(HttpError::Gone),
        }
    }

    /// The next request head; None when the client closed the connection between requests.
    async fn read_head(&mut self) -> Result<Option<Head>, HttpError> {
        let end = loop {
            // Empty lines before a request line are ignored (RFC 9112 2.2).
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::Bad(431, "request head too large".into()));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(HttpError::Gone)
                };
            }
        };
        let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
        let text = std::str::from_utf8(&raw[..end])
            .map_err(|_| HttpError::Bad(400, "request head is not UTF-8".into()))?;
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HttpError::Bad(
                400,
                format!("malformed request line {request_line:?}"),
            ));
        };
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(HttpError::Bad(
                505,
                format!("unsupported version {version:?}"),
            ));
        }
        let mut headers = Vec::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(HttpError::Bad(400, format!("malformed header {line:?}")));
            };
            if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
                return Err(HttpError::Bad(400, format!("malformed header {line:?}")));
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let path = target.split('?').next().unwrap_or("").to_string();
        let mut head = Head {
            method: method.to_string(),
            path,
            headers,
            close: false,
        };
        head.close = head.has_token("connection", "close")
            || (version == "HTTP/1.0" && !head.has_token("connection", "keep-alive"));
        Ok(Some(head))
    }

    /// Consumes and returns `n` bytes.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, HttpError> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(HttpError::Gone);
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Consumes one CRLF-terminated line (without the CRLF).
    async fn line(&mut self) -> Result<String, HttpError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.buf.len() > 8 * 1024 {
                return Err(HttpError::Bad(400, "chunk line too long".into()));
            }
            if !self.fill().await? {
                return Err(HttpError::Gone);
            }
        }
    }

    /// The request body: chunked, `Content-Length`, or none.
    async fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, HttpError> {
        if let Some(te) = head.header("transfer-encoding") {
            if !te.trim().eq_ignore_ascii_case("chunked") {
                return Err(HttpError::Bad(
                    501,
                    format!("Transfer-Encoding {te:?} not supported"),
                ));
            }
            let mut body = Vec::new();
            loop {
                let line = self.line().await?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| HttpError::Bad(400, format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers, up to an empty line.
                    while !self.line().await?.is_empty() {}
                    return Ok(body);
                }
                if body.len() + size > MAX_BODY {
                    return Err(HttpError::Bad(413, "request body too large".into()));
                }
                body.extend(self.take(size).await?);
                if self.take(2).await? != b"\r\n" {
                    return Err(HttpError::Bad(400, "chunk not followed by CRLF".into()));
                }
            }
        }
        let len = match head.header("content-length") {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| HttpError::Bad(400, format!("bad Content-Length {v:?}")))?,
        };
        if len > MAX_BODY {
            return Err(HttpError::Bad(413, "request body too large".into()));
        }
        self.take(len).await
    }

    /// Writes an answer; false if the client is gone.
    async fn respond(
        &mut self,
        status: u16,
        extra: &[(&str, String)],
        body: &str,
        close: bool,
    ) -> bool {
        let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
        for (name, value) in extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        let bodyless = status == 204 || status == 304 || (100..200).contains(&status);
        if !bodyless {
            out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        if !bodyless {
            out.push_str(body);
        }
        self.stream.write_all(out.as_bytes()).await.is_ok() && self.stream.flush().await.is_ok()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    shared.lock().connections += 1;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    loop {
        let head = match conn.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) | Err(HttpError::Gone) => return,
            Err(HttpError::Bad(status, msg)) => {
                conn.respond(status, &[], &msg, true).await;
                return;
            }
        };
        let is_push = head.path == PUSH_PATH && head.method == "POST";
        if head.has_token("expect", "100-continue")
            && conn
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let body = match conn.read_body(&head).await {
            Ok(body) => body,
            Err(HttpError::Gone) => return,
            Err(HttpError::Bad(status, msg)) => {
                if is_push {
                    shared.lock().requests.push(request_info(
                        &head,
                        status,
                        0,
                        0,
                        0,
                        Some(msg.clone()),
                    ));
                }
                conn.respond(status, &[], &msg, true).await;
                return;
            }
        };
        let keep = if is_push {
            push(&mut conn, &shared, &head, body).await
        } else if head.path == PUSH_PATH {
            let allow = [("Allow", "POST".to_string())];
            conn.respond(405, &allow, "method not allowed\n", head.close)
                .await
        } else if head.method == "GET" && head.path == "/ready" {
            conn.respond(200, &[], "ready\n", head.close).await
        } else {
            conn.respond(404, &[], "404 page not found\n", head.close)
                .await
        };
        if !keep || head.close {
            return;
        }
    }
}

fn request_info(
    head: &Head,
    status: u16,
    entries: usize,
    line_bytes: usize,
    body_bytes: usize,
    error: Option<String>,
) -> RequestInfo {
    RequestInfo {
        status,
        content_type: head.header("content-type").unwrap_or("").to_string(),
        content_encoding: head.header("content-encoding").map(str::to_string),
        tenant: head.header("x-scope-orgid").map(str::to_string),
        authorization: head.header("authorization").map(str::to_string),
        headers: head.headers.clone(),
        entries,
        body_bytes,
        line_bytes,
        at: Instant::now(),
        error,
    }
}

/// Handles one push request; false when the connection is to be closed.
async fn push(conn: &mut Conn, shared: &Arc<Shared>, head: &Head, body: Vec<u8>) -> bool {
    let decoded = decode_push(
        head.header("content-type").unwrap_or(""),
        head.header("content-encoding"),
        &body,
    );
    // Under one lock: the mode for this request, the count toward `set_mode_after` (its
    // switch takes effect for every request read from now on), the record, the entries.
    let (mode, switched) = {
        let mut st = shared.lock();
        let mode = st.mode.clone();
        let mut switched = false;
        if let Some((left, next)) = st.pending.take() {
            if left <= 1 {
                st.mode = next;
                st.epoch += 1;
                switched = true;
            } else {
                st.pending = Some((left - 1, next));
            }
        }
        let status = match (&mode, &decoded) {
            (Mode::Accept | Mode::Slow { .. }, Ok(entries)) => {
                st.entries.extend(entries.iter().cloned());
                204
            }
            (Mode::Accept | Mode::Slow { .. }, Err(_)) => 400,
            (Mode::Status { code, .. }, _) => *code,
            _ => 0,
        };
        let info = request_info(
            head,
            status,
            decoded.as_ref().map_or(0, Vec::len),
            decoded
                .as_ref()
                .map_or(0, |es| es.iter().map(|e| e.line.len()).sum()),
            body.len(),
            decoded.as_ref().err().cloned(),
        );
        st.requests.push(info);
        (mode, switched)
    };
    // Tells the listener (and hanging connections) about a switch. Sent after this request's
    // answer, so that a switch to Down does not close the connection before the answer.
    let notify = || {
        if switched {
            shared.notify.send_replace(());
        }
    };
    match mode {
        Mode::Accept | Mode::Slow { .. } => {
            if let Mode::Slow { delay } = mode {
                tokio::time::sleep(delay).await;
            }
            let ok = match &decoded {
                Ok(_) => conn.respond(204, &[], "", head.close).await,
                Err(e) => conn.respond(400, &[], &format!("{e}\n"), head.close).await,
            };
            notify();
            ok
        }
        Mode::Status {
            code,
            retry_after,
            body,
        } => {
            let extra: Vec<(&str, String)> = retry_after
                .map(|s| ("Retry-After", s.to_string()))
                .into_iter()
                .collect();
            let ok = conn.respond(code, &extra, &body, head.close).await;
            notify();
            ok
        }
        Mode::Hang => {
            // Subscribe after this request's own switch: it hangs until a later change.
            notify();
            let mut rx = shared.notify.subscribe();
            let mut scratch = [0u8; 4096];
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    n = conn.stream.read(&mut scratch) => {
                        if !matches!(n, Ok(n) if n > 0) {
                            break;
                        }
                    }
                }
            }
            false
        }
        Mode::Reset => {
            let _ = conn.stream.set_zero_linger();
            notify();
            false
        }
        Mode::Down => {
            notify();
            false
        }
    }
}
