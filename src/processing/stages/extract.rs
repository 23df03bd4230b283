//! What `json` and `logfmt` share: which keys of a parsed line to keep, and how they land
//! on the record.
//!
//! A parser offers every top-level key it meets ([`Extracted::want`]) and builds the value
//! only for keys kept; what it keeps waits in [`Extracted`] until the whole line has parsed,
//! so a line that fails half-way changes nothing ([`Extracted::commit`] after success).
//!
//! - `fields` empty: every key becomes a field, in the line's order (the first 256 keys of a
//!   line); else only the keys listed, in the order listed (a stable field order whatever the
//!   line's key order).
//! - `message: KEY`: that key's value (a string unescaped, any other JSON value as its JSON
//!   text) replaces the record's message. The key is then not also a field, unless `fields`
//!   lists it.

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;

use crate::pipeline::LogLine;
use crate::processing::config::ParseConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::record::{FieldValue, lookup};
use crate::processing::stage::{StageContext, Verdict};

/// A parser: offers the keys of `text` to the [`Extracted`]; false if `text` does not parse.
pub(super) type Parser = fn(text: &[u8], out: &mut Extracted) -> bool;

/// The body of `json` and `logfmt`: what to parse, and where its keys go.
#[derive(Clone, Debug)]
pub(super) struct ParseStage {
    source: Option<String>,
    out: Extracted,
}

impl ParseStage {
    pub fn new(config: &ParseConfig, metrics: &StageMetrics) -> Self {
        ParseStage {
            source: config.source.clone(),
            out: Extracted::new(config, metrics.parse_failures.clone()),
        }
    }

    /// Parses `source` (the message by default) with `parse`; a missing `source` field is
    /// a parse failure like a line that does not parse.
    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>, parse: Parser) -> Verdict {
        self.out.start();
        let parsed = match &self.source {
            None => parse(&line.message, &mut self.out),
            Some(name) => match lookup(line, cx.container, name) {
                Some(text) => parse(text.as_bytes(), &mut self.out),
                None => false,
            },
        };
        if parsed {
            self.out.commit(line);
        } else {
            self.out.fail();
        }
        Verdict::Pass
    }
}

/// Field names of the all-keys mode are kept for reuse (lines of one source nearly always
/// share their keys), up to this many: a hostile source cannot grow the cache.
const NAME_CACHE: usize = 64;

/// In the all-keys mode, keys past this many in one line are not kept: setting a field is a
/// linear search (records have a handful), so an odd line with thousands of keys would cost
/// quadratic time.
pub(super) const MAX_KEYS: usize = 256;

/// Where a key of the parsed line goes.
pub(super) struct Want {
    pub field: Option<Arc<str>>,
    /// Position in `fields` (0 in the all-keys mode).
    rank: usize,
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
    pending: Vec<(usize, Arc<str>, FieldValue)>,
    new_message: Option<String>,
    parse_failures: Counter,
}

impl Extracted {
    fn new(config: &ParseConfig, parse_failures: Counter) -> Self {
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
    fn start(&mut self) {
        self.pending.clear();
        self.new_message = None;
    }

    pub fn want(&mut self, key: &str) -> Want {
        let message = self.message_key.as_deref() == Some(key);
        let (rank, field) = if self.listed.is_empty() {
            let room = self.pending.len() < MAX_KEYS;
            (0, (!message && room).then(|| self.name(key)))
        } else {
            match self.listed.iter().position(|k| &**k == key) {
                Some(rank) => (rank, Some(Arc::clone(&self.listed[rank]))),
                None => (0, None),
            }
        };
        Want {
            field,
            rank,
            message,
        }
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
                self.pending.push((want.rank, name, value));
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
    fn commit(&mut self, line: &mut LogLine) {
        if let Some(message) = self.new_message.take() {
            line.message = Bytes::from(message);
        }
        if self.pending.is_empty() {
            return;
        }
        if !self.listed.is_empty() {
            // Stable: a key met twice keeps its last value.
            self.pending.sort_by_key(|(rank, _, _)| *rank);
        }
        let fields = &mut line.extra_mut().fields;
        for (_, name, value) in self.pending.drain(..) {
            fields.set(name, value);
        }
    }

    /// The line did not parse: it passes on unchanged, counted.
    fn fail(&mut self) {
        self.start();
        self.parse_failures.inc();
    }
}
