//! The line stages: one type per stage kind (in `stages/`), dispatched through [`Stage`].
//! Multiline is not among them: it buffers lines and holds the resume cursor back, so the
//! engine runs it before these (see `multiline`).

use super::config::StageConfig;
use super::metrics::StageMetrics;
use super::stages::{
    fields::FieldsStage, filter::MatchStage, json::JsonStage, labels::Guards, labels::LabelsStage,
    labels::MetadataStage, level::LevelStage, logfmt::LogfmtStage, regex::RegexStage,
    tenant::TenantStage, timestamp::TimestampStage,
};
use crate::pipeline::{ContainerMeta, LogLine};

/// What a stage sees besides the record.
pub struct StageContext<'a> {
    pub container: &'a ContainerMeta,
    /// Wall clock, ns since the epoch.
    pub now_ns: i64,
}

/// What becomes of the record after a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// On to the next stage (or out).
    Pass,
    /// Dropped: acknowledged like a delivered line, never re-read, counted per stage.
    Drop,
}

/// A stage's configuration problem: the key under the stage (`expression`; empty for the
/// stage itself) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub key: &'static str,
    pub message: String,
}

impl BuildError {
    pub fn at(key: &'static str, message: impl Into<String>) -> Self {
        BuildError {
            key,
            message: message.into(),
        }
    }
}

/// A compiled stage. Cloning one shares what is compiled (regexes) and what must be shared
/// across containers (a label's cardinality guard); per-container state is fresh.
#[derive(Clone, Debug)]
pub enum Stage {
    Json(JsonStage),
    Logfmt(LogfmtStage),
    Regex(RegexStage),
    Level(LevelStage),
    Timestamp(TimestampStage),
    Match(MatchStage),
    Fields(FieldsStage),
    Labels(LabelsStage),
    Metadata(MetadataStage),
    Tenant(TenantStage),
}

impl Stage {
    /// Compiles one stage. `multiline` is refused here (the engine takes it first).
    pub fn build(config: &StageConfig, metrics: &StageMetrics) -> Result<Stage, BuildError> {
        Ok(match config {
            StageConfig::Multiline(_) => {
                return Err(BuildError::at(
                    "",
                    "multiline must be the first stage of its pipeline (it works on the lines as \
                     read, before any other stage)",
                ));
            }
            StageConfig::Json(c) => Stage::Json(JsonStage::build(c, metrics)?),
            StageConfig::Logfmt(c) => Stage::Logfmt(LogfmtStage::build(c, metrics)?),
            StageConfig::Regex(c) => Stage::Regex(RegexStage::build(c, metrics)?),
            StageConfig::Level(c) => Stage::Level(LevelStage::build(c, metrics)?),
            StageConfig::Timestamp(c) => Stage::Timestamp(TimestampStage::build(c, metrics)?),
            StageConfig::Drop(c) => Stage::Match(MatchStage::build(c, false, metrics)?),
            StageConfig::Keep(c) => Stage::Match(MatchStage::build(c, true, metrics)?),
            StageConfig::Fields(c) => Stage::Fields(FieldsStage::build(c, metrics)?),
            StageConfig::Labels(c) => Stage::Labels(LabelsStage::build(c, metrics)?),
            StageConfig::StructuredMetadata(c) => {
                Stage::Metadata(MetadataStage::build(c, metrics)?)
            }
            StageConfig::Tenant(c) => Stage::Tenant(TenantStage::build(c, metrics)?),
        })
    }

    /// What every container's copy of this stage must share (a `labels` stage's cardinality
    /// guards), if anything.
    pub fn shared(&self) -> Option<Shared> {
        match self {
            Stage::Labels(s) => Some(Shared::Labels(s.guards())),
            _ => None,
        }
    }

    /// Shares `shared`, taken by [`Stage::shared`] from a stage built from the same config.
    pub fn share(&mut self, shared: &Shared) {
        if let (Stage::Labels(s), Shared::Labels(guards)) = (self, shared) {
            s.share_guards(guards);
        }
    }

    #[inline]
    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        match self {
            Stage::Json(s) => s.apply(line, cx),
            Stage::Logfmt(s) => s.apply(line, cx),
            Stage::Regex(s) => s.apply(line, cx),
            Stage::Level(s) => s.apply(line, cx),
            Stage::Timestamp(s) => s.apply(line, cx),
            Stage::Match(s) => s.apply(line, cx),
            Stage::Fields(s) => s.apply(line, cx),
            Stage::Labels(s) => s.apply(line, cx),
            Stage::Metadata(s) => s.apply(line, cx),
            Stage::Tenant(s) => s.apply(line, cx),
        }
    }
}

/// State shared by every container's copy of a stage (see [`Stage::shared`]).
#[derive(Clone, Debug)]
pub enum Shared {
    Labels(Guards),
}
