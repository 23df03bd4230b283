//! A record → a Kafka message: topic and key from the `sinks.kafka.topic` / `key` templates,
//! value the NDJSON record (exactly as the file sink writes it, without the newline) or the
//! raw line.
//!
//! Templates are parsed once ([`crate::config::kafka_template`]). A placeholder the record
//! lacks (or has empty) renders as `unknown`; a rendered topic has the characters Kafka
//! refuses replaced by `_` and is cut to 249 bytes. Container fields (`container_name`,
//! `container_id`, `image`, `compose_project`, `compose_service`, `host`, `file`) come from
//! the source (a host file's `container_id` is `<host>:<path>`); `stream`, `level`, processing fields and copied container labels are looked up
//! per record ([`crate::processing::lookup`]: a processing field overrides a copied label).
//!
//! This runs for every line (≥ 500k lines/s), so a record whose topic and key can only depend
//! on its source and stream — the template names no per-record field, or the record has no
//! processing extras — reuses one `Arc` topic and key per (container, stream), cached across
//! batches.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::error::KafkaConfigError;
use crate::config::kafka_template::{
    CONTAINER_FIELDS, MISSING, TemplateError, TemplatePart, parse_template, sanitize_topic,
};
use crate::config::{KafkaEncoding, KafkaSinkConfig};
use crate::pipeline::{Batch, ContainerMeta, LogLine, SourceKind};

/// One message to produce (and to keep in the buffer or dead-letter store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: Arc<str>,
    pub key: Option<Arc<[u8]>>,
    pub value: Vec<u8>,
}

/// Bytes of an NDJSON record besides its message and its source's pre-encoded fields.
const RECORD_ROOM: usize = 96;

/// Cached (container, stream) entries beyond which the dead ones are dropped.
const CACHE_PRUNE_AT: usize = 4096;

struct Template {
    parts: Vec<TemplatePart>,
    /// Names a per-record field (anything but a container field and `stream`).
    per_record: bool,
    stream: bool,
}

impl Template {
    fn new(template: &str) -> Result<Self, TemplateError> {
        let parts = parse_template(template)?;
        let field = |p: &TemplatePart| match p {
            TemplatePart::Field(name) => Some(name.clone()),
            TemplatePart::Text(_) => None,
        };
        let names: Vec<String> = parts.iter().filter_map(field).collect();
        Ok(Template {
            per_record: names
                .iter()
                .any(|n| n != "stream" && !CONTAINER_FIELDS.contains(&n.as_str())),
            stream: names.iter().any(|n| n == "stream"),
            parts,
        })
    }

    fn render(&self, host: &str, meta: &ContainerMeta, line: &LogLine) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Field(name) => out.push_str(
                    resolve(host, meta, line, name)
                        .as_deref()
                        .unwrap_or(MISSING),
                ),
            }
        }
        out
    }
}

/// The value of a placeholder for a record; None when it has none (or an empty one).
fn resolve<'a>(
    host: &'a str,
    meta: &'a ContainerMeta,
    line: &'a LogLine,
    name: &str,
) -> Option<Cow<'a, str>> {
    let value = match name {
        "host" => match &meta.kind {
            SourceKind::File { host } => Some(Cow::Borrowed(host.as_str())),
            SourceKind::Container => Some(Cow::Borrowed(host)),
        },
        // A host file has no stdout/stderr: only a field named `stream`.
        "stream" if meta.is_file() => line
            .fields()
            .and_then(|f| f.get(name))
            .map(|v| Cow::Borrowed(v.as_str())),
        // A host file has no container id: `<host>:<path>` keeps the default key
        // (`{container_id}`) one per file of each host (not one `unknown` for all of them).
        "container_id" if let SourceKind::File { host } = &meta.kind => {
            Some(Cow::Owned(format!("{host}:{}", meta.name)))
        }
        n if CONTAINER_FIELDS.contains(&n) => meta.field(n).map(Cow::Borrowed),
        _ => crate::processing::lookup(line, meta, name),
    };
    value.filter(|v| !v.is_empty())
}

#[derive(Clone)]
struct Rendered {
    topic: Arc<str>,
    key: Option<Arc<[u8]>>,
}

/// Cache key: the container's `Arc` address (kept unique by the `Weak` in the entry: its
/// allocation cannot be reused while the entry lives) and the stream when a template uses it.
type CacheKey = (usize, u8);

pub struct MessageEncoder {
    topic: Template,
    /// None: messages have no key.
    key: Option<Template>,
    encoding: KafkaEncoding,
    /// This machine's hostname: `{host}` of container records.
    host: String,
    cache: Mutex<HashMap<CacheKey, (Weak<ContainerMeta>, Rendered)>>,
}

impl MessageEncoder {
    pub fn new(config: &KafkaSinkConfig) -> Result<Self, KafkaConfigError> {
        let template = |field: &'static str, text: &str| {
            Template::new(text).map_err(|reason| KafkaConfigError::Template { field, reason })
        };
        let topic = template("topic", &config.topic)?;
        let key = if config.key.is_empty() {
            None
        } else {
            Some(template("key", &config.key)?)
        };
        Ok(MessageEncoder {
            topic,
            key,
            encoding: config.encoding,
            host: crate::sinks::loki::encode::this_hostname(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The messages of a batch's lines, in order, one per line, appended to `out`.
    pub fn encode(&self, batch: &Batch, out: &mut Vec<Message>) {
        out.reserve(batch.lines.len());
        let per_record = self.topic.per_record || self.key.as_ref().is_some_and(|k| k.per_record);
        let uses_stream = self.topic.stream || self.key.as_ref().is_some_and(|k| k.stream);
        // A host file's `stream` is a field of the record, not its source's.
        let per_record = per_record || (uses_stream && batch.container.is_file());
        // The last (stream → rendered) of this batch: lines of one stream come in runs.
        let mut last: Option<(u8, Rendered)> = None;
        for line in &batch.lines {
            let rendered = if per_record && has_extras(line) {
                self.render(&batch.container, line)
            } else {
                let stream = if uses_stream { line.stream as u8 } else { 0 };
                match &last {
                    Some((s, r)) if *s == stream => r.clone(),
                    _ => {
                        let r = self.cached(&batch.container, stream, line);
                        last = Some((stream, r.clone()));
                        r
                    }
                }
            };
            out.push(Message {
                topic: rendered.topic,
                key: rendered.key,
                value: self.value(batch, line),
            });
        }
    }

    fn render(&self, meta: &ContainerMeta, line: &LogLine) -> Rendered {
        let topic = sanitize_topic(&self.topic.render(&self.host, meta, line));
        Rendered {
            topic: Arc::from(topic),
            key: (self.key.as_ref())
                .map(|k| Arc::from(k.render(&self.host, meta, line).into_bytes())),
        }
    }

    /// The rendering for a record of `container` and `stream` without per-record extras.
    fn cached(&self, container: &Arc<ContainerMeta>, stream: u8, line: &LogLine) -> Rendered {
        let key = (Arc::as_ptr(container) as usize, stream);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, r)) = cache.get(&key) {
            return r.clone();
        }
        if cache.len() >= CACHE_PRUNE_AT {
            cache.retain(|_, (weak, _)| weak.strong_count() > 0);
            if cache.len() >= CACHE_PRUNE_AT {
                cache.clear();
            }
        }
        let plain = LogLine {
            extra: None,
            ..line.clone()
        };
        let r = self.render(container, &plain);
        cache.insert(key, (Arc::downgrade(container), r.clone()));
        r
    }

    fn value(&self, batch: &Batch, line: &LogLine) -> Vec<u8> {
        match self.encoding {
            KafkaEncoding::Raw => line.message.to_vec(),
            KafkaEncoding::Ndjson => {
                // The message, the source's pre-encoded fields, and room for the rest (the
                // timestamp, stream, host and the JSON punctuation).
                let capacity =
                    line.message.len() + batch.container.ndjson_fields().len() + RECORD_ROOM;
                let mut out = Vec::with_capacity(capacity);
                crate::sinks::ndjson::encode_line(&mut out, &batch.container, line);
                if out.last() == Some(&b'\n') {
                    out.pop();
                }
                out
            }
        }
    }
}

/// Whether processing gave the record fields or a level (what a per-record placeholder reads).
fn has_extras(line: &LogLine) -> bool {
    line.extra
        .as_deref()
        .is_some_and(|e| e.level.is_some() || !e.fields.is_empty())
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
