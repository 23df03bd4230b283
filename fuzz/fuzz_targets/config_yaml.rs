//! Fuzz target: see `log_capturer::fuzzing::config_yaml` for the input layout and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| log_capturer::fuzzing::config_yaml(data));
