//! Every scenario, one file each (numbered as in issue 10).

use crate::scenario::Scenario;

mod bad_configs;
mod churn;
mod corrupt_checkpoints;
mod dockerd_kill;
mod dockerd_restart;
mod firehose;
mod hostile_content;
mod http_abuse;
mod kit;
mod loki_faults;
mod rename_pause_restart;
mod rm_burst;
mod sigkill_mid_firehose;
mod sigterm_mid_firehose;
mod sink_disk_full;
mod state_dir_full_or_readonly;
mod two_agents_one_state_dir;
mod unreadable_log_driver;

/// All scenarios, in the order they run.
pub fn all() -> Vec<Scenario> {
    vec![
        sigterm_mid_firehose::SCENARIO,
        sigkill_mid_firehose::SCENARIO,
        dockerd_restart::SCENARIO,
        dockerd_kill::SCENARIO,
        sink_disk_full::SCENARIO,
        state_dir_full_or_readonly::SCENARIO,
        corrupt_checkpoints::SCENARIO,
        bad_configs::SCENARIO,
        unreadable_log_driver::SCENARIO,
        hostile_content::SCENARIO,
        rm_burst::SCENARIO,
        churn::SCENARIO,
        rename_pause_restart::SCENARIO,
        http_abuse::SCENARIO,
        two_agents_one_state_dir::SCENARIO,
        loki_faults::SCENARIO,
    ]
}
