//! `drop` and `keep`: by regex on the message or a field, and by level.

use crate::pipeline::LogLine;
use crate::processing::config::MatchConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct MatchStage {}

impl MatchStage {
    /// `keep`: records that match pass and the others are dropped; else the reverse.
    pub fn build(
        _config: &MatchConfig,
        _keep: bool,
        _metrics: &StageMetrics,
    ) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `drop`/`keep` stages are not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}
