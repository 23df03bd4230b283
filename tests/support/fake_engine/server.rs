//! The Engine API as the fake engine answers it: hand-rolled HTTP/1.1 (one request a
//! connection), version, listings, inspects, logs streams (chunked, multiplexed frames) and
//! the events stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

use super::{Container, Line, LogsPlan, Shared};

/// How long a new logs request waits for the previous connection of the same container to be
/// noticed as closed before both count as open at the same time. A client that closes its old
/// stream before opening the next one can still race the server noticing the close; a leaked
/// stream stays open forever and is counted anyway.
const OVERLAP_GRACE: Duration = Duration::from_secs(1);

pub(super) async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let task = tokio::spawn(handle(stream, Arc::clone(&shared)));
                shared.track(task.abort_handle());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Reads the request head; returns the target of a GET (None if the client went away).
async fn read_head(stream: &mut UnixStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next()?.split_whitespace();
    let _method = parts.next()?;
    parts.next().map(str::to_string)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Error",
    }
}

/// A short answer. Unless the engine is told to close after answering, the connection is
/// kept alive (HTTP/1.1 default, what dockerd does) until the client closes it.
async fn respond(stream: &mut UnixStream, shared: &Shared, status: u16, body: &str) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    if shared.lock().close_after_response {
        return;
    }
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn error_body(message: &str) -> String {
    serde_json::json!({ "message": message }).to_string()
}

/// Writes one HTTP chunk.
async fn write_chunk(w: &mut OwnedWriteHalf, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    w.write_all(&out).await?;
    w.flush().await
}

/// Reads (and discards) until the client closes the connection or it fails.
async fn until_closed(r: &mut OwnedReadHalf) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `SEC.NANOS` (Docker's `since`) to nanoseconds.
fn parse_since(v: &str) -> Option<i64> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    Some(secs * 1_000_000_000 + nanos)
}

async fn handle(mut stream: UnixStream, shared: Arc<Shared>) {
    let Some(target) = read_head(&mut stream).await else {
        return;
    };
    shared.lock().requests.push(target.clone());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    // Strip the `/vN.M` prefix.
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ => path,
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => {
            let version = shared
                .lock()
                .api_version
                .clone()
                .unwrap_or_else(|| "1.41".to_string());
            let body = format!(r#"{{"ApiVersion":"{version}","Version":"fake"}}"#);
            respond(&mut stream, &shared, 200, &body).await
        }
        ["containers", "json"] => {
            let all = query_param(query, "all") == Some("1");
            let fail = {
                let mut st = shared.lock();
                let fail_all = all && st.failing_all_lists > 0;
                if fail_all {
                    st.failing_all_lists -= 1;
                }
                let fail = fail_all || st.failing_lists > 0;
                st.failing_lists = st.failing_lists.saturating_sub(1);
                fail
            };
            if fail {
                let body = error_body("fake engine: listing failed");
                return respond(&mut stream, &shared, 500, &body).await;
            }
            let list: Vec<serde_json::Value> = shared
                .lock()
                .containers
                .iter()
                .filter(|c| all || c.running)
                .map(|c| {
                    let state = if c.running { "running" } else { "exited" };
                    serde_json::json!({ "Id": c.id, "Names": [format!("/{}", c.name)], "State": state })
                })
                .collect();
            respond(
                &mut stream,
                &shared,
                200,
                &serde_json::Value::from(list).to_string(),
            )
            .await;
        }
        ["containers", id, "json"] => {
            let fail = {
                let mut st = shared.lock();
                match st.failing_inspects.get_mut(*id) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                }
            };
            if fail {
                let body = error_body("fake engine: inspect failed");
                return respond(&mut stream, &shared, 500, &body).await;
            }
            let exit_after = {
                let mut st = shared.lock();
                if st.removed_during_inspect.remove(*id) {
                    st.containers.retain(|c| c.id != *id);
                }
                let delay = st.exit_during_inspect.remove(*id);
                if delay.is_some()
                    && let Some(c) = st.containers.iter_mut().find(|c| c.id == *id)
                {
                    c.running = false;
                }
                delay
            };
            if let Some(delay) = exit_after {
                tokio::time::sleep(delay).await;
            }
            let found = shared
                .lock()
                .containers
                .iter()
                .find(|c| c.id == *id)
                .map(Container::inspect_json);
            match found {
                Some(body) => respond(&mut stream, &shared, 200, &body).await,
                None => {
                    let body = error_body(&format!("No such container: {id}"));
                    respond(&mut stream, &shared, 404, &body).await;
                }
            }
        }
        ["containers", id, "logs"] => logs(stream, &shared, id, query).await,
        ["events"] => events(stream, &shared).await,
        _ => respond(&mut stream, &shared, 404, &error_body("page not found")).await,
    }
}

/// Counts a logs connection as open for as long as it lives.
struct OpenLogs {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for OpenLogs {
    fn drop(&mut self) {
        if let Some(s) = self.shared.lock().logs.get_mut(&self.id) {
            s.open -= 1;
        }
    }
}

async fn logs(mut stream: UnixStream, shared: &Arc<Shared>, id: &str, query: &str) {
    let since = query_param(query, "since")
        .and_then(parse_since)
        .unwrap_or(0);
    let found = {
        let mut st = shared.lock();
        let container = st.containers.iter().find(|c| c.id == id).cloned();
        if let Some(c) = &container {
            let stats = st.logs.entry(c.id.clone()).or_default();
            let plan = c.plans[stats.requests.min(c.plans.len() - 1)].clone();
            stats.requests += 1;
            stats.since.push(since);
            Some((c.clone(), plan))
        } else {
            None
        }
    };
    let Some((container, plan)) = found else {
        let body = error_body(&format!("No such container: {id}"));
        return respond(&mut stream, shared, 404, &body).await;
    };
    // Let a just-closed previous connection be noticed before counting this one as concurrent.
    let deadline = Instant::now() + OVERLAP_GRACE;
    while Instant::now() < deadline && shared.lock().logs[id].open > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _open = {
        let mut st = shared.lock();
        let stats = st.logs.get_mut(id).expect("stats");
        stats.open += 1;
        stats.max_open = stats.max_open.max(stats.open);
        OpenLogs {
            shared: Arc::clone(shared),
            id: id.to_string(),
        }
    };
    let (mut r, mut w) = stream.into_split();
    if let LogsPlan::Status(status, message) = &plan {
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reason_phrase(*status),
            error_body(message).len()
        );
        let _ = w.write_all(head.as_bytes()).await;
        let _ = w.write_all(error_body(message).as_bytes()).await;
        let _ = w.flush().await;
        // The client reads the body and closes: count the connection until then.
        until_closed(&mut r).await;
        return;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes()).await.is_err() || w.flush().await.is_err() {
        return;
    }
    let served: Vec<(usize, &Line)> = container
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| l.ts_ns >= since)
        .collect();
    match plan {
        LogsPlan::Follow | LogsPlan::End => {
            let body: Vec<u8> = served.iter().flat_map(|(_, l)| l.frame()).collect();
            if write_chunk(&mut w, &body).await.is_err() {
                return;
            }
            if matches!(plan, LogsPlan::End) {
                let _ = w.write_all(b"0\r\n\r\n").await;
                let _ = w.flush().await;
            }
            until_closed(&mut r).await;
        }
        LogsPlan::CutMidFrame { last_line } => {
            let body: Vec<u8> = served
                .iter()
                .filter(|(n, _)| *n <= last_line)
                .flat_map(|(_, l)| l.frame())
                .collect();
            if write_chunk(&mut w, &body).await.is_err() {
                return;
            }
            if let Some(next) = container.lines.get(last_line) {
                let frame = next.frame();
                let _ = write_chunk(&mut w, &frame[..frame.len() / 2]).await;
            }
            // Let the bytes reach the client, then drop both halves: the socket closes with
            // the chunked body unfinished.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        LogsPlan::LineByLine { every, pause } => {
            for (k, (_, line)) in served.iter().enumerate() {
                if write_chunk(&mut w, &line.frame()).await.is_err() {
                    return;
                }
                if (k + 1) % every.max(1) == 0 {
                    tokio::time::sleep(pause).await;
                }
            }
            until_closed(&mut r).await;
        }
        LogsPlan::Status(..) => unreachable!(),
    }
}

async fn events(stream: UnixStream, shared: &Arc<Shared>) {
    // Subscribe before answering: an event sent once the client sees the head is delivered.
    let mut rx = shared.events.subscribe();
    let mut drop_now = shared.drop_events.subscribe();
    let close_after = {
        let mut st = shared.lock();
        st.events_requests += 1;
        st.events_open += 1;
        if st.events_requests == 1 {
            st.close_first_events_after
        } else {
            None
        }
    };
    let (mut r, mut w) = stream.into_split();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let mut ok = w.write_all(head.as_bytes()).await.is_ok() && w.flush().await.is_ok();
    let closer = async {
        match close_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(closer);
    let mut closed_by_engine = false;
    let mut buf = [0u8; 1024];
    while ok {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(line) => ok = write_chunk(&mut w, line.as_bytes()).await.is_ok(),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            n = r.read(&mut buf) => if !matches!(n, Ok(n) if n > 0) { break },
            () = &mut closer => {
                closed_by_engine = true;
                break;
            }
            _ = drop_now.changed() => {
                closed_by_engine = true;
                break;
            }
        }
    }
    {
        let mut st = shared.lock();
        st.events_open -= 1;
        if closed_by_engine {
            // Appear before the client can notice the close (the socket closes when `w`
            // drops, after this).
            let added = std::mem::take(&mut st.after_events_drop);
            st.containers.extend(added);
        }
    }
    if closed_by_engine {
        let _ = w.write_all(b"0\r\n\r\n").await;
        let _ = w.flush().await;
    }
}
