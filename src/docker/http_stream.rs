//! One HTTP/1.1 GET over its own connection, and its response body read as a stream.
//!
//! The Engine API is only ever asked GETs without a body, one per connection, so the client
//! side of HTTP/1.1 needed here is small: write the request, parse the head (httparse), and
//! unframe the body ([`BodyDecoder`]). Owning the socket directly means that dropping an
//! `HttpStream` closes it — how a reader cancelled for rotation or shutdown releases its FD at
//! once, idle or busy — and that one read of the socket becomes one payload, however many HTTP
//! chunks the daemon split it into.

use bytes::{BufMut, Bytes, BytesMut};
use std::io;

use super::body::BodyDecoder;
use super::endpoint::{Conn, ParkedConn};
use super::error::DockerError;
use super::read_pool::{READ_POOL, ReadPool};

/// A response head larger than this is not from the Docker engine.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// Reads start at this size and double while they fill the buffer (a busy stream), up to
/// `MAX_READ` and as far as the shared [`ReadPool`] allows; they shrink back after small
/// reads, so a trickle does not pin a large buffer.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// The socket, watched by the reactor only while someone waits on it.
enum Socket {
    Live(Conn),
    Parked(ParkedConn),
}

pub struct HttpStream {
    /// `None` only if moving the socket in or out of the reactor failed (it is then closed).
    socket: Option<Socket>,
    /// Bytes read and not yet decoded. Emptied (and its allocation let go) before waiting, so
    /// an idle stream holds no read buffer.
    buf: BytesMut,
    body: BodyDecoder,
    /// Room per read: `MIN_READ`, plus what was taken from `pool`.
    read_size: usize,
    pool: &'static ReadPool,
    /// The last read found the socket emptier than the room it was given.
    drained: bool,
}

impl Drop for HttpStream {
    fn drop(&mut self) {
        self.pool.give_back(self.read_size - MIN_READ);
    }
}

fn transport(e: io::Error) -> DockerError {
    DockerError::Transport(e.to_string())
}

fn closed() -> DockerError {
    DockerError::Transport("the stream's socket was lost".to_string())
}

/// Sends `GET path` on `conn` and reads the response head; the body is left to the stream.
pub(crate) async fn get(conn: Conn, path: &str) -> Result<(u16, HttpStream), DockerError> {
    get_with_pool(conn, path, &READ_POOL).await
}

async fn get_with_pool(
    mut conn: Conn,
    path: &str,
    pool: &'static ReadPool,
) -> Result<(u16, HttpStream), DockerError> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: log-capturer/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    conn.send(request.as_bytes()).await.map_err(transport)?;
    let mut buf = BytesMut::with_capacity(MIN_READ);
    loop {
        if conn.is_plain_tcp() && buf.first().is_some_and(|b| *b == 0x15 || *b == 0x16) {
            // A TLS record (alert or handshake) in answer to plain HTTP.
            return Err(DockerError::tls_port("the daemon answered with TLS"));
        }
        if let Some((status, body, head_len)) = parse_head(&buf)? {
            let _ = buf.split_to(head_len);
            if (100..200).contains(&status) {
                continue; // an interim answer (100 Continue, 103 Early Hints): the real one follows
            }
            let stream = HttpStream {
                socket: Some(Socket::Live(conn)),
                buf,
                body,
                read_size: MIN_READ,
                pool,
                drained: false,
            };
            return Ok((status, stream));
        }
        if buf.len() >= MAX_HEAD {
            return Err(DockerError::Decode(format!(
                "response head longer than {MAX_HEAD} bytes"
            )));
        }
        buf.reserve(MIN_READ);
        conn.readable().await.map_err(transport)?;
        match conn.try_read_buf(&mut buf) {
            Ok(0) => {
                return Err(DockerError::Transport(
                    "connection closed before the response head".to_string(),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(transport(e)),
        }
    }
}

/// The status, body framing and head length once `buf` holds a complete head.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(u16, BodyDecoder, usize)>, DockerError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(DockerError::Decode(format!("bad response head: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    // RFC 9112 §6.3: a transfer coding other than chunked last means "read until close",
    // and it overrides any Content-Length.
    let codings: Vec<String> = header("transfer-encoding")
        .flat_map(|v| {
            v.split(',')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        BodyDecoder::length(0)
    } else if codings.last().is_some_and(|c| c == "chunked") {
        BodyDecoder::chunked()
    } else if !codings.is_empty() {
        BodyDecoder::until_close()
    } else if let Some(v) = header("content-length").next() {
        let n = v
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| v.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| DockerError::Decode(format!("bad Content-Length {v:?}")))?;
        BodyDecoder::length(n)
    } else {
        BodyDecoder::until_close()
    };
    Ok(Some((status, body, head_len)))
}

impl HttpStream {
    /// The next piece of the body; `Ok(None)` at its end. Cancel-safe: the only wait is for
    /// readability, and everything read is kept in `self` until decoded.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, DockerError> {
        loop {
            if let Some(next) = self.try_next_chunk() {
                return next;
            }
            if self.buf.is_empty() {
                // Caught up and about to wait: an idle stream keeps no buffer, and the next
                // line after the wait starts small again (a burst grows reads back quickly).
                self.buf = BytesMut::new();
                self.resize_reads(MIN_READ);
            }
            self.live()?.readable().await.map_err(transport)?;
        }
    }

    /// Stops watching the socket until the next wait: for a reader that pauses between reads
    /// on purpose. A watched socket wakes the reactor at every write of the daemon — once per
    /// log line — even though nobody is waiting for it.
    pub fn park(&mut self) -> Result<(), DockerError> {
        match self.socket.take() {
            Some(Socket::Live(conn)) => {
                self.socket = Some(Socket::Parked(conn.park().map_err(transport)?));
            }
            other => self.socket = other,
        }
        Ok(())
    }

    fn live(&mut self) -> Result<&Conn, DockerError> {
        if let Some(Socket::Parked(_)) = self.socket
            && let Some(Socket::Parked(parked)) = self.socket.take()
        {
            self.socket = Some(Socket::Live(parked.unpark().map_err(transport)?));
        }
        match &self.socket {
            Some(Socket::Live(conn)) => Ok(conn),
            _ => Err(closed()),
        }
    }

    /// Whether the last read emptied the socket: reading again at once would find little or
    /// nothing (a syscall for a few lines at best).
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// The next piece of the body if it can be had without waiting, else `None`: what is
    /// buffered, or else one non-blocking read of the socket.
    pub fn try_next_chunk(&mut self) -> Option<Result<Option<Bytes>, DockerError>> {
        if let Some(next) = self.decode() {
            return Some(next);
        }
        match self.read_now() {
            Ok(true) => self.decode(),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// What the buffered bytes give: a payload, the end of the body, an error, or `None` when
    /// more must be read.
    fn decode(&mut self) -> Option<Result<Option<Bytes>, DockerError>> {
        match self.body.decode(&mut self.buf) {
            Ok(Some(b)) => Some(Ok(Some(b))),
            Ok(None) if self.body.is_done() => Some(Ok(None)),
            Ok(None) => None,
            Err(e) => Some(Err(DockerError::Transport(e.to_string()))),
        }
    }

    /// Grows reads only with room from the pool (else they stay as they are); gives room back
    /// when they shrink.
    fn resize_reads(&mut self, size: usize) {
        if size > self.read_size {
            if self.pool.try_take(size - self.read_size) {
                self.read_size = size;
            }
        } else {
            self.pool.give_back(self.read_size - size);
            self.read_size = size;
        }
    }

    /// One non-blocking read: `Ok(true)` if it brought bytes or the end of the input.
    fn read_now(&mut self) -> Result<bool, DockerError> {
        self.buf.reserve(self.read_size);
        let room = (self.buf.capacity() - self.buf.len()).min(self.read_size);
        let read = match &mut self.socket {
            Some(Socket::Live(conn)) => conn.try_read_buf(&mut (&mut self.buf).limit(room)),
            Some(Socket::Parked(parked)) => parked.try_read_buf(&mut self.buf, room),
            None => return Err(closed()),
        };
        match read {
            Ok(0) => {
                self.body
                    .end_of_input()
                    .map_err(|e| DockerError::Transport(e.to_string()))?;
                Ok(true)
            }
            Ok(n) => {
                self.drained = n < room;
                if n >= room {
                    self.resize_reads((self.read_size * 2).min(MAX_READ));
                } else if n < self.read_size / 4 {
                    self.resize_reads((self.read_size / 2).max(MIN_READ));
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(transport(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn busy_streams_share_a_bounded_read_room_and_give_it_back() {
        // A pool with room for one stream at full size: three busy streams grow only as far
        // as it goes, read everything, and return their room when dropped.
        let pool: &'static ReadPool = Box::leak(Box::new(ReadPool::new(MAX_READ - MIN_READ)));
        let body = vec![b'x'; 4 * 1024 * 1024];
        let mut streams = Vec::new();
        let mut writers = Vec::new();
        for _ in 0..3 {
            let (ours, mut theirs) = tokio::net::UnixStream::pair().expect("socket pair");
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let body = body.clone();
            writers.push(tokio::spawn(async move {
                theirs.write_all(head.as_bytes()).await.expect("head");
                theirs.write_all(&body).await.expect("body");
            }));
            let (status, stream) = get_with_pool(Conn::Unix(ours), "/x", pool)
                .await
                .expect("head");
            assert_eq!(status, 200);
            streams.push(stream);
        }
        let mut peak = 0;
        for stream in &mut streams {
            let mut read = 0;
            while let Some(chunk) = stream.next_chunk().await.expect("body") {
                read += chunk.len();
                peak = peak.max(pool.taken());
            }
            assert_eq!(read, body.len());
        }
        assert!(peak > 0, "a busy stream never grew its reads");
        drop(streams);
        assert_eq!(pool.taken(), 0, "room not given back");
        for w in writers {
            w.await.expect("writer");
        }
    }

    #[test]
    fn heads_choose_the_body_framing() {
        let (status, body, len) = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n",
        )
        .expect("valid")
        .expect("complete");
        assert_eq!((status, len), (200, 64));
        assert!(!body.is_done());

        let (status, body, _) = parse_head(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(status, 404);
        assert!(body.is_done());

        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
                .expect("valid")
                .is_none()
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n").is_err());
        // A coding other than chunked last: until the close, whatever the length says.
        let (_, mut body, _) =
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n")
                .expect("valid")
                .expect("complete");
        let mut rest = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(
            body.decode(&mut rest).expect("ok").as_deref(),
            Some(&b"abcdef"[..])
        );
        assert!(!body.is_done());
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
    }
}
