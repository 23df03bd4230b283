//! Scenario 2, SIGKILL mid-firehose: as scenario 1 with SIGKILL. The README ("Duplicate window
//! after a crash") promises nothing lost, and duplicates only of lines acknowledged after the
//! last checkpoint write, at most `checkpoint.interval` worth (run here with 2 s). The bound
//! checked: the
//! duplicates are at most the lines the file sink flushed in the checkpoint interval plus its
//! fsync interval (1 s, a flushed line is acknowledged only at the next fsync) plus 1 s of
//! sampling slack before the kill; and with repeats removed every stream is in order.

use super::firehose::{self, Stop};
use crate::ctx::Ctx;
use crate::scenario::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "sigkill-mid-firehose",
    what: "SIGKILL while writing 4 x 200 000 lines, 10 000 more while down, restart: 0 lost, dup within the checkpoint window, in order",
    quick: true,
    run,
};

fn run(ctx: &Ctx) -> Outcome {
    let r = match firehose::run(ctx, Stop::Kill) {
        Ok(r) => r,
        Err(e) => return Outcome::fail(e),
    };
    let mut problems = r.problems.clone();
    let t = r.tally;
    if t.lost > 0 {
        problems.push(format!("lost {}", t.lost));
    }
    if t.duplicated as f64 > r.flushed_in_window {
        problems.push(format!(
            "duplicated {} > {} lines flushed in the {:.0} s before the kill",
            t.duplicated, r.flushed_in_window, r.window_s
        ));
    }
    if !r.in_order_once_deduplicated {
        problems.push("a stream is out of order even with repeats removed".into());
    }
    let note = format!(
        "dup {} <= {} flushed in the last {:.0} s (checkpoint.interval 2 s + fsync 1 s + 1 s); repeats removed, in order",
        t.duplicated, r.flushed_in_window, r.window_s
    );
    firehose::counts(Outcome::judge(problems, note), &r).count("dup_bound", r.flushed_in_window)
}
