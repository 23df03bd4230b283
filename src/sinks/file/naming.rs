//! From a container to its output path. Two rules keep one container's name from hurting
//! another container or the file system:
//!
//! - **Injective**: different names give different file names. The name is percent-encoded
//!   where it must be (`%` itself, `/`, NUL, and a leading `.` so that no name is `.` or `..`),
//!   and every other character is kept, so `a..b` and `a__b` stay apart.
//! - **Bounded**: every path component fits `NAME_MAX` (255 bytes). A name too long for its
//!   component is cut and gets `%~` plus the first 12 characters of the container id. `%~`
//!   never occurs in an encoded name (an encoded `%` is always followed by two hex digits), so
//!   a cut name cannot collide with an uncut one, and the id keeps cut names apart.
//!
//! Placeholders: `{container_name}`, `{container_id}`, `{date}`, and `{NAME}` for a container
//! field (`image`, `compose_project`, `compose_service`) or a container label copied by
//! `processing.container_labels` (e.g. `{team}`). Values are encoded and bounded like the
//! container name; a container without the value gets [`MISSING`]. The template is read in one
//! pass, so a value that looks like a placeholder stays as it is.
//!
//! A host file's records (`sources.files`) use the same templates: `{container_name}` is its
//! path (`/var/log/syslog` → `%2Fvar%2Flog%2Fsyslog`), `{container_id}` its position key
//! (`file-<dev>-<ino>`), `{NAME}` a field of its group (`fields: {job: syslog}` → `{job}`); the
//! container fields are [`MISSING`]. A cut path ends in `%~` and a hash of its key (see
//! [`cut_tag`]).

use std::path::PathBuf;

use super::error::TemplateError;
use crate::pipeline::ContainerMeta;

/// Longest file name (one path component) on Linux file systems.
pub const NAME_MAX: usize = 255;
/// What a cut name ends with: `%~` and this many characters of the container id.
const ID_CHARS: usize = 12;
/// A template must leave at least this many bytes per component for the container name.
pub const MIN_NAME_BUDGET: usize = 32;
/// Length reserved for `{container_id}` (a full Docker id is 64 hex digits).
const ID_LEN: usize = 64;

/// Today's date in UTC, `YYYY-MM-DD` (always 10 bytes).
const DATE: &str = "{date}";
const DATE_LEN: usize = 10;
/// The value of a `{NAME}` placeholder for a container that has no (or an empty) value.
pub const MISSING: &str = "_unknown";
/// Container fields a `{NAME}` placeholder may name besides copied labels.
pub const CONTAINER_FIELDS: &[&str] = &["image", "compose_project", "compose_service"];

/// A piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Name,
    Id,
    Date,
    /// A container field or copied container label (`{team}`).
    Field(String),
}

/// The pieces of one template (or component): `{x}` with `x` free of `{`, `}` and `/` is a
/// placeholder; anything else is text.
fn pieces(template: &str) -> Vec<(usize, Piece)> {
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'{'
            && let Some(len) = template[i + 1..].find(['{', '}', '/'])
            && bytes[i + 1 + len] == b'}'
            && len > 0
        {
            if text_start < i {
                out.push((text_start, Piece::Text(template[text_start..i].to_string())));
            }
            let name = &template[i + 1..i + 1 + len];
            let piece = match name {
                "container_name" => Piece::Name,
                "container_id" => Piece::Id,
                "date" => Piece::Date,
                _ => Piece::Field(name.to_string()),
            };
            out.push((i, piece));
            i += len + 2;
            text_start = i;
            continue;
        }
        i += 1;
    }
    if text_start < template.len() {
        out.push((text_start, Piece::Text(template[text_start..].to_string())));
    }
    out
}

/// A checked path template (`/var/log/lc/{container_name}.log`).
#[derive(Clone, Debug)]
pub struct PathTemplate {
    template: String,
    pieces: Vec<(usize, Piece)>,
    /// Bytes one occurrence of an encoded name or field value may take so that its
    /// component fits.
    name_budget: usize,
}

impl PathTemplate {
    /// Checks that every component holding `{container_name}` leaves room for a name.
    pub fn new(template: &str) -> Result<PathTemplate, TemplateError> {
        Self::reserving(template, 0)
    }

    /// Like [`PathTemplate::new`], leaving `suffix` more bytes free in the file name (the
    /// last component): rotated files append `.000001.gz.tmp` to it.
    pub fn reserving(template: &str, suffix: usize) -> Result<PathTemplate, TemplateError> {
        let mut name_budget = NAME_MAX;
        let last = template.split('/').count() - 1;
        for (i, component) in template.split('/').enumerate() {
            let reserve = if i == last { suffix } else { 0 };
            // Names and field values share the room left by the rest.
            let mut names = 0;
            let mut fixed = reserve;
            for (_, piece) in pieces(component) {
                match piece {
                    Piece::Text(t) => fixed += t.len(),
                    Piece::Id => fixed += ID_LEN,
                    Piece::Date => fixed += DATE_LEN,
                    Piece::Name | Piece::Field(_) => names += 1,
                }
            }
            if names == 0 && fixed > NAME_MAX {
                return Err(TemplateError::TooLong {
                    component: component.to_string(),
                    max: NAME_MAX,
                    reserve,
                });
            }
            if let Some(budget) = NAME_MAX.saturating_sub(fixed).checked_div(names) {
                if budget < MIN_NAME_BUDGET {
                    return Err(TemplateError::NoRoom {
                        component: component.to_string(),
                        budget,
                        min: MIN_NAME_BUDGET,
                    });
                }
                name_budget = name_budget.min(budget);
            }
        }
        Ok(PathTemplate {
            template: template.to_string(),
            pieces: pieces(template),
            name_budget,
        })
    }

    /// The `{NAME}` placeholders that are neither built in nor a container field: each must
    /// be a container label copied by `processing.container_labels` (the config checks).
    pub fn label_placeholders(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|(_, p)| match p {
            Piece::Field(name) if !CONTAINER_FIELDS.contains(&name.as_str()) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Whether the file name (last component) ends in a placeholder whose value may end in
    /// `.NNNNNN` (a name or field value), so a live file could pass for a rotated one.
    pub fn file_name_ends_in_a_value(&self) -> bool {
        let file_start = self.template.rfind('/').map_or(0, |i| i + 1);
        self.pieces.last().is_some_and(|(at, p)| {
            *at >= file_start
                && matches!(p, Piece::Name | Piece::Field(_))
                && self.template.ends_with('}')
        })
    }

    /// The directory every container's path lies in (the template up to its last `/` before
    /// the first container placeholder; it may hold `{date}`, the same for every container),
    /// and whether the path depends on the container at all. A failure there is the sink's,
    /// not one container's.
    pub fn shared_part(&self) -> (Option<PathBuf>, bool) {
        let first = self
            .pieces
            .iter()
            .find(|(_, p)| matches!(p, Piece::Name | Piece::Id | Piece::Field(_)))
            .map(|(at, _)| *at);
        let Some(first) = first else {
            return (None, false);
        };
        let dir = self.template[..first]
            .rfind('/')
            .map(|slash| &self.template[..slash.max(1)])
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        (dir, true)
    }

    /// Whether the path holds `{date}` (a new file each UTC day).
    pub fn has_date(&self) -> bool {
        self.template.contains(DATE)
    }

    /// The path of a container's output on `date` (`YYYY-MM-DD`, see [`utc_date`]; ignored
    /// when the template has no `{date}`).
    pub fn path_for(&self, meta: &ContainerMeta, date: &str) -> PathBuf {
        let id = encode(&meta.id);
        let tag = cut_tag(meta, &id);
        let mut path = String::with_capacity(self.template.len() + 64);
        for (_, piece) in &self.pieces {
            match piece {
                Piece::Text(t) => path.push_str(t),
                Piece::Name => path.push_str(&bounded(encode(&meta.name), &tag, self.name_budget)),
                Piece::Id => path.push_str(&id),
                Piece::Date => path.push_str(date),
                Piece::Field(name) => {
                    let value = meta.field(name).unwrap_or(MISSING);
                    path.push_str(&bounded(encode(value), &tag, self.name_budget));
                }
            }
        }
        PathBuf::from(path)
    }
}

/// What tells cut names apart after `%~` (its first 12 characters are used): a container's
/// id (unique in its first 12 hex digits, as Docker's short ids are); for a host file, whose
/// key `file-<dev>-<ino>` starts alike for every file of a device, 12 hex digits of a hash of
/// the key (FNV-1a; stable across runs, so a file keeps its output path).
fn cut_tag(meta: &ContainerMeta, id: &str) -> String {
    if !meta.is_file() {
        return id.to_string();
    }
    let hash = meta.id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{:012x}", hash >> 16)
}

/// `YYYY-MM-DD` of `at` in UTC.
pub fn utc_date(at: std::time::SystemTime) -> String {
    let ns = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut out = Vec::with_capacity(32);
    crate::docker::timestamp::write_rfc3339_nanos(&mut out, ns);
    String::from_utf8_lossy(&out[..DATE_LEN.min(out.len())]).into_owned()
}

/// Percent-encodes what could escape the directory or collide: `%`, `/`, NUL, a leading `.`.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    out
}

/// `encoded` if it fits `budget` bytes; else its longest prefix that leaves room for `%~` and
/// 12 characters of the id (cut at a character boundary and never inside a `%XX` escape).
fn bounded(encoded: String, id: &str, budget: usize) -> String {
    if encoded.len() <= budget {
        return encoded;
    }
    let id: String = id.chars().take(ID_CHARS).collect();
    let mut cut = budget.saturating_sub(2 + id.len());
    while !encoded.is_char_boundary(cut) {
        cut -= 1;
    }
    // An escape is 3 bytes: do not keep a `%` or `%X` without the rest.
    let bytes = encoded.as_bytes();
    if cut >= 1 && bytes[cut - 1] == b'%' {
        cut -= 1;
    } else if cut >= 2 && bytes[cut - 2] == b'%' {
        cut -= 2;
    }
    format!("{}%~{id}", &encoded[..cut])
}

#[cfg(test)]
#[path = "naming_tests.rs"]
mod tests;
