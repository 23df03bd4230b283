//! The Loki sink's on-disk stores: the buffer (batches waiting for Loki, replayed in order) and
//! the dead letters (batches Loki rejected, kept with the reason). Both hold encoded request
//! bodies in the segment store, each record prefixed by a small JSON header.
//!
//! The header's `tenant` (the push's `X-Scope-OrgID`, from a tenant stage) is written only
//! when the push has one, so a record without it reads as before: the sink's configured
//! tenant, which is what records written before tenants existed were sent with.

use serde::{Deserialize, Serialize};

use super::encode::EncodedBatch;
pub use crate::buffer::SharedStore;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordHeader {
    pub content_type: String,
    pub content_encoding: Option<String>,
    pub entries: usize,
    /// When the record was written (ns since the epoch).
    pub written_ns: i64,
    /// Dead letters: why Loki rejected it ("400: entry too far behind ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The push's own tenant; absent: the sink's configured `tenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

pub fn encode_record(header: &RecordHeader, body: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + head.len() + body.len());
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    out
}

/// Why a stored record does not decode (a corrupt or truncated buffer / dead-letter record).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record shorter than its header length")]
    NoHeaderLength,
    #[error("record shorter than its header")]
    ShortHeader,
    #[error("record header: {0}")]
    Header(#[source] serde_json::Error),
}

pub fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, Vec<u8>), DecodeError> {
    let len = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(DecodeError::NoHeaderLength)?;
    let head = bytes.get(4..4 + len).ok_or(DecodeError::ShortHeader)?;
    let header: RecordHeader = serde_json::from_slice(head).map_err(DecodeError::Header)?;
    Ok((header, bytes[4 + len..].to_vec()))
}

impl RecordHeader {
    pub fn for_batch(batch: &EncodedBatch, reason: Option<String>) -> Self {
        RecordHeader {
            content_type: batch.content_type.to_string(),
            content_encoding: batch.content_encoding.map(str::to_string),
            entries: batch.entries,
            written_ns: crate::clock::now_ns(),
            reason,
            tenant: batch.tenant.clone(),
        }
    }

    /// Back to a sendable batch (content type strings map onto the ones the encoder uses).
    pub fn to_batch(&self, body: Vec<u8>) -> EncodedBatch {
        EncodedBatch {
            body,
            content_type: if self.content_type == "application/json" {
                "application/json"
            } else {
                "application/x-protobuf"
            },
            content_encoding: self.content_encoding.as_deref().map(|_| "gzip"),
            entries: self.entries,
            tenant: self.tenant.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let h = RecordHeader {
            content_type: "application/json".into(),
            content_encoding: Some("gzip".into()),
            entries: 3,
            written_ns: 5,
            reason: Some("400: nope".into()),
            tenant: Some("team-a".into()),
        };
        let bytes = encode_record(&h, b"body");
        let (h2, body) = decode_record(&bytes).expect("decode");
        assert_eq!(h2, h);
        assert_eq!(body, b"body");
        assert!(decode_record(b"\x01").is_err());
        assert_eq!(h2.to_batch(Vec::new()).tenant.as_deref(), Some("team-a"));
    }

    /// Records written before tenants existed read as the sink's own tenant; records without
    /// a tenant are written exactly as before.
    #[test]
    fn records_without_tenant_keep_the_old_format() {
        let old = br#"{"content_type":"application/x-protobuf","content_encoding":null,"entries":2,"written_ns":7}"#;
        let mut bytes = (old.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(old);
        bytes.extend_from_slice(b"body");
        let (h, body) = decode_record(&bytes).expect("old record");
        assert_eq!(h.tenant, None);
        assert_eq!(h.to_batch(body).tenant, None);
        assert_eq!(
            encode_record(&h, b"body"),
            bytes,
            "same bytes as the old format"
        );
    }
}
