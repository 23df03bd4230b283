//! `regex`: named captures of an expression become fields.

use crate::pipeline::LogLine;
use crate::processing::config::RegexConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct RegexStage {}

impl RegexStage {
    pub fn build(_config: &RegexConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `regex` stage is not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}
