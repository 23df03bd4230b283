//! Loki's push messages, written from the field numbers of grafana/loki `pkg/push/push.proto`,
//! and encoding them (for tests that send hand-made pushes to the receiver).
//!
//! The agent's encoder (`src/sinks/loki`) has its own copy of this schema. The duplication is
//! deliberate: this copy is written independently so that decoding what the agent sends checks
//! its encoder (a field number or wire type it gets wrong fails here), instead of trusting it by
//! sharing its definitions. Do not replace either with the other.

use prost::Message;

/// Loki's push messages (`logproto.PushRequest` of grafana/loki `pkg/push/push.proto`).
pub mod proto {
    /// `logproto.PushRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
        #[prost(string, tag = "2")]
        pub format: String,
    }

    /// `logproto.StreamAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        /// Loki label syntax: `{name="value", ...}`.
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    /// `logproto.EntryAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        /// A `string` in push.proto, read as bytes (same wire format): Loki does not check
        /// that a line is UTF-8, so neither does the receiver (it stores it lossily).
        #[prost(bytes = "vec", tag = "2")]
        pub line: Vec<u8>,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
        #[prost(message, repeated, tag = "4")]
        pub parsed: Vec<LabelPairAdapter>,
    }

    /// `logproto.LabelPairAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// Snappy-block-compressed protobuf `PushRequest` of `(labels, [(ts_ns, line)])` streams.
pub fn encode_push_protobuf(streams: &[(String, Vec<(i64, String)>)]) -> Vec<u8> {
    let req = proto::PushRequest {
        streams: streams
            .iter()
            .map(|(labels, entries)| proto::StreamAdapter {
                labels: labels.clone(),
                entries: entries
                    .iter()
                    .map(|(ts_ns, line)| proto::EntryAdapter {
                        timestamp: Some(timestamp(*ts_ns)),
                        line: line.clone().into_bytes(),
                        structured_metadata: Vec::new(),
                        parsed: Vec::new(),
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
        format: String::new(),
    };
    encode_push_request(&req)
}

/// Snappy-block-compressed protobuf of any `PushRequest`.
pub fn encode_push_request(req: &proto::PushRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compress")
}

/// A protobuf timestamp of nanoseconds since the UNIX epoch.
pub fn timestamp(ts_ns: i64) -> proto::Timestamp {
    proto::Timestamp {
        seconds: ts_ns.div_euclid(1_000_000_000),
        nanos: ts_ns.rem_euclid(1_000_000_000) as i32,
    }
}
