//! `timestamp`: the record's event time from a field, within bounds.

use crate::pipeline::LogLine;
use crate::processing::config::TimestampConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct TimestampStage {}

impl TimestampStage {
    pub fn build(_config: &TimestampConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `timestamp` stage is not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}
