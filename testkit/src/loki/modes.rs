//! What the receiver does with a push request in each `Mode`: store and answer, answer late,
//! answer an error status, hang, reset, or be down.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::Shared;
use super::decode::decode_push;
use super::server::{Conn, Head, request_info};

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

/// Handles one push request; false when the connection is to be closed.
pub(super) async fn push(
    conn: &mut Conn,
    shared: &Arc<Shared>,
    head: &Head,
    body: Vec<u8>,
) -> bool {
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
