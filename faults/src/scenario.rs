//! What a scenario is and what it returns.

use crate::ctx::Ctx;

/// One fault, injected and judged against ground truth.
pub struct Scenario {
    /// Unique, kebab-case: what `--only` names.
    pub name: &'static str,
    /// One line: the fault and what is checked.
    pub what: &'static str,
    /// Cheap enough for the CI subset (`--quick`).
    pub quick: bool,
    /// Runs the scenario. It returns FAIL with a note rather than panicking (a panic is caught
    /// and reported as FAIL too). `ctx.quick` says whether to run the reduced version.
    pub run: fn(&Ctx) -> Outcome,
}

/// The verdict of one scenario.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub pass: bool,
    /// What was counted, in the order it should be shown: `("lost", "0")`, ...
    pub counts: Vec<(String, String)>,
    pub note: String,
}

impl Outcome {
    pub fn pass(note: impl Into<String>) -> Outcome {
        Outcome {
            pass: true,
            counts: Vec::new(),
            note: note.into(),
        }
    }

    pub fn fail(note: impl Into<String>) -> Outcome {
        Outcome {
            pass: false,
            counts: Vec::new(),
            note: note.into(),
        }
    }

    /// PASS when `problems` is empty, else FAIL with the problems as the note.
    pub fn judge(problems: Vec<String>, pass_note: impl Into<String>) -> Outcome {
        if problems.is_empty() {
            Outcome::pass(pass_note)
        } else {
            Outcome::fail(problems.join("; "))
        }
    }

    /// Adds one count (builder style).
    pub fn count(mut self, key: impl Into<String>, value: impl ToString) -> Outcome {
        self.counts.push((key.into(), value.to_string()));
        self
    }

    pub fn counts_text(&self) -> String {
        self.counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
