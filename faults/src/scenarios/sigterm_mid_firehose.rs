//! Scenario 1, SIGTERM mid-firehose: several containers × 200 000 numbered lines (quick:
//! 2 × 20 000), the agent stopped with SIGTERM half-way, started again: exit 0, and
//! every line exactly once, in order (README, "Duplicate window after a crash": SIGTERM loses
//! and duplicates nothing when the sinks drain within `pipeline.shutdown_timeout`).

use super::firehose::{self, Stop};
use crate::ctx::Ctx;
use crate::scenario::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "sigterm-mid-firehose",
    what: "SIGTERM while writing 4 x 200 000 lines, 10 000 more while down, restart: exit 0, 0 lost, 0 dup, in order",
    quick: true,
    run,
};

fn run(ctx: &Ctx) -> Outcome {
    let r = match firehose::run(ctx, Stop::Term) {
        Ok(r) => r,
        Err(e) => return Outcome::fail(e),
    };
    let mut problems = r.problems.clone();
    let t = r.tally;
    if t.lost + t.duplicated + t.out_of_order > 0 {
        problems.push(format!(
            "lost {} duplicated {} out of order {}",
            t.lost, t.duplicated, t.out_of_order
        ));
    }
    let note = format!("first stop: {}; every line once, in order", r.first_exit);
    firehose::counts(Outcome::judge(problems, note), &r)
}
