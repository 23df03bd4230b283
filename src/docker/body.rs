//! HTTP/1.1 response body framing, without I/O: chunked, `Content-Length`, or until the
//! connection closes.
//!
//! Why by hand: dockerd flushes every log line as its own HTTP chunk, so a general client pays
//! its per-chunk cost (a frame, a channel hand-off, a wake-up) once per line. Here all the
//! complete chunks in one read are unframed in place into a single contiguous payload, which the
//! log decoder then slices frame by frame without copying.

use bytes::{Bytes, BytesMut};

/// A chunk-size or trailer line longer than this is not HTTP: the stream is corrupt.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last (zero-size) chunk: trailer lines until an empty one.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked(Chunked),
    /// `Content-Length`, with this many bytes to go.
    Length(u64),
    /// No length given: the body ends when the server closes the connection.
    UntilClose,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug)]
pub struct BodyDecoder {
    framing: Framing,
    /// A framing error, reported after the payload unframed before it has been taken.
    failed: Option<BodyError>,
}

impl BodyDecoder {
    pub fn chunked() -> Self {
        BodyDecoder {
            framing: Framing::Chunked(Chunked::Size),
            failed: None,
        }
    }

    pub fn length(n: u64) -> Self {
        BodyDecoder {
            framing: if n == 0 {
                Framing::Done
            } else {
                Framing::Length(n)
            },
            failed: None,
        }
    }

    pub fn until_close() -> Self {
        BodyDecoder {
            framing: Framing::UntilClose,
            failed: None,
        }
    }

    /// The whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The server closed the connection. Only a body delimited by the close may end there.
    pub fn end_of_input(&mut self) -> Result<(), BodyError> {
        match self.framing {
            Framing::Done => Ok(()),
            Framing::UntilClose => {
                self.framing = Framing::Done;
                Ok(())
            }
            Framing::Length(n) => Err(BodyError(format!(
                "connection closed with {n} bytes of the body still to come"
            ))),
            Framing::Chunked(_) => Err(BodyError(
                "connection closed in the middle of a chunked body".to_string(),
            )),
        }
    }

    /// Takes every body byte that `buf` holds, removing its framing; `None` if there was no
    /// payload. What is left in `buf` is an incomplete chunk-size line, a partial CRLF or bytes
    /// after the end of the body.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, BodyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.framing {
            Framing::Done => Ok(None),
            Framing::UntilClose => Ok(take(buf, buf.len())),
            Framing::Length(n) => {
                let len = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                let out = take(buf, len);
                let left = n - len as u64;
                self.framing = if left == 0 {
                    Framing::Done
                } else {
                    Framing::Length(left)
                };
                Ok(out)
            }
            Framing::Chunked(state) => {
                let (read, written) = match unchunk(state, buf) {
                    Ok((state, read, written)) => {
                        self.framing = state.map_or(Framing::Done, Framing::Chunked);
                        (read, written)
                    }
                    Err((e, read, written)) => {
                        self.failed = Some(e);
                        (read, written)
                    }
                };
                let mut consumed = buf.split_to(read);
                consumed.truncate(written);
                match (&self.failed, consumed.is_empty()) {
                    (Some(e), true) => Err(e.clone()),
                    _ => Ok((!consumed.is_empty()).then(|| consumed.freeze())),
                }
            }
        }
    }
}

fn take(buf: &mut BytesMut, len: usize) -> Option<Bytes> {
    (len > 0).then(|| buf.split_to(len).freeze())
}

/// Runs the chunked state machine over `buf`, moving chunk data down over the framing in place.
/// Returns the new state (`None` once the body is complete), how many bytes were consumed, and
/// how many payload bytes now start `buf`; on bad framing, the error with the same two counts
/// (the payload before it is good).
#[allow(clippy::type_complexity)]
fn unchunk(
    mut state: Chunked,
    buf: &mut [u8],
) -> Result<(Option<Chunked>, usize, usize), (BodyError, usize, usize)> {
    let (mut read, mut written) = (0usize, 0usize);
    loop {
        let rest = &buf[read..];
        match state {
            Chunked::Size => {
                let line = match line(rest) {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(e) => return Err((e, read, written)),
                };
                state = match chunk_size(&rest[..line.content]) {
                    Ok(0) => Chunked::Trailers,
                    Ok(n) => Chunked::Data(n),
                    Err(e) => return Err((e, read, written)),
                };
                read += line.total;
            }
            Chunked::Data(n) => {
                if rest.is_empty() {
                    break;
                }
                let len = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                if read != written {
                    buf.copy_within(read..read + len, written);
                }
                read += len;
                written += len;
                let left = n - len as u64;
                state = if left == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left)
                };
            }
            Chunked::DataEnd => {
                if rest.len() < 2 {
                    break;
                }
                if &rest[..2] != b"\r\n" {
                    let e = BodyError("chunk data not followed by CRLF".to_string());
                    return Err((e, read, written));
                }
                read += 2;
                state = Chunked::Size;
            }
            Chunked::Trailers => {
                let line = match line(rest) {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(e) => return Err((e, read, written)),
                };
                read += line.total;
                if line.content == 0 {
                    return Ok((None, read, written));
                }
            }
        }
    }
    Ok((Some(state), read, written))
}

struct Line {
    /// Length without the line ending.
    content: usize,
    /// Length with it.
    total: usize,
}

/// The first line of `bytes` (ended by LF, optionally CR LF), if complete.
fn line(bytes: &[u8]) -> Result<Option<Line>, BodyError> {
    match bytes.iter().take(MAX_LINE).position(|&b| b == b'\n') {
        Some(lf) => {
            let content = if lf > 0 && bytes[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            Ok(Some(Line {
                content,
                total: lf + 1,
            }))
        }
        None if bytes.len() >= MAX_LINE => Err(BodyError(format!(
            "chunk framing line longer than {MAX_LINE} bytes"
        ))),
        None => Ok(None),
    }
}

/// `1a2b` or `1a2b;ext=value`: the hex size, extensions ignored.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let after = &line[digits..];
    let rest_ok = after
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .is_none_or(|i| after[i] == b';');
    if digits == 0 || digits > 15 || !rest_ok {
        return Err(BodyError(format!(
            "bad chunk size line {:?}",
            String::from_utf8_lossy(&line[..line.len().min(40)])
        )));
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|e| BodyError(e.to_string()))?;
    u64::from_str_radix(text, 16).map_err(|e| BodyError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    /// Feeds `wire` in pieces of `step` bytes; returns the payload and whether the body ended.
    fn feed(mut decoder: BodyDecoder, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(b) = decoder.decode(&mut buf).expect("valid body") {
                out.extend_from_slice(&b);
            }
        }
        (out, decoder.is_done())
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let parts: [&[u8]; 4] = [b"hello ", b"", b"world", &[7u8; 300]];
        let parts: Vec<&[u8]> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let wire = chunked(&parts);
        let expected: Vec<u8> = parts.concat();
        for step in 1..=wire.len() {
            assert_eq!(
                feed(BodyDecoder::chunked(), &wire, step),
                (expected.clone(), true),
                "step {step}"
            );
        }
    }

    #[test]
    fn one_read_of_many_chunks_is_one_payload() {
        let lines: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let parts: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let mut buf = BytesMut::from(&chunked(&parts)[..]);
        let mut d = BodyDecoder::chunked();
        let payload = d.decode(&mut buf).expect("valid").expect("payload");
        assert_eq!(&payload[..], &parts.concat()[..]);
        assert!(d.is_done());
        assert!(buf.is_empty());
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn extensions_trailers_and_bare_lf_are_accepted() {
        let wire = b"5;name=value\r\nhello\r\n3\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(
            feed(BodyDecoder::chunked(), wire, 1),
            (b"helloabc".to_vec(), true)
        );
        assert_eq!(
            feed(BodyDecoder::chunked(), b"A \r\n0123456789\r\n0\r\n\r\n", 3),
            (b"0123456789".to_vec(), true)
        );
    }

    #[test]
    fn bytes_after_the_end_are_left_alone() {
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\nGARBAGE"[..]);
        let mut d = BodyDecoder::chunked();
        assert_eq!(
            d.decode(&mut buf).expect("valid").as_deref(),
            Some(&b"ok"[..])
        );
        assert!(d.is_done());
        assert_eq!(&buf[..], b"GARBAGE");
    }

    #[test]
    fn malformed_chunking_is_an_error() {
        for wire in [
            &b"zz\r\nhello\r\n"[..],
            b"\r\n",
            b"5 x\r\nhello\r\n",
            b"5\r\nhelloXX",
            b"ffffffffffffffff\r\n",
        ] {
            let mut buf = BytesMut::from(wire);
            let mut d = BodyDecoder::chunked();
            // Good payload before the bad framing comes first, then the error.
            let first = d.decode(&mut buf);
            assert!(
                first.is_err() || d.decode(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut buf = BytesMut::from(&[b'1'; MAX_LINE][..]);
        assert!(BodyDecoder::chunked().decode(&mut buf).is_err());
    }

    #[test]
    fn payload_before_bad_framing_is_delivered_then_the_error() {
        let mut buf = BytesMut::from(&b"2\r\nok\r\nzz\r\nmore"[..]);
        let mut d = BodyDecoder::chunked();
        assert_eq!(
            d.decode(&mut buf).expect("payload first").as_deref(),
            Some(&b"ok"[..])
        );
        assert!(d.decode(&mut buf).is_err());
        assert!(d.decode(&mut buf).is_err(), "the error stays");
    }

    #[test]
    fn a_close_ends_only_a_close_delimited_body() {
        let mut d = BodyDecoder::chunked();
        let mut buf = BytesMut::from(&b"5\r\nhel"[..]);
        assert_eq!(
            d.decode(&mut buf).expect("valid").as_deref(),
            Some(&b"hel"[..])
        );
        assert!(d.end_of_input().is_err());

        let mut d = BodyDecoder::length(10);
        let mut buf = BytesMut::from(&b"12345"[..]);
        assert_eq!(
            d.decode(&mut buf).expect("valid").as_deref(),
            Some(&b"12345"[..])
        );
        assert!(!d.is_done());
        assert!(d.end_of_input().is_err());

        let mut d = BodyDecoder::until_close();
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(
            d.decode(&mut buf).expect("valid").as_deref(),
            Some(&b"abc"[..])
        );
        assert!(d.end_of_input().is_ok());
        assert!(d.is_done());
    }

    #[test]
    fn content_length_stops_at_the_length() {
        assert_eq!(
            feed(BodyDecoder::length(5), b"hello", 2),
            (b"hello".to_vec(), true)
        );
        let mut buf = BytesMut::from(&b"hello, more"[..]);
        let mut d = BodyDecoder::length(5);
        assert_eq!(
            d.decode(&mut buf).expect("valid").as_deref(),
            Some(&b"hello"[..])
        );
        assert!(d.is_done());
        assert!(BodyDecoder::length(0).is_done());
    }
}
