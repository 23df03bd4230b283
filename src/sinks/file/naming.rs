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

use std::path::PathBuf;

use crate::pipeline::ContainerMeta;

/// Longest file name (one path component) on Linux file systems.
pub const NAME_MAX: usize = 255;
/// What a cut name ends with: `%~` and this many characters of the container id.
const ID_CHARS: usize = 12;
/// A template must leave at least this many bytes per component for the container name.
pub const MIN_NAME_BUDGET: usize = 32;
/// Length reserved for `{container_id}` (a full Docker id is 64 hex digits).
const ID_LEN: usize = 64;

const NAME: &str = "{container_name}";
const ID: &str = "{container_id}";
/// Today's date in UTC, `YYYY-MM-DD` (always 10 bytes).
const DATE: &str = "{date}";
const DATE_LEN: usize = 10;

/// A checked path template (`/var/log/lc/{container_name}.log`).
#[derive(Clone, Debug)]
pub struct PathTemplate {
    template: String,
    /// Bytes one occurrence of the encoded name may take so that its component fits.
    name_budget: usize,
}

impl PathTemplate {
    /// Checks that every component holding `{container_name}` leaves room for a name.
    pub fn new(template: &str) -> Result<PathTemplate, String> {
        Self::reserving(template, 0)
    }

    /// Like [`PathTemplate::new`], leaving `suffix` more bytes free in the file name (the
    /// last component): rotated files append `.000001.gz.tmp` to it.
    pub fn reserving(template: &str, suffix: usize) -> Result<PathTemplate, String> {
        let mut name_budget = NAME_MAX;
        let last = template.split('/').count() - 1;
        for (i, component) in template.split('/').enumerate() {
            let reserve = if i == last { suffix } else { 0 };
            let names = component.matches(NAME).count();
            let ids = component.matches(ID).count();
            let dates = component.matches(DATE).count();
            let fixed = component.len() - names * NAME.len() - ids * ID.len() + ids * ID_LEN
                - dates * DATE.len()
                + dates * DATE_LEN
                + reserve;
            if names == 0 && fixed > NAME_MAX {
                return Err(format!(
                    "the path component {component:?} is longer than {NAME_MAX} bytes{}",
                    if reserve > 0 {
                        format!(" once rotation appends up to {reserve} bytes")
                    } else {
                        String::new()
                    }
                ));
            }
            if let Some(budget) = NAME_MAX.saturating_sub(fixed).checked_div(names) {
                if budget < MIN_NAME_BUDGET {
                    return Err(format!(
                        "the path component {component:?} leaves {budget} bytes for the \
                         container name (at least {MIN_NAME_BUDGET} are needed)"
                    ));
                }
                name_budget = name_budget.min(budget);
            }
        }
        Ok(PathTemplate {
            template: template.to_string(),
            name_budget,
        })
    }

    /// The directory every container's path lies in (the template up to its last `/` before
    /// the first container placeholder; it may hold `{date}`, the same for every container),
    /// and whether the path depends on the container at all. A failure there is the sink's,
    /// not one container's.
    pub fn shared_part(&self) -> (Option<PathBuf>, bool) {
        let first = [NAME, ID]
            .iter()
            .filter_map(|placeholder| self.template.find(placeholder))
            .min();
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
        let name = bounded(encode(&meta.name), &id, self.name_budget);
        // The date goes in first: a container name holding `{date}` must stay as it is.
        let path = self.template.replace(DATE, date);
        PathBuf::from(path.replace(NAME, &name).replace(ID, &id))
    }
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
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn meta(id: &str, name: &str) -> ContainerMeta {
        ContainerMeta::new(id.into(), name.into(), String::new(), None, None)
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let t = PathTemplate::new("/logs/{container_name}.log").expect("template");
        assert_eq!(
            t.path_for(&meta("id", "../etc/passwd"), ""),
            PathBuf::from("/logs/%2E.%2Fetc%2Fpasswd.log")
        );
        let bare = PathTemplate::new("/logs/{container_name}").expect("template");
        for name in [".", "..", "a/../../b"] {
            let path = bare.path_for(&meta("id", name), "");
            assert_eq!(path.parent(), Some(std::path::Path::new("/logs")), "{name}");
            assert!(
                !path.components().any(|c| matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )),
                "{name} -> {path:?}"
            );
        }
    }

    #[test]
    fn different_names_give_different_files() {
        let t = PathTemplate::new("/logs/{container_name}.log").expect("template");
        let names = [
            "a..b", "a__b", "a_b", "a%b", "a%25b", "a/b", "a%2Fb", ".a", "%2Ea", "a.b", "a\0b",
            "a%00b",
        ];
        let paths: HashSet<PathBuf> = names
            .iter()
            .map(|n| t.path_for(&meta("id", n), ""))
            .collect();
        assert_eq!(paths.len(), names.len(), "{paths:?}");
        // Ordinary names are kept as they are.
        assert_eq!(
            t.path_for(&meta("id", "web-1.a_b"), ""),
            PathBuf::from("/logs/web-1.a_b.log")
        );
    }

    #[test]
    fn long_names_are_cut_to_fit_and_stay_apart() {
        let t = PathTemplate::new("/logs/{container_name}.log").expect("template");
        let long_a = "a".repeat(289);
        let long_b = format!("{}b", "a".repeat(288));
        let pa = t.path_for(&meta(&"1".repeat(64), &long_a), "");
        let pb = t.path_for(&meta(&"2".repeat(64), &long_b), "");
        for p in [&pa, &pb] {
            let file = p.file_name().and_then(|f| f.to_str()).expect("name");
            assert!(file.len() <= NAME_MAX, "{} bytes", file.len());
            assert!(file.contains("%~"), "{file}");
        }
        assert_ne!(pa, pb);
        assert!(
            pa.to_string_lossy().ends_with("%~111111111111.log"),
            "{pa:?}"
        );
        // Multi-byte characters and escapes are never split.
        let wide = "é%".repeat(200);
        let p = t.path_for(&meta("abcdef0123456789", &wide), "");
        let file = p.file_name().and_then(|f| f.to_str()).expect("utf-8");
        assert!(file.len() <= NAME_MAX);
        let stem = file.trim_end_matches(".log");
        let kept = stem.split("%~").next().unwrap_or_default();
        assert!(kept.ends_with("%25") || kept.ends_with('é'), "{kept}");
    }

    #[test]
    fn real_file_system_accepts_the_longest_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = PathTemplate::new(&format!(
            "{}/{{container_name}}-{{container_id}}.ndjson",
            dir.path().display()
        ))
        .expect("template");
        let path = t.path_for(&meta(&"f".repeat(64), &"x".repeat(289)), "");
        std::fs::write(&path, b"ok\n").expect("a bounded name can be created");
    }

    #[test]
    fn the_shared_directory_is_what_precedes_the_first_placeholder() {
        let shared = |t: &str| PathTemplate::new(t).expect("template").shared_part();
        let dir = |d: &str| Some(PathBuf::from(d));
        assert_eq!(shared("/logs/{container_name}.log"), (dir("/logs"), true));
        assert_eq!(
            shared("/logs/app-{container_id}/x.log"),
            (dir("/logs"), true)
        );
        assert_eq!(shared("/{container_name}.log"), (dir("/"), true));
        assert_eq!(shared("{container_name}.log"), (None, true));
        assert_eq!(shared("/logs/all.log"), (None, false));
        // The day's directory is shared by every container.
        assert_eq!(
            shared("/logs/{date}/{container_name}.log"),
            (dir("/logs/{date}"), true)
        );
        assert_eq!(
            shared("/logs/{date}-{container_name}.log"),
            (dir("/logs"), true)
        );
    }

    #[test]
    fn the_date_placeholder_takes_the_utc_day() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = PathTemplate::new("/logs/{date}/{container_name}-{date}.log").expect("template");
        assert!(t.has_date());
        assert!(
            !PathTemplate::new("/logs/{container_name}.log")
                .expect("t")
                .has_date()
        );
        // 2026-12-01T23:59:59.999Z and one millisecond later.
        let before = UNIX_EPOCH + Duration::from_millis(1_796_169_599_999);
        let after = before + Duration::from_millis(1);
        assert_eq!(utc_date(before), "2026-12-01");
        assert_eq!(utc_date(after), "2026-12-02");
        assert_eq!(
            t.path_for(&meta("id", "web"), &utc_date(after)),
            PathBuf::from("/logs/2026-12-02/web-2026-12-02.log")
        );
        // A name that looks like a placeholder is a name.
        assert_eq!(
            t.path_for(&meta("id", "{date}"), "2026-12-02"),
            PathBuf::from("/logs/2026-12-02/{date}-2026-12-02.log")
        );
        // The date's 10 bytes count against the name's room.
        let tight = format!("/logs/{}{{date}}{{container_name}}", "p".repeat(216));
        assert!(PathTemplate::new(&tight).is_err());
        assert!(PathTemplate::new(&tight.replacen("p", "", 4)).is_ok());
    }

    #[test]
    fn room_is_left_for_the_rotation_suffix() {
        let suffix = ".000001.gz.tmp".len();
        let t = PathTemplate::reserving("/logs/{container_name}.log", suffix).expect("template");
        let path = t.path_for(&meta(&"f".repeat(64), &"x".repeat(289)), "");
        let file = path.file_name().and_then(|f| f.to_str()).expect("name");
        assert_eq!(file.len(), NAME_MAX - suffix);
        // A fixed file name that leaves no room for the suffix is refused.
        let fixed = format!("/logs/{}", "f".repeat(250));
        assert!(PathTemplate::new(&fixed).is_ok());
        assert!(PathTemplate::reserving(&fixed, suffix).is_err());
        // Only the file name pays for it.
        let dir = format!("/{}/{{container_name}}.log", "d".repeat(250));
        assert!(PathTemplate::reserving(&dir, suffix).is_ok());
    }

    #[test]
    fn templates_without_room_for_a_name_are_refused() {
        let e = PathTemplate::new(&format!("/logs/{}{{container_name}}", "p".repeat(230)))
            .expect_err("too long");
        assert!(e.contains("leaves"), "{e}");
        assert!(PathTemplate::new("/logs/{container_name}/{container_id}.log").is_ok());
    }
}
