//! The jailed virtual filesystem that SFTP and scp clients see.
//!
//! Owns: the virtual root and its mounts (`/incoming` today; read-only views such as
//! `/history`, `/live` or a generated `/status.json` are further [`Mount`]s), who may see and
//! write each one, and every filesystem operation a client can cause — including staged
//! uploads ([`upload::Upload`]): bytes go to a hidden staging name and appear under their real
//! name only on a clean commit.
//!
//! Invariants:
//! 1. Every disk access goes through a `cap_std::fs::Dir` opened on the mount's directory, so
//!    the kernel (openat2 `RESOLVE_BENEATH`, or cap-std's checked walk) refuses any path or
//!    symlink that would leave it. String checks in [`path`] only decide meaning.
//! 2. A role that may not write a mount gets `PermissionDenied` before any disk access.
//! 3. Staging files (`.difusor-*`) are invisible and unaddressable by clients.
//!
//! Must never: follow a path outside a mount, let an operator modify anything, create
//! symlinks or hard links, change ownership, or emit events (that is `ssh`'s job on commit).

pub mod path;
pub mod upload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, PermissionsExt};

use crate::config::Role;
pub use path::{PathError, VPath};
pub use upload::{Upload, UploadRecord};

/// Why an operation failed; mapped to an SFTP status by `ssh::sftp`, with this text as message.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    /// The path is not acceptable as a name (NUL, non-UTF-8, too long…).
    #[error(transparent)]
    BadPath(#[from] PathError),
    /// Nothing there (or nothing this role may see).
    #[error("no such file or directory")]
    NotFound,
    /// The role may not do this here, or the kernel refused to leave the jail.
    #[error("permission denied: {0}")]
    Denied(&'static str),
    /// The target already exists (exclusive create, non-overwriting rename, mkdir).
    #[error("file already exists")]
    Exists,
    /// The operation needs a file but got a directory, or vice versa.
    #[error("{0}")]
    WrongType(&'static str),
    /// The operation is not offered by difusor.
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    /// Any other I/O error (disk full, directory not empty…).
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl VfsError {
    /// Maps kernel errors on a jailed path to what the client should hear.
    fn from_io(e: io::Error) -> VfsError {
        match e.kind() {
            io::ErrorKind::NotFound => VfsError::NotFound,
            io::ErrorKind::AlreadyExists => VfsError::Exists,
            // cap-std reports escape attempts (symlinks out, absolute links) as PermissionDenied.
            io::ErrorKind::PermissionDenied => {
                VfsError::Denied("outside of the jail or not permitted")
            }
            io::ErrorKind::IsADirectory => VfsError::WrongType("is a directory"),
            io::ErrorKind::NotADirectory => VfsError::WrongType("not a directory"),
            _ => VfsError::Io(e),
        }
    }
}

pub type VfsResult<T> = Result<T, VfsError>;

/// File attributes as clients see them (the SFTP layer encodes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub size: u64,
    /// Full `st_mode`: type bits and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: u32,
    pub mtime: u32,
    pub nlink: u64,
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

impl Attrs {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    fn from_metadata(m: &cap_std::fs::Metadata) -> Attrs {
        let clamp = |t: i64| t.clamp(0, u32::MAX as i64) as u32;
        Attrs {
            size: m.len(),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            atime: clamp(m.atime()),
            mtime: clamp(m.mtime()),
            nlink: m.nlink(),
        }
    }

    /// A generated read-only file of `len` bytes, made now.
    fn generated(len: usize) -> Attrs {
        let now = now_secs();
        Attrs {
            size: len as u64,
            mode: S_IFREG | 0o444,
            uid: 0,
            gid: 0,
            atime: now,
            mtime: now,
            nlink: 1,
        }
    }

    /// A synthesised directory (the virtual root, a mount point).
    fn virtual_dir(writable: bool, mtime: u32) -> Attrs {
        Attrs {
            size: 4096,
            mode: S_IFDIR | if writable { 0o755 } else { 0o555 },
            uid: 0,
            gid: 0,
            atime: mtime,
            mtime,
            nlink: 2,
        }
    }
}

/// Changes a client asks for with setstat/fsetstat. Ownership is not representable: refused
/// before we get here.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttrs {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
    pub times: Option<(u32, u32)>,
}

/// Filesystem totals for `statvfs@openssh.com` / `df`.
#[derive(Debug, Clone, Copy)]
pub struct FsStats {
    pub block_size: u64,
    pub fragment_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub files_avail: u64,
    pub fsid: u64,
    pub flags: u64,
    pub name_max: u64,
}

/// Who may see a mount and who may write in it.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub publisher_sees: bool,
    pub operator_sees: bool,
    pub publisher_writes: bool,
}

impl Access {
    pub fn sees(&self, role: Role) -> bool {
        match role {
            Role::Publisher => self.publisher_sees,
            Role::Operator => self.operator_sees,
        }
    }
    /// SECURITY: operators never write, whatever a mount says.
    pub fn writes(&self, role: Role) -> bool {
        match role {
            Role::Publisher => self.publisher_writes,
            Role::Operator => false,
        }
    }
}

/// Produces the bytes of a generated read-only file (e.g. `/status.json`) at open time.
pub type Generator = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// What a mount is backed by.
pub enum MountKind {
    /// A real directory, reached only through its capability handle. `prefix` (relative,
    /// possibly empty) selects a subpath of it — e.g. the `live` symlink inside the data
    /// directory, resolved anew on every operation so `/live` follows each swap.
    Dir {
        dir: Dir,
        disk_path: PathBuf,
        prefix: PathBuf,
    },
    /// A generated file, rendered on each open.
    File(Generator),
}

/// One entry of the virtual root.
pub struct Mount {
    pub name: String,
    pub kind: MountKind,
    pub access: Access,
}

/// The open readable thing behind an SFTP read handle.
pub enum ReadSource {
    File(std::fs::File),
    Memory(Vec<u8>),
}

impl ReadSource {
    /// Positional read: `Ok(0)` at end of file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            ReadSource::File(f) => std::os::unix::fs::FileExt::read_at(f, buf, offset),
            ReadSource::Memory(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(v.len());
                let src = v.get(start..).unwrap_or_default();
                let n = src.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
                    dst.copy_from_slice(src);
                }
                Ok(n)
            }
        }
    }

    pub fn attrs(&self) -> io::Result<Attrs> {
        match self {
            ReadSource::File(f) => {
                let m = cap_std::fs::Metadata::from_just_metadata(f.metadata()?);
                Ok(Attrs::from_metadata(&m))
            }
            ReadSource::Memory(v) => Ok(Attrs::generated(v.len())),
        }
    }
}

/// Seconds since the epoch, as SFTP v3 attributes carry them.
pub fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

/// Where a virtual path lands.
enum Location<'a> {
    Root,
    MountRoot(&'a Mount),
    /// A path inside a directory mount; `rel` is non-empty and purely lexical-normal.
    Inside(&'a Mount, &'a Dir, PathBuf),
}

/// The whole virtual tree. Built once at start, shared by every session.
pub struct Vfs {
    mounts: Vec<Mount>,
    started: u32,
}

/// Name of the publication folder, the publisher's home.
pub const INCOMING: &str = "incoming";

impl Vfs {
    /// The standard tree under `data_dir`: `/incoming` (created if missing). Leftover staging
    /// files from a crash are removed: they were never complete uploads.
    pub fn open(data_dir: &Path) -> io::Result<Vfs> {
        let incoming = data_dir.join(INCOMING);
        std::fs::create_dir_all(&incoming)?;
        let dir = Dir::open_ambient_dir(&incoming, ambient_authority())?;
        let removed = upload::remove_stale_staging(&dir)?;
        if removed > 0 {
            tracing::warn!(removed, dir = %incoming.display(), "removed leftover partial uploads from before a restart");
        }
        let mut vfs = Vfs {
            mounts: Vec::new(),
            started: now_secs(),
        };
        vfs.add_mount(Mount {
            name: INCOMING.to_owned(),
            kind: MountKind::Dir {
                dir,
                disk_path: incoming,
                prefix: PathBuf::new(),
            },
            access: Access {
                publisher_sees: true,
                operator_sees: true,
                publisher_writes: true,
            },
        });
        Ok(vfs)
    }

    /// Adds a read-only view for operators (and, if `publisher_sees`, publishers) of the
    /// directory `disk_dir`, optionally narrowed to `prefix` inside it.
    pub fn add_read_only(
        &mut self,
        name: &str,
        disk_dir: &Path,
        prefix: &str,
        publisher_sees: bool,
    ) -> io::Result<()> {
        let dir = Dir::open_ambient_dir(disk_dir, ambient_authority())?;
        self.add_mount(Mount {
            name: name.to_owned(),
            kind: MountKind::Dir {
                dir,
                disk_path: disk_dir.join(prefix),
                prefix: PathBuf::from(prefix),
            },
            access: Access {
                publisher_sees,
                operator_sees: true,
                publisher_writes: false,
            },
        });
        Ok(())
    }

    /// Adds a generated read-only file at the root (e.g. `/status.json`).
    pub fn add_generated(&mut self, name: &str, publisher_sees: bool, generator: Generator) {
        self.add_mount(Mount {
            name: name.to_owned(),
            kind: MountKind::File(generator),
            access: Access {
                publisher_sees,
                operator_sees: true,
                publisher_writes: false,
            },
        });
    }

    /// Adds (or replaces) a mount in the virtual root.
    pub fn add_mount(&mut self, mount: Mount) {
        self.mounts.retain(|m| m.name != mount.name);
        self.mounts.push(mount);
        self.mounts.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Where a role starts, and what relative paths are relative to.
    pub fn home(&self, role: Role) -> VPath {
        match role {
            Role::Publisher => VPath::parse_absolute(INCOMING).unwrap_or_default(),
            Role::Operator => VPath::root(),
        }
    }

    /// The disk directory of a directory mount (for the ingest side, which is trusted code).
    pub fn mount_disk_path(&self, name: &str) -> Option<&Path> {
        self.mounts.iter().find_map(|m| match &m.kind {
            MountKind::Dir { disk_path, .. } if m.name == name => Some(disk_path.as_path()),
            _ => None,
        })
    }

    /// Where a virtual path inside a directory mount is on disk (for events and logs; clients
    /// never get to use it).
    pub fn disk_path(&self, p: &VPath) -> Option<PathBuf> {
        let (mount, rest) = p.components().split_first()?;
        let root = self.mount_disk_path(mount)?;
        Some(rest.iter().fold(root.to_path_buf(), |acc, c| acc.join(c)))
    }

    fn locate<'a>(&'a self, role: Role, p: &VPath) -> VfsResult<Location<'a>> {
        let parts = p.components();
        let Some((first, rest)) = parts.split_first() else {
            return Ok(Location::Root);
        };
        let mount = self
            .mounts
            .iter()
            .find(|m| &m.name == first && m.access.sees(role))
            .ok_or(VfsError::NotFound)?;
        match &mount.kind {
            MountKind::Dir { prefix, .. } if rest.is_empty() && prefix.as_os_str().is_empty() => {
                Ok(Location::MountRoot(mount))
            }
            MountKind::Dir { dir, prefix, .. } => Ok(Location::Inside(
                mount,
                dir,
                prefix.join(rest.iter().collect::<PathBuf>()),
            )),
            MountKind::File(_) if rest.is_empty() => Ok(Location::MountRoot(mount)),
            MountKind::File(_) => Err(VfsError::WrongType("not a directory")),
        }
    }

    /// Like `locate`, but for operations that modify: only inside a mount the role may write.
    fn locate_writable<'a>(
        &'a self,
        role: Role,
        p: &VPath,
    ) -> VfsResult<(&'a Mount, &'a Dir, PathBuf)> {
        match self.locate(role, p)? {
            Location::Inside(m, dir, rel) if m.access.writes(role) => Ok((m, dir, rel)),
            Location::Inside(..) | Location::MountRoot(_) | Location::Root => {
                Err(VfsError::Denied(match role {
                    Role::Operator => "operators have read-only access",
                    Role::Publisher => "only /incoming is writable",
                }))
            }
        }
    }

    /// stat (follow = true) or lstat (follow = false).
    pub fn stat(&self, role: Role, p: &VPath, follow: bool) -> VfsResult<Attrs> {
        match self.locate(role, p)? {
            Location::Root => Ok(Attrs::virtual_dir(false, self.started)),
            Location::MountRoot(m) => self.mount_attrs(m, role),
            Location::Inside(_, dir, rel) => {
                let m = if follow {
                    dir.metadata(&rel)
                } else {
                    dir.symlink_metadata(&rel)
                };
                Ok(Attrs::from_metadata(&m.map_err(VfsError::from_io)?))
            }
        }
    }

    fn mount_attrs(&self, m: &Mount, role: Role) -> VfsResult<Attrs> {
        match &m.kind {
            MountKind::Dir { dir, .. } => {
                let mut a = Attrs::from_metadata(&dir.dir_metadata().map_err(VfsError::from_io)?);
                if !m.access.writes(role) {
                    a.mode &= !0o222;
                }
                Ok(a)
            }
            MountKind::File(g) => Ok(Attrs::generated(g().len())),
        }
    }

    /// Lists a directory: (name, lstat attributes). Staging files are hidden.
    pub fn read_dir(&self, role: Role, p: &VPath) -> VfsResult<Vec<(String, Attrs)>> {
        match self.locate(role, p)? {
            Location::Root => self
                .mounts
                .iter()
                .filter(|m| m.access.sees(role))
                .map(|m| Ok((m.name.clone(), self.mount_attrs(m, role)?)))
                .collect(),
            Location::MountRoot(m) => match &m.kind {
                MountKind::Dir { dir, .. } => list(dir, None, !m.access.writes(role)),
                MountKind::File(_) => Err(VfsError::WrongType("not a directory")),
            },
            Location::Inside(m, dir, rel) => list(dir, Some(&rel), !m.access.writes(role)),
        }
    }

    /// Opens a file for reading.
    pub fn open_read(&self, role: Role, p: &VPath) -> VfsResult<ReadSource> {
        match self.locate(role, p)? {
            Location::Root => Err(VfsError::WrongType("is a directory")),
            Location::MountRoot(m) => match &m.kind {
                MountKind::File(g) => Ok(ReadSource::Memory(g())),
                MountKind::Dir { .. } => Err(VfsError::WrongType("is a directory")),
            },
            Location::Inside(_, dir, rel) => {
                let f = dir.open(&rel).map_err(VfsError::from_io)?;
                let f = f.into_std();
                if f.metadata()?.is_dir() {
                    return Err(VfsError::WrongType("is a directory"));
                }
                Ok(ReadSource::File(f))
            }
        }
    }

    /// Starts a staged upload to `p`. `truncate`: start empty (else start from the existing
    /// content, for resumed uploads); `exclusive`: fail if `p` exists; `create`: may create.
    pub fn begin_upload(
        &self,
        role: Role,
        p: &VPath,
        mode: Option<u32>,
        opts: upload::UploadOptions,
    ) -> VfsResult<Upload> {
        let (m, dir, rel) = self.locate_writable(role, p)?;
        let MountKind::Dir {
            disk_path, prefix, ..
        } = &m.kind
        else {
            return Err(VfsError::Denied("not a folder"));
        };
        let mount_dir = dir.try_clone().map_err(VfsError::from_io)?;
        // `rel` already includes the prefix; the disk root is the mount directory itself.
        let root = disk_path
            .ancestors()
            .nth(prefix.components().count())
            .unwrap_or(disk_path);
        Upload::begin(mount_dir, root, rel, p.clone(), mode, opts)
    }

    pub fn mkdir(&self, role: Role, p: &VPath, mode: Option<u32>) -> VfsResult<()> {
        let (_, dir, rel) = self.locate_writable(role, p)?;
        let mut b = cap_std::fs::DirBuilder::new();
        cap_std::fs::DirBuilderExt::mode(&mut b, mode.unwrap_or(0o755) & 0o777);
        dir.create_dir_with(&rel, &b).map_err(VfsError::from_io)
    }

    pub fn rmdir(&self, role: Role, p: &VPath) -> VfsResult<()> {
        let (_, dir, rel) = self.locate_writable(role, p)?;
        dir.remove_dir(&rel).map_err(VfsError::from_io)
    }

    pub fn remove(&self, role: Role, p: &VPath) -> VfsResult<()> {
        let (_, dir, rel) = self.locate_writable(role, p)?;
        let m = dir.symlink_metadata(&rel).map_err(VfsError::from_io)?;
        if m.is_dir() {
            return Err(VfsError::WrongType("is a directory (use rmdir)"));
        }
        dir.remove_file(&rel).map_err(VfsError::from_io)
    }

    /// Renames within one writable mount. `overwrite` = POSIX semantics
    /// (`posix-rename@openssh.com`); otherwise an existing target is an error (SFTP v3).
    pub fn rename(&self, role: Role, from: &VPath, to: &VPath, overwrite: bool) -> VfsResult<()> {
        let (m1, dir, rel_from) = self.locate_writable(role, from)?;
        let (m2, _, rel_to) = self.locate_writable(role, to)?;
        if m1.name != m2.name {
            return Err(VfsError::Denied("cannot rename across folders"));
        }
        // Make sure the source exists (and is reachable) before judging the target.
        dir.symlink_metadata(&rel_from).map_err(VfsError::from_io)?;
        if !overwrite {
            match dir.symlink_metadata(&rel_to) {
                Ok(_) => return Err(VfsError::Exists),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(VfsError::from_io(e)),
            }
        }
        dir.rename(&rel_from, dir, &rel_to)
            .map_err(VfsError::from_io)
    }

    /// setstat on a path: permissions and times only.
    pub fn set_attrs(&self, role: Role, p: &VPath, a: SetAttrs) -> VfsResult<()> {
        let (_, dir, rel) = self.locate_writable(role, p)?;
        if let Some(size) = a.size {
            // Truncating in place would modify a finished upload that ingest may be reading.
            let cur = dir.metadata(&rel).map_err(VfsError::from_io)?;
            if cur.len() != size {
                return Err(VfsError::Unsupported(
                    "changing a file's size in place; upload it again",
                ));
            }
        }
        if let Some(perm) = a.permissions {
            dir.set_permissions(
                &rel,
                cap_std::fs::Permissions::from_mode(sanitize_mode(perm)),
            )
            .map_err(VfsError::from_io)?;
        }
        if let Some((atime, mtime)) = a.times {
            use cap_fs_ext::{DirExt, SystemTimeSpec};
            let t = |s: u32| {
                SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(
                    UNIX_EPOCH + std::time::Duration::from_secs(s as u64),
                ))
            };
            dir.set_times(&rel, Some(t(atime)), Some(t(mtime)))
                .map_err(VfsError::from_io)?;
        }
        Ok(())
    }

    /// readlink: difusor does not expose link targets (they are server-side paths).
    pub fn read_link(&self, role: Role, p: &VPath) -> VfsResult<String> {
        self.stat(role, p, false)?;
        Err(VfsError::Unsupported("reading symbolic links"))
    }

    /// statvfs for the filesystem holding `p`.
    pub fn statvfs(&self, role: Role, p: &VPath) -> VfsResult<FsStats> {
        let dir = match self.locate(role, p)? {
            Location::Inside(_, dir, _) => dir,
            Location::MountRoot(Mount {
                kind: MountKind::Dir { dir, .. },
                ..
            }) => dir,
            _ => self
                .mounts
                .iter()
                .find_map(|m| match &m.kind {
                    MountKind::Dir { dir, .. } => Some(dir),
                    MountKind::File(_) => None,
                })
                .ok_or(VfsError::NotFound)?,
        };
        let s = rustix::fs::fstatvfs(dir).map_err(|e| VfsError::Io(e.into()))?;
        Ok(FsStats {
            block_size: s.f_bsize,
            fragment_size: s.f_frsize,
            blocks: s.f_blocks,
            blocks_free: s.f_bfree,
            blocks_avail: s.f_bavail,
            files: s.f_files,
            files_free: s.f_ffree,
            files_avail: s.f_favail,
            fsid: s.f_fsid,
            flags: s.f_flag.bits(),
            name_max: s.f_namemax,
        })
    }
}

/// Permission bits a client may set: never setuid/setgid/sticky.
pub fn sanitize_mode(mode: u32) -> u32 {
    mode & 0o777
}

fn list(dir: &Dir, rel: Option<&Path>, read_only: bool) -> VfsResult<Vec<(String, Attrs)>> {
    let entries = match rel {
        None => dir.entries(),
        Some(r) => dir.read_dir(r),
    }
    .map_err(VfsError::from_io)?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(VfsError::from_io)?;
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            // A non-UTF-8 name could not be addressed by a client anyway; skip it.
            continue;
        };
        if name.starts_with(path::STAGING_PREFIX) {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        let mut a = Attrs::from_metadata(&m);
        if read_only {
            a.mode &= !0o222;
        }
        out.push((name.to_owned(), a));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
