//! `labels` and `structured_metadata`: fields the Loki sink sends as stream labels (with a
//! cardinality guard) or as structured metadata.

use crate::pipeline::LogLine;
use crate::processing::config::{LabelsConfig, MetadataConfig};
use crate::processing::metrics::StageMetrics;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct LabelsStage {}

impl LabelsStage {
    pub fn build(_config: &LabelsConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `labels` stage is not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}

#[derive(Clone, Debug)]
pub struct MetadataStage {}

impl MetadataStage {
    pub fn build(_config: &MetadataConfig, _metrics: &StageMetrics) -> Result<Self, BuildError> {
        Err(BuildError::at(
            "",
            "the `structured_metadata` stage is not implemented yet",
        ))
    }

    pub fn apply(&mut self, _line: &mut LogLine, _cx: &StageContext<'_>) -> Verdict {
        Verdict::Pass
    }
}
