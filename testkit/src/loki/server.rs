//! Listening (binding, going down and coming back up on the same port) and hand-rolled
//! HTTP/1.1: request heads, bodies (chunked or sized), answers, and the connection loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::modes::push;
use super::{PUSH_PATH, RequestInfo, Shared};

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (after de-chunking, before decompression).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long leaving `Mode::Down` keeps retrying to bind the same port.
const REBIND_FOR: Duration = Duration::from_secs(5);

pub(super) fn bind(port: u16) -> std::io::Result<TcpListener> {
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
pub(super) async fn supervise(
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

enum HttpError {
    /// The client went away (or the socket failed).
    Gone,
    /// Malformed request: answer this status and text, then close.
    Bad(u16, String),
}

pub(super) struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    /// Close after answering (`Connection: close`, or HTTP/1.0 without keep-alive).
    pub(super) close: bool,
}

impl Head {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
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

pub(super) struct Conn {
    pub(super) stream: TcpStream,
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
    pub(super) async fn respond(
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

pub(super) fn request_info(
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
