//! `fields`: add (templates), rename, remove — in that order.
//!
//! - `add: { env: "prod", origin: "{compose_project}/{container_name}" }` sets each field to
//!   its template: literal text with `{name}` placeholders, each replaced by the value of
//!   `name` as [`lookup`] finds it (`message`, `stream`, `level`, a field, a container field
//!   such as `container_name`, `container_id`, `image`, `compose_project`,
//!   `compose_service`, a label copied by `processing.container_labels`). A name with no
//!   value becomes the empty string. `{{` and `}}` are literal braces; a `}` outside a
//!   placeholder is literal too. Every template is read against the record as it was before
//!   the stage (an added field is not seen by the other templates of the same stage); new
//!   fields are appended in the order of their names. A template that is a single placeholder
//!   copies the value as it is (a JSON number stays a number); any other makes text, with a
//!   non-string JSON value written as its JSON text.
//! - `rename: { from: to }` renames a field in place (it keeps its position; an existing `to`
//!   is replaced). A field that is not set: nothing. Renames act on the record's fields only
//!   (not on container fields), and are order-free: a name may not be both a rename source
//!   and a target, nor the target of two renames.
//! - `remove: [name, …]` removes fields; a field that is not set: nothing.
//!
//! `message`, `stream` and `level` are record attributes, not fields: they cannot be the
//! target of `add` or `rename`. Config errors name the key (`add`, `rename`, `remove`): an
//! empty name, such a target, a `{` without its `}`, an empty placeholder `{}`.

use std::collections::HashSet;
use std::sync::Arc;

use crate::pipeline::{ContainerMeta, LogLine};
use crate::processing::config::FieldsConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::record::{FieldValue, lookup};
use crate::processing::stage::{BuildError, StageContext, Verdict};

/// Names that are record attributes rather than fields.
const ATTRIBUTES: [&str; 3] = ["message", "stream", "level"];

#[derive(Clone, Debug)]
pub struct FieldsStage {
    add: Vec<(Arc<str>, Template)>,
    rename: Vec<(Box<str>, Arc<str>)>,
    remove: Vec<Box<str>>,
    /// The add values of the record at hand (kept to reuse its capacity).
    scratch: Vec<FieldValue>,
}

impl FieldsStage {
    pub fn build(config: &FieldsConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        if config.add.is_empty() && config.rename.is_empty() && config.remove.is_empty() {
            return Err(BuildError::at(
                "",
                "nothing to do: give `add`, `rename` or `remove`",
            ));
        }
        let mut add = Vec::with_capacity(config.add.len());
        for (name, template) in &config.add {
            target("add", name)?;
            let t = Template::parse(template).map_err(|e| {
                BuildError::at("add", format!("`{name}`: template `{template}`: {e}"))
            })?;
            add.push((Arc::from(name.as_str()), t));
        }
        let mut rename = Vec::with_capacity(config.rename.len());
        let mut targets = HashSet::new();
        for (from, to) in &config.rename {
            if from.is_empty() {
                return Err(BuildError::at("rename", "a field name is empty"));
            }
            target("rename", to)?;
            if config.rename.contains_key(to) && to != from {
                return Err(BuildError::at(
                    "rename",
                    format!(
                        "`{to}` is both renamed and a rename target; rename chains are \
                         ambiguous, use two fields stages"
                    ),
                ));
            }
            if !targets.insert(to.as_str()) {
                return Err(BuildError::at(
                    "rename",
                    format!("`{to}` is the target of more than one rename"),
                ));
            }
            rename.push((Box::from(from.as_str()), Arc::from(to.as_str())));
        }
        let mut remove = Vec::with_capacity(config.remove.len());
        for name in &config.remove {
            if name.is_empty() {
                return Err(BuildError::at("remove", "a field name is empty"));
            }
            remove.push(Box::from(name.as_str()));
        }
        Ok(FieldsStage {
            scratch: Vec::with_capacity(add.len()),
            add,
            rename,
            remove,
        })
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        if !self.add.is_empty() {
            self.scratch.clear();
            for (_, template) in &self.add {
                self.scratch.push(template.render(line, cx.container));
            }
            let fields = &mut line.extra_mut().fields;
            for ((name, _), value) in self.add.iter().zip(self.scratch.drain(..)) {
                fields.set(Arc::clone(name), value);
            }
        }
        // Without extras there is nothing to rename or remove.
        if let Some(extra) = line.extra.as_deref_mut() {
            for (from, to) in &self.rename {
                extra.fields.rename(from, Arc::clone(to));
            }
            for name in &self.remove {
                extra.fields.remove(name);
            }
        }
        Verdict::Pass
    }
}

fn target(key: &'static str, name: &str) -> Result<(), BuildError> {
    if name.is_empty() {
        return Err(BuildError::at(key, "a field name is empty"));
    }
    if ATTRIBUTES.contains(&name) {
        return Err(BuildError::at(
            key,
            format!(
                "`{name}` is a record attribute, not a field: it cannot be the target of \
                 add or rename"
            ),
        ));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    Name(Box<str>),
}

/// A parsed `add` template.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Template(Vec<Piece>);

/// Why an `add` template does not parse (`at`: byte offset of the `{`).
#[derive(Debug, thiserror::Error)]
enum TemplateError {
    #[error("the `{{` at byte {at} has no closing `}}` (write `{{{{` for a literal brace)")]
    Unclosed { at: usize },
    #[error("empty placeholder `{{}}` at byte {at}")]
    Empty { at: usize },
}

impl Template {
    fn parse(template: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let (brace, after) = (rest.as_bytes()[i], &rest[i + 1..]);
            if brace == b'}' {
                // `}}` and a lone `}` are both a literal `}`.
                text.push('}');
                rest = after.strip_prefix('}').unwrap_or(after);
                continue;
            }
            if let Some(after) = after.strip_prefix('{') {
                text.push('{');
                rest = after;
                continue;
            }
            let at = template.len() - rest.len() + i;
            let end = after
                .find(['{', '}'])
                .filter(|&j| after.as_bytes()[j] == b'}');
            let Some(end) = end else {
                return Err(TemplateError::Unclosed { at });
            };
            if end == 0 {
                return Err(TemplateError::Empty { at });
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text).into()));
            }
            pieces.push(Piece::Name(after[..end].into()));
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text.into()));
        }
        Ok(Template(pieces))
    }

    fn render(&self, line: &LogLine, meta: &ContainerMeta) -> FieldValue {
        match self.0.as_slice() {
            [] => FieldValue::Str(String::new()),
            [Piece::Text(t)] => FieldValue::Str(t.to_string()),
            // A lone placeholder copies a field's value with its type.
            [Piece::Name(name)] => match line.fields().and_then(|f| f.get(name)) {
                Some(v) if !ATTRIBUTES.contains(&&**name) => v.clone(),
                _ => FieldValue::Str(
                    lookup(line, meta, name)
                        .map(|v| v.into_owned())
                        .unwrap_or_default(),
                ),
            },
            pieces => {
                let mut out = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => out.push_str(t),
                        Piece::Name(name) => {
                            if let Some(v) = lookup(line, meta, name) {
                                out.push_str(&v);
                            }
                        }
                    }
                }
                FieldValue::Str(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::StreamKind;
    use crate::processing::record::Level;
    use crate::processing::stages::testing;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn line(message: &str, fields: &[(&str, FieldValue)]) -> LogLine {
        let mut l = testing::line(message.as_bytes(), &[]);
        l.stream = StreamKind::Stderr;
        for (k, v) in fields {
            l.extra_mut().fields.set(Arc::from(*k), v.clone());
        }
        l
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::Str(v.to_string())
    }

    fn config(add: &[(&str, &str)], rename: &[(&str, &str)], remove: &[&str]) -> FieldsConfig {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        FieldsConfig {
            add: map(add),
            rename: map(rename),
            remove: remove.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn build(c: &FieldsConfig) -> Result<FieldsStage, BuildError> {
        FieldsStage::build(c, &StageMetrics::detached("p", "fields[0]"))
    }

    fn run(stage: &mut FieldsStage, l: &mut LogLine) {
        let m = testing::meta();
        assert_eq!(stage.apply(l, &testing::cx(&m, 0)), Verdict::Pass);
    }

    fn fields(l: &LogLine) -> Vec<(String, FieldValue)> {
        l.fields()
            .map(|f| f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
            .unwrap_or_default()
    }

    #[test]
    fn add_templates_resolve_every_kind_of_name() {
        let mut st = build(&config(
            &[
                (
                    "origin",
                    "{compose_project}/{container_name} ({image}, {team})",
                ),
                ("what", "{stream}:{level}:{message}"),
                ("user_copy", "{user}"),
                ("count_copy", "{count}"),
                ("none", "[{nope}]{compose_service}"),
                ("braces", "{{literal}} and }"),
                ("plain", "prod"),
                ("empty", ""),
            ],
            &[],
            &[],
        ))
        .unwrap();
        let mut l = line(
            "hello",
            &[("user", s("ann")), ("count", FieldValue::Json("3".into()))],
        );
        l.extra_mut().level = Some(Level::Warn);
        run(&mut st, &mut l);
        let got = fields(&l);
        let want = vec![
            ("user".to_string(), s("ann")),
            ("count".to_string(), FieldValue::Json("3".into())),
            // Added in the order of their names.
            ("braces".to_string(), s("{literal} and }")),
            ("count_copy".to_string(), FieldValue::Json("3".into())),
            ("empty".to_string(), s("")),
            ("none".to_string(), s("[]web")),
            ("origin".to_string(), s("shop/web-1 (nginx:1, payments)")),
            ("plain".to_string(), s("prod")),
            ("user_copy".to_string(), s("ann")),
            ("what".to_string(), s("stderr:warn:hello")),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn templates_see_the_record_before_the_stage() {
        // `b` is added after `a` (name order) but `a`'s template reads the old `b`.
        let mut st = build(&config(&[("a", "{b}"), ("b", "new")], &[], &[])).unwrap();
        let mut l = line("m", &[("b", s("old"))]);
        run(&mut st, &mut l);
        assert_eq!(
            fields(&l),
            vec![("b".into(), s("new")), ("a".into(), s("old"))]
        );
    }

    #[test]
    fn rename_in_place_then_remove() {
        let mut st = build(&config(
            &[("added", "x")],
            &[
                ("lvl", "severity"),
                ("missing", "other"),
                ("added", "added2"),
            ],
            &["drop_me", "never_set"],
        ))
        .unwrap();
        let mut l = line(
            "m",
            &[
                ("a", s("1")),
                ("lvl", s("W")),
                ("drop_me", s("2")),
                ("z", s("3")),
            ],
        );
        run(&mut st, &mut l);
        assert_eq!(
            fields(&l),
            vec![
                ("a".into(), s("1")),
                ("severity".into(), s("W")),
                ("z".into(), s("3")),
                ("added2".into(), s("x")),
            ]
        );
        // A rename onto an existing field replaces it; the value stands where the source stood.
        let mut st = build(&config(&[], &[("b", "a")], &[])).unwrap();
        let mut l = line("m", &[("a", s("old")), ("x", s("1")), ("b", s("new"))]);
        run(&mut st, &mut l);
        assert_eq!(
            fields(&l),
            vec![("x".into(), s("1")), ("a".into(), s("new"))]
        );
    }

    #[test]
    fn rename_and_remove_without_fields_add_nothing() {
        let mut st = build(&config(&[], &[("a", "b")], &["c"])).unwrap();
        let mut l = line("m", &[]);
        run(&mut st, &mut l);
        assert!(l.extra.is_none());
    }

    #[test]
    fn build_errors_name_the_key() {
        let cases: &[(FieldsConfig, &str, &str)] = &[
            (config(&[], &[], &[]), "", "nothing to do"),
            (
                config(&[("message", "x")], &[], &[]),
                "add",
                "record attribute",
            ),
            (config(&[("", "x")], &[], &[]), "add", "empty"),
            (config(&[("a", "{oops")], &[], &[]), "add", "no closing"),
            (config(&[("a", "{a{b}")], &[], &[]), "add", "no closing"),
            (
                config(&[("a", "x{}y")], &[], &[]),
                "add",
                "empty placeholder",
            ),
            (
                config(&[], &[("a", "level")], &[]),
                "rename",
                "record attribute",
            ),
            (
                config(&[], &[("a", "stream")], &[]),
                "rename",
                "record attribute",
            ),
            (
                config(&[], &[("a", "b"), ("b", "c")], &[]),
                "rename",
                "chains",
            ),
            (
                config(&[], &[("a", "c"), ("b", "c")], &[]),
                "rename",
                "more than one",
            ),
            (config(&[], &[("", "c")], &[]), "rename", "empty"),
            (config(&[], &[], &[""]), "remove", "empty"),
        ];
        for (c, key, text) in cases {
            let e = build(c).unwrap_err();
            assert_eq!(&e.key, key, "{c:?}: {e:?}");
            assert!(e.message.contains(text), "{c:?}: {e:?}");
        }
        // Renaming a field to itself is harmless.
        assert!(build(&config(&[], &[("a", "a")], &[])).is_ok());
    }

    proptest! {
        /// Any template either builds or is refused with `add`; a built one never panics and
        /// renders its literal text with `{{`/`}}` unescaped.
        #[test]
        fn arbitrary_templates(template in "[{}a-c ]{0,12}") {
            let c = config(&[("out", &template)], &[], &[]);
            match build(&c) {
                Err(e) => prop_assert_eq!(e.key, "add"),
                Ok(mut st) => {
                    let mut l = line("m", &[("a", s("A")), ("b", s("B"))]);
                    run(&mut st, &mut l);
                    let out = l.fields().and_then(|f| f.get("out")).cloned();
                    let Some(out) = out else { return Err(TestCaseError::fail("no field")); };
                    if !template.contains('{') {
                        let want = template.replace("}}", "}");
                        prop_assert_eq!(out.as_str(), want.as_str());
                    }
                }
            }
        }

        /// Rename and remove keep the order of every other field; a renamed field stands
        /// where its source stood.
        #[test]
        fn rename_remove_keep_order(
            present in prop::sample::subsequence(vec!["a", "b", "c", "d", "e", "f"], 0..=6),
            renames in prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]),
                prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g", "h"]),
                0..4,
            ),
            removes in prop::collection::vec(prop::sample::select(vec!["a", "c", "g"]), 0..3),
        ) {
            let renames: Vec<(&str, &str)> = renames.into_iter().collect();
            let c = config(&[], &renames, &removes);
            let Ok(mut st) = build(&c) else { return Ok(()); };
            let input: Vec<(&str, FieldValue)> =
                present.iter().map(|k| (*k, s(&format!("v{k}")))).collect();
            let mut l = line("m", &input);
            run(&mut st, &mut l);
            let out = fields(&l);
            // Every output field's value is that of some input field: follow it back.
            let source = |name: &str| -> String {
                renames.iter().find(|(f, t)| *t == name && present.contains(f))
                    .map(|(f, _)| f.to_string()).unwrap_or_else(|| name.to_string())
            };
            let origins: Vec<String> = out.iter().map(|(k, _)| source(k)).collect();
            for ((k, v), origin) in out.iter().zip(&origins) {
                prop_assert_eq!(v.as_str(), format!("v{origin}"), "{}", k);
                prop_assert!(!removes.contains(&k.as_str()));
            }
            // Origins appear in input order.
            let positions: Vec<usize> = origins.iter()
                .map(|o| present.iter().position(|p| p == o).unwrap()).collect();
            prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "{:?}", out);
            // Nothing lost but what was removed or overwritten.
            for p in &present {
                let renamed_to = renames.iter().find(|(f, _)| f == p).map(|(_, t)| *t);
                let name = renamed_to.unwrap_or(p);
                let overwritten = renamed_to.is_none()
                    && renames.iter().any(|(f, t)| t == p && present.contains(f));
                if !removes.contains(&name) && !overwritten {
                    prop_assert!(out.iter().any(|(k, _)| k == name), "{} lost: {:?}", p, out);
                }
            }
        }
    }
}
