//! `tenant`: the Loki tenant (`X-Scope-OrgID`) from a field or a container label.
//!
//! Exactly one of:
//! - `source: team` — the value of that name as [`lookup`] finds it (a field, a container
//!   field, a copied container label);
//! - `container_label: com.example.tenant` — the container's label of exactly that key. Only
//!   the labels `processing.container_labels` copies reach a record, so the key must match
//!   one of its globs: checked when the config is loaded. Unlike `source`, a field of the
//!   same name (say, one a `json` stage extracted from the line) cannot override it.
//!
//! The value sets the record's tenant (`Extra::tenant`; the Loki sink batches per tenant).
//! A tenant must be a Loki org id: 1–150 bytes of `A-Z a-z 0-9` and `!-_.*'()`, not `.` or
//! `..` (Loki's rule; the Loki client refuses anything else). A record whose
//! value is missing or empty is counted (event `tenant_missing`), one whose value is not a
//! valid org id is counted (event `tenant_invalid`); either way its tenant is left as it was
//! — the sink's own `tenant` unless an earlier `tenant` stage set one.
//!
//! A tenant that repeats from one record to the next is shared, not allocated again.

use prometheus_client::metrics::counter::Counter;
use std::borrow::Cow;
use std::sync::Arc;

use crate::discovery::filter::glob_match;
use crate::pipeline::LogLine;
use crate::processing::config::TenantConfig;
use crate::processing::metrics::StageMetrics;
use crate::processing::record::lookup;
use crate::processing::stage::{BuildError, StageContext, Verdict};

/// Loki's limit on the length of an org id.
pub const TENANT_MAX_BYTES: usize = 150;

#[derive(Clone, Debug)]
pub struct TenantStage {
    from: Origin,
    /// The last tenant set, reused while the value repeats.
    last: Option<Arc<str>>,
    missing: Counter,
    invalid: Counter,
}

#[derive(Clone, Debug)]
enum Origin {
    Source(Box<str>),
    Label(Box<str>),
}

impl TenantStage {
    pub fn build(config: &TenantConfig, metrics: &StageMetrics) -> Result<Self, BuildError> {
        let nonempty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(Box::from);
        let from = match (nonempty(&config.source), nonempty(&config.container_label)) {
            (Some(_), Some(_)) => {
                return Err(BuildError::at(
                    "container_label",
                    "give either `source` or `container_label`, not both",
                ));
            }
            (Some(name), None) => Origin::Source(name),
            (None, Some(key)) => Origin::Label(key),
            (None, None) => {
                return Err(BuildError::at(
                    "",
                    "give `source` (a field) or `container_label` (a container label key)",
                ));
            }
        };
        Ok(TenantStage {
            from,
            last: None,
            missing: metrics.event("tenant_missing"),
            invalid: metrics.event("tenant_invalid"),
        })
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        if let Some(tenant) = self.tenant(line, cx) {
            line.extra_mut().tenant = Some(tenant);
        }
        Verdict::Pass
    }

    fn tenant(&mut self, line: &LogLine, cx: &StageContext<'_>) -> Option<Arc<str>> {
        let value = match &self.from {
            Origin::Source(name) => lookup(line, cx.container, name),
            Origin::Label(key) => cx
                .container
                .label_fields
                .iter()
                .find(|(k, _)| **k == **key)
                .map(|(_, v)| Cow::Borrowed(v.as_str())),
        };
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            self.missing.inc();
            return None;
        };
        if let Some(last) = &self.last
            && **last == *value
        {
            return Some(Arc::clone(last));
        }
        if !valid_org_id(&value) {
            self.invalid.inc();
            return None;
        }
        let tenant: Arc<str> = Arc::from(&*value);
        self.last = Some(Arc::clone(&tenant));
        Some(tenant)
    }
}

/// Whether Loki takes `id` as an org id (X-Scope-OrgID): 1–150 bytes of `A-Z a-z 0-9` and
/// `!-_.*'()`, not `.` or `..` — Loki's own rule. The Loki client checks pushes with it too.
pub fn valid_org_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= TENANT_MAX_BYTES
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b))
}

/// `container_label` must be a label `processing.container_labels` copies into records
/// (only those reach a stage). Called by the engine with the config's globs.
pub fn check_label_copied(
    config: &TenantConfig,
    container_labels: &[String],
) -> Result<(), BuildError> {
    match config.container_label.as_deref() {
        Some(key) if !key.is_empty() && !container_labels.iter().any(|g| glob_match(g, key)) => {
            Err(BuildError::at(
                "container_label",
                format!(
                    "the container label `{key}` does not reach records: add it (or a glob \
                     matching it) to processing.container_labels"
                ),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::config::{PipelineConfig, StageConfig};
    use crate::processing::metrics::ProcessingMetrics;
    use crate::processing::stages::testing;
    use crate::processing::{Pipelines, ProcessingConfig};
    use proptest::prelude::*;

    fn line(fields: &[(&str, &str)]) -> LogLine {
        testing::line(b"m", fields)
    }

    fn config(source: Option<&str>, label: Option<&str>) -> TenantConfig {
        TenantConfig {
            source: source.map(str::to_string),
            container_label: label.map(str::to_string),
        }
    }

    struct Harness {
        metrics: ProcessingMetrics,
        stage: TenantStage,
    }

    impl Harness {
        fn new(c: &TenantConfig) -> Harness {
            let metrics = ProcessingMetrics::default();
            let sm = metrics.stage(&Arc::from("p"), Arc::from("tenant[0]"));
            let stage = TenantStage::build(c, &sm).unwrap();
            Harness { metrics, stage }
        }

        fn run(&mut self, l: &mut LogLine) -> Option<Arc<str>> {
            let m = testing::meta();
            assert_eq!(self.stage.apply(l, &testing::cx(&m, 0)), Verdict::Pass);
            l.extra.as_deref().and_then(|e| e.tenant.clone())
        }

        fn event(&self, event: &'static str) -> u64 {
            testing::event(&self.metrics, "tenant[0]", event)
        }
    }

    #[test]
    fn from_a_field_reusing_a_repeated_value() {
        let mut h = Harness::new(&config(Some("team"), None));
        let a = h.run(&mut line(&[("team", "blue")])).unwrap();
        let b = h.run(&mut line(&[("team", "blue")])).unwrap();
        assert_eq!(&*a, "blue");
        assert!(
            Arc::ptr_eq(&a, &b),
            "a repeated tenant is not allocated again"
        );
        let c = h.run(&mut line(&[("team", "green")])).unwrap();
        assert_eq!(&*c, "green");
        // No such field: falls back to lookup's container label of that name.
        assert_eq!(h.run(&mut line(&[])).as_deref(), Some("payments"));
        assert_eq!(h.event("tenant_missing"), 0);
    }

    #[test]
    fn from_a_container_label_not_a_field() {
        let mut h = Harness::new(&config(None, Some("com.example.tenant")));
        let mut l = line(&[("com.example.tenant", "spoofed")]);
        assert_eq!(h.run(&mut l).as_deref(), Some("acme"));
        let mut h = Harness::new(&config(None, Some("absent")));
        assert_eq!(h.run(&mut line(&[])), None);
        assert_eq!(h.event("tenant_missing"), 1);
    }

    #[test]
    fn missing_and_invalid_keep_the_tenant_and_count() {
        let mut h = Harness::new(&config(Some("org"), None));
        let mut l = line(&[("x", "1")]);
        l.extra_mut().tenant = Some(Arc::from("earlier"));
        assert_eq!(h.run(&mut l).as_deref(), Some("earlier"));
        assert_eq!(h.run(&mut line(&[("org", "")])), None);
        assert_eq!(h.event("tenant_missing"), 2);
        for bad in [
            "a/b",
            "a|b",
            "a b",
            "..",
            "é",
            "team:a",
            "a@b",
            &"x".repeat(151),
        ] {
            assert_eq!(h.run(&mut line(&[("org", bad)])), None, "{bad}");
        }
        assert_eq!(h.event("tenant_invalid"), 8);
        assert_eq!(h.event("tenant_missing"), 2);
        let max = "x".repeat(150);
        assert_eq!(h.run(&mut line(&[("org", &max)])).as_deref(), Some(&*max));
    }

    #[test]
    fn build_errors_name_the_key() {
        let sm = StageMetrics::detached("p", "tenant[0]");
        let e = TenantStage::build(&config(Some("a"), Some("b")), &sm).unwrap_err();
        assert_eq!(e.key, "container_label");
        let e = TenantStage::build(&config(None, None), &sm).unwrap_err();
        assert_eq!(e.key, "");
        let e = TenantStage::build(&config(Some(""), None), &sm).unwrap_err();
        assert_eq!(e.key, "");
    }

    #[test]
    fn the_container_label_must_be_copied() {
        let pipelines = |globs: &[&str]| {
            Pipelines::compile(&ProcessingConfig {
                container_labels: globs.iter().map(|g| g.to_string()).collect(),
                pipelines: vec![PipelineConfig {
                    name: "p".into(),
                    selector: Default::default(),
                    stages: vec![StageConfig::Tenant(config(
                        None,
                        Some("com.example.tenant"),
                    ))],
                }],
            })
        };
        let e = pipelines(&["team"]).unwrap_err().to_string();
        assert!(
            e.starts_with("processing.pipelines[0].stages[0].tenant.container_label: "),
            "{e}"
        );
        assert!(e.contains("processing.container_labels"), "{e}");
        assert!(pipelines(&["team", "com.example.*"]).is_ok());
    }

    proptest! {
        /// Any value: the tenant is set exactly when it is a valid org id, which then has
        /// Loki's shape; nothing panics.
        #[test]
        fn tenant_set_iff_valid(value in "\\PC{0,8}|[ -~]{0,160}") {
            let mut h = Harness::new(&config(Some("org"), None));
            let got = h.run(&mut line(&[("org", &value)]));
            prop_assert_eq!(got.is_some(), valid_org_id(&value));
            if let Some(t) = got {
                prop_assert_eq!(&*t, value.as_str());
                prop_assert!(!t.is_empty() && t.len() <= 150);
                prop_assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b)));
                prop_assert!(!t.contains(['/', '\\', '|']));
            }
            prop_assert_eq!(h.event("tenant_missing") + h.event("tenant_invalid"),
                u64::from(!valid_org_id(&value)));
        }
    }
}
