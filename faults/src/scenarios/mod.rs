//! Every scenario, one file each (numbered as in issue 10).

use crate::scenario::Scenario;

mod bad_configs;
mod churn;
mod http_abuse;
mod kit;
mod loki_faults;
mod rename_pause_restart;
mod rm_burst;
mod two_agents_one_state_dir;

/// All scenarios, in the order they run.
pub fn all() -> Vec<Scenario> {
    vec![
        bad_configs::SCENARIO,
        rm_burst::SCENARIO,
        churn::SCENARIO,
        rename_pause_restart::SCENARIO,
        http_abuse::SCENARIO,
        two_agents_one_state_dir::SCENARIO,
        loki_faults::SCENARIO,
    ]
}
