//! The `sinks.kafka.topic` and `sinks.kafka.key` templates: literal text with `{placeholders}`
//! of record fields, read once at config time (the encoder renders the parsed parts).
//!
//! The vocabulary is the file sink's path placeholders plus the per-record ones:
//! [`CONTAINER_FIELDS`] come from the source (a container or a host file) and never vary
//! between its lines; `stream`, `level` and processing fields (and copied container labels,
//! which a processing field of the same name overrides) may.

use super::InvalidConfig;

/// Placeholders resolved from the source alone: the same for every line of a container (or
/// host file). `host` is the record's host (a host file's, else this machine's hostname),
/// `file` a host file's path.
pub const CONTAINER_FIELDS: &[&str] = &[
    "container_name",
    "container_id",
    "image",
    "compose_project",
    "compose_service",
    "host",
    "file",
];

/// Per-record placeholders that are always known names.
pub const RECORD_FIELDS: &[&str] = &["stream", "level"];

/// What a placeholder the record lacks (or has empty) renders as.
pub const MISSING: &str = "unknown";

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC: usize = 249;

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    Field(String),
}

/// A character Kafka allows in a topic name.
pub fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Why a template does not parse (the template is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed {{ in {0:?}")]
    Unclosed(String),
    #[error(
        "{{{name}}} in {template:?} is not a placeholder ({{field}}, field \
         names are [A-Za-z0-9_.-])"
    )]
    NotAPlaceholder { name: String, template: String },
    #[error("unmatched }} in {0:?}")]
    Unmatched(String),
}

/// Splits a template into text and placeholders. `{name}` is a placeholder when `name` is a
/// field name (`[A-Za-z0-9_.-]+`); a `{` or `}` outside one is an error (it is not a topic
/// character, and in a key it is almost certainly a typo).
pub fn parse_template(template: &str) -> Result<Vec<TemplatePart>, TemplateError> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => {
                let Some(end) = rest.find('}') else {
                    return Err(TemplateError::Unclosed(template.to_string()));
                };
                let name = &rest[1..end];
                if name.is_empty() || !name.chars().all(topic_char) {
                    return Err(TemplateError::NotAPlaceholder {
                        name: name.to_string(),
                        template: template.to_string(),
                    });
                }
                if !text.is_empty() {
                    parts.push(TemplatePart::Text(std::mem::take(&mut text)));
                }
                parts.push(TemplatePart::Field(name.to_string()));
                rest = &rest[end + 1..];
            }
            '}' => return Err(TemplateError::Unmatched(template.to_string())),
            c => {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        parts.push(TemplatePart::Text(text));
    }
    Ok(parts)
}

/// The placeholders of a template (after [`parse_template`]).
pub fn placeholders(parts: &[TemplatePart]) -> impl Iterator<Item = &str> {
    parts.iter().filter_map(|p| match p {
        TemplatePart::Field(name) => Some(name.as_str()),
        TemplatePart::Text(_) => None,
    })
}

/// Where a placeholder name that is not built in may come from.
pub struct FieldSources<'a> {
    /// `processing.container_labels` globs.
    pub container_labels: &'a [String],
    /// Fields of `sources.files` groups.
    pub group_fields: &'a [&'a str],
    /// Whether `processing.pipelines` has any pipeline (its parse stages may set any field).
    pub pipelines: bool,
}

/// Checks a template at `key`: it parses, every placeholder is one a record can have, and
/// (for a topic) its literal text is made of topic characters and leaves room for a value.
pub fn check_template(
    key: &str,
    template: &str,
    topic: bool,
    sources: &FieldSources<'_>,
) -> Result<(), InvalidConfig> {
    let parts = parse_template(template).map_err(|e| at!("{key}"; "{e}"))?;
    let mut literal = 0;
    for part in &parts {
        match part {
            TemplatePart::Text(t) => {
                literal += t.len();
                if topic && let Some(c) = t.chars().find(|&c| !topic_char(c)) {
                    return Err(
                        at!("{key}"; "{c:?} is not allowed in a Kafka topic name ([a-zA-Z0-9._-])"
                        ),
                    );
                }
            }
            TemplatePart::Field(name) => check_field(key, name, sources)?,
        }
    }
    if topic
        && let [TemplatePart::Text(t)] = parts.as_slice()
        && (t == "." || t == "..")
    {
        return Err(at!("{key}"; "{t:?} is not a Kafka topic name"));
    }
    if topic
        && let Some(TemplatePart::Text(t)) = parts.first()
        && t.starts_with("__")
    {
        return Err(
            at!("{key}"; "topics starting with \"__\" are Kafka's internal ones"
            ),
        );
    }
    if topic && literal > MAX_TOPIC {
        return Err(
            at!("{key}"; "the literal text is longer than a topic name may be ({MAX_TOPIC})"
            ),
        );
    }
    Ok(())
}

fn check_field(key: &str, name: &str, sources: &FieldSources<'_>) -> Result<(), InvalidConfig> {
    let known = CONTAINER_FIELDS.contains(&name)
        || RECORD_FIELDS.contains(&name)
        || sources.group_fields.contains(&name)
        || (sources.container_labels.iter())
            .any(|g| crate::discovery::filter::glob_match(g, name))
        // A parse stage (json, logfmt, regex) may set any field.
        || (sources.pipelines && name != "message");
    if known {
        return Ok(());
    }
    let builtin: Vec<String> = (CONTAINER_FIELDS.iter().chain(RECORD_FIELDS))
        .map(|f| format!("{{{f}}}"))
        .collect();
    Err(
        at!("{key}"; "unknown placeholder {{{name}}}: not one of {}, a container label copied by \
             processing.container_labels, a field of a sources.files group or a field set by \
             processing",
            builtin.join(", ")
        ),
    )
}

/// `rendered` as a legal topic name: characters Kafka refuses become `_`, cut to
/// [`MAX_TOPIC`], and `.` / `..` (refused by Kafka) become `_` / `__`.
pub fn sanitize_topic(rendered: &str) -> String {
    let mut out: String = rendered
        .chars()
        .map(|c| if topic_char(c) { c } else { '_' })
        .take(MAX_TOPIC)
        .collect();
    if out.is_empty() {
        out.push_str(MISSING);
    }
    if out == "." || out == ".." {
        out = out.replace('.', "_");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> FieldSources<'static> {
        FieldSources {
            container_labels: &[],
            group_fields: &[],
            pipelines: false,
        }
    }

    #[test]
    fn templates_parse_into_text_and_fields() {
        assert_eq!(
            parse_template("logs-{compose_project}.{stream}").expect("parses"),
            vec![
                TemplatePart::Text("logs-".into()),
                TemplatePart::Field("compose_project".into()),
                TemplatePart::Text(".".into()),
                TemplatePart::Field("stream".into()),
            ]
        );
        assert_eq!(parse_template("").expect("empty"), vec![]);
        for bad in ["logs-{", "logs}", "{}", "{a b}", "{a{b}"] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_must_be_known() {
        let k = "sinks.kafka.topic";
        for ok in ["{container_name}", "{host}-{file}", "x.{level}.{stream}"] {
            check_template(k, ok, true, &sources()).expect(ok);
        }
        let e = check_template(k, "{team}", true, &sources())
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("sinks.kafka.topic: unknown placeholder {team}"),
            "{e}"
        );
        let labels = ["te*".to_string()];
        let with_labels = FieldSources {
            container_labels: &labels,
            ..sources()
        };
        check_template(k, "{team}", true, &with_labels).expect("copied label");
        let with_group = FieldSources {
            group_fields: &["team"],
            ..sources()
        };
        check_template(k, "{team}", true, &with_group).expect("group field");
        let piped = FieldSources {
            pipelines: true,
            ..sources()
        };
        check_template(k, "{team}", true, &piped).expect("a processing field");
        assert!(check_template(k, "{message}", true, &piped).is_err());
    }

    #[test]
    fn topic_text_must_be_topic_characters() {
        let e = check_template("sinks.kafka.topic", "logs/{stream}", true, &sources())
            .expect_err("slash")
            .to_string();
        assert!(e.contains("sinks.kafka.topic") && e.contains("'/'"), "{e}");
        // A key may hold anything.
        check_template("sinks.kafka.key", "a/b:{stream}", false, &sources()).expect("key");
        let long = "x".repeat(250);
        assert!(check_template("sinks.kafka.topic", &long, true, &sources()).is_err());
    }

    #[test]
    fn sanitized_topics_are_legal() {
        assert_eq!(sanitize_topic("web/app:1"), "web_app_1");
        assert_eq!(sanitize_topic("é"), "_");
        assert_eq!(sanitize_topic("."), "_");
        assert_eq!(sanitize_topic(".."), "__");
        assert_eq!(sanitize_topic(""), "unknown");
        assert_eq!(sanitize_topic(&"a".repeat(300)).len(), MAX_TOPIC);
    }
}
