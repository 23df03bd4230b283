//! `json`: parses the message (or a field) as a JSON object and copies top-level keys into fields.

use crate::pipeline::LogLine;
use crate::processing::config::ParseConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct JsonStage {}

impl JsonStage {
    pub fn build(_config: &ParseConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `json` stage is not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}
