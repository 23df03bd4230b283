//! `logfmt`: parses `key=value key2="quoted value"` and copies keys into fields.

use crate::pipeline::LogLine;
use crate::processing::config::ParseConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct LogfmtStage {}

impl LogfmtStage {
    pub fn build(_config: &ParseConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `logfmt` stage is not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}
