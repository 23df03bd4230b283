//! The fault modes (status, switch after n requests, down, hang, slow, reset) and keep-alive.

use super::*;

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
