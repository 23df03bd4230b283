//! Per-container capture: decoding the logs stream, merging partial lines, the exact-resume
//! cursor, and the task that owns one container's stream.

pub(crate) mod assembler;
mod coalesce;
pub(crate) mod cursor;
mod decoder;
mod error;
pub mod json_file;
mod pause;
mod rotation;
mod source;
mod task;

pub use assembler::Assembler;
pub use cursor::{
    AckedCursor, Cursor, DeliveredCursor, Position, REORDER_SLACK_NS, ResumeFilter,
    StreamPositions, since_text,
};
pub use decoder::{DecodeError, Decoder, Message, PIECE_BYTES};
pub use error::{CaptureError, StreamErrorReason};
pub use task::{CaptureContext, CaptureExit, CaptureTask, compact};
