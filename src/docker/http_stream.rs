//! A response body read over its own HTTP/1.1 connection, with the connection driven in the
//! same task (no background task per stream). Dropping an `HttpStream` closes the socket, so a
//! reader that is cancelled — for rotation or shutdown — releases its FD at once, idle or busy.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::Connection;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use super::endpoint::Conn;
use super::error::DockerError;

pub(crate) type ConnDriver = Pin<Box<Connection<TokioIo<Conn>, Empty<Bytes>>>>;

pub struct HttpStream {
    conn: Option<ConnDriver>,
    body: Incoming,
}

impl HttpStream {
    pub(crate) fn new(conn: Option<ConnDriver>, body: Incoming) -> Self {
        HttpStream { conn, body }
    }

    /// Next chunk of the body; `Ok(None)` at a clean end. Cancel-safe: dropping the future
    /// loses no data (hyper buffers nothing on our behalf between polls).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, DockerError> {
        loop {
            let frame = match self.conn.as_mut() {
                Some(conn) => {
                    tokio::select! {
                        biased;
                        frame = self.body.frame() => frame,
                        done = conn.as_mut() => {
                            self.conn = None;
                            done.map_err(|e| DockerError::Transport(e.to_string()))?;
                            continue;
                        }
                    }
                }
                None => self.body.frame().await,
            };
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(DockerError::Transport(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The next chunk if it is already available (buffered by hyper or readable without
    /// waiting), else `None`. Lets a reader gather what one read of the socket brought, even
    /// when the daemon sent it as many tiny HTTP chunks.
    pub fn try_next_chunk(&mut self) -> Option<Result<Option<Bytes>, DockerError>> {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(self.next_chunk()).as_mut().poll(&mut cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }
}
