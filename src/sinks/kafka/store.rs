//! How the Kafka sink keeps messages in its on-disk buffer and dead-letter store
//! (`<state_dir>/buffer/kafka`, `<state_dir>/dlq/kafka`, segment stores like Loki's).
//!
//! One store record holds one or more messages, in produce order:
//!
//! ```text
//! u32 LE header length | header (JSON) | message*
//! message = u32 LE topic length | topic | i32 LE key length (-1: no key) | key
//!         | u32 LE value length | value
//! ```
//!
//! The header says how many messages follow, when the record was written, and for a dead
//! letter why the broker (or the sink) refused it.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::encode::Message;
use super::error::RecordError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredHeader {
    pub messages: usize,
    /// When the record was written (ns since the epoch).
    pub written_ns: i64,
    /// Dead letters: why it was refused ("message of 2000000 bytes is over
    /// message_max_bytes (1048576)", "broker: MessageSizeTooLarge", …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The bytes of one store record holding `messages`.
pub fn encode_record(reason: Option<String>, messages: &[Message]) -> Vec<u8> {
    let header = StoredHeader {
        messages: messages.len(),
        written_ns: crate::clock::now_ns(),
        reason,
    };
    let head = serde_json::to_vec(&header).unwrap_or_default();
    let body: usize = messages
        .iter()
        .map(|m| 12 + m.topic.len() + m.key.as_ref().map_or(0, |k| k.len()) + m.value.len())
        .sum();
    let mut out = Vec::with_capacity(4 + head.len() + body);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    for m in messages {
        out.extend_from_slice(&(m.topic.len() as u32).to_le_bytes());
        out.extend_from_slice(m.topic.as_bytes());
        match &m.key {
            Some(k) => {
                out.extend_from_slice(&(k.len() as i32).to_le_bytes());
                out.extend_from_slice(k);
            }
            None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        }
        out.extend_from_slice(&(m.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&m.value);
    }
    out
}

/// A store record back to its header and messages; an error names what is wrong (a record
/// torn or corrupt on disk is skipped and counted by the caller, never guessed at).
pub fn decode_record(bytes: &[u8]) -> Result<(StoredHeader, Vec<Message>), RecordError> {
    let mut r = Reader { bytes, at: 0 };
    let head_len = r.u32("header length")? as usize;
    let head = r.take(head_len, "header")?;
    let header: StoredHeader = serde_json::from_slice(head).map_err(RecordError::Header)?;
    let mut messages = Vec::with_capacity(header.messages.min(bytes.len() / 12 + 1));
    for i in 0..header.messages {
        let what = |part: &str| format!("message {i}: {part}");
        let bad = |what: &'static str| RecordError::Message { index: i, what };
        let topic_len = r.u32(&what("topic length"))? as usize;
        let topic = std::str::from_utf8(r.take(topic_len, &what("topic"))?)
            .map_err(|_| bad("topic is not UTF-8"))?;
        let key_len = r.u32(&what("key length"))? as i32;
        let key = match key_len {
            -1 => None,
            n if n >= 0 => Some(Arc::from(r.take(n as usize, &what("key"))?)),
            _ => return Err(bad("negative key length")),
        };
        let value_len = r.u32(&what("value length"))? as usize;
        let value = r.take(value_len, &what("value"))?.to_vec();
        messages.push(Message {
            topic: Arc::from(topic),
            key,
            value,
        });
    }
    if r.at != bytes.len() {
        return Err(RecordError::Trailing {
            extra: bytes.len() - r.at,
            messages: header.messages,
        });
    }
    Ok((header, messages))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], RecordError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| RecordError::Truncated(what.to_string()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, RecordError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, key: Option<&[u8]>, value: &[u8]) -> Message {
        Message {
            topic: Arc::from(topic),
            key: key.map(Arc::from),
            value: value.to_vec(),
        }
    }

    #[test]
    fn records_round_trip() {
        let messages = vec![
            message("logs", Some(b"abc"), b"{\"message\":\"one\"}"),
            message("logs-web", None, b""),
            message("t", Some(b""), b"\xff\x00binary"),
        ];
        let bytes = encode_record(Some("too large".into()), &messages);
        let (header, back) = decode_record(&bytes).expect("decode");
        assert_eq!(back, messages);
        assert_eq!(header.messages, 3);
        assert_eq!(header.reason.as_deref(), Some("too large"));
        let (header, back) = decode_record(&encode_record(None, &[])).expect("empty");
        assert!(back.is_empty() && header.reason.is_none());
    }

    /// Every cut of a record is an error that names where it ends, never a panic or a
    /// shorter list of messages.
    #[test]
    fn torn_records_are_errors() {
        let bytes = encode_record(None, &[message("logs", Some(b"k"), b"value")]);
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(
            decode_record(&long)
                .expect_err("trailing")
                .to_string()
                .contains("after")
        );
    }
}
