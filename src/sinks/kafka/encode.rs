//! A record → a Kafka message: topic and key from `sinks.kafka.topic` / `key` templates, value
//! the NDJSON record (as the file sink writes it, without the newline) or the raw line.
//!
//! Issue 14 (helper: encode): templates with placeholders of record fields (container_name,
//! container_id, compose_project, compose_service, image, stream, host, file, processing
//! fields, copied labels), `unknown` for a missing one, topic characters Kafka refuses → `_`,
//! compiled once; raw encoding; tests. The skeleton below is the simplest correct form.

use std::sync::Arc;

use crate::config::{KafkaEncoding, KafkaSinkConfig};
use crate::pipeline::{Batch, LogLine};

/// One message to produce (and to keep in the buffer or dead-letter store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: Arc<str>,
    pub key: Option<Arc<[u8]>>,
    pub value: Vec<u8>,
}

pub struct MessageEncoder {
    topic: Arc<str>,
    encoding: KafkaEncoding,
}

impl MessageEncoder {
    pub fn new(config: &KafkaSinkConfig) -> Result<Self, String> {
        Ok(MessageEncoder {
            topic: Arc::from(config.topic.as_str()),
            encoding: config.encoding,
        })
    }

    /// The messages of a batch's lines, in order, one per line, appended to `out`.
    pub fn encode(&self, batch: &Batch, out: &mut Vec<Message>) {
        let key: Arc<[u8]> = Arc::from(batch.container.id.as_bytes());
        for line in &batch.lines {
            out.push(Message {
                topic: Arc::clone(&self.topic),
                key: Some(Arc::clone(&key)),
                value: self.value(batch, line),
            });
        }
    }

    fn value(&self, batch: &Batch, line: &LogLine) -> Vec<u8> {
        match self.encoding {
            KafkaEncoding::Raw => line.message.to_vec(),
            KafkaEncoding::Ndjson => {
                let mut out = Vec::new();
                crate::sinks::ndjson::encode_line(&mut out, &batch.container, line);
                if out.last() == Some(&b'\n') {
                    out.pop();
                }
                out
            }
        }
    }
}
