//! inotify on the directories the globs walk (`notify`, non-recursive watches): what makes new
//! files and new data seen at once. Events are not queued one by one (a busy writer makes one
//! per write): the callback, on notify's own thread, only marks paths in a set and wakes the
//! source, which takes the whole set at once — memory is bounded by the paths involved.
//!
//! When inotify cannot be set up, or a watch fails (ENOSPC once `max_user_watches` is spent),
//! a warning is logged once, `log_capturer_file_source_inotify_fallbacks_total` counts it, and
//! the periodic rescan and per-file polling are what find files and data.

use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tracing::warn;

use super::metrics::FileSourceMetrics;
use crate::checkpoint::FileId;

/// What the callback gathered since the last [`DirWatcher::take`].
#[derive(Default)]
pub struct Changes {
    /// Files whose data changed (modify, close-after-write).
    pub modified: HashSet<PathBuf>,
    /// Something was created, removed or renamed: worth a rescan.
    pub structure: bool,
    /// The kernel dropped events (queue overflow): everything must be looked at.
    pub overflow: bool,
}

pub struct DirWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    /// Each watched directory with its identity when its watch was added: a directory
    /// deleted and created again is another one, whose watch must be added anew.
    watched: HashMap<PathBuf, Option<FileId>>,
    shared: Arc<(Mutex<Changes>, Notify)>,
    warned: bool,
}

fn lock(m: &Mutex<Changes>) -> std::sync::MutexGuard<'_, Changes> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl DirWatcher {
    pub fn new(metrics: &FileSourceMetrics) -> DirWatcher {
        let shared: Arc<(Mutex<Changes>, Notify)> = Arc::default();
        let sink = Arc::clone(&shared);
        let made = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let mut changes = lock(&sink.0);
            match res {
                Ok(event) => {
                    if event.need_rescan() {
                        changes.overflow = true;
                    }
                    match event.kind {
                        EventKind::Modify(notify::event::ModifyKind::Data(_))
                        | EventKind::Access(notify::event::AccessKind::Close(
                            notify::event::AccessMode::Write,
                        )) => {
                            for p in event.paths {
                                // Bounded by the files of the watched directories.
                                changes.modified.insert(p);
                            }
                        }
                        EventKind::Access(_) => return,
                        _ => changes.structure = true,
                    }
                }
                Err(_) => changes.overflow = true,
            }
            drop(changes);
            sink.1.notify_one();
        });
        let mut w = DirWatcher {
            watcher: None,
            watched: HashMap::new(),
            shared,
            warned: false,
        };
        match made {
            Ok(watcher) => w.watcher = Some(watcher),
            Err(e) => w.fall_back(metrics, &format!("cannot set up inotify: {e}")),
        }
        w
    }

    fn fall_back(&mut self, metrics: &FileSourceMetrics, why: &str) {
        metrics.inotify_fallbacks.inc();
        if !self.warned {
            self.warned = true;
            warn!(reason = %why, "host files: inotify unavailable; new files and data are found by the rescan (sources.file_settings.rescan_interval) and polling (poll_interval)");
        }
    }

    /// Watches exactly `dirs` (adds new ones, drops those no longer walked, renews those
    /// whose identity in `ids` changed: deleted and created again, the old watch is dead).
    pub fn watch(
        &mut self,
        dirs: &[PathBuf],
        ids: &HashMap<PathBuf, FileId>,
        metrics: &FileSourceMetrics,
    ) {
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        let wanted: HashSet<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(d, id)| !wanted.contains(d.as_path()) || ids.get(*d).copied() != **id)
            .map(|(d, _)| d.clone())
            .collect();
        for d in stale {
            let _ = watcher.unwatch(&d);
            self.watched.remove(&d);
        }
        let mut failure = None;
        for d in dirs {
            if self.watched.contains_key(d) {
                continue;
            }
            match watcher.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d.clone(), ids.get(d).copied());
                }
                Err(e) => failure = Some(format!("cannot watch {}: {e}", d.display())),
            }
        }
        if let Some(why) = failure {
            self.fall_back(metrics, &why);
        }
    }

    /// Resolves once something changed since the last [`DirWatcher::take`].
    pub async fn changed(&self) {
        self.shared.1.notified().await;
    }

    pub fn take(&self) -> Changes {
        std::mem::take(&mut *lock(&self.shared.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn new_files_and_writes_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = FileSourceMetrics::default();
        let mut w = DirWatcher::new(&metrics);
        w.watch(&[dir.path().to_path_buf()], &HashMap::new(), &metrics);
        assert_eq!(
            metrics.inotify_fallbacks.get(),
            0,
            "inotify is available here"
        );
        let path = dir.path().join("a.log");
        let mut f = std::fs::File::create(&path).expect("create");
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("creation seen");
        assert!(w.take().structure);
        f.write_all(b"x\n").expect("write");
        let mut modified = false;
        for _ in 0..50 {
            tokio::time::timeout(Duration::from_secs(5), w.changed())
                .await
                .expect("write seen");
            if w.take().modified.contains(&path) {
                modified = true;
                break;
            }
        }
        assert!(modified);
        // A directory that does not exist cannot be watched: counted, the rescan remains.
        w.watch(&[dir.path().join("missing")], &HashMap::new(), &metrics);
        assert_eq!(metrics.inotify_fallbacks.get(), 1);
    }

    #[tokio::test]
    async fn a_directory_deleted_and_created_again_is_watched_anew() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("logs");
        let ids = |d: &Path| {
            let id = crate::sources::follow::id_of_path(d)
                .expect("stat")
                .expect("dir");
            HashMap::from([(d.to_path_buf(), id)])
        };
        std::fs::create_dir(&dir).expect("mkdir");
        let metrics = FileSourceMetrics::default();
        let mut w = DirWatcher::new(&metrics);
        w.watch(std::slice::from_ref(&dir), &ids(&dir), &metrics);
        // Another directory at the path (a placeholder keeps the old inode from being reused).
        std::fs::rename(&dir, root.path().join("old")).expect("rename");
        std::fs::create_dir(&dir).expect("mkdir again");
        w.watch(std::slice::from_ref(&dir), &ids(&dir), &metrics);
        let _ = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
        let _ = w.take();
        std::fs::File::create(dir.join("a.log")).expect("create");
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("a creation in the new directory is seen");
        assert!(w.take().structure);
    }
}
