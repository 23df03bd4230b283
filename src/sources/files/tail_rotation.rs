//! The reader's rotation paths: a file renamed within the globs, finished (rotated away or
//! deleted), truncated (copytruncate: the rest is read from the copy), and a closed (idle)
//! file reopened by path and identity.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::{CHUNK, Flush, Open, Tail, TailEnd, lock};
use crate::checkpoint::{FileId, FilePosition, Fingerprint};
use crate::observability::reasons::{FileSourceErrorReason, HostFileRotationKind};
use crate::pipeline::Delivery;
use crate::sources::files::identity;
use crate::sources::follow::Followed;

impl Tail {
    /// The path no longer names the file: if it was renamed to a name the same group takes,
    /// it is followed there.
    /// The directory is listed on a blocking thread.
    pub(super) async fn renamed_within_globs(&self) -> bool {
        let path = self.shared.path();
        let matcher = Arc::clone(&self.ctx.matcher);
        let (group, id, p) = (self.group, self.id, path.clone());
        let found = self
            .blocking(move || {
                identity::find_renamed(&p, id, |p| matcher.group_of(p) == Some(group))
            })
            .await
            .flatten();
        match found {
            Some(new) => {
                debug!(from = %path.display(), to = %new.display(), "host file renamed within the globs; still followed");
                self.ctx
                    .checkpoints
                    .file_moved(&self.id.key(), &new.display().to_string());
                *lock(&self.shared.path) = new;
                true
            }
            None => false,
        }
    }

    /// Done with the file (rotated away or deleted, read to its end): the held partial line
    /// and open groups go out, the rotation is counted, the descriptor released.
    pub(super) async fn finish(&mut self, st: &mut Open, kind: HostFileRotationKind) -> TailEnd {
        if !self.deliver(st, None, Flush::All).await {
            return TailEnd::Cancelled;
        }
        st.file = None;
        // Behind its last lines: sinks may close its output once written. Never waits (a
        // marker that does not fit only keeps an output file open until its idle close).
        let _ = self
            .ctx
            .pipeline
            .try_send(Delivery::end_of_stream(Arc::clone(&self.meta)));
        self.ctx.metrics.files.rotation(kind);
        debug!(file = %self.shared.path().display(), kind = kind.as_label(), "host file finished");
        TailEnd::Finished
    }

    /// copytruncate: the bytes written after our last read and before the truncation are in
    /// the copy logrotate made; they are read from it first, then the file from 0.
    pub(super) async fn truncated(&mut self, st: &mut Open, size: u64) -> bool {
        let ctx = Arc::clone(&self.ctx);
        ctx.metrics.files.truncations.inc();
        let path = self.shared.path();
        let from = st.splitter.read_offset();
        let (id, fp, fp_bytes) = (self.id, st.fingerprint, ctx.settings.fingerprint_bytes.0);
        // The fingerprint of the content we read (kept up to date by `upgrade_fingerprint`):
        // only one covering what we read (up to `fingerprint_bytes`) tells the copy apart. An
        // empty one would take any file for it.
        let trusted = fp.len > 0 && fp.len >= fp_bytes.min(from);
        if !trusted && from > 0 {
            ctx.metrics.files.error(FileSourceErrorReason::Fingerprint);
            warn!(file = %path.display(), offset = from, "host file truncated, but its first bytes are not known: the copy is not looked for");
        }
        let p = path.clone();
        let found = self
            .blocking(move || {
                if !trusted {
                    return None;
                }
                // Any size: a copy shorter than what we read (we read lines written between
                // the copy and the truncation) has nothing for us but must be marked read too
                // (else the scan reads it as a new file). The rotated name and a fingerprint
                // covering what we read are what tell it apart.
                let (copy, file) = identity::find_copy(&p, id, fp, 0)?;
                let meta = file.metadata().ok()?;
                let copy_id = FileId {
                    dev: std::os::unix::fs::MetadataExt::dev(&meta),
                    ino: std::os::unix::fs::MetadataExt::ino(&meta),
                };
                let full_fp = crate::sources::follow::fingerprint_of(&file, fp_bytes).ok()?;
                Some((copy, Arc::new(file), copy_id, full_fp, meta.len()))
            })
            .await
            .flatten();
        info!(file = %path.display(), size, offset = from, copy = ?found.as_ref().map(|f| f.0.display().to_string()),
            "host file truncated (copytruncate): reading the rest from the copy, then from its start");
        if let Some((copy, file, copy_id, copy_fp, copy_size)) = found {
            // Chunk by chunk, as from the file itself (the rest may be large).
            let mut at = from;
            while at < copy_size {
                let f = Arc::clone(&file);
                let want = usize::try_from(copy_size - at).unwrap_or(CHUNK).min(CHUNK);
                let read = self
                    .blocking(move || {
                        let mut buf = vec![0u8; want];
                        std::os::unix::fs::FileExt::read_at(&*f, &mut buf, at).map(|n| {
                            buf.truncate(n);
                            buf
                        })
                    })
                    .await;
                let Some(Ok(buf)) = read else {
                    ctx.metrics.files.error(FileSourceErrorReason::Read);
                    break;
                };
                if buf.is_empty() {
                    break;
                }
                at += buf.len() as u64;
                ctx.metrics.files.bytes_read.inc_by(buf.len() as u64);
                if !self.deliver(st, Some(Bytes::from(buf)), Flush::None).await {
                    return false;
                }
            }
            // The copy was read through us: a rescan that finds it must not read it again.
            // Its position is what was acknowledged of the original so far; acknowledgements
            // of the batches still in flight move it on (the alias), so a restart before they
            // are in resumes in the copy, and the scan leaves the copy alone meanwhile.
            let end = at.min(copy_size);
            let acked = ctx
                .checkpoints
                .file_position(&st.key)
                .filter(|p| p.fingerprint == fp)
                .map_or(0, |p| p.offset.min(end));
            let copy_key = copy_id.key();
            ctx.checkpoints.init_file(
                &copy_key,
                FilePosition {
                    path: copy.display().to_string(),
                    id: copy_id,
                    fingerprint: copy_fp,
                    offset: acked,
                },
            );
            if acked < end {
                ctx.checkpoints.alias_file(&st.key, fp, &copy_key, end);
            }
        }
        // The old content's last line, even without newline, is complete now.
        if !self.deliver(st, None, Flush::All).await {
            return false;
        }
        // The position restarts at 0 under the new fingerprint at once; acknowledgements of
        // the old content still in flight go to the copy (above). Waiting for them first
        // would stop reading for as long as the sinks take (acknowledgements come about once
        // a second): a second copytruncate meanwhile goes unnoticed and what was written
        // between the two is lost.
        let Some((f, _)) = &mut st.file else {
            return true;
        };
        if f.rewind().is_err() {
            ctx.metrics.files.error(FileSourceErrorReason::Read);
        }
        st.fingerprint = f
            .fingerprint(ctx.settings.fingerprint_bytes.0)
            .unwrap_or_else(|_| {
                ctx.metrics.files.error(FileSourceErrorReason::Fingerprint);
                Fingerprint::default()
            });
        *lock(&self.shared.fingerprint) = Some(st.fingerprint);
        st.splitter.reset(0);
        st.handed = 0;
        ctx.checkpoints.init_file(&st.key, self.position(st, 0));
        true
    }

    /// A closed (idle) file: waits until it changes, then reopens it by path and identity at
    /// its position.
    pub(super) async fn reopen(&mut self, st: &mut Open) -> Reopen {
        let ctx = Arc::clone(&self.ctx);
        loop {
            let path = self.shared.path();
            let id = self.id;
            let read_to = st.splitter.read_offset();
            let p = path.clone();
            let looked = self
                .blocking(move || check_closed(&p, id, read_to))
                .await
                .unwrap_or(Closed::Unchanged);
            match looked {
                // Acknowledgements still arrive for what was read before the close.
                Closed::Unchanged => self.set_lag(st, read_to),
                Closed::Moved => {
                    if self.renamed_within_globs().await {
                        continue;
                    }
                    // Replaced or removed while closed: what it got after it was closed, if
                    // anything, is not read.
                    ctx.metrics
                        .files
                        .error(FileSourceErrorReason::LostWhileClosed);
                    info!(file = %path.display(), "host file rotated or removed while closed (idle); done with it");
                    return Reopen::Gone;
                }
                Closed::Changed => {
                    let Some(permit) = ctx.pool.acquire(&ctx.metrics, &self.cancel).await else {
                        return Reopen::Cancelled;
                    };
                    let p = path.clone();
                    let fp = st.fingerprint;
                    // Opened at 0 and moved to the position only when it is still the file:
                    // same identity AND same first bytes (an inode freed while the file was
                    // closed may hold a new file now; its bytes past our offset are not ours).
                    let opened = self
                        .blocking(move || {
                            let mut f = Followed::open(&p, 0)?;
                            if f.id != id {
                                return Ok::<_, std::io::Error>((f, false));
                            }
                            if f.fingerprint(fp.len)? != fp {
                                return Ok((f, true));
                            }
                            f.seek_to(read_to)?;
                            Ok((f, false))
                        })
                        .await;
                    match opened {
                        Some(Ok((_, true))) => {
                            ctx.metrics.files.inode_reuses.inc();
                            info!(file = %path.display(), "host file holds other content since it was closed (reused inode or rewritten): done with it, the scan reads it from its start");
                            return Reopen::Gone;
                        }
                        Some(Ok((f, false))) if f.id == id => {
                            st.file = Some((f, permit));
                            return Reopen::Open;
                        }
                        _ => {
                            ctx.metrics.files.error(FileSourceErrorReason::Open);
                            drop(permit);
                        }
                    }
                }
            }
            if !self.wait(ctx.settings.poll_interval.0).await {
                return Reopen::Cancelled;
            }
        }
    }
}

pub(super) enum Reopen {
    Open,
    Gone,
    Cancelled,
}
enum Closed {
    Unchanged,
    /// Grew or shrank: reopen.
    Changed,
    /// Not at its path any more.
    Moved,
}

fn check_closed(path: &Path, id: FileId, read_to: u64) -> Closed {
    match std::fs::metadata(path) {
        Ok(m) => {
            let now = FileId {
                dev: std::os::unix::fs::MetadataExt::dev(&m),
                ino: std::os::unix::fs::MetadataExt::ino(&m),
            };
            if now != id {
                Closed::Moved
            } else if m.len() != read_to {
                Closed::Changed
            } else {
                Closed::Unchanged
            }
        }
        Err(_) => Closed::Moved,
    }
}
