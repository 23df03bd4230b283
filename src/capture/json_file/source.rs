//! The json-file log as a line source of the capture session: reads the chain of files in
//! large steps, parses every complete entry into one buffer per read, and hands the pieces to
//! the session's assembler (which merges Docker's 16 KiB pieces exactly as in API mode).
//!
//! The file has no end-of-stream: the container's lines are complete once it has stopped and
//! the file is read to its end. dockerd waits for the log copier to drain and closes the log
//! driver before it marks the container stopped and emits `die` (moby `daemon/monitor.go`
//! `handleContainerExit` → `Container.Reset`), so an end of file reached after the stop was
//! seen is the end of the container's output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::warn;

use super::parse::{EntryStream, parse_line};
use super::reader::{ChainReader, Step, is_reopen};
use crate::capture::assembler::{Assembler, UNSTAMPED};
use crate::docker::DockerClient;
use crate::docker::timestamp::SecondCache;
use crate::observability::metrics::Metrics;
use crate::pipeline::{LogLine, StreamKind};

/// Bytes asked of the file per read.
const READ_BYTES: usize = 256 * 1024;
/// At most this much is read into one batch.
const GATHER_BYTES: usize = 256 * 1024;
/// Read buffer an idle container keeps at most.
const IDLE_BUF_BYTES: usize = 16 * 1024;
/// How often a file at its end is looked at again.
const POLL: Duration = Duration::from_millis(50);
/// How long a running container's file may stay at its end before the daemon is asked whether
/// it still runs: a backstop only (its `die` event says it, and the resync after an events
/// reconnect finds the containers that stopped meanwhile), so idle containers cost no
/// inspect every few seconds.
const IDLE_CHECK: Duration = Duration::from_secs(60);
/// Bytes kept pending without a newline beyond the longest valid entry (a 16 KiB piece,
/// escaped) or the longest line, before they are cut as a raw line: a region of a file
/// without newlines does not grow the buffer without bound.
const PENDING_MARGIN: usize = 64 * 1024;

/// What one take brought.
pub struct Taken {
    pub gathered: usize,
    /// The container has stopped and its log is read to the end.
    pub eof: bool,
    pub failure: Option<String>,
    /// The failure asks for a reopen from the cursor (nothing failed; see `reader::Reopen`).
    pub reopen: bool,
}

pub struct JsonFileSource {
    reader: ChainReader,
    /// Bytes read and not parsed yet (an entry cut by the end of a read).
    buf: Vec<u8>,
    pieces: Vec<(StreamKind, i64, usize, usize)>,
    seconds: SecondCache,
    /// Timestamp of the last valid stdout (or TTY) entry: what a malformed line, emitted as
    /// stdout, is stamped with (UNSTAMPED before any: such a line is unstamped).
    last_stdout_ts: i64,
    /// At most this much is kept pending without a newline (see `PENDING_MARGIN`).
    max_pending: usize,
    /// Trim one `\r` before a line's newline (a container of unknown TTY, see
    /// `JsonFileTarget::trim_cr`).
    trim_cr: bool,
    tty: bool,
    stopped: watch::Receiver<bool>,
    stopped_seen: bool,
    at_end: bool,
    last_check: Instant,
    client: DockerClient,
    id: String,
    name: String,
    metrics: Arc<Metrics>,
    rotations: u64,
    truncations: u64,
}

impl JsonFileSource {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reader: ChainReader,
        tty: bool,
        stopped: watch::Receiver<bool>,
        client: DockerClient,
        id: String,
        name: String,
        metrics: Arc<Metrics>,
        max_line_bytes: usize,
    ) -> Self {
        let (rotations, truncations) = (reader.rotations, reader.truncations);
        JsonFileSource {
            reader,
            buf: Vec::new(),
            pieces: Vec::new(),
            seconds: SecondCache::default(),
            last_stdout_ts: UNSTAMPED,
            trim_cr: false,
            max_pending: max_line_bytes.max(super::files::FIRST_LINE_MAX) + PENDING_MARGIN,
            tty,
            stopped,
            stopped_seen: false,
            at_end: false,
            last_check: Instant::now(),
            client,
            id,
            name,
            metrics,
            rotations,
            truncations,
        }
    }

    /// Trims one `\r` before each line's newline (see `JsonFileTarget::trim_cr`).
    pub fn trim_cr(mut self, trim: bool) -> Self {
        self.trim_cr = trim;
        self
    }

    fn is_stopped(&mut self) -> bool {
        self.stopped_seen |= *self.stopped.borrow_and_update();
        self.stopped_seen
    }

    /// Waits until a read may bring something: at once while the file had more, else after
    /// the poll interval or when the container stops. Cancel-safe.
    pub async fn ready(&mut self) {
        if !self.at_end {
            tokio::task::yield_now().await;
            return;
        }
        if !self.is_stopped() && self.last_check.elapsed() >= IDLE_CHECK {
            self.last_check = Instant::now();
            match self.client.inspect(&self.id).await {
                Ok(c) if c.state.running => {}
                Ok(_) => self.stopped_seen = true,
                Err(e) if e.status() == Some(404) => self.stopped_seen = true,
                Err(_) => {}
            }
        }
        if self.stopped_seen {
            return;
        }
        let stopped = &mut self.stopped;
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = async {
                if stopped.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {}
        }
    }

    /// Reads what there is (up to a batch), completed lines into `lines`.
    pub fn take(&mut self, assembler: &mut Assembler, lines: &mut Vec<LogLine>) -> Taken {
        // Observed before reading: an end of file reached after it is the end of the output.
        let stopped = self.is_stopped();
        let mut gathered = 0;
        let mut failure = None;
        let mut reopen = false;
        self.at_end = false;
        while gathered < GATHER_BYTES {
            match self.reader.step(&mut self.buf, READ_BYTES) {
                Ok(Step::Read(n)) => {
                    gathered += n;
                    self.metrics.json_file.bytes_read.inc_by(n as u64);
                    self.parse(assembler, lines, false);
                }
                Ok(Step::Moved) => {
                    self.metrics
                        .json_file
                        .rotations
                        .inc_by(self.reader.rotations - self.rotations);
                    self.rotations = self.reader.rotations;
                    self.metrics
                        .json_file
                        .truncations
                        .inc_by(self.reader.truncations - self.truncations);
                    self.truncations = self.reader.truncations;
                }
                Ok(Step::Idle) => {
                    self.at_end = true;
                    break;
                }
                Err(e) => {
                    reopen = is_reopen(&e);
                    failure = Some(format!("{}: {e}", self.reader.path().display()));
                    break;
                }
            }
        }
        let eof = self.at_end && stopped;
        if eof && !self.buf.is_empty() {
            // A last entry without its newline (a torn write): kept as it is.
            self.parse(assembler, lines, true);
        }
        if gathered > 0 {
            self.last_check = Instant::now();
        }
        // An idle container does not keep a burst-sized read buffer.
        if self.at_end && self.buf.capacity() > IDLE_BUF_BYTES {
            self.buf.shrink_to(self.buf.len().max(IDLE_BUF_BYTES));
        }
        Taken {
            gathered,
            eof,
            failure,
            reopen,
        }
    }

    /// Parses every complete entry of `buf` (all of it when `all`) into one buffer, then hands
    /// the pieces to the assembler as slices of it.
    fn parse(&mut self, assembler: &mut Assembler, lines: &mut Vec<LogLine>, all: bool) {
        // `cut`: the buffer holds no newline and has reached its bound: all of it goes as a
        // raw piece without its end (the assembler joins and cuts it as a long line).
        let mut cut = false;
        let end = if all {
            self.buf.len()
        } else {
            match self.buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if self.buf.len() >= self.max_pending => {
                    cut = true;
                    self.buf.len()
                }
                None => return,
            }
        };
        let mut out = Vec::with_capacity(end);
        self.pieces.clear();
        for line in self.buf[..end].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let start = out.len();
            let (stream, ts) = match parse_line(line, &mut out, &mut self.seconds) {
                Some(e) => {
                    let stream = match (e.stream, self.tty) {
                        (_, true) => StreamKind::Tty,
                        (EntryStream::Stdout, false) => StreamKind::Stdout,
                        (EntryStream::Stderr, false) => StreamKind::Stderr,
                    };
                    if stream != StreamKind::Stderr {
                        self.last_stdout_ts = e.ts_ns;
                    }
                    if self.trim_cr && out[start..].ends_with(b"\r\n") {
                        out.truncate(out.len() - 2);
                        out.push(b'\n');
                    }
                    (stream, e.ts_ns)
                }
                None => {
                    self.metrics.json_file.parse_errors.inc();
                    warn!(container = %self.name, container_id = %self.id,
                        file = %self.reader.path().display(), bytes = line.len(),
                        "malformed json-file entry; kept as raw text");
                    out.extend_from_slice(line);
                    // A cut region continues in the next read: no end of line yet.
                    if !cut {
                        out.push(b'\n');
                    }
                    let stream = if self.tty {
                        StreamKind::Tty
                    } else {
                        StreamKind::Stdout
                    };
                    // Stamped as a stdout line after the last stdout entry: the stdout cursor
                    // it moves is the one its stamp belongs to.
                    (stream, self.last_stdout_ts)
                }
            };
            self.pieces.push((stream, ts, start, out.len()));
        }
        self.buf.drain(..end);
        let out = Bytes::from(out);
        for &(stream, ts, start, end) in &self.pieces {
            assembler.push_stamped(stream, ts, out.slice(start..end), lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::json_file::files::LogFiles;
    use std::io::Write;

    fn entry(text: &str, stream: &str, sec: i64) -> String {
        format!(
            "{{\"log\":\"{text}\",\"stream\":\"{stream}\",\"time\":\"{}\"}}\n",
            crate::docker::timestamp::format_rfc3339_nanos(sec * 1_000_000_000)
        )
    }

    /// A source over one log file with `content`, and the lines it gives (stopped: to the end).
    fn read_all(content: &[u8], trim_cr: bool, max_line_bytes: usize) -> (Vec<LogLine>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::of(dir.path(), "c1");
        std::fs::create_dir_all(&files.dir).unwrap();
        std::fs::File::create(files.current())
            .unwrap()
            .write_all(content)
            .unwrap();
        let reader = ChainReader::open(files, 0, None).unwrap();
        let (_tx, stopped) = watch::channel(true);
        let client = DockerClient::unconnected(
            crate::docker::Endpoint::parse("unix:///nonexistent").unwrap(),
        );
        let mut source = JsonFileSource::new(
            reader,
            false,
            stopped,
            client,
            "c1".into(),
            "c1".into(),
            Arc::new(Metrics::new()),
            max_line_bytes,
        )
        .trim_cr(trim_cr);
        let mut assembler = Assembler::new(max_line_bytes);
        let mut lines = Vec::new();
        let mut max_buf = 0;
        loop {
            // Small reads, so that pending bytes accumulate over many steps.
            let t = source.take(&mut assembler, &mut lines);
            max_buf = max_buf.max(source.buf.len());
            assert!(t.failure.is_none());
            if t.eof {
                break;
            }
        }
        assembler.flush(&mut lines);
        (lines, max_buf)
    }

    #[test]
    fn a_raw_line_is_stamped_with_the_last_stdout_entry_and_unstamped_before_any() {
        let content = format!(
            "garbage-0\n{}{}garbage-1\n",
            entry("a\\n", "stdout", 10),
            entry("b\\n", "stderr", 20)
        );
        let (lines, _) = read_all(content.as_bytes(), false, 1 << 20);
        let got: Vec<(String, i64)> = lines
            .iter()
            .map(|l| (String::from_utf8_lossy(&l.message).into_owned(), l.ts_ns))
            .collect();
        assert_eq!(got[0].1, UNSTAMPED, "{got:?}");
        assert_eq!(got[3], ("garbage-1".to_string(), 10_000_000_000), "{got:?}");
    }

    #[test]
    fn trailing_cr_is_trimmed_for_a_container_of_unknown_tty() {
        let content = entry("a\\r\\n", "stdout", 10);
        let (lines, _) = read_all(content.as_bytes(), true, 1 << 20);
        assert_eq!(&lines[0].message[..], b"a");
        let (lines, _) = read_all(content.as_bytes(), false, 1 << 20);
        assert_eq!(&lines[0].message[..], b"a\r");
    }

    #[test]
    fn a_region_without_newline_does_not_grow_the_buffer_without_bound() {
        let mut content = vec![b'z'; 3 << 20];
        content.push(b'\n');
        content.extend_from_slice(entry("after\\n", "stdout", 10).as_bytes());
        let (lines, max_buf) = read_all(&content, false, 1 << 10);
        let bound = super::super::files::FIRST_LINE_MAX + PENDING_MARGIN + READ_BYTES;
        assert!(
            max_buf <= bound,
            "pending buffer grew to {max_buf} (bound {bound})"
        );
        assert_eq!(&lines.last().unwrap().message[..], b"after");
    }
}
