//! What `GET /api/v1/files` serves: each host file with a stored position, its acknowledged
//! offset, and how far the file is ahead of it. Read from the checkpoint store when asked
//! (one `stat` per file), so it needs nothing from the readers.

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointStore;
use crate::sources::follow::id_of_path;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    /// The position key (`file-<dev>-<ino>`), the file's source id in the pipeline.
    pub key: String,
    /// The path it was last read under.
    pub path: String,
    /// Every byte before it is acknowledged by every sink.
    pub acknowledged_offset: u64,
    /// Its size now, if the path still names this file (None: rotated away or deleted).
    pub size: Option<u64>,
    /// `size` minus `acknowledged_offset`.
    pub lag_bytes: Option<u64>,
}

/// Every stored host-file position, sorted by path. Blocking (`stat`s).
pub fn file_views(store: &CheckpointStore) -> Vec<FileView> {
    let mut views: Vec<FileView> = store
        .file_positions()
        .into_iter()
        .map(|(key, p)| {
            let path = std::path::Path::new(&p.path);
            let size = match id_of_path(path) {
                Ok(Some(id)) if id == p.id => std::fs::metadata(path).ok().map(|m| m.len()),
                _ => None,
            };
            FileView {
                key,
                acknowledged_offset: p.offset,
                lag_bytes: size.map(|s| s.saturating_sub(p.offset)),
                size,
                path: p.path,
            }
        })
        .collect();
    views.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.key.cmp(&b.key)));
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{FilePosition, Fingerprint};
    use crate::observability::metrics::Metrics;
    use std::sync::Arc;

    #[test]
    fn views_show_the_acknowledged_offset_and_the_lag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::open(&dir.path().join("state"), Arc::new(Metrics::new()))
            .expect("store");
        let live = dir.path().join("app.log");
        std::fs::write(&live, "0123456789\n").expect("write");
        let id = id_of_path(&live).expect("stat").expect("exists");
        store.init_file(
            &id.key(),
            FilePosition {
                path: live.display().to_string(),
                id,
                fingerprint: Fingerprint::default(),
                offset: 4,
            },
        );
        let gone = crate::checkpoint::FileId { dev: 1, ino: 2 };
        store.init_file(
            &gone.key(),
            FilePosition {
                path: dir.path().join("gone.log").display().to_string(),
                id: gone,
                fingerprint: Fingerprint::default(),
                offset: 9,
            },
        );
        let views = file_views(&store);
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].path, live.display().to_string());
        assert_eq!((views[0].size, views[0].lag_bytes), (Some(11), Some(7)));
        assert_eq!(views[0].acknowledged_offset, 4);
        assert_eq!((views[1].size, views[1].lag_bytes), (None, None));
    }
}
