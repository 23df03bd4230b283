//! What the receiver decodes and what it rejects: both push formats, gzip, bad requests,
//! Loki's label syntax.

use super::*;

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
