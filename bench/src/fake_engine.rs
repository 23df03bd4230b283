//! A lean fake Engine API on a unix socket for benchmarks: pre-generated multiplexed frames
//! written as fast as the socket takes them (firehose), or streams that stay silent (idle).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use log_capturer::docker::timestamp::format_rfc3339_nanos;

pub struct FakeEngine {
    pub socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

struct Shared {
    ids: Vec<String>,
    /// The whole logs body of every container (they share it); None: idle streams.
    body: Option<Arc<Vec<u8>>>,
}

/// `lines` frames of about `line_bytes` bytes each (one in ten on stderr), with real
/// RFC3339Nano stamps an hour in the past, 1 µs apart.
pub fn frames(lines: usize, line_bytes: usize) -> (Vec<u8>, usize) {
    frames_of(lines, |i, text| {
        let start = text.len();
        text.push_str(&format!(
            "GET /api/v1/items/{i} HTTP/1.1 200 rt=0.0{} ",
            i % 97
        ));
        while text.len() - start < line_bytes - 1 {
            text.push('x');
        }
    })
}

/// `lines` frames whose messages `message(i, text)` appends to `text`, one in ten on stderr
/// (unless `stdout_only`), with real RFC3339Nano stamps an hour in the past, 1 µs apart.
/// Returns the body and the message bytes in it.
pub fn frames_of(lines: usize, message: impl Fn(usize, &mut String)) -> (Vec<u8>, usize) {
    frames_on(lines, false, message)
}

/// As [`frames_of`]; `stdout_only`: every line on stdout (multiline groups are per stream, so
/// stack-trace input must not be split between streams).
pub fn frames_on(
    lines: usize,
    stdout_only: bool,
    message: impl Fn(usize, &mut String),
) -> (Vec<u8>, usize) {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
        - 3_600_000_000_000;
    let mut out = Vec::with_capacity(lines * 140);
    let mut message_bytes = 0;
    let mut text = String::new();
    for i in 0..lines {
        text.clear();
        text.push_str(&format_rfc3339_nanos(base + i as i64 * 1000));
        text.push(' ');
        let start = text.len();
        message(i, &mut text);
        text.push('\n');
        message_bytes += text.len() - start - 1;
        let kind = if i % 10 == 9 && !stdout_only {
            2u8
        } else {
            1u8
        };
        out.extend_from_slice(&[kind, 0, 0, 0]);
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    (out, message_bytes)
}

impl FakeEngine {
    pub fn start(
        dir: &Path,
        containers: usize,
        body: Option<Vec<u8>>,
    ) -> Result<FakeEngine, String> {
        let socket = dir.join("engine.sock");
        let _ = std::fs::remove_file(&socket);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            ids: (0..containers).map(|i| format!("{:064x}", i + 1)).collect(),
            body: body.map(Arc::new),
        });
        let listener = {
            let _guard = runtime.enter();
            UnixListener::bind(&socket).map_err(|e| format!("{}: {e}", socket.display()))?
        };
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Ok(FakeEngine { socket, runtime })
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn stop(self) {
        self.runtime.shutdown_background();
    }
}

async fn serve(mut stream: UnixStream, shared: Arc<Shared>) {
    // Short requests may come several on one connection; logs/events hold it.
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let path = path
            .split_once('?')
            .map(|(p, _)| p.to_string())
            .unwrap_or(path);
        let rest = path.trim_start_matches('/');
        let rest = rest
            .split_once('/')
            .filter(|(v, _)| v.starts_with('v'))
            .map(|(_, r)| r)
            .unwrap_or(rest);
        if rest == "version" {
            if json(&mut stream, r#"{"ApiVersion":"1.41"}"#).await.is_err() {
                return;
            }
        } else if rest == "containers/json" {
            let list: Vec<String> = shared
                .ids
                .iter()
                .map(|id| format!(r#"{{"Id":"{id}"}}"#))
                .collect();
            if json(&mut stream, &format!("[{}]", list.join(",")))
                .await
                .is_err()
            {
                return;
            }
        } else if rest.starts_with("events") {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                .await;
            hold(&mut stream).await;
            return;
        } else if let Some(id) = rest
            .strip_prefix("containers/")
            .and_then(|r| r.strip_suffix("/json"))
        {
            let i = shared.ids.iter().position(|x| x == id).unwrap_or(0);
            let body = format!(
                r#"{{"Id":"{id}","Name":"/bench-{i}","Created":"2020-01-01T00:00:00Z","State":{{"Running":true}},"Config":{{"Tty":false,"Image":"bench:1","Labels":{{}}}}}}"#
            );
            if json(&mut stream, &body).await.is_err() {
                return;
            }
        } else if rest.ends_with("/logs") {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: close\r\n\r\n")
                .await;
            if let Some(body) = &shared.body
                && stream.write_all(body).await.is_err()
            {
                return;
            }
            hold(&mut stream).await;
            return;
        } else {
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    }
}

async fn json(stream: &mut UnixStream, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await
}

/// Keeps a stream open until the client closes it.
async fn hold(stream: &mut UnixStream) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}
