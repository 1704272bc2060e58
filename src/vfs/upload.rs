//! Staged uploads: atomic from the first byte.
//!
//! Owns: the lifecycle of one file being received — a hidden staging file beside the target
//! (`.difusor-part-<n>`, same directory so the final `rename(2)` is atomic), positional
//! writes, and either [`Upload::commit`] (the file appears under its real name, whole) or
//! drop (the staging file is deleted). A dropped connection therefore never leaves a partial
//! file under a real name.
//!
//! Must never: write to the target name before commit, modify an existing file in place
//! (a resumed upload copies it into the staging file first), or outlive a restart (leftover
//! staging files are removed by [`remove_stale_staging`] at start).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use std::os::unix::fs::PermissionsExt as _;

use super::path::STAGING_PREFIX;
use super::{Attrs, SetAttrs, VPath, VfsError, VfsResult, sanitize_mode};

/// How the client opened the file (SFTP pflags, or scp which always truncates).
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadOptions {
    /// Start from an empty file (else from the existing content: resume).
    pub truncate: bool,
    /// Fail if the target exists.
    pub exclusive: bool,
    /// The target may be created.
    pub create: bool,
    /// Writes go to the end whatever their offset.
    pub append: bool,
}

/// What a finished upload was, for the upload-completed event and the transfer log.
#[derive(Debug, Clone)]
pub struct UploadRecord {
    pub vpath: VPath,
    /// Absolute path of the file on disk, now under its real name.
    pub disk_path: PathBuf,
    pub size: u64,
    /// Bytes received over the wire (differs from `size` for resumed uploads).
    pub bytes_received: u64,
    pub started: SystemTime,
    pub finished: SystemTime,
}

/// Unique staging names across sessions of this process; the time seed keeps names from a
/// previous run (already cleaned at start) from mattering either way.
static NEXT_STAGING: AtomicU64 = AtomicU64::new(0);

fn staging_name() -> String {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = NEXT_STAGING.fetch_add(1, Ordering::Relaxed);
    format!(
        "{STAGING_PREFIX}part-{:x}-{seed:x}-{n:x}",
        std::process::id()
    )
}

/// A file being received.
pub struct Upload {
    /// The mount's directory handle: every path below is relative to it.
    dir: Dir,
    final_rel: PathBuf,
    staging_rel: PathBuf,
    disk_final: PathBuf,
    file: std::fs::File,
    vpath: VPath,
    append: bool,
    started: SystemTime,
    bytes_received: u64,
    /// Set once the staging file has been renamed; Drop then leaves things alone.
    committed: bool,
}

impl Upload {
    pub(super) fn begin(
        dir: Dir,
        disk_root: &Path,
        rel: PathBuf,
        vpath: VPath,
        mode: Option<u32>,
        opts: UploadOptions,
    ) -> VfsResult<Upload> {
        let existing = match dir.symlink_metadata(&rel) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(VfsError::from_io(e)),
        };
        if let Some(m) = &existing {
            if m.is_dir() {
                return Err(VfsError::WrongType("is a directory"));
            }
            if opts.exclusive {
                return Err(VfsError::Exists);
            }
        } else if !opts.create {
            return Err(VfsError::NotFound);
        }
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let staging_rel = parent.join(staging_name());
        let mut oo = OpenOptions::new();
        oo.read(true).write(true).create_new(true);
        oo.mode(mode.map(sanitize_mode).unwrap_or(0o644));
        let file = dir
            .open_with(&staging_rel, &oo)
            .map_err(VfsError::from_io)?
            .into_std();
        let up = Upload {
            dir,
            disk_final: disk_root.join(&rel),
            final_rel: rel,
            staging_rel,
            file,
            vpath,
            append: opts.append,
            started: SystemTime::now(),
            bytes_received: 0,
            committed: false,
        };
        if existing.is_some() && !opts.truncate {
            // Resume: the existing bytes become the start of the new version; the old file
            // itself is never touched until the rename replaces it.
            let mut src = up
                .dir
                .open(&up.final_rel)
                .map_err(VfsError::from_io)?
                .into_std();
            let mut dst = &up.file;
            io::copy(&mut src, &mut dst)?;
        }
        Ok(up)
    }

    pub fn vpath(&self) -> &VPath {
        &self.vpath
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Writes `data` at `offset` (or at the end in append mode).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let offset = if self.append {
            self.file.metadata()?.len()
        } else {
            offset
        };
        self.file.write_all_at(data, offset)?;
        self.bytes_received += data.len() as u64;
        Ok(())
    }

    /// Positional read of what was written so far (SFTP allows read on a read-write handle).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    pub fn attrs(&self) -> io::Result<Attrs> {
        let m = cap_std::fs::Metadata::from_just_metadata(self.file.metadata()?);
        Ok(Attrs::from_metadata(&m))
    }

    /// fsetstat: size, permissions and times apply to the staged file and survive the rename.
    pub fn set_attrs(&self, a: SetAttrs) -> VfsResult<()> {
        if let Some(size) = a.size {
            self.file.set_len(size)?;
        }
        if let Some(perm) = a.permissions {
            self.file
                .set_permissions(std::fs::Permissions::from_mode(sanitize_mode(perm)))?;
        }
        if let Some((atime, mtime)) = a.times {
            let t = |s: u32| UNIX_EPOCH + std::time::Duration::from_secs(s as u64);
            let times = std::fs::FileTimes::new()
                .set_accessed(t(atime))
                .set_modified(t(mtime));
            self.file.set_times(times)?;
        }
        Ok(())
    }

    /// fsync@openssh.com.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// The client closed cleanly: the file appears under its real name, replacing any old one
    /// atomically.
    pub fn commit(mut self) -> VfsResult<UploadRecord> {
        let size = self.file.metadata()?.len();
        if let Ok(m) = self.dir.symlink_metadata(&self.final_rel)
            && m.is_dir()
        {
            return Err(VfsError::WrongType("a directory now has the file's name"));
        }
        self.dir
            .rename(&self.staging_rel, &self.dir, &self.final_rel)
            .map_err(VfsError::from_io)?;
        self.committed = true;
        Ok(UploadRecord {
            vpath: self.vpath.clone(),
            disk_path: self.disk_final.clone(),
            size,
            bytes_received: self.bytes_received,
            started: self.started,
            finished: SystemTime::now(),
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = self.dir.remove_file(&self.staging_rel)
        {
            tracing::warn!(error = %e, path = %self.vpath, "could not remove an aborted upload's staging file");
        }
    }
}

/// Deletes staging files left by a previous run (recursively, bounded depth). Returns how many.
pub fn remove_stale_staging(dir: &Dir) -> io::Result<usize> {
    fn walk(dir: &Dir, depth: usize) -> io::Result<usize> {
        let mut n = 0;
        for e in dir.entries()? {
            let e = e?;
            let name = e.file_name();
            let ft = e.file_type()?;
            if name.to_str().is_some_and(|s| s.starts_with(STAGING_PREFIX)) && ft.is_file() {
                dir.remove_file(&name)?;
                n += 1;
            } else if ft.is_dir() && depth < 32 {
                n += walk(&dir.open_dir(&name)?, depth + 1)?;
            }
        }
        Ok(n)
    }
    walk(dir, 0)
}
