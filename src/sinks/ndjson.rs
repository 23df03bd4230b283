//! NDJSON encoding of a record, written straight into the sink's buffer (no per-line
//! allocation). Invalid UTF-8 in a message is replaced with U+FFFD, never dropped.
//!
//! Keys, in this order (the optional ones only when they apply):
//!
//! ```text
//! {"timestamp":"<Docker's time>","container_id":…,"container_name":…,"image":…,
//!  ["compose_project":…,]["compose_service":…,]"stream":…,"message":…,
//!  ["level":"warn",]["event_time":"<event time>",]["fields":{…},]["joined_lines":N,]
//!  ["truncated":true]}
//! ```
//!
//! `timestamp` is always Docker's time (the resume cursor, the same meaning in every record);
//! a `timestamp` stage's event time goes in `event_time`. `fields` holds the container labels
//! copied by `processing.container_labels` (sorted by key), then the record's fields in the
//! order they were set; a record field named like a label field replaces it (the key appears
//! once, at the record field's place). A record without extras from a container without label
//! fields encodes exactly as before processing existed.
//!
//! A host file's record ([`ContainerMeta::for_file`]) has `file` (its path) and `host` in
//! place of the container's fields, and no `stream` (a file has no stdout/stderr):
//!
//! ```text
//! {"timestamp":"<read or event time>","file":…,"host":…,"message":…,["level":"warn",]
//!  ["fields":{…},]["joined_lines":N,]["truncated":true]}
//! ```
//!
//! Its `timestamp` is the time the line was read, or the event time when a `timestamp` stage
//! set one (then there is no `event_time` key): a file resumes from a byte position, so its
//! timestamp is no cursor and can carry the better time. `fields` as for a container: the
//! group's `fields` (sorted by key), then the record's.

use std::io::Write as _;

use crate::docker::timestamp::write_rfc3339_nanos;
use crate::pipeline::encoded::escape_into;
use crate::pipeline::{ContainerMeta, LogLine};
use crate::processing::FieldValue;

/// Appends one record and its newline to `out`. The container's fields come pre-encoded
/// (see [`ContainerMeta::ndjson_fields`]); the timestamp is formatted and the message escaped here.
pub fn encode_line(out: &mut Vec<u8>, meta: &ContainerMeta, line: &LogLine) {
    let file = meta.is_file();
    out.extend_from_slice(b"{\"timestamp\":\"");
    // A host file's position is a byte offset, not a time: its `timestamp` is free to be the
    // event time (see the module doc).
    write_rfc3339_nanos(out, if file { line.display_ns() } else { line.ts_ns });
    out.extend_from_slice(b"\",");
    out.extend_from_slice(meta.ndjson_fields());
    if !file {
        // A host file has no stdout/stderr: its records have no `stream`.
        out.extend_from_slice(b"\"stream\":\"");
        out.extend_from_slice(line.stream.as_str().as_bytes());
        out.extend_from_slice(b"\",");
    }
    out.extend_from_slice(b"\"message\":\"");
    escape_into(out, &line.message);
    out.push(b'"');
    if line.extra.is_some() || !meta.label_fields.is_empty() {
        encode_extras(out, meta, line);
    }
    if line.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.extend_from_slice(b"}\n");
}

/// What processing added: `level`, `event_time`, `fields`, `joined_lines`. Kept out of line
/// so that the common record (no extras) stays a short straight path.
#[inline(never)]
fn encode_extras(out: &mut Vec<u8>, meta: &ContainerMeta, line: &LogLine) {
    let extra = line.extra.as_deref();
    if let Some(level) = extra.and_then(|e| e.level) {
        out.extend_from_slice(b",\"level\":\"");
        out.extend_from_slice(level.as_str().as_bytes());
        out.push(b'"');
    }
    if let Some(ns) = extra.and_then(|e| e.event_ns).filter(|_| !meta.is_file()) {
        out.extend_from_slice(b",\"event_time\":\"");
        write_rfc3339_nanos(out, ns);
        out.push(b'"');
    }
    let fields = extra.map(|e| &e.fields).filter(|f| !f.is_empty());
    if fields.is_some() || !meta.label_fields.is_empty() {
        out.extend_from_slice(b",\"fields\":{");
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            escape_into(out, name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        for (name, value) in &meta.label_fields {
            // A record field of the same name wins; it is written below, in its place.
            if fields.is_some_and(|f| f.get(name).is_some()) {
                continue;
            }
            key(out, name);
            string_into(out, value);
        }
        for (name, value) in fields.iter().flat_map(|f| f.iter()) {
            key(out, name);
            match value {
                FieldValue::Str(s) => string_into(out, s),
                // Raw JSON from a parsed line (number, bool, object …), written back as is.
                // Empty is not JSON: written as an empty string so the record stays valid.
                FieldValue::Json(raw) if !raw.trim().is_empty() => {
                    out.extend_from_slice(raw.as_bytes())
                }
                FieldValue::Json(_) => out.extend_from_slice(b"\"\""),
            }
        }
        out.push(b'}');
    }
    if let Some(n) = extra.map(|e| e.joined_lines).filter(|&n| n > 1) {
        // Writing into a Vec cannot fail.
        let _ = write!(out, ",\"joined_lines\":{n}");
    }
}

fn string_into(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s.as_bytes());
    out.push(b'"');
}

#[cfg(test)]
#[path = "ndjson_tests.rs"]
mod tests;
