//! `log-capturer process`: runs sample lines through one pipeline of a config and prints what
//! each becomes — a record (the NDJSON the sinks write), a drop (and the stage that dropped
//! it), or a multiline group (the input lines it joined) — so people can try a pipeline
//! without running the agent.
//!
//! Each input line is one message of one stream. A `docker logs --timestamps` prefix
//! (`2026-12-01T06:00:00.123456789Z `) is taken as the line's Docker timestamp; lines without
//! one get the wall clock as they are read. Before each line, groups whose stream has been
//! quiet for `flush_after` *by those timestamps* are emitted (as the agent would have done in
//! the meantime); at the end of the input every open group is emitted (`stream_end`).
//!
//! Output, one line per outcome, in input order:
//! - `text`: `3: {record}`, `4: dropped by drop[1]`, `5-9: {record}` (a group of 5 lines);
//! - `ndjson`: `{"input":[5,9],"record":{…}}`, `{"input":[4,4],"dropped_by":"drop[1]"}`.
//!
//! What only the Loki sink sends (stream labels, structured metadata, tenant) follows the
//! record: `  loki: {"labels":{…},"structured_metadata":{…},"tenant":"…"}` in text, a
//! `"loki"` key in ndjson.
//!
//! With `--file PATH` the lines are those of a host file of `sources.files`: records as the
//! agent writes them for that file (`file`, `host` — this machine's name — and the fields of
//! the first group whose globs take the path, which `--field KEY=VALUE` adds to or
//! overrides), through that group's `pipeline` (or `--pipeline`). See `try_run_file.rs`.
//!
//! A summary goes to stderr. Exit codes: 0 done, 1 an I/O error, 2 a config or usage error
//! (the message names the key path).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use bytes::Bytes;

use super::{Pipelines, ProcessingMetrics, Processor, StageContext};
use crate::capture::Position;
use crate::clock::now_ns;
use crate::config::Config;
use crate::discovery::filter::Candidate;
use crate::docker::timestamp::parse_rfc3339_nanos;
use crate::pipeline::{ContainerMeta, LogLine, StreamKind};

#[path = "try_run_file.rs"]
mod file;

pub const EXIT_OK: u8 = 0;
pub const EXIT_IO: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Ndjson,
}

/// What the command line chose.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The pipeline by name; None: the one whose `match` selects the container (with a
    /// container given), else the first.
    pub pipeline: Option<String>,
    /// The container the lines come from (name, without `/`), for `match` and the records.
    pub container: Option<String>,
    /// Its image, for `match` and the records.
    pub image: Option<String>,
    /// Its labels (`key=value`), for `match` and `processing.container_labels`.
    pub labels: Vec<String>,
    pub stream: Option<StreamKind>,
    pub format: Format,
    /// The lines are a host file's, at this path (instead of a container's).
    pub file: Option<String>,
    /// Fields of its group (`key=value`), added to (or replacing) those of the group of
    /// `sources.files` that takes the path.
    pub fields: Vec<String>,
}

/// An error of the command, with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn config_error(message: impl Into<String>) -> Failure {
    Failure {
        code: EXIT_CONFIG,
        message: message.into(),
    }
}

fn io_error(what: &str, e: std::io::Error) -> Failure {
    Failure {
        code: EXIT_IO,
        message: format!("{what}: {e}"),
    }
}

/// What a run did, for the summary on stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The pipeline that ran (None: none applied, lines passed unchanged).
    pub pipeline: Option<String>,
    pub lines: u64,
    pub records: u64,
    pub dropped: u64,
    /// Records that joined more than one line.
    pub groups: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pipeline {
            Some(name) => write!(f, "pipeline {name}: ")?,
            None => f.write_str("no pipeline: ")?,
        }
        write!(
            f,
            "{} lines in, {} records out ({} multiline groups), {} dropped",
            self.lines, self.records, self.groups, self.dropped
        )
    }
}

/// The whole command: loads the config at `path`, reads `input`, writes the outcomes to
/// `output` and returns the summary (the caller prints it and any note to stderr).
pub fn run(
    path: &Path,
    options: &Options,
    input: impl BufRead,
    output: impl Write,
    notes: &mut dyn FnMut(&str),
) -> Result<Summary, Failure> {
    let config = Config::load(path).map_err(|e| config_error(e.to_string()))?;
    // Validated with the config; compiled again here for the processors.
    let pipelines = Pipelines::compile(&config.processing)
        .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
    let metrics = ProcessingMetrics::default();
    let (meta, processor) = match &options.file {
        Some(path) => file::choose(&config, &pipelines, options, path, &metrics, notes)?,
        None => {
            let labels: HashMap<String, String> = parse_pairs("--label", &options.labels)?
                .into_iter()
                .collect();
            let name = options.container.clone().unwrap_or_default();
            let image = options.image.clone().unwrap_or_default();
            let meta = ContainerMeta::new(String::new(), name.clone(), image.clone(), None, None)
                .with_label_fields(pipelines.label_fields(&labels));
            let processor = choose(&pipelines, options, &name, &image, &labels, &metrics, notes)?;
            (meta, processor)
        }
    };
    let mut runner = Runner {
        meta,
        format: options.format,
        // A host file's lines come as stdout (and its records have no stream).
        stream: match options.file {
            Some(_) => StreamKind::Stdout,
            None => options.stream.unwrap_or(StreamKind::Stdout),
        },
        done: 0,
        summary: Summary::default(),
        out: Vec::new(),
        text: Vec::new(),
    };
    runner.summary.pipeline = processor.as_ref().map(|p| p.name().to_string());
    runner.run(processor, input, output)?;
    Ok(runner.summary)
}

/// `key=value` (or `key`: an empty value) pairs of the option `flag`, in order.
fn parse_pairs(flag: &str, pairs: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
        if k.is_empty() {
            return Err(config_error(format!(
                "{flag} {pair:?}: give KEY=VALUE (or KEY)"
            )));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The pipeline `wanted`, which `what` (`--pipeline x`, a config key) names.
fn processor_named(
    pipelines: &Pipelines,
    wanted: &str,
    what: &str,
    metrics: &ProcessingMetrics,
) -> Result<Option<Processor>, Failure> {
    match pipelines.processor_named(wanted, metrics) {
        Some(p) => p.map(Some).map_err(|e| config_error(e.to_string())),
        None => {
            let names: Vec<&str> = pipelines.names().collect();
            Err(config_error(if names.is_empty() {
                format!("{what}: processing.pipelines is empty")
            } else {
                format!(
                    "{what}: no such pipeline in processing.pipelines (there: {})",
                    names.join(", ")
                )
            }))
        }
    }
}

fn choose(
    pipelines: &Pipelines,
    options: &Options,
    name: &str,
    image: &str,
    labels: &HashMap<String, String>,
    metrics: &ProcessingMetrics,
    notes: &mut dyn FnMut(&str),
) -> Result<Option<Processor>, Failure> {
    if let Some(wanted) = &options.pipeline {
        return processor_named(pipelines, wanted, &format!("--pipeline {wanted}"), metrics);
    }
    let selecting =
        options.container.is_some() || options.image.is_some() || !options.labels.is_empty();
    if selecting {
        let candidate = Candidate {
            name,
            image,
            labels,
        };
        let found = pipelines.processor_for(&candidate, metrics);
        if found.is_none() {
            notes(&format!(
                "no pipeline of processing.pipelines matches container {name:?}: its lines pass \
                 unchanged"
            ));
        }
        return Ok(found);
    }
    match pipelines.names().next() {
        Some(first) => pipelines
            .processor_named(first, metrics)
            .map(|p| p.map(Some).map_err(|e| config_error(e.to_string())))
            .unwrap_or(Ok(None)),
        None => {
            notes("processing.pipelines is empty: lines pass unchanged");
            Ok(None)
        }
    }
}

struct Runner {
    meta: ContainerMeta,
    format: Format,
    stream: StreamKind,
    /// Input lines accounted for (emitted or dropped), in order.
    done: u64,
    summary: Summary,
    /// Records of the last step.
    out: Vec<LogLine>,
    /// Output buffer of one outcome.
    text: Vec<u8>,
}

impl Runner {
    fn run(
        &mut self,
        mut processor: Option<Processor>,
        mut input: impl BufRead,
        mut output: impl Write,
    ) -> Result<(), Failure> {
        let mut raw = Vec::new();
        let mut position = Position::default();
        loop {
            raw.clear();
            let n = input
                .read_until(b'\n', &mut raw)
                .map_err(|e| io_error("reading stdin", e))?;
            if n == 0 {
                break;
            }
            let line = self.line(&raw);
            self.summary.lines += 1;
            let before = position;
            // Positions only matter to the agent's cursor; kept plausible (monotonic).
            position = Position {
                timestamp_ns: line.ts_ns,
                count: if line.ts_ns == before.timestamp_ns {
                    before.count + 1
                } else {
                    1
                },
            };
            let ts = line.ts_ns;
            match &mut processor {
                Some(p) => {
                    let cx = StageContext {
                        container: &self.meta,
                        now_ns: now_ns(),
                    };
                    // Groups that had been quiet for flush_after when this line came.
                    let dropped = p.flush_due(ts, &cx, &mut self.out);
                    self.report(Some(p), dropped, &mut output)?;
                    let cx = StageContext {
                        container: &self.meta,
                        now_ns: now_ns(),
                    };
                    let dropped = p.push(line, before, &cx, &mut self.out);
                    self.report(Some(p), dropped, &mut output)?;
                }
                None => {
                    self.out.push(line);
                    self.report(None, 0, &mut output)?;
                }
            }
        }
        if let Some(p) = &mut processor {
            let cx = StageContext {
                container: &self.meta,
                now_ns: now_ns(),
            };
            let dropped = p.flush_all(&cx, &mut self.out);
            self.report(Some(p), dropped, &mut output)?;
        }
        output.flush().map_err(|e| io_error("writing stdout", e))
    }

    /// One input line (with its newline) as Docker would have given it.
    fn line(&self, raw: &[u8]) -> LogLine {
        let mut text = raw.strip_suffix(b"\n").unwrap_or(raw);
        text = text.strip_suffix(b"\r").unwrap_or(text);
        let prefixed = text
            .iter()
            .position(|&b| b == b' ')
            .and_then(|space| Some((parse_rfc3339_nanos(&text[..space])?, &text[space + 1..])));
        let (ts_ns, message) = match prefixed {
            Some((ts, rest)) => (ts, rest),
            None => (now_ns(), text),
        };
        LogLine {
            ts_ns,
            stream: self.stream,
            message: Bytes::copy_from_slice(message),
            truncated: false,
            extra: None,
        }
    }

    /// Writes what the last step produced: the records in `self.out`, and `dropped` drops.
    fn report(
        &mut self,
        mut processor: Option<&mut Processor>,
        dropped: usize,
        output: &mut impl Write,
    ) -> Result<(), Failure> {
        let finished = match &mut processor {
            Some(p) => {
                let (lines, _) = p.take_finished();
                lines[0] + lines[1]
            }
            None => self.out.len() as u64,
        };
        let records = std::mem::take(&mut self.out);
        // Each record covers its joined lines (one if not a group); what is left of the
        // finished lines was dropped. With one stream a step finishes at most one group, so
        // this attribution is exact.
        let mut left = finished;
        for record in &records {
            let joined = record.extra.as_deref().map_or(0, |e| e.joined_lines);
            let covers = u64::from(joined.max(1)).min(left.max(1));
            left = left.saturating_sub(covers);
            if joined > 1 {
                self.summary.groups += 1;
            }
            self.summary.records += 1;
            self.text.clear();
            let (first, last) = self.span(covers);
            let mut ndjson = Vec::new();
            crate::sinks::ndjson::encode_line(&mut ndjson, &self.meta, record);
            let ndjson = ndjson.strip_suffix(b"\n").unwrap_or(&ndjson);
            let loki = loki_extras(record);
            match self.format {
                Format::Text => {
                    self.write_span(first, last, b": ");
                    self.text.extend_from_slice(ndjson);
                    if let Some(loki) = loki {
                        self.text.extend_from_slice(b"  loki: ");
                        self.text.extend_from_slice(loki.as_bytes());
                    }
                }
                Format::Ndjson => {
                    self.text.extend_from_slice(
                        format!("{{\"input\":[{first},{last}],\"record\":").as_bytes(),
                    );
                    self.text.extend_from_slice(ndjson);
                    if let Some(loki) = loki {
                        self.text.extend_from_slice(b",\"loki\":");
                        self.text.extend_from_slice(loki.as_bytes());
                    }
                    self.text.push(b'}');
                }
            }
            self.text.push(b'\n');
            output
                .write_all(&self.text)
                .map_err(|e| io_error("writing stdout", e))?;
        }
        for i in 0..dropped {
            self.summary.dropped += 1;
            // The last drop takes what is left (a dropped group's lines).
            let covers = if i + 1 == dropped { left.max(1) } else { 1 };
            left = left.saturating_sub(covers);
            let stage = processor
                .as_deref()
                .and_then(Processor::last_drop_stage)
                .unwrap_or("?")
                .to_string();
            let (first, last) = self.span(covers);
            self.text.clear();
            match self.format {
                Format::Text => {
                    self.write_span(first, last, b": dropped by ");
                    self.text.extend_from_slice(stage.as_bytes());
                }
                Format::Ndjson => self.text.extend_from_slice(
                    format!("{{\"input\":[{first},{last}],\"dropped_by\":\"{stage}\"}}").as_bytes(),
                ),
            }
            self.text.push(b'\n');
            output
                .write_all(&self.text)
                .map_err(|e| io_error("writing stdout", e))?;
        }
        Ok(())
    }

    /// The next `n` input lines (1-based, inclusive).
    fn span(&mut self, n: u64) -> (u64, u64) {
        let first = self.done + 1;
        self.done += n;
        (first, self.done)
    }

    fn write_span(&mut self, first: u64, last: u64, then: &[u8]) {
        let span = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        self.text.extend_from_slice(span.as_bytes());
        self.text.extend_from_slice(then);
    }
}

/// What only the Loki sink sends of a record (the NDJSON sinks do not write it): its stream
/// labels, structured metadata and tenant, as one JSON object; None if it has none.
fn loki_extras(record: &LogLine) -> Option<String> {
    let extra = record.extra.as_deref()?;
    let object = |pairs: &[(std::sync::Arc<str>, String)]| {
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        format!("{{{}}}", body.join(","))
    };
    let mut parts = Vec::new();
    if !extra.labels.is_empty() {
        parts.push(format!("\"labels\":{}", object(&extra.labels)));
    }
    if !extra.metadata.is_empty() {
        parts.push(format!(
            "\"structured_metadata\":{}",
            object(&extra.metadata)
        ));
    }
    if let Some(tenant) = &extra.tenant {
        parts.push(format!("\"tenant\":{}", json_string(tenant)));
    }
    (!parts.is_empty()).then(|| format!("{{{}}}", parts.join(",")))
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
#[path = "try_run_tests.rs"]
mod tests;
