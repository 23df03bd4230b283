//! `processing:` in the config file: which pipeline applies to which container, and its
//! stages. Parsing only; [`super::Pipelines::compile`] checks patterns and combinations and
//! names the key path of anything wrong (`processing.pipelines[0].stages[1].regex.expression`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{ByteSize, FilterConfig, HumanDuration};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// Container label keys (globs: `team`, `com.example.*`) copied into every record's
    /// `fields` at capture, whether or not a pipeline applies.
    pub container_labels: Vec<String>,
    /// Tried in order; the first whose `match` selects the container applies to all its lines.
    pub pipelines: Vec<PipelineConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Names the pipeline in metrics, logs and `log-capturer process --pipeline`.
    pub name: String,
    /// The same vocabulary as `capture.include` (every non-empty list must match); empty
    /// matches every container.
    #[serde(rename = "match")]
    pub selector: FilterConfig,
    pub stages: Vec<StageConfig>,
}

/// One stage, written as a single-key map: `- json: { fields: [level] }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    Multiline(MultilineConfig),
    Json(ParseConfig),
    Logfmt(ParseConfig),
    Regex(RegexConfig),
    Level(LevelConfig),
    Timestamp(TimestampConfig),
    Drop(MatchConfig),
    Keep(MatchConfig),
    Fields(FieldsConfig),
    Labels(LabelsConfig),
    StructuredMetadata(MetadataConfig),
    Tenant(TenantConfig),
}

impl StageConfig {
    /// The stage's type as written in the config (and in the `stage` metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            StageConfig::Multiline(_) => "multiline",
            StageConfig::Json(_) => "json",
            StageConfig::Logfmt(_) => "logfmt",
            StageConfig::Regex(_) => "regex",
            StageConfig::Level(_) => "level",
            StageConfig::Timestamp(_) => "timestamp",
            StageConfig::Drop(_) => "drop",
            StageConfig::Keep(_) => "keep",
            StageConfig::Fields(_) => "fields",
            StageConfig::Labels(_) => "labels",
            StageConfig::StructuredMetadata(_) => "structured_metadata",
            StageConfig::Tenant(_) => "tenant",
        }
    }
}

/// Joins continuation lines into the record of the line that starts the group, per
/// container and stream. Exactly one of `start` and `continue`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultilineConfig {
    /// A line matching this starts a new group; any other line continues the open one.
    pub start: Option<String>,
    /// A line matching this continues the open group; any other line starts a new one.
    #[serde(rename = "continue")]
    pub continue_: Option<String>,
    /// A group reaching this many lines is emitted (the next line starts a new one).
    pub max_lines: usize,
    /// A line that would take a group past this many bytes is not joined: the group is
    /// emitted and the line starts the next one (a single line is never cut).
    pub max_bytes: ByteSize,
    /// The open group of a stream that has been quiet this long (by Docker's timestamp of its
    /// last line) is emitted.
    pub flush_after: HumanDuration,
}

impl Default for MultilineConfig {
    fn default() -> Self {
        MultilineConfig {
            start: None,
            continue_: None,
            max_lines: 500,
            max_bytes: ByteSize(256 * 1024),
            flush_after: HumanDuration(Duration::from_secs(2)),
        }
    }
}

/// `json` and `logfmt`: parse `source` (the message by default) and copy keys into fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParseConfig {
    /// Field to parse; empty: the message.
    pub source: Option<String>,
    /// Top-level keys to copy into fields; empty: every top-level key.
    pub fields: Vec<String>,
    /// A key whose (string) value becomes the record's message.
    pub message: Option<String>,
}

/// Named captures of `expression` become fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegexConfig {
    pub expression: String,
    /// Field to match; empty: the message.
    pub source: Option<String>,
}

/// Sets the record's level (trace, debug, info, warn, error, fatal).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelConfig {
    /// Take the level from this field; empty: find it in the message.
    pub source: Option<String>,
    /// Extra spellings: `{ "E": error, "crit": fatal }` (case-insensitive).
    pub map: BTreeMap<String, String>,
    /// The level of a record where none is found; empty: none.
    pub default: Option<String>,
}

/// Takes the record's event time from a field. Docker's timestamp stays the resume cursor.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimestampConfig {
    pub source: String,
    /// `rfc3339`, `unix`, `unix_ms`, `unix_us`, `unix_ns`, or a strftime-style layout.
    pub format: String,
    /// An event time older than this (against Docker's timestamp) is out of bounds.
    pub max_age: Option<HumanDuration>,
    /// An event time further than this ahead of Docker's timestamp is out of bounds.
    pub max_future: Option<HumanDuration>,
    pub out_of_bounds: OutOfBounds,
}

impl Default for TimestampConfig {
    fn default() -> Self {
        TimestampConfig {
            source: String::new(),
            format: "rfc3339".to_string(),
            max_age: None,
            max_future: None,
            out_of_bounds: OutOfBounds::Clamp,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfBounds {
    /// Use the nearest bound.
    Clamp,
    /// Use the parsed time anyway (counted).
    Keep,
    /// Drop the record.
    Drop,
}

/// `drop` / `keep`: a record matches when every condition given holds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// Regex on the message (or on `source`).
    pub expression: Option<String>,
    /// Field the expression applies to; empty: the message.
    pub source: Option<String>,
    /// The record's level is one of these.
    pub levels: Vec<String>,
}

/// Adds (templates like `{container_name}` or `{field}`), renames and removes fields, in
/// that order.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldsConfig {
    pub add: BTreeMap<String, String>,
    pub rename: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// Promotes fields to Loki stream labels, guarded against high cardinality.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    pub fields: Vec<String>,
    /// Distinct values a label may take per `window` (per pipeline); values beyond are not
    /// promoted (the field stays a field), with a warning and a metric.
    pub max_values: usize,
    pub window: HumanDuration,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        LabelsConfig {
            fields: Vec::new(),
            max_values: 100,
            window: HumanDuration(Duration::from_secs(600)),
        }
    }
}

/// Sends fields as Loki structured metadata.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    pub fields: Vec<String>,
}

/// The Loki tenant (`X-Scope-OrgID`) of the record: from a field or a container label.
/// Records without a value go to the sink's own `tenant`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    pub source: Option<String>,
    pub container_label: Option<String>,
}
