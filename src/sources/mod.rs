//! Sources besides the Engine API's follow streams: host log files (`sources.files`) and the
//! file primitive the json-file capture mode of containers shares with them.
//!
//! ```text
//! sources.files globs ──▶ watcher (inotify + rescan) ──▶ one tail per file ──▶ pipeline queue
//!                                                        (follow.rs: fd, rotation, truncation)
//! ```

pub mod files;
pub mod follow;
