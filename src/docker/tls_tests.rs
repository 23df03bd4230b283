use super::*;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// Encryption only: these tests are about reading, not about trust.
fn unverified() -> ClientTls {
    ClientTls {
        ca: None,
        ca_only: true,
        cert: None,
        key: None,
        verify: false,
        origin: "test".to_string(),
    }
}

#[test]
fn environment_follows_the_docker_cli() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().to_str().expect("utf-8").to_string();
    // Nothing set, or only DOCKER_CERT_PATH, or empty values: no TLS.
    assert_eq!(settings(None, env(&[])), Ok(None));
    assert_eq!(settings(None, env(&[("DOCKER_CERT_PATH", &d)])), Ok(None));
    assert_eq!(
        settings(None, env(&[("DOCKER_TLS_VERIFY", ""), ("DOCKER_TLS", "")])),
        Ok(None)
    );
    // Verify needs ca.pem, and names it.
    let err = settings(
        None,
        env(&[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", &d)]),
    )
    .expect_err("no ca.pem")
    .to_string();
    assert!(
        err.contains("DOCKER_TLS_VERIFY") && err.contains("ca.pem"),
        "{err}"
    );
    std::fs::write(dir.path().join("ca.pem"), "x").expect("ca");
    let s = settings(
        None,
        env(&[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", &d)]),
    )
    .expect("ok")
    .expect("tls");
    assert!(s.verify && s.ca.is_some() && s.cert.is_none());
    // DOCKER_TLS: encrypt only, the CA is not used; a client pair is presented if whole.
    std::fs::write(dir.path().join("cert.pem"), "x").expect("cert");
    let err = settings(None, env(&[("DOCKER_TLS", "1"), ("DOCKER_CERT_PATH", &d)]))
        .expect_err("cert without key")
        .to_string();
    assert!(err.contains("key.pem"), "{err}");
    std::fs::write(dir.path().join("key.pem"), "x").expect("key");
    let s = settings(None, env(&[("DOCKER_TLS", "1"), ("DOCKER_CERT_PATH", &d)]))
        .expect("ok")
        .expect("tls");
    assert!(!s.verify && s.ca.is_none() && s.cert.is_some() && s.key.is_some());
    // Default directory: ~/.docker.
    let s = settings(None, env(&[("DOCKER_TLS", "1"), ("HOME", "/nonexistent")]))
        .expect("ok")
        .expect("tls");
    assert!(s.cert.is_none());
    // The config section wins over the environment.
    let c = DockerTlsConfig {
        verify: false,
        ..DockerTlsConfig::default()
    };
    let s = settings(
        Some(&c),
        env(&[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", &d)]),
    )
    .expect("ok")
    .expect("tls");
    assert!(!s.verify && s.ca.is_none() && s.origin == "docker.tls");
}

/// A TLS record bigger than one read leaves plaintext inside rustls once the socket is
/// drained; it must be read before waiting on the socket, which stays silent (here: a
/// 12 KiB response head in one record, a first read with room for 8 KiB, and a server
/// that then says nothing more and keeps the connection open).
#[tokio::test]
async fn plaintext_left_in_the_session_is_read_without_waiting_on_the_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("handshake");
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.expect("request");
            request.push(byte[0]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 5\r\n\r\nhello",
            "x".repeat(12 * 1024)
        );
        tls.write_all(head.as_bytes()).await.expect("answer");
        tls.flush().await.expect("flush");
        // Silent, connection open, until the test is done.
        let _ = done_rx.await;
    });
    let client = TlsClient::new(unverified(), &format!("localhost:{port}")).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let conn = client.connect(tcp).await.expect("handshake");
    let exchange = async {
        let (status, mut stream) =
            crate::docker::http_stream::get(crate::docker::Conn::Tls(Box::new(conn)), "/x")
                .await
                .expect("head");
        let body = stream.next_chunk().await.expect("body").expect("a chunk");
        (status, body)
    };
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .expect("stuck waiting on the socket with plaintext inside rustls");
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"hello");
    let _ = done_tx.send(());
    server.await.expect("server");
}

/// TLS configured, the port plain HTTP: the handshake error says so.
#[tokio::test]
async fn a_plain_http_port_is_named_when_tls_is_configured() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
    });
    let client = TlsClient::new(unverified(), &format!("127.0.0.1:{port}")).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let err = match client.connect(tcp).await {
        Ok(_) => panic!("a handshake with an HTTP server"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("TLS handshake") && err.contains("plain HTTP port"),
        "{err}"
    );
    server.await.expect("server");
}
