//! Where a capture session's pieces come from: an Engine API follow stream (multiplexed
//! frames, decoded here), or the container's json-file log (`json_file::source`). Either way
//! the session gets stamped pieces through the same assembler, so the resume filter, the
//! processing, the batch handover and the cursor are one code path for both modes.

use bytes::Bytes;

use super::assembler::Assembler;
use super::decoder::{Decoder, Message};
use super::error::{CaptureError, StreamErrorReason};
use super::json_file::source::JsonFileSource;
use super::task::{SessionEnd, drain_decoder};
use crate::docker::{DockerError, HttpStream};
use crate::pipeline::LogLine;

/// At most this much is gathered into one batch from chunks that are already available.
const GATHER_BYTES: usize = 256 * 1024;

// One per session, on its stack: the size difference costs nothing, and the API path keeps
// its stream unboxed as before.
#[allow(clippy::large_enum_variant)]
pub(super) enum Source {
    Api {
        stream: HttpStream,
        decoder: Decoder,
    },
    JsonFile(Box<JsonFileSource>),
}

/// What a wait on the source brought (before it is taken into lines).
pub(super) enum Ready {
    Api(Result<Option<Bytes>, DockerError>),
    File,
}

/// What a take of the source brought.
pub(super) struct Taken {
    pub gathered: usize,
    /// The source's clean end (the stream's EOF; the stopped container's file read to its end).
    pub eof: bool,
    pub failure: Option<SessionEnd>,
}

impl Source {
    pub fn api(stream: HttpStream, tty: bool) -> Source {
        Source::Api {
            stream,
            decoder: Decoder::new(tty),
        }
    }

    /// Waits for something to read. Cancel-safe.
    pub async fn ready(&mut self) -> Ready {
        match self {
            Source::Api { stream, .. } => Ready::Api(stream.next_chunk().await),
            Source::JsonFile(f) => {
                f.ready().await;
                Ready::File
            }
        }
    }

    /// Takes what `first` brought and what else is already there (up to a batch) into
    /// completed `lines`; a failure ends the session after the lines before it are handed over.
    pub fn take(
        &mut self,
        first: Ready,
        assembler: &mut Assembler,
        lines: &mut Vec<LogLine>,
    ) -> Taken {
        match (self, first) {
            (Source::Api { stream, decoder }, Ready::Api(chunk)) => {
                // The daemon sends every line as its own HTTP chunk, and a batch per line would
                // cost more than the line: gather what is already there.
                let mut taken = Taken {
                    gathered: 0,
                    eof: false,
                    failure: None,
                };
                let mut next = Some(chunk);
                while let Some(chunk) = next.take() {
                    match chunk {
                        Ok(Some(bytes)) => {
                            taken.gathered += bytes.len();
                            decoder.push(bytes);
                        }
                        Ok(None) => taken.eof = true,
                        Err(e) => {
                            taken.failure = Some(SessionEnd::Error(CaptureError::failed(
                                StreamErrorReason::Read,
                                e.to_string(),
                            )));
                            break;
                        }
                    }
                    if let Err(end) = drain_decoder(decoder, assembler, lines) {
                        taken.failure = Some(end);
                        break;
                    }
                    if !taken.eof && taken.gathered < GATHER_BYTES && !stream.drained() {
                        next = stream.try_next_chunk();
                    }
                }
                taken
            }
            (Source::JsonFile(f), _) => {
                // Reading a file blocks: off the async worker (see `json_file::off_worker`).
                let t = super::json_file::off_worker(|| f.take(assembler, lines));
                let reopen = t.reopen;
                Taken {
                    gathered: t.gathered,
                    eof: t.eof,
                    failure: t.failure.map(|text| {
                        SessionEnd::Error(if reopen {
                            CaptureError::Reopen(text)
                        } else {
                            CaptureError::failed(StreamErrorReason::Read, text)
                        })
                    }),
                }
            }
            (Source::Api { .. }, Ready::File) => Taken {
                gathered: 0,
                eof: false,
                failure: None,
            },
        }
    }

    /// At the clean end: what the source still holds (the API decoder's last message).
    pub fn finish(&mut self, assembler: &mut Assembler, lines: &mut Vec<LogLine>) {
        if let Source::Api { decoder, .. } = self
            && let Some(Message::Log { stream, payload }) = decoder.finish()
        {
            assembler.push(stream, payload, lines);
        }
    }

    /// Whether a caught-up source should pause between reads to gather more (see `coalesce`):
    /// a follow stream; a file waits for its poll interval on its own.
    pub fn coalesces(&self) -> bool {
        matches!(self, Source::Api { .. })
    }

    /// Before a pause: lets the stream release what it need not hold meanwhile.
    pub fn park(&mut self) -> Result<(), DockerError> {
        match self {
            Source::Api { stream, .. } => stream.park(),
            Source::JsonFile(_) => Ok(()),
        }
    }
}
