//! The Loki-compatible test receiver lives in the testkit crate (feature `loki`), so that the
//! fault-suite runner uses the same one as these tests.

pub use log_capturer_testkit::loki::*;
