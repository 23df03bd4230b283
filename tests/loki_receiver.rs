//! The Loki test receiver (testkit/src/loki.rs, feature `loki`) itself, so that the agent's Loki sink tests
//! can trust it: decoding of both push formats, rejections, and every fault mode. The client
//! side is raw HTTP/1.1 over std `TcpStream`.
//!
//! The tests are in `loki_receiver/` (modules of this one test binary): `decoding` and
//! `modes`; the client and the sample pushes they share stay here.

mod support;

#[path = "loki_receiver/decoding.rs"]
mod decoding;
#[path = "loki_receiver/modes.rs"]
mod modes;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::loki::{
    Entry, LokiReceiver, Mode, PUSH_PATH, decode_push, encode_push_protobuf, encode_push_request,
    parse_labels, proto, timestamp,
};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// 2026-01-01T00:00:00Z in nanoseconds.
const T0: i64 = 1_767_225_600 * 1_000_000_000;

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 connection to the receiver.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(rx: &LokiReceiver) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", rx.port())).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends a push with a `Content-Length` body.
    fn send_push(&mut self, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!(
            "POST {PUSH_PATH} HTTP/1.1\r\nHost: loki\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).expect("write request");
    }

    /// Sends a push with a chunked body, in chunks of 7 bytes.
    fn send_push_chunked(&mut self, headers: &[(&str, &str)], body: &[u8]) {
        let mut req =
            format!("POST {PUSH_PATH} HTTP/1.1\r\nHost: loki\r\nTransfer-Encoding: chunked\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        for chunk in body.chunks(7) {
            bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        self.stream.write_all(&bytes).expect("write request");
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response (bodies have a `Content-Length`, or none for 204).
    fn read_response(&mut self) -> std::io::Result<Response> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "closed before a full head ({:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let head = String::from_utf8(head[..end].to_vec()).expect("UTF-8 head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header");
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        while self.buf.len() < len {
            if self.fill()? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        }
        let body: Vec<u8> = self.buf.drain(..len).collect();
        Ok(Response {
            status,
            headers,
            body: String::from_utf8(body).expect("UTF-8 body"),
        })
    }

    fn push(&mut self, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.send_push(headers, body);
        self.read_response().expect("response")
    }
}

/// A push on a new connection.
fn push(rx: &LokiReceiver, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Client::connect(rx).push(headers, body)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn entry(labels: &[(&str, &str)], ts_ns: i64, line: &str, metadata: &[(&str, &str)]) -> Entry {
    Entry {
        labels: map(labels),
        ts_ns,
        line: line.to_string(),
        metadata: map(metadata),
    }
}

/// The entries that `two_streams_protobuf` and `two_streams_json` encode.
fn two_streams_expected() -> Vec<Entry> {
    let web = [("app", "web"), ("msg", "say \"hi\""), ("path", "C:\\tmp")];
    let db = [("app", "db")];
    vec![
        entry(&web, T0 + 1, "first line", &[]),
        entry(
            &web,
            T0 + 1_000_000_000 + 123_456_789,
            "second \"quoted\" line",
            &[("trace_id", "abc123"), ("user", "u1")],
        ),
        entry(&db, T0 + 999_999_999, "", &[]),
        entry(&db, T0 + 5_000_000_000, "db line ✓", &[("k", "v")]),
    ]
}

fn two_streams_protobuf() -> Vec<u8> {
    let pair = |name: &str, value: &str| proto::LabelPairAdapter {
        name: name.to_string(),
        value: value.to_string(),
    };
    let e = |ts_ns: i64, line: &str, metadata: Vec<proto::LabelPairAdapter>| proto::EntryAdapter {
        timestamp: Some(timestamp(ts_ns)),
        line: line.as_bytes().to_vec(),
        structured_metadata: metadata,
        parsed: Vec::new(),
    };
    encode_push_request(&proto::PushRequest {
        streams: vec![
            proto::StreamAdapter {
                labels: r#"{app="web", msg="say \"hi\"", path="C:\\tmp"}"#.to_string(),
                entries: vec![
                    e(T0 + 1, "first line", vec![]),
                    e(
                        T0 + 1_000_000_000 + 123_456_789,
                        "second \"quoted\" line",
                        vec![pair("user", "u1"), pair("trace_id", "abc123")],
                    ),
                ],
                hash: 42,
            },
            proto::StreamAdapter {
                labels: r#"{app="db"}"#.to_string(),
                entries: vec![
                    e(T0 + 999_999_999, "", vec![]),
                    e(T0 + 5_000_000_000, "db line ✓", vec![pair("k", "v")]),
                ],
                hash: 0,
            },
        ],
        format: String::new(),
    })
}

fn two_streams_json() -> String {
    serde_json::json!({
        "streams": [
            {
                "stream": {"app": "web", "msg": "say \"hi\"", "path": "C:\\tmp"},
                "values": [
                    [(T0 + 1).to_string(), "first line"],
                    [
                        (T0 + 1_000_000_000 + 123_456_789).to_string(),
                        "second \"quoted\" line",
                        {"user": "u1", "trace_id": "abc123"}
                    ]
                ]
            },
            {
                "stream": {"app": "db"},
                "values": [
                    [(T0 + 999_999_999).to_string(), ""],
                    [(T0 + 5_000_000_000).to_string(), "db line ✓", {"k": "v"}]
                ]
            }
        ]
    })
    .to_string()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}
