//! `fields`: add (templates), rename, remove.

use crate::pipeline::LogLine;
use crate::processing::config::FieldsConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct FieldsStage {}

impl FieldsStage {
    pub fn build(_config: &FieldsConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `fields` stage is not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}
