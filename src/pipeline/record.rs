//! What capture hands to the sinks.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

use super::budget::BudgetPermit;
use super::encoded::encode_container_fields;

use crate::capture::{AckedCursor, Cursor};
use crate::checkpoint::FilePosition;
use crate::processing::Extra;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdout,
    Stderr,
    Tty,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
            StreamKind::Tty => "tty",
        }
    }
}

/// One log line as Docker gave it.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// Docker's timestamp, in nanoseconds since the epoch (sinks format it; Docker's own form
    /// is the fixed-width UTC one they write back).
    pub ts_ns: i64,
    pub stream: StreamKind,
    /// The line without its newline; raw bytes (invalid UTF-8 is replaced when encoded).
    pub message: Bytes,
    /// The line was longer than `capture.max_line_bytes` and was cut.
    pub truncated: bool,
    /// What a processing pipeline added (fields, level, labels …); None when none applies.
    pub extra: Option<Box<Extra>>,
}

/// What kind of source a [`ContainerMeta`] describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A Docker container (read through the Engine API or from its json-file log).
    Container,
    /// A host log file of `sources.files`: `id` is its position key (`file-<dev>-<ino>`),
    /// `name` its path, `image` empty; `label_fields` are the group's `fields`.
    File {
        /// The host's name (the record's `host` field).
        host: String,
    },
}

/// Source metadata, shared by every line of the source (never cloned per line): a container,
/// or a host file ([`ContainerMeta::for_file`]). Built with [`ContainerMeta::new`], which also
/// encodes the record fields once for the NDJSON sinks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMeta {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    /// Container labels chosen by `processing.container_labels` (key, value), sorted by key:
    /// record fields of every line of the container.
    pub label_fields: Vec<(String, String)>,
    pub kind: SourceKind,
    ndjson_fields: Box<[u8]>,
}

impl ContainerMeta {
    pub fn new(
        id: String,
        name: String,
        image: String,
        compose_project: Option<String>,
        compose_service: Option<String>,
    ) -> Self {
        let mut meta = ContainerMeta {
            id,
            name,
            image,
            compose_project,
            compose_service,
            label_fields: Vec::new(),
            kind: SourceKind::Container,
            ndjson_fields: Box::default(),
        };
        meta.ndjson_fields = encode_container_fields(&meta).into();
        meta
    }

    /// A container with only an id and a name (no image, no compose labels): the tests' usual one.
    #[cfg(test)]
    pub(crate) fn named(id: &str, name: &str) -> Self {
        ContainerMeta::new(id.into(), name.into(), String::new(), None, None)
    }

    /// A host log file: `key` is its position key, `path` where it was found, `fields` the
    /// group's `fields` (record fields of each of its lines).
    pub fn for_file(
        key: String,
        path: String,
        host: String,
        fields: Vec<(String, String)>,
    ) -> Self {
        let mut meta = ContainerMeta::new(key, path, String::new(), None, None);
        meta.kind = SourceKind::File { host };
        meta.with_label_fields(fields)
    }

    /// Whether this is a host file of `sources.files`.
    pub fn is_file(&self) -> bool {
        matches!(self.kind, SourceKind::File { .. })
    }

    /// With these container labels as record fields (see `label_fields`).
    pub fn with_label_fields(mut self, mut label_fields: Vec<(String, String)>) -> Self {
        label_fields.sort();
        self.label_fields = label_fields;
        self.ndjson_fields = encode_container_fields(&self).into();
        self
    }

    /// The same container under another name.
    pub fn renamed(&self, name: String) -> Self {
        let mut meta = ContainerMeta::new(
            self.id.clone(),
            name,
            self.image.clone(),
            self.compose_project.clone(),
            self.compose_service.clone(),
        )
        .with_label_fields(self.label_fields.clone());
        if meta.kind != self.kind {
            meta.kind = self.kind.clone();
            meta.ndjson_fields = encode_container_fields(&meta).into();
        }
        meta
    }

    /// A container field by name (`container_name`, `container_id`, `image`,
    /// `compose_project`, `compose_service`) or a copied container label; None if unset/empty.
    pub fn field(&self, name: &str) -> Option<&str> {
        if let SourceKind::File { host } = &self.kind {
            return match name {
                "file" => Some(self.name.as_str()),
                "host" => Some(host.as_str()),
                _ => self
                    .label_fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str()),
            }
            .filter(|v| !v.is_empty());
        }
        match name {
            "container_name" => Some(self.name.as_str()),
            "container_id" => Some(self.id.as_str()),
            "image" => Some(self.image.as_str()),
            "compose_project" => self.compose_project.as_deref(),
            "compose_service" => self.compose_service.as_deref(),
            _ => self
                .label_fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
        .filter(|v| !v.is_empty())
    }

    /// `"container_id":"…","container_name":"…","image":"…",` (and the compose fields), JSON-escaped.
    pub fn ndjson_fields(&self) -> &[u8] {
        &self.ndjson_fields
    }
}

/// Where a source resumes once a batch is acknowledged by every sink: a container's cursor
/// (timestamps and counts, in both capture modes), or a host file's byte position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckPosition {
    /// Becomes the container's [`AckedCursor`] once every sink has acknowledged the batch.
    Container(AckedCursor),
    File(FilePosition),
}

impl From<Cursor> for AckPosition {
    fn from(cursor: Cursor) -> Self {
        AckPosition::Container(cursor)
    }
}

impl AckPosition {
    /// The container cursor (None for a file position).
    pub fn cursor(&self) -> Option<&AckedCursor> {
        match self {
            AckPosition::Container(c) => Some(c),
            AckPosition::File(_) => None,
        }
    }
}

/// Lines of one source (a container, or a host file) read in one go, and the position just
/// past the last of them. `container` describes the source: for a host file it is built by
/// [`ContainerMeta::for_file`].
#[derive(Clone, Debug)]
pub struct Batch {
    pub container: Arc<ContainerMeta>,
    pub lines: Vec<LogLine>,
    pub position: AckPosition,
}

impl Batch {
    pub fn bytes(&self) -> usize {
        self.lines.iter().map(|l| l.message.len()).sum()
    }
}

/// A batch on its way through the pipeline, holding its share of the queue budget until every
/// sink is done with it (the last `Arc` dropped releases it).
pub struct Delivery {
    pub batch: Batch,
    /// Assigned by the router, in queue order.
    pub seq: u64,
    pub enqueued: Instant,
    /// A marker, not lines: the container's stream has ended (it stopped or was removed) and
    /// everything it had was handed over before this. No lines, no cursor, not in the ledger;
    /// sinks may release what they hold for the container once its lines are written.
    pub end_of_stream: bool,
    _permit: Option<BudgetPermit>,
}

impl Delivery {
    pub fn new(batch: Batch, permit: BudgetPermit) -> Self {
        Delivery {
            batch,
            seq: 0,
            enqueued: Instant::now(),
            end_of_stream: false,
            _permit: Some(permit),
        }
    }

    /// The bytes of the queue budget this delivery holds (0 for a marker).
    pub fn charged_bytes(&self) -> usize {
        self._permit.as_ref().map_or(0, BudgetPermit::bytes)
    }

    /// A batch without lines that moves the cursor (processing dropped every line read):
    /// the router acknowledges it at once, in order, without the sinks.
    pub fn is_settled(&self) -> bool {
        !self.end_of_stream && self.batch.lines.is_empty()
    }

    /// The end-of-stream marker of a container (holds no budget).
    pub fn end_of_stream(container: Arc<ContainerMeta>) -> Self {
        Delivery {
            batch: Batch {
                container,
                lines: Vec::new(),
                position: AckPosition::Container(Cursor::default()),
            },
            seq: 0,
            enqueued: Instant::now(),
            end_of_stream: true,
            _permit: None,
        }
    }
}
