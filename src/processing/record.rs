//! What processing adds to a record: extracted fields, level, event time, and what the Loki
//! sink should do with it. Boxed behind an `Option` in [`LogLine`], so a line that no
//! pipeline touches carries one null pointer and allocates nothing.

use std::borrow::Cow;
use std::sync::Arc;

use crate::pipeline::{ContainerMeta, LogLine};

/// A field's value: text, or the raw JSON of a non-string value taken from a JSON line
/// (a number, `true`, an object …), which the NDJSON sinks write back as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    Str(String),
    Json(String),
}

impl FieldValue {
    /// The value as text (raw JSON for a non-string value).
    pub fn as_str(&self) -> &str {
        match self {
            FieldValue::Str(s) | FieldValue::Json(s) => s,
        }
    }
}

/// Fields in the order they were first set: the order of the NDJSON `fields` object.
/// Records have a handful of fields, so a vector beats a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<(Arc<str>, FieldValue)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| &**k == name).map(|(_, v)| v)
    }

    /// Sets `name`, keeping its place if it was set before.
    pub fn set(&mut self, name: Arc<str>, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    /// Renames `from` to `to` where `from` stands (an existing `to` is replaced); false if
    /// `from` is not set.
    pub fn rename(&mut self, from: &str, to: Arc<str>) -> bool {
        let Some(mut i) = self.0.iter().position(|(k, _)| &**k == from) else {
            return false;
        };
        if &*to != from
            && let Some(j) = self.0.iter().position(|(k, _)| *k == to)
        {
            self.0.remove(j);
            if j < i {
                i -= 1;
            }
        }
        self.0[i].0 = to;
        true
    }

    pub fn remove(&mut self, name: &str) -> Option<FieldValue> {
        let i = self.0.iter().position(|(k, _)| &**k == name)?;
        Some(self.0.remove(i).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Normalised severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// The level a common spelling means (case-insensitive): `WARNING`, `err`, `crit`, `E` …
    pub fn parse(text: &str) -> Option<Level> {
        let t = text.trim();
        let is = |names: &[&str]| names.iter().any(|n| t.eq_ignore_ascii_case(n));
        Some(if is(&["trace", "trc", "t", "finest", "finer"]) {
            Level::Trace
        } else if is(&["debug", "dbg", "d", "fine", "verbose"]) {
            Level::Debug
        } else if is(&["info", "inf", "i", "information", "informational", "notice"]) {
            Level::Info
        } else if is(&["warn", "warning", "wrn", "w"]) {
            Level::Warn
        } else if is(&["error", "err", "e", "eror", "severe"]) {
            Level::Error
        } else if is(&["fatal", "crit", "critical", "panic", "emerg", "alert", "f"]) {
            Level::Fatal
        } else {
            return None;
        })
    }
}

/// What processing added to one record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    pub fields: Fields,
    pub level: Option<Level>,
    /// The event time a `timestamp` stage found (ns since the epoch); sinks show it as the
    /// record's time. Docker's timestamp (`LogLine::ts_ns`) stays the resume cursor.
    pub event_ns: Option<i64>,
    /// Promoted to Loki stream labels (name, value), in stage order.
    pub labels: Vec<(Arc<str>, String)>,
    /// Sent to Loki as structured metadata (name, value).
    pub metadata: Vec<(Arc<str>, String)>,
    /// The Loki tenant (`X-Scope-OrgID`); None: the sink's own.
    pub tenant: Option<Arc<str>>,
    /// Lines a multiline stage joined into this record (0: not a joined record).
    pub joined_lines: u32,
}

/// Heap bytes of a string as the allocator sees it (a malloc chunk holds at least 32 bytes).
fn heap(len: usize) -> usize {
    if len == 0 { 0 } else { len.max(16) + 16 }
}

impl Extra {
    /// What the extras hold on the heap, estimated as an allocator sees it (each allocation's
    /// header and minimum size included): the queue budget charges it, so a pipeline that
    /// adds fields cannot make the queue outgrow `pipeline.queue_bytes`. Names are not
    /// counted: they are `Arc`s shared with the config or the parse stages' name cache.
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(Arc<str>, FieldValue)>();
        let pairs = |v: &Vec<(Arc<str>, String)>| -> usize {
            heap(v.capacity() * std::mem::size_of::<(Arc<str>, String)>())
                + v.iter().map(|(_, s)| heap(s.len())).sum::<usize>()
        };
        heap(std::mem::size_of::<Extra>())
            + heap(self.fields.0.capacity() * entry)
            + self
                .fields
                .0
                .iter()
                .map(|(_, v)| heap(v.as_str().len()))
                .sum::<usize>()
            + pairs(&self.labels)
            + pairs(&self.metadata)
            + self.tenant.as_ref().map_or(0, |t| heap(t.len()))
    }
}

impl LogLine {
    /// The record's extras, created on first use.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    pub fn fields(&self) -> Option<&Fields> {
        self.extra.as_deref().map(|e| &e.fields)
    }

    pub fn level(&self) -> Option<Level> {
        self.extra.as_deref().and_then(|e| e.level)
    }

    /// The time sinks show: the event time if a stage set one, else Docker's.
    pub fn display_ns(&self) -> i64 {
        self.extra
            .as_deref()
            .and_then(|e| e.event_ns)
            .unwrap_or(self.ts_ns)
    }
}

/// The value of `name` for a record: `message`, `stream`, `level`, a field, a container
/// field (`container_name`, `container_id`, `image`, `compose_project`, `compose_service`)
/// or a container label copied by `processing.container_labels` — in that order.
pub fn lookup<'a>(line: &'a LogLine, meta: &'a ContainerMeta, name: &str) -> Option<Cow<'a, str>> {
    match name {
        "message" => return Some(String::from_utf8_lossy(&line.message)),
        "stream" => return Some(Cow::Borrowed(line.stream.as_str())),
        // The normalised level once a level stage set it; before that, a field `level`.
        "level" => {
            if let Some(l) = line.level() {
                return Some(Cow::Borrowed(l.as_str()));
            }
        }
        _ => {}
    }
    if let Some(v) = line.fields().and_then(|f| f.get(name)) {
        return Some(Cow::Borrowed(v.as_str()));
    }
    meta.field(name).map(Cow::Borrowed)
}
