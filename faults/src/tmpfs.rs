//! A small tmpfs the suite mounts (as root) to make a directory run out of space or turn
//! read-only on demand: scenario 5 puts the file sink's output there, scenario 6 the state
//! directory. `Drop` unmounts it (lazily, if something still holds it open).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
    mounted: bool,
}

/// The filler file that takes the space away; deleting it gives the space back.
const FILLER: &str = ".lcf-filler";

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (rounded up to pages by the kernel) on `path` (created).
    pub fn mount(path: &Path, bytes: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        run_mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={bytes},mode=0755"),
            "tmpfs",
            &path.display().to_string(),
        ])?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
            mounted: true,
        })
    }

    /// Bytes still free for an unprivileged-looking writer (statvfs `f_bavail`).
    pub fn free_bytes(&self) -> Result<u64, String> {
        let out = Command::new("stat")
            .args(["-f", "--format=%a %S"])
            .arg(&self.path)
            .output()
            .map_err(|e| format!("stat -f: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace().map(|v| v.parse::<u64>());
        match (it.next(), it.next()) {
            (Some(Ok(blocks)), Some(Ok(size))) => Ok(blocks * size),
            _ => Err(format!("stat -f {}: {text:?}", self.path.display())),
        }
    }

    /// Writes the filler until the file system is full (ENOSPC), leaving nothing free;
    /// returns how many bytes the filler took. Bounded by the tmpfs size.
    pub fn fill(&self) -> Result<u64, String> {
        self.fill_leaving(0)
    }

    /// Writes the filler until at most `leave` bytes are free (or the file system is full).
    pub fn fill_leaving(&self, leave: u64) -> Result<u64, String> {
        let target = match leave {
            0 => u64::MAX, // up to ENOSPC, whatever else is being written meanwhile
            _ => self.free_bytes()?.saturating_sub(leave),
        };
        let path = self.path.join(FILLER);
        let mut f = log_capturer_testkit::open_append(&path)?;
        let block = vec![0u8; 4096];
        let mut written = 0u64;
        while written < target {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC: full, as wanted
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(written)
    }

    /// Deletes the filler: the space is back.
    pub fn free(&self) -> Result<(), String> {
        let path = self.path.join(FILLER);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// `mount -o remount,ro`: every write fails with EROFS from now on.
    pub fn read_only(&self) -> Result<(), String> {
        run_mount(&["-o", "remount,ro", &self.path.display().to_string()])
    }

    /// `mount -o remount,rw`.
    pub fn read_write(&self) -> Result<(), String> {
        run_mount(&["-o", "remount,rw", &self.path.display().to_string()])
    }

    /// Unmounts now (also what `Drop` does).
    pub fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let status = Command::new("umount")
            .arg(&path)
            .status()
            .map_err(|e| format!("umount: {e}"))?;
        if !status.success() {
            // Still held (an agent killed half-way, say): detach it now, it goes when released.
            let status = Command::new("umount")
                .args(["-l", &path])
                .status()
                .map_err(|e| format!("umount -l: {e}"))?;
            if !status.success() {
                return Err(format!("umount -l {path} failed"));
            }
        }
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// `mount ARGS`; an error carries mount's own message.
pub fn run_mount(args: &[&str]) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
