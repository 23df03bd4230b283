//! Entry points for the fuzz targets under `fuzz/` (cargo-fuzz, libFuzzer): one function per
//! target, each feeding arbitrary bytes to the real decoder and checking, besides "no panic",
//! the invariants that are cheap to check. Not an API: hidden from the docs, and always
//! compiled so that the unit tests below run the committed seed corpora on stable (CI covers
//! these entry points even where no nightly toolchain exists).
//!
//! Every function panics when an invariant does not hold: that is what a fuzzer reports. The
//! ones that read files (segment store, checkpoints) work in a scratch directory under
//! `std::env::temp_dir()` (set `TMPDIR=/dev/shm` for speed) that they remove again.
//!
//! Laid out by what is fuzzed: `streams` (the decoders of the Docker stream, its HTTP body and
//! head, timestamps, a capture session) and `stores` (what is read from disk: segment store,
//! checkpoints, the config). The fuzz targets call the functions here, at these paths.

mod stores;
mod streams;

pub use stores::{CHECKPOINT_ID, checkpoint_file, config_yaml, segment_store};
pub use streams::{body_decoder, capture_session, frame_decoder, response_head, timestamp};

/// Splits a fuzz input into read boundaries and the bytes to decode: the first byte gives the
/// number of cuts (mod 17), each cut is a little-endian u16 (taken mod the length + 1).
fn cuts_and_bytes(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = usize::from(n % 17).min(rest.len() / 2);
    let (head, bytes) = rest.split_at(2 * n);
    let mut cuts: Vec<usize> = head
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, bytes)
}

/// `bytes` as the reads a socket could have returned: cut at `cuts`.
fn reads<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        out.push(&bytes[start..cut.max(start)]);
        start = cut.max(start);
    }
    out
}

/// `bytes` in reads of `stride` bytes (at least 1), with the stride raised so that there are at
/// most 512 reads: small inputs are also tried one byte per read, large ones stay fast to fuzz
/// (the cut points cover arbitrary boundaries in them).
fn stride_reads(bytes: &[u8], stride: u8) -> Vec<&[u8]> {
    let stride = usize::from(stride).max(1).max(bytes.len().div_ceil(512));
    bytes.chunks(stride).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs every file of `fuzz/corpus/<target>` through `entry`; returns how many there were.
    fn run_corpus(target: &str, entry: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut count = 0;
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()));
        for item in entries {
            let path = item.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            let name = path.display().to_string();
            let result = std::panic::catch_unwind(|| entry(&bytes));
            assert!(result.is_ok(), "{name} fails");
            count += 1;
        }
        assert!(count > 0, "empty seed corpus {}", dir.display());
        count
    }

    #[test]
    fn frame_decoder_corpus() {
        run_corpus("frame_decoder", frame_decoder);
    }

    #[test]
    fn body_decoder_corpus() {
        run_corpus("body_decoder", body_decoder);
    }

    #[test]
    fn response_head_corpus() {
        run_corpus("response_head", response_head);
    }

    #[test]
    fn timestamp_corpus() {
        run_corpus("timestamp", timestamp);
    }

    #[test]
    fn segment_store_corpus() {
        run_corpus("segment_store", segment_store);
    }

    #[test]
    fn checkpoint_file_corpus() {
        run_corpus("checkpoint_file", checkpoint_file);
    }

    #[test]
    fn config_yaml_corpus() {
        run_corpus("config_yaml", config_yaml);
    }

    #[test]
    fn capture_session_corpus() {
        run_corpus("capture_session", capture_session);
    }
}
