//! Every scenario, one file each (numbered as in issue 10).

use crate::scenario::Scenario;

mod two_agents_one_state_dir;

/// All scenarios, in the order they run.
pub fn all() -> Vec<Scenario> {
    vec![two_agents_one_state_dir::SCENARIO]
}
