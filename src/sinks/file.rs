use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::ndjson::encode_line;
use super::{Sink, write_out};
use crate::pipeline::{Batch, ContainerMeta};

struct OpenFile {
    file: File,
    buf: Vec<u8>,
    last_write: Instant,
}

/// Encoded bytes a file may hold before a batch writes them out ahead of the flush.
const WRITE_AHEAD_BYTES: usize = 256 * 1024;

/// NDJSON files, one per path the template yields (e.g. one per container).
pub struct FileSink {
    template: String,
    idle_close: Duration,
    files: HashMap<PathBuf, OpenFile>,
}

impl FileSink {
    pub fn new(template: &str, idle_close: Duration) -> Self {
        FileSink {
            template: template.to_string(),
            idle_close,
            files: HashMap::new(),
        }
    }

    pub fn path_for(&self, meta: &ContainerMeta) -> PathBuf {
        PathBuf::from(
            self.template
                .replace("{container_name}", &sanitize(&meta.name))
                .replace("{container_id}", &meta.id),
        )
    }

    fn open(path: &PathBuf) -> io::Result<File> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new().create(true).append(true).open(path)
    }
}

/// Keeps a container name from escaping the template's directory.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect::<String>()
        .replace("..", "__")
}

fn with_path(path: &std::path::Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn write_batch(&mut self, batch: &Batch) -> io::Result<()> {
        let path = self.path_for(&batch.container);
        if !self.files.contains_key(&path) {
            // The only failure point, and it comes before anything is buffered.
            let file = Self::open(&path).map_err(|e| with_path(&path, e))?;
            self.files.insert(
                path.clone(),
                OpenFile {
                    file,
                    buf: Vec::with_capacity(64 * 1024),
                    last_write: Instant::now(),
                },
            );
        }
        if let Some(entry) = self.files.get_mut(&path) {
            // Hand large buffers to the kernel early rather than growing them until the flush
            // (200 ms of a firehose is tens of MiB). Done before encoding, so that a failed
            // write leaves this batch unencoded for the retry, and nothing is written twice.
            if entry.buf.len() >= WRITE_AHEAD_BYTES {
                write_out(&mut entry.file, &mut entry.buf).map_err(|e| with_path(&path, e))?;
            }
            for line in &batch.lines {
                encode_line(&mut entry.buf, &batch.container, line);
            }
            entry.last_write = Instant::now();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut first_error = None;
        for (path, f) in &mut self.files {
            if !f.buf.is_empty()
                && let Err(e) = write_out(&mut f.file, &mut f.buf)
            {
                first_error.get_or_insert(with_path(path, e));
            }
        }
        let idle = self.idle_close;
        self.files
            .retain(|_, f| !f.buf.is_empty() || f.last_write.elapsed() < idle);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_are_written_ahead_of_the_flush() {
        use crate::pipeline::{LogLine, StreamKind};
        use bytes::Bytes;
        let dir = tempfile::tempdir().expect("tempdir");
        let template = format!("{}/{{container_name}}.log", dir.path().display());
        let mut sink = FileSink::new(&template, Duration::from_secs(60));
        let meta = std::sync::Arc::new(ContainerMeta::new(
            "id".into(),
            "c".into(),
            String::new(),
            None,
            None,
        ));
        let path = dir.path().join("c.log");
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut sent = 0u64;
        // 1000 lines of 1000 bytes: well past the write-ahead size, well under a flush.
        for b in 0..10 {
            let lines = (0..100)
                .map(|i| LogLine {
                    ts_ns: (b * 100 + i) as i64,
                    stream: StreamKind::Stdout,
                    message: Bytes::from(format!("{:0>1000}", b * 100 + i)),
                    truncated: false,
                })
                .collect();
            let batch = Batch {
                container: meta.clone(),
                lines,
                cursor: Default::default(),
            };
            sink.write_batch(&batch).expect("write");
            sent += 100;
        }
        assert!(size() > 0, "nothing reached the file before the flush");
        sink.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        let seen: Vec<u64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["message"]
                    .as_str()
                    .and_then(|m| m.parse().ok())
                    .expect("number")
            })
            .collect();
        assert_eq!(seen.len() as u64, sent);
        assert_eq!(
            seen,
            (0..sent).collect::<Vec<_>>(),
            "each line once, in order"
        );
    }

    #[test]
    fn names_cannot_escape_directory() {
        let sink = FileSink::new("/logs/{container_name}.log", Duration::from_secs(1));
        let meta = ContainerMeta::new(
            "id".into(),
            "../etc/passwd".into(),
            String::new(),
            None,
            None,
        );
        assert_eq!(
            sink.path_for(&meta),
            PathBuf::from("/logs/___etc_passwd.log")
        );
    }
}
