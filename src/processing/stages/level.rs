//! `level`: takes the level from a field, or finds it in the message, and normalises it.

use crate::pipeline::LogLine;
use crate::processing::config::LevelConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct LevelStage {}

impl LevelStage {
    pub fn build(_config: &LevelConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `level` stage is not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}
