//! What `json` and `logfmt` share: which keys of a parsed line to keep, and how they land
//! on the record.
//!
//! A parser offers every top-level key it meets ([`Extracted::want`]) and builds the value
//! only for keys kept; what it keeps waits in [`Extracted`] until the whole line has parsed,
//! so a line that fails half-way changes nothing ([`Extracted::commit`] after success).
//!
//! - `fields` empty: every key becomes a field; else only the keys listed.
//! - `message: KEY`: that key's value (a string unescaped, any other JSON value as its JSON
//!   text) replaces the record's message. The key is then not also a field, unless `fields`
//!   lists it.

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;

use crate::pipeline::LogLine;
use crate::processing::config::ParseConfig;
use crate::processing::record::FieldValue;

/// Field names of the all-keys mode are kept for reuse (lines of one source nearly always
/// share their keys), up to this many: a hostile source cannot grow the cache.
const NAME_CACHE: usize = 64;

/// Where a key of the parsed line goes.
pub(super) struct Want {
    pub field: Option<Arc<str>>,
    pub message: bool,
}

impl Want {
    pub fn any(&self) -> bool {
        self.field.is_some() || self.message
    }
}

/// The keys to keep, and what one line yielded.
#[derive(Clone, Debug)]
pub(super) struct Extracted {
    /// Keys listed in `fields` (empty: all).
    listed: Vec<Arc<str>>,
    message_key: Option<Box<str>>,
    names: Vec<Arc<str>>,
    pending: Vec<(Arc<str>, FieldValue)>,
    new_message: Option<String>,
    pub parse_failures: Counter,
}

impl Extracted {
    pub fn new(config: &ParseConfig, parse_failures: Counter) -> Self {
        Extracted {
            listed: config
                .fields
                .iter()
                .map(|f| Arc::from(f.as_str()))
                .collect(),
            message_key: config.message.as_deref().map(Box::from),
            names: Vec::new(),
            pending: Vec::new(),
            new_message: None,
            parse_failures,
        }
    }

    /// Forgets what a previous (failed) line left.
    pub fn start(&mut self) {
        self.pending.clear();
        self.new_message = None;
    }

    pub fn want(&mut self, key: &str) -> Want {
        let message = self.message_key.as_deref() == Some(key);
        let field = if self.listed.is_empty() {
            if message { None } else { Some(self.name(key)) }
        } else {
            self.listed.iter().find(|k| &***k == key).cloned()
        };
        Want { field, message }
    }

    fn name(&mut self, key: &str) -> Arc<str> {
        if let Some(name) = self.names.iter().find(|k| &***k == key) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(key);
        if self.names.len() < NAME_CACHE {
            self.names.push(Arc::clone(&name));
        }
        name
    }

    pub fn put(&mut self, want: Want, value: FieldValue) {
        match want.field {
            Some(name) => {
                if want.message {
                    self.new_message = Some(value.as_str().to_owned());
                }
                self.pending.push((name, value));
            }
            None if want.message => {
                self.new_message = Some(match value {
                    FieldValue::Str(s) | FieldValue::Json(s) => s,
                })
            }
            None => {}
        }
    }

    /// The line parsed: its kept keys become fields (a key met twice keeps the last value).
    pub fn commit(&mut self, line: &mut LogLine) {
        if let Some(message) = self.new_message.take() {
            line.message = Bytes::from(message);
        }
        if self.pending.is_empty() {
            return;
        }
        let fields = &mut line.extra_mut().fields;
        for (name, value) in self.pending.drain(..) {
            fields.set(name, value);
        }
    }

    /// The line did not parse: it passes on unchanged, counted.
    pub fn fail(&mut self) {
        self.start();
        self.parse_failures.inc();
    }
}
