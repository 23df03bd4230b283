//! The Loki test receiver (testkit/src/loki.rs, feature `loki`) itself, so that the agent's Loki sink tests
//! can trust it: decoding of both push formats, rejections, and every fault mode. The client
//! side is raw HTTP/1.1 over std `TcpStream`.

mod support;

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

#[test]
fn protobuf_push_with_two_streams_is_decoded_exactly() {
    let rx = LokiReceiver::start();
    let body = two_streams_protobuf();
    let resp = push(
        &rx,
        &[
            ("Content-Type", PROTOBUF),
            ("X-Scope-OrgID", "tenant-a"),
            ("Authorization", "Basic dXNlcjpwdw=="),
        ],
        &body,
    );
    assert_eq!(resp.status, 204, "body: {}", resp.body);
    assert_eq!(rx.entries(), two_streams_expected());

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.status, 204);
    assert_eq!(r.content_type, PROTOBUF);
    assert_eq!(r.content_encoding, None);
    assert_eq!(r.tenant.as_deref(), Some("tenant-a"));
    assert_eq!(r.authorization.as_deref(), Some("Basic dXNlcjpwdw=="));
    assert_eq!(r.header("x-scope-orgid"), Some("tenant-a"));
    assert_eq!(r.entries, 4);
    assert_eq!(r.body_bytes, body.len());
    assert_eq!(r.error, None);

    // The stored body decodes the same way offline.
    assert_eq!(
        decode_push(PROTOBUF, None, &body).expect("decode"),
        two_streams_expected()
    );
    // `Content-Encoding: snappy` is tolerated, as in Loki.
    assert_eq!(
        decode_push(PROTOBUF, Some("snappy"), &body).expect("decode"),
        two_streams_expected()
    );

    rx.clear();
    assert!(rx.entries().is_empty() && rx.requests().is_empty());
}

#[test]
fn encode_push_protobuf_round_trips() {
    let streams = vec![
        (
            r#"{job="x", q="a\"b"}"#.to_string(),
            vec![(T0 + 7, "one".to_string()), (T0 + 8, "two".to_string())],
        ),
        (
            r#"{job="y"}"#.to_string(),
            vec![(-1, "before 1970".to_string())],
        ),
    ];
    let entries = decode_push(PROTOBUF, None, &encode_push_protobuf(&streams)).expect("decode");
    let x = [("job", "x"), ("q", "a\"b")];
    assert_eq!(
        entries,
        vec![
            entry(&x, T0 + 7, "one", &[]),
            entry(&x, T0 + 8, "two", &[]),
            entry(&[("job", "y")], -1, "before 1970", &[]),
        ]
    );
}

#[test]
fn json_push_plain_and_gzip_give_the_same_entries() {
    let rx = LokiReceiver::start();
    let json = two_streams_json();
    let resp = push(&rx, &[("Content-Type", JSON)], json.as_bytes());
    assert_eq!(resp.status, 204, "body: {}", resp.body);
    assert_eq!(rx.entries(), two_streams_expected());

    rx.clear();
    let gz = gzip(json.as_bytes());
    let resp = push(
        &rx,
        &[
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Encoding", "gzip"),
        ],
        &gz,
    );
    assert_eq!(resp.status, 204, "body: {}", resp.body);
    assert_eq!(rx.entries(), two_streams_expected());
    let r = &rx.requests()[0];
    assert_eq!(r.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(r.body_bytes, gz.len());
    assert_eq!(r.entries, 4);

    assert_eq!(
        decode_push(JSON, Some("gzip"), &gz).expect("decode"),
        two_streams_expected()
    );
    // gzip-compressed protobuf is accepted too (Loki un-gzips before un-snappying).
    assert_eq!(
        decode_push(PROTOBUF, Some("gzip"), &gzip(&two_streams_protobuf())).expect("decode"),
        two_streams_expected()
    );
}

/// A bad request: what it is, its headers, its body, a part of the error it gets.
type BadCase = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    &'static str,
);

#[test]
fn bad_requests_get_400_and_nothing_is_stored() {
    let rx = LokiReceiver::start();
    let good = two_streams_protobuf();
    let raw_good = snap::raw::Decoder::new()
        .decompress_vec(&good)
        .expect("own body");
    let framed = |raw: &[u8]| {
        let mut enc = snap::write::FrameEncoder::new(Vec::new());
        enc.write_all(raw).expect("frame");
        enc.into_inner().expect("framed")
    };
    let bad_labels =
        |labels: &str| encode_push_protobuf(&[(labels.to_string(), vec![(T0, "x".to_string())])]);

    let protobuf = vec![("Content-Type", PROTOBUF)];
    let json = vec![("Content-Type", JSON)];
    let cases: Vec<BadCase> = vec![
        (
            "wrong content type",
            vec![("Content-Type", "text/plain")],
            good.clone(),
            "unsupported Content-Type",
        ),
        ("no content type", vec![], good.clone(), "no media type"),
        (
            "unsupported content encoding",
            vec![("Content-Type", PROTOBUF), ("Content-Encoding", "br")],
            good.clone(),
            "Content-Encoding \"br\" not supported",
        ),
        (
            "garbage body",
            protobuf.clone(),
            b"\x00\x01garbage\xff\xfe not snappy at all".to_vec(),
            "snappy",
        ),
        (
            "snappy block of garbage protobuf",
            protobuf.clone(),
            snap::raw::Encoder::new()
                .compress_vec(b"\xff\xff\xff\xff not protobuf")
                .expect("snappy"),
            "protobuf",
        ),
        (
            "protobuf not compressed",
            protobuf.clone(),
            raw_good.clone(),
            "snappy",
        ),
        (
            "snappy framed (small request)",
            protobuf.clone(),
            framed(&encode_raw_one_stream()),
            "snappy",
        ),
        (
            "snappy framed (full request)",
            protobuf.clone(),
            framed(&raw_good),
            "snappy",
        ),
        (
            "unbalanced braces",
            protobuf.clone(),
            bad_labels(r#"{app="web""#),
            "couldn't parse labels",
        ),
        (
            "unquoted value",
            protobuf.clone(),
            bad_labels("{app=web}"),
            "couldn't parse labels",
        ),
        (
            "unterminated escaped quote",
            protobuf.clone(),
            bad_labels(r#"{app="web\"}"#),
            "couldn't parse labels",
        ),
        (
            "no labels",
            protobuf.clone(),
            bad_labels("{}"),
            "stream without labels",
        ),
        (
            "empty labels string",
            protobuf.clone(),
            bad_labels(""),
            "couldn't parse labels",
        ),
        (
            "regexp matcher",
            protobuf.clone(),
            bad_labels(r#"{app=~"web"}"#),
            "couldn't parse labels",
        ),
        (
            "garbage JSON",
            json.clone(),
            b"{\"streams\": [".to_vec(),
            "invalid JSON",
        ),
        (
            "JSON stream without labels",
            json.clone(),
            br#"{"streams":[{"stream":{},"values":[["1","x"]]}]}"#.to_vec(),
            "stream without labels",
        ),
        (
            "JSON numeric timestamp",
            json.clone(),
            br#"{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}"#.to_vec(),
            "timestamp is not a string",
        ),
        (
            "JSON bad label name",
            json.clone(),
            br#"{"streams":[{"stream":{"a-b":"c"},"values":[["1","x"]]}]}"#.to_vec(),
            "invalid label name",
        ),
        (
            "gzip header on a plain body",
            vec![("Content-Type", JSON), ("Content-Encoding", "gzip")],
            two_streams_json().into_bytes(),
            "gzip",
        ),
    ];
    let mut client = Client::connect(&rx);
    for (name, headers, body, reason) in &cases {
        let resp = client.push(headers, body);
        assert_eq!(resp.status, 400, "{name}: body {:?}", resp.body);
        assert!(!resp.body.trim().is_empty(), "{name}: empty 400 body");
        assert!(
            resp.header("content-type")
                .is_some_and(|v| v.starts_with("text/plain")),
            "{name}: {:?}",
            resp.headers
        );
        let last = rx.requests().pop().expect("recorded");
        assert_eq!(last.status, 400, "{name}");
        let error = last.error.unwrap_or_default();
        assert!(error.contains(reason), "{name}: {error:?}");
        assert!(resp.body.contains(reason), "{name}: {:?}", resp.body);
    }
    assert_eq!(rx.requests().len(), cases.len());
    assert!(rx.entries().is_empty(), "{:?}", rx.entries());
    // A 400 keeps the connection usable, as in Loki.
    assert_eq!(
        client.push(&[("Content-Type", PROTOBUF)], &good).status,
        204
    );
    assert_eq!(rx.entries().len(), 4);
}

/// The uncompressed protobuf of a one-entry push.
fn encode_raw_one_stream() -> Vec<u8> {
    snap::raw::Decoder::new()
        .decompress_vec(&encode_push_protobuf(&[(
            r#"{a="b"}"#.to_string(),
            vec![(T0, "framed".to_string())],
        )]))
        .expect("own body")
}

#[test]
fn label_syntax() {
    assert_eq!(
        parse_labels(r#"  { a = "1",b="x\\y\"z" ,c=`raw\n`, d="\n\t\x41\u00e9\101"}  "#),
        Ok(map(&[
            ("a", "1"),
            ("b", "x\\y\"z"),
            ("c", "raw\\n"),
            ("d", "\n\tAéA"),
        ]))
    );
    assert_eq!(parse_labels("{}"), Ok(BTreeMap::new()));
    for bad in [
        "",
        "{",
        "a=\"b\"",
        r#"{a="b",}"#,
        r#"{a="b" c="d"}"#,
        r#"{a="b", a="c"}"#,
        r#"{1a="b"}"#,
        r#"{a="b\q"}"#,
        r#"{a='b'}"#,
        r#"{a="b"} x"#,
        r#"{a!="b"}"#,
        "{a=\"b\nc\"}",
    ] {
        assert!(parse_labels(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn status_mode_answers_the_code_and_stores_nothing() {
    let rx = LokiReceiver::start();
    let body = two_streams_protobuf();
    rx.set_mode(Mode::Status {
        code: 429,
        retry_after: Some(7),
        body: "Ingestion rate limit exceeded".to_string(),
    });
    let resp = push(&rx, &[("Content-Type", PROTOBUF)], &body);
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert_eq!(resp.body, "Ingestion rate limit exceeded");
    assert!(rx.entries().is_empty());
    let r = &rx.requests()[0];
    assert_eq!((r.status, r.entries, r.error.clone()), (429, 4, None));

    rx.set_mode(Mode::Status {
        code: 500,
        retry_after: None,
        body: "boom".to_string(),
    });
    let resp = push(&rx, &[("Content-Type", PROTOBUF)], &body);
    assert_eq!((resp.status, resp.header("retry-after")), (500, None));
    assert!(rx.entries().is_empty());

    rx.set_mode(Mode::Accept);
    let resp = push(&rx, &[("Content-Type", PROTOBUF)], &body);
    assert_eq!(resp.status, 204);
    assert_eq!(rx.entries(), two_streams_expected());
    let statuses: Vec<u16> = rx.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 500, 204]);
}

#[test]
fn set_mode_after_switches_after_n_requests() {
    let rx = LokiReceiver::start();
    let body = encode_push_protobuf(&[(r#"{a="b"}"#.to_string(), vec![(T0, "x".to_string())])]);
    rx.set_mode_after(
        2,
        Mode::Status {
            code: 503,
            retry_after: None,
            body: "unavailable".to_string(),
        },
    );
    let mut client = Client::connect(&rx);
    let statuses: Vec<u16> = (0..4)
        .map(|_| client.push(&[("Content-Type", PROTOBUF)], &body).status)
        .collect();
    assert_eq!(statuses, [204, 204, 503, 503]);
    assert_eq!(rx.entries().len(), 2);

    // To Down after one more: that answer is still written, then the port is closed.
    rx.set_mode(Mode::Accept);
    rx.set_mode_after(1, Mode::Down);
    assert_eq!(
        client.push(&[("Content-Type", PROTOBUF)], &body).status,
        204
    );
    assert!(
        support::wait_until(Duration::from_secs(5), || TcpStream::connect((
            "127.0.0.1",
            rx.port()
        ))
        .is_err()),
        "still listening"
    );
    rx.set_mode(Mode::Accept);
    assert_eq!(push(&rx, &[("Content-Type", PROTOBUF)], &body).status, 204);
}

#[test]
fn down_refuses_connections_and_up_serves_the_same_port() {
    let rx = LokiReceiver::start();
    let url = rx.url();
    let body = two_streams_protobuf();
    let mut idle = Client::connect(&rx);
    assert_eq!(idle.push(&[("Content-Type", PROTOBUF)], &body).status, 204);

    rx.set_mode(Mode::Down);
    let err = TcpStream::connect(("127.0.0.1", rx.port())).expect_err("connected while down");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // The connection that was open is closed by the receiver.
    let mut byte = [0u8; 1];
    match idle.stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("open connection not closed: {other:?}"),
    }

    rx.set_mode(Mode::Accept);
    assert_eq!(rx.url(), url);
    assert_eq!(push(&rx, &[("Content-Type", PROTOBUF)], &body).status, 204);
    assert_eq!(rx.entries().len(), 8);

    // Down and up again, quickly.
    for _ in 0..3 {
        rx.set_mode(Mode::Down);
        assert!(TcpStream::connect(("127.0.0.1", rx.port())).is_err());
        rx.set_mode(Mode::Accept);
        assert_eq!(push(&rx, &[("Content-Type", PROTOBUF)], &body).status, 204);
    }
}

#[test]
fn hang_never_answers_until_the_mode_changes() {
    let rx = LokiReceiver::start();
    let body = two_streams_protobuf();
    rx.set_mode(Mode::Hang);
    let mut client = Client::connect(&rx);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    client.send_push(&[("Content-Type", PROTOBUF)], &body);
    let started = Instant::now();
    let err = client
        .read_response()
        .err()
        .expect("answered while hanging");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(client.buf.is_empty(), "got bytes: {:?}", client.buf);
    let r = &rx.requests()[0];
    assert_eq!((r.status, r.entries), (0, 4));
    assert!(rx.entries().is_empty());

    // Leaving Hang closes the hanging connection, without an answer.
    rx.set_mode(Mode::Accept);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut rest = Vec::new();
    match client.stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(push(&rx, &[("Content-Type", PROTOBUF)], &body).status, 204);
    assert_eq!(rx.entries().len(), 4);
}

#[test]
fn slow_stores_at_once_and_answers_after_the_delay() {
    let rx = LokiReceiver::start();
    let body = two_streams_protobuf();
    rx.set_mode(Mode::Slow {
        delay: Duration::from_millis(1500),
    });
    let mut client = Client::connect(&rx);
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("read timeout");
    client.send_push(&[("Content-Type", PROTOBUF)], &body);
    let started = Instant::now();
    let err = client.read_response().err().expect("answered at once");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    // Ingested before the answer: a client that gives up now has delivered anyway.
    assert_eq!(rx.entries().len(), 4);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let r = client.read_response().expect("the late answer");
    assert_eq!(r.status, 204);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(rx.requests()[0].status, 204);
}

#[test]
fn reset_closes_without_an_answer() {
    let rx = LokiReceiver::start();
    let body = two_streams_protobuf();
    rx.set_mode(Mode::Reset);
    let mut client = Client::connect(&rx);
    client.send_push(&[("Content-Type", PROTOBUF)], &body);
    let mut got = Vec::new();
    let result = client.stream.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    match result {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(_) => panic!("closed with FIN, expected a RST"),
    }
    let r = &rx.requests()[0];
    assert_eq!((r.status, r.entries), (0, 4));
    assert!(rx.entries().is_empty());

    rx.set_mode(Mode::Accept);
    assert_eq!(push(&rx, &[("Content-Type", PROTOBUF)], &body).status, 204);
    assert_eq!(rx.entries().len(), 4);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let rx = LokiReceiver::start();
    let mut client = Client::connect(&rx);
    let body = |line: &str| {
        encode_push_protobuf(&[(r#"{job="ka"}"#.to_string(), vec![(T0, line.to_string())])])
    };
    assert_eq!(
        client
            .push(&[("Content-Type", PROTOBUF)], &body("one"))
            .status,
        204
    );
    assert_eq!(
        client
            .push(&[("Content-Type", PROTOBUF)], &body("two"))
            .status,
        204
    );
    // A chunked body, then a pipelined pair written at once.
    client.send_push_chunked(&[("Content-Type", PROTOBUF)], &body("three"));
    assert_eq!(client.read_response().expect("response").status, 204);
    client.send_push(&[("Content-Type", JSON)], two_streams_json().as_bytes());
    client.send_push(&[("Content-Type", PROTOBUF)], &body("four"));
    assert_eq!(client.read_response().expect("response").status, 204);
    assert_eq!(client.read_response().expect("response").status, 204);

    assert_eq!(rx.connections(), 1);
    let lines = rx.lines();
    assert_eq!(lines[..3], ["one", "two", "three"]);
    assert_eq!(lines[lines.len() - 1], "four");
    assert_eq!(lines.len(), 4 + 4);
    assert_eq!(rx.requests().len(), 5);

    // Other paths and methods.
    client
        .stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: loki\r\n\r\n")
        .expect("write");
    assert_eq!(client.read_response().expect("response").status, 200);
    client
        .stream
        .write_all(format!("GET {PUSH_PATH} HTTP/1.1\r\nHost: loki\r\n\r\n").as_bytes())
        .expect("write");
    assert_eq!(client.read_response().expect("response").status, 405);
    // `Connection: close` is honoured.
    client.send_push(
        &[("Content-Type", PROTOBUF), ("Connection", "close")],
        &body("five"),
    );
    let resp = client.read_response().expect("response");
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("connection"), Some("close"));
    let mut rest = Vec::new();
    client.stream.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty());
    assert_eq!(rx.requests().len(), 6);
}
