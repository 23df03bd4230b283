//! Which files `sources.files` means: each group's include globs minus its exclude globs,
//! compressed rotated files left out unless asked for, and the walk that finds them.
//!
//! A glob is expanded by walking from its literal prefix directory (`/var/log/**/*.log` walks
//! `/var/log` at any depth, `/var/log/*.log` only `/var/log` itself); every file found is
//! checked against the groups in order and belongs to the first whose include matches and
//! whose exclude does not. Symbolic links are followed when `follow_symlinks` (the target's
//! identity is what counts, so a file reached by two paths is read once); directory loops
//! are cut by identity.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::checkpoint::FileId;
use crate::config::{FileGroupConfig, InitialPosition, SourcesConfig};

/// Extensions of rotated compressed files, skipped unless `include_compressed`.
pub const COMPRESSED_EXTENSIONS: &[&str] = &["gz", "xz", "bz2", "zst", "zip"];

/// Where a walk starts, and how deep it goes (None: any depth, for `**`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub dir: PathBuf,
    pub depth: Option<usize>,
}

pub struct Group {
    include: GlobSet,
    exclude: GlobSet,
    include_compressed: bool,
    roots: Vec<Root>,
    pub fields: Vec<(String, String)>,
    pub pipeline: Option<String>,
    pub initial_position: InitialPosition,
}

pub struct Matcher {
    pub groups: Vec<Group>,
    follow_symlinks: bool,
}

/// A file the globs match, under the path it was found at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub id: FileId,
    pub group: usize,
}

/// What a walk found: files (one path per identity), the directories walked (to watch), and
/// directories that could not be listed.
#[derive(Default, Debug)]
pub struct Scan {
    pub files: Vec<Found>,
    pub dirs: Vec<PathBuf>,
    /// The identity of each directory listed (a watch is renewed when it changes).
    pub dir_ids: std::collections::HashMap<PathBuf, FileId>,
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Whether a path component holds glob syntax.
fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{', '\\'])
}

/// The directory a glob's walk starts from and its depth.
pub fn root_of(glob: &str) -> Root {
    let path = Path::new(glob);
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let literal = parts.iter().take_while(|p| !has_meta(p)).count();
    if literal == parts.len() {
        // A plain path: its directory, one level.
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        return Root {
            dir,
            depth: Some(1),
        };
    }
    let mut dir = PathBuf::from("/");
    dir.extend(&parts[..literal]);
    let rest = &parts[literal..];
    Root {
        dir,
        depth: (!rest.iter().any(|p| p.contains("**"))).then_some(rest.len()),
    }
}

pub fn compile_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// A group's globs do not compile (the config was validated: unexpected).
#[derive(Debug, thiserror::Error)]
pub enum GlobError {
    /// One pattern is not a glob.
    #[error("{pattern}: {error}")]
    Pattern {
        pattern: String,
        error: globset::Error,
    },
    /// The set of patterns cannot be built.
    #[error("{0}")]
    Set(globset::Error),
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, GlobError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(compile_glob(p).map_err(|error| GlobError::Pattern {
            pattern: p.clone(),
            error,
        })?);
    }
    b.build().map_err(GlobError::Set)
}

pub fn is_compressed(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| COMPRESSED_EXTENSIONS.contains(&e))
}

impl Group {
    fn new(config: &FileGroupConfig) -> Result<Group, GlobError> {
        Ok(Group {
            include: glob_set(&config.include)?,
            exclude: glob_set(&config.exclude)?,
            include_compressed: config.include_compressed,
            roots: config.include.iter().map(|g| root_of(g)).collect(),
            fields: config
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pipeline: config.pipeline.clone(),
            initial_position: config.initial_position,
        })
    }

    fn matches(&self, path: &Path) -> bool {
        self.include.is_match(path)
            && !self.exclude.is_match(path)
            && (self.include_compressed || !is_compressed(path))
    }
}

impl Matcher {
    /// Compiles the groups (the config was validated: errors here are unexpected).
    pub fn new(config: &SourcesConfig) -> Result<Matcher, GlobError> {
        Ok(Matcher {
            groups: config
                .files
                .iter()
                .map(Group::new)
                .collect::<Result<_, _>>()?,
            follow_symlinks: config.file_settings.follow_symlinks,
        })
    }

    /// The first group that takes `path`.
    pub fn group_of(&self, path: &Path) -> Option<usize> {
        self.groups.iter().position(|g| g.matches(path))
    }

    /// Walks every root (blocking: call from a blocking thread).
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        let mut seen_files = HashSet::new();
        let mut seen_dirs: HashSet<(FileId, Option<usize>)> = HashSet::new();
        let mut roots: Vec<&Root> = self.groups.iter().flat_map(|g| &g.roots).collect();
        roots.dedup();
        for root in roots {
            // (dir, levels below the root it is at)
            let mut stack = vec![(root.dir.clone(), 0usize)];
            while let Some((dir, level)) = stack.pop() {
                let meta = match fs::metadata(&dir) {
                    Ok(m) => m,
                    // Not there (yet): the rescan looks again. Its files' positions are kept
                    // (only a listed directory tells which of its files are gone).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        scan.errors.push((dir, e));
                        continue;
                    }
                };
                let dir_id = FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                // A directory reached twice at the same remaining depth is walked once.
                let remaining = root.depth.map(|d| d.saturating_sub(level));
                if !seen_dirs.insert((dir_id, remaining)) {
                    continue;
                }
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) => {
                        scan.errors.push((dir, e));
                        continue;
                    }
                };
                scan.dirs.push(dir.clone());
                scan.dir_ids.insert(dir.clone(), dir_id);
                for entry in entries {
                    // A listing cut short does not know what is gone: an error for the scan.
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            scan.errors.push((dir.clone(), e));
                            break;
                        }
                    };
                    let path = entry.path();
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    if kind.is_symlink() && !self.follow_symlinks {
                        continue;
                    }
                    let meta = match fs::metadata(&path) {
                        Ok(m) => m,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // dangling link, or gone
                        Err(e) => {
                            scan.errors.push((path, e));
                            continue;
                        }
                    };
                    if meta.is_dir() {
                        if root.depth.is_none_or(|d| level + 1 < d) {
                            stack.push((path, level + 1));
                        }
                    } else if meta.is_file()
                        && root.depth.is_none_or(|d| level + 1 == d)
                        && let Some(group) = self.group_of(&path)
                    {
                        let id = FileId {
                            dev: meta.dev(),
                            ino: meta.ino(),
                        };
                        if seen_files.insert(id) {
                            scan.files.push(Found { path, id, group });
                        }
                    }
                }
            }
        }
        scan.dirs.sort();
        scan.dirs.dedup();
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn group(include: &[String], exclude: &[String]) -> FileGroupConfig {
        FileGroupConfig {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
            fields: BTreeMap::new(),
            ..FileGroupConfig::default()
        }
    }

    #[test]
    fn roots_are_the_literal_prefix() {
        assert_eq!(
            root_of("/var/log/*.log"),
            Root {
                dir: "/var/log".into(),
                depth: Some(1)
            }
        );
        assert_eq!(
            root_of("/var/log/**/*.log"),
            Root {
                dir: "/var/log".into(),
                depth: None
            }
        );
        assert_eq!(
            root_of("/srv/*/logs/app.log"),
            Root {
                dir: "/srv".into(),
                depth: Some(3)
            }
        );
        assert_eq!(
            root_of("/var/log/syslog"),
            Root {
                dir: "/var/log".into(),
                depth: Some(1)
            }
        );
    }

    #[test]
    fn scan_finds_matching_files_once_by_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::create_dir_all(d.join("a/b")).expect("mkdir");
        for f in [
            "x.log",
            "x.log.1",
            "x.log.2.gz",
            "a/y.log",
            "a/b/z.log",
            "skip.log",
        ] {
            fs::write(d.join(f), "line\n").expect("write");
        }
        std::os::unix::fs::symlink(d.join("x.log"), d.join("link.log")).expect("symlink");
        let at = |p: &str| format!("{}/{p}", d.display());
        let config = SourcesConfig {
            files: vec![
                group(&[at("*.log*")], &[at("skip.log")]),
                group(&[at("**/*.log")], &[]),
            ],
            ..SourcesConfig::default()
        };
        let m = Matcher::new(&config).expect("compile");
        let scan = m.scan();
        let mut got: Vec<(String, usize)> = scan
            .files
            .iter()
            .map(|f| {
                let rel = f.path.strip_prefix(d).expect("under d");
                (rel.display().to_string(), f.group)
            })
            .collect();
        got.sort();
        // link.log and x.log are one file: found once (under whichever path came first).
        let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert!(
            names.contains(&"x.log") ^ names.contains(&"link.log"),
            "{got:?}"
        );
        got.retain(|(p, _)| p != "x.log" && p != "link.log");
        assert_eq!(
            got,
            [
                ("a/b/z.log".to_string(), 1),
                ("a/y.log".to_string(), 1),
                ("skip.log".to_string(), 1),
                ("x.log.1".to_string(), 0),
            ],
            "compressed skipped; excluded by group 0 falls to group 1"
        );
        assert!(scan.dirs.contains(&d.join("a/b")));

        // Without following links, link.log is not a file of the globs.
        let mut no_links = config.clone();
        no_links.file_settings.follow_symlinks = false;
        let scan = Matcher::new(&no_links).expect("compile").scan();
        assert!(scan.files.iter().all(|f| !f.path.ends_with("link.log")));
        assert!(scan.files.iter().any(|f| f.path.ends_with("x.log")));
    }

    #[test]
    fn compressed_files_when_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("a.log.1.gz"), "x").expect("write");
        let mut g = group(&[format!("{}/*", dir.path().display())], &[]);
        let config = SourcesConfig {
            files: vec![g.clone()],
            ..SourcesConfig::default()
        };
        assert!(Matcher::new(&config).expect("m").scan().files.is_empty());
        g.include_compressed = true;
        let config = SourcesConfig {
            files: vec![g],
            ..SourcesConfig::default()
        };
        assert_eq!(Matcher::new(&config).expect("m").scan().files.len(), 1);
    }
}
