//! Stream labels and structured metadata of a record (see the module documentation of
//! [`super`]), and the label string Loki reads them as.

use std::borrow::Cow;

use super::super::proto::LabelPairAdapter;
use super::{Encoder, Modified, cut};
use crate::config::{MAX_LABEL_VALUE, valid_label_name};
use crate::pipeline::{ContainerMeta, LogLine};

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Encoder {
    /// The value of a configured label or metadata name for a record: `host`, or what
    /// [`crate::processing::lookup`] finds (`stream`, `level`, a record field, a container
    /// field, a copied container label; for a host file `file`, a group field). Never the
    /// message. None when unset or empty.
    pub(super) fn value<'a>(
        &'a self,
        meta: &'a ContainerMeta,
        line: &'a LogLine,
        name: &str,
    ) -> Option<Cow<'a, str>> {
        match name {
            "host" => Some(Cow::Borrowed(self.host.as_str())),
            "message" => None,
            _ if meta.is_file() => Self::file_value(meta, line, name),
            _ => crate::processing::lookup(line, meta, name),
        }
        .filter(|v| !v.is_empty())
    }

    /// [`Encoder::value`] for a host file's record: no `stream` (a file has no stdout or
    /// stderr; only a field of that name), and `filename` is the path unless a field of that
    /// name says otherwise (as `file` is).
    pub(super) fn file_value<'a>(
        meta: &'a ContainerMeta,
        line: &'a LogLine,
        name: &str,
    ) -> Option<Cow<'a, str>> {
        match name {
            "stream" => line
                .fields()
                .and_then(|f| f.get(name))
                .map(|v| Cow::Borrowed(v.as_str()))
                .or_else(|| meta.field(name).map(Cow::Borrowed)),
            "filename" => crate::processing::lookup(line, meta, name)
                .or(Some(Cow::Borrowed(meta.name.as_str()))),
            _ => crate::processing::lookup(line, meta, name),
        }
    }

    /// Whether a record's stream labels may differ from those of its container's stream:
    /// it has labels of its own, or a configured label comes from its fields or level.
    pub(super) fn labels_vary(&self, line: &LogLine) -> bool {
        let Some(e) = line.extra.as_deref() else {
            return false;
        };
        !e.labels.is_empty()
            || self.labels.iter().any(|n| match n.as_str() {
                // A level stage's level, or (without one) a field named level.
                "level" => e.level.is_some() || e.fields.get("level").is_some(),
                "stream" | "host" | "message" => false,
                _ => e.fields.get(n).is_some(),
            })
            || self.file_label.is_some_and(|n| e.fields.get(n).is_some())
    }

    /// Label set of a record's stream, sorted by name, values cut to Loki's limit.
    pub(super) fn label_pairs(
        &self,
        meta: &ContainerMeta,
        line: &LogLine,
        modified: &mut Modified,
    ) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self.static_labels.clone();
        let mut add = |name: &str, v: &str, modified: &mut Modified| {
            let value = cut(v, MAX_LABEL_VALUE);
            if value.len() < v.len() {
                modified.label_values_cut += 1;
            }
            match pairs.iter_mut().find(|(k, _)| k == name) {
                Some(pair) => pair.1 = value.to_string(),
                None => pairs.push((name.to_string(), value.to_string())),
            }
        };
        for name in &self.labels {
            if let Some(v) = self.value(meta, line, name) {
                add(name, &v, modified);
            }
        }
        if let Some(name) = self.file_label.filter(|_| meta.is_file()) {
            // A host file's stream always names its file (and so has a label).
            if let Some(v) = Self::file_value(meta, line, name).filter(|v| !v.is_empty()) {
                add(name, &v, modified);
            }
        }
        for (name, v) in line.extra.iter().flat_map(|e| e.labels.iter()) {
            if !valid_label_name(name) {
                // Loki would refuse the whole push for it.
                modified.labels_invalid += 1;
            } else if !v.is_empty() {
                add(name, v, modified);
            }
        }
        pairs.sort();
        pairs
    }

    pub(super) fn label_string(pairs: &[(String, String)]) -> String {
        let mut s = String::from("{");
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(k);
            s.push_str("=\"");
            escape_label_value(&mut s, v);
            s.push('"');
        }
        s.push('}');
        s
    }

    /// `level_is_label`: the record's stream has a `level` label (then no `level` metadata).
    pub(super) fn metadata_pairs(
        &self,
        meta: &ContainerMeta,
        line: &LogLine,
        level_is_label: bool,
    ) -> Vec<LabelPairAdapter> {
        let mut out: Vec<LabelPairAdapter> = self
            .metadata
            .iter()
            .filter_map(|name| {
                self.value(meta, line, name).map(|v| LabelPairAdapter {
                    name: name.clone(),
                    value: v.into_owned(),
                })
            })
            .collect();
        if let Some(e) = line.extra.as_deref() {
            for (name, value) in &e.metadata {
                match out.iter_mut().find(|p| p.name == **name) {
                    Some(p) => p.value.clone_from(value),
                    None => out.push(LabelPairAdapter {
                        name: name.to_string(),
                        value: value.clone(),
                    }),
                }
            }
            if let Some(level) = e.level
                && !level_is_label
                && !out.iter().any(|p| p.name == "level")
            {
                out.push(LabelPairAdapter {
                    name: "level".to_string(),
                    value: level.as_str().to_string(),
                });
            }
        }
        if line.truncated {
            out.push(LabelPairAdapter {
                name: "truncated".to_string(),
                value: "true".to_string(),
            });
        }
        out
    }
}

/// Parses the label strings this module writes (`{a="x", b="y\""}`).
pub fn parse_label_string(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim().to_string(), value));
    }
}
