//! The SFTP request worker: one thread per session executing requests in arrival order.
//!
//! Owns: the session's handle table and the mapping of each SFTP v3 request (and the
//! OpenSSH extensions stock clients use) onto `vfs` operations, and of `vfs` errors onto SFTP
//! status codes with a message. Requests run sequentially with positional I/O, so a WRITE
//! never waits for the previous one's acknowledgement to be *sent* — the reader keeps the
//! pipeline full while this thread keeps the disk busy.
//!
//! Must never: panic on client input, leave a request unanswered, drop the connection on an
//! error (errors are statuses), or wait on the pipeline's verdict itself (that wait is handed
//! to the async writer so later requests keep flowing).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh_sftp::extensions::{self, LimitsExtension, Statvfs};
use russh_sftp::protocol::{
    Attrs as AttrsReply, File, FileAttributes, Handle as HandleReply, Name, OpenFlags, Packet,
    StatusCode, Version,
};
use tokio::sync::{mpsc, oneshot};

use super::wire;
use crate::events::Verdict;
use crate::ssh::transfer::{Transfers, Who};
use crate::vfs::upload::UploadOptions;
use crate::vfs::{Attrs, ReadSource, SetAttrs, Upload, VPath, Vfs, VfsError};

/// What the worker hands to the writer task.
pub enum Outgoing {
    /// An encoded reply, ready to send.
    Packet(Bytes),
    /// A CLOSE whose answer waits for the pipeline's verdict (bounded by `timeout`).
    AwaitVerdict {
        id: u32,
        verdict: oneshot::Receiver<Verdict>,
        timeout: Duration,
        path: String,
    },
}

/// Everything a session's worker needs, fixed at session start.
pub struct SessionCtx {
    pub who: Who,
    pub vfs: Arc<Vfs>,
    pub transfers: Arc<Transfers>,
    pub max_open_handles: usize,
    /// How long a CLOSE of an upload waits for the pipeline's verdict.
    pub verdict_timeout: Duration,
}

enum Handle {
    Read {
        src: ReadSource,
        path: VPath,
        sent: u64,
        opened: Instant,
    },
    Write(Upload),
    Dir {
        entries: std::vec::IntoIter<(String, Attrs)>,
        done: bool,
    },
}

/// Entries per READDIR reply: small enough to stay far below the packet limit.
const READDIR_BATCH: usize = 100;

pub struct Worker {
    ctx: SessionCtx,
    home: VPath,
    handles: HashMap<u32, Handle>,
    next_handle: u32,
    out: mpsc::UnboundedSender<Outgoing>,
    /// Bytes of requests queued but not yet executed; the reader stops the session past a cap.
    queued: Arc<AtomicUsize>,
    /// Reply bytes not yet sent; `send` waits when a client does not read its answers.
    budget: Arc<super::ReplyBudget>,
}

fn to_file_attrs(a: &Attrs) -> FileAttributes {
    FileAttributes {
        size: Some(a.size),
        uid: Some(a.uid),
        user: None,
        gid: Some(a.gid),
        group: None,
        permissions: Some(a.mode),
        atime: Some(a.atime),
        mtime: Some(a.mtime),
    }
}

/// An `ls -l` line in OpenSSH's format (sftp-common.c `ls_file`).
pub fn long_name(name: &str, a: &Attrs, now: u32) -> String {
    let kind = match a.mode & crate::vfs::S_IFMT {
        crate::vfs::S_IFDIR => 'd',
        crate::vfs::S_IFLNK => 'l',
        crate::vfs::S_IFREG => '-',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '?',
    };
    let mut perms = String::with_capacity(9);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        perms.push(if a.mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    let fmt = if now.saturating_sub(a.mtime) < 182 * 86400 && a.mtime <= now + 86400 {
        time::macros::format_description!("[month repr:short] [day padding:space] [hour]:[minute]")
    } else {
        time::macros::format_description!("[month repr:short] [day padding:space]  [year]")
    };
    let when = time::OffsetDateTime::from_unix_timestamp(a.mtime as i64)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| "Jan  1  1970".to_owned());
    format!(
        "{kind}{perms} {:>3} {:<8} {:<8} {:>8} {when} {name}",
        a.nlink, "difusor", "difusor", a.size
    )
}

fn vfs_status(e: &VfsError) -> StatusCode {
    match e {
        VfsError::NotFound => StatusCode::NoSuchFile,
        VfsError::BadPath(crate::vfs::PathError::Reserved) => StatusCode::NoSuchFile,
        VfsError::Denied(_) => StatusCode::PermissionDenied,
        VfsError::Unsupported(_) => StatusCode::OpUnsupported,
        VfsError::BadPath(_) | VfsError::Exists | VfsError::WrongType(_) | VfsError::Io(_) => {
            StatusCode::Failure
        }
    }
}

type Reply = Result<Bytes, (StatusCode, String)>;

fn ok(id: u32) -> Reply {
    Ok(wire::status(id, StatusCode::Ok, "Success"))
}

fn encode(p: Packet) -> Reply {
    Bytes::try_from(p).map_err(|e| (StatusCode::Failure, format!("encoding reply: {e}")))
}

impl Worker {
    pub fn new(
        ctx: SessionCtx,
        out: mpsc::UnboundedSender<Outgoing>,
        queued: Arc<AtomicUsize>,
        budget: Arc<super::ReplyBudget>,
    ) -> Worker {
        Worker {
            home: ctx.vfs.home(ctx.who.role),
            ctx,
            handles: HashMap::new(),
            next_handle: 1,
            out,
            queued,
            budget,
        }
    }

    /// Runs until the reader hangs up, then drops every handle (aborting unfinished uploads).
    pub fn run(mut self, frames: std::sync::mpsc::Receiver<Bytes>) {
        while let Ok(frame) = frames.recv() {
            let len = frame.len();
            self.handle_frame(frame);
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
        let open_uploads = self
            .handles
            .values()
            .filter(|h| matches!(h, Handle::Write(_)))
            .count();
        if open_uploads > 0 {
            tracing::warn!(user = %self.ctx.who.user, open_uploads, "session ended with unfinished uploads; they are discarded");
        }
        for (_, h) in self.handles.drain() {
            if let Handle::Read {
                path, sent, opened, ..
            } = h
            {
                self.ctx
                    .transfers
                    .download_finished(&self.ctx.who, &path, sent, opened);
            }
        }
    }

    fn send(&self, b: Bytes) {
        self.budget.reserve(b.len());
        // The writer only goes away when the channel is gone; nothing left to tell anyone then.
        let _ = self.out.send(Outgoing::Packet(b));
    }

    fn handle_frame(&mut self, frame: Bytes) {
        if frame.first() == Some(&wire::SSH_FXP_WRITE) {
            let id = wire::peek_request_id(&frame).unwrap_or(0);
            let reply = match wire::decode_write(frame) {
                Some(w) => self.write(w),
                None => Err((StatusCode::BadMessage, "malformed write request".to_owned())),
            };
            self.finish(id, reply);
            return;
        }
        let id = wire::peek_request_id(&frame).unwrap_or(0);
        let mut body = frame.clone();
        let packet = match Packet::try_from(&mut body) {
            Ok(p) => p,
            Err(e) => {
                let known = frame
                    .first()
                    .is_some_and(|t| (1..=20).contains(t) || *t == 200);
                let code = if known {
                    StatusCode::BadMessage
                } else {
                    StatusCode::OpUnsupported
                };
                tracing::debug!(error = %e, "undecodable sftp request");
                self.send(wire::status(id, code, "request not understood"));
                return;
            }
        };
        if let Packet::Init(init) = packet {
            self.send_version(init.version);
            return;
        }
        let id = packet.get_request_id();
        let reply = self.dispatch(packet);
        self.finish(id, reply);
    }

    fn finish(&mut self, id: u32, reply: Reply) {
        match reply {
            // Empty: the reply was handed to the writer (a CLOSE awaiting its verdict).
            Ok(b) if b.is_empty() => {}
            Ok(b) => self.send(b),
            Err((code, msg)) => self.send(wire::status(id, code, &msg)),
        }
    }

    fn send_version(&self, client_version: u32) {
        tracing::debug!(client_version, "sftp init");
        let mut v = Version::new();
        for (k, val) in [
            ("posix-rename@openssh.com", "1"),
            (extensions::STATVFS, "2"),
            ("fstatvfs@openssh.com", "2"),
            (extensions::FSYNC, "1"),
            (extensions::LIMITS, "1"),
        ] {
            v.extensions.insert(k.to_owned(), val.to_owned());
        }
        match Bytes::try_from(Packet::Version(v)) {
            Ok(b) => self.send(b),
            Err(e) => tracing::error!(error = %e, "cannot encode sftp version"),
        }
    }

    fn resolve(&self, p: &str) -> Result<VPath, (StatusCode, String)> {
        VPath::resolve(&self.home, p).map_err(|e| {
            let e = VfsError::from(e);
            (vfs_status(&e), e.to_string())
        })
    }

    fn fail(&self, op: &str, path: &str, e: VfsError) -> (StatusCode, String) {
        tracing::info!(user = %self.ctx.who.user, op, path, error = %e, "sftp request refused");
        (vfs_status(&e), e.to_string())
    }

    fn new_handle(&mut self, h: Handle, id: u32) -> Reply {
        if self.handles.len() >= self.ctx.max_open_handles {
            return Err((StatusCode::Failure, "too many open handles".to_owned()));
        }
        let n = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.handles.insert(n, h);
        encode(Packet::Handle(HandleReply {
            id,
            handle: n.to_string(),
        }))
    }

    fn handle_id(h: &str) -> Option<u32> {
        h.parse().ok()
    }

    fn write(&mut self, w: wire::WriteRequest) -> Reply {
        let key = std::str::from_utf8(&w.handle)
            .ok()
            .and_then(Self::handle_id);
        match key.and_then(|k| self.handles.get_mut(&k)) {
            Some(Handle::Write(up)) => match up.write_at(w.offset, &w.data) {
                Ok(()) => ok(w.id),
                Err(e) => {
                    tracing::warn!(user = %self.ctx.who.user, path = %up.vpath(), error = %e, "write failed");
                    Err((StatusCode::Failure, format!("write failed: {e}")))
                }
            },
            Some(_) => Err((
                StatusCode::PermissionDenied,
                "handle is not open for writing".to_owned(),
            )),
            None => Err((StatusCode::Failure, "invalid handle".to_owned())),
        }
    }

    fn dispatch(&mut self, packet: Packet) -> Reply {
        let role = self.ctx.who.role;
        match packet {
            Packet::RealPath(r) => {
                let p = self.resolve(&r.path)?;
                encode(Packet::Name(Name {
                    id: r.id,
                    files: vec![File::dummy(p.to_string())],
                }))
            }
            Packet::Stat(s) => self.stat(s.id, &s.path, true),
            Packet::Lstat(s) => self.stat(s.id, &s.path, false),
            Packet::Fstat(f) => {
                let a = match Self::handle_id(&f.handle).and_then(|k| self.handles.get(&k)) {
                    Some(Handle::Read { src, .. }) => src.attrs().map_err(VfsError::from),
                    Some(Handle::Write(up)) => up.attrs().map_err(VfsError::from),
                    Some(Handle::Dir { .. }) | None => {
                        return Err((StatusCode::Failure, "invalid handle".to_owned()));
                    }
                };
                let a = a.map_err(|e| self.fail("fstat", "", e))?;
                encode(Packet::Attrs(AttrsReply {
                    id: f.id,
                    attrs: to_file_attrs(&a),
                }))
            }
            Packet::Open(o) => {
                let p = self.resolve(&o.filename)?;
                let f = o.pflags;
                let h = if f.intersects(
                    OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                ) {
                    let opts = UploadOptions {
                        truncate: f.contains(OpenFlags::TRUNCATE),
                        exclusive: f.contains(OpenFlags::EXCLUDE),
                        create: f.contains(OpenFlags::CREATE),
                        append: f.contains(OpenFlags::APPEND),
                    };
                    let up = self
                        .ctx
                        .vfs
                        .begin_upload(role, &p, o.attrs.permissions, opts)
                        .map_err(|e| self.fail("open-write", &o.filename, e))?;
                    Handle::Write(up)
                } else {
                    let src = self
                        .ctx
                        .vfs
                        .open_read(role, &p)
                        .map_err(|e| self.fail("open-read", &o.filename, e))?;
                    Handle::Read {
                        src,
                        path: p,
                        sent: 0,
                        opened: Instant::now(),
                    }
                };
                self.new_handle(h, o.id)
            }
            Packet::Read(r) => {
                let len = (r.len as u64).min(wire::ADVERTISED_MAX_READ) as usize;
                let h = Self::handle_id(&r.handle).and_then(|k| self.handles.get_mut(&k));
                let res = match h {
                    Some(Handle::Read { src, sent, .. }) => {
                        let res = wire::data_with(r.id, len, |dst| src.read_at(dst, r.offset));
                        if let Ok(Some(p)) = &res {
                            *sent += (p.len() - 13) as u64;
                        }
                        res
                    }
                    Some(Handle::Write(up)) => {
                        wire::data_with(r.id, len, |dst| up.read_at(dst, r.offset))
                    }
                    Some(Handle::Dir { .. }) | None => {
                        return Err((StatusCode::Failure, "invalid handle".to_owned()));
                    }
                };
                match res {
                    Ok(Some(p)) => Ok(p),
                    Ok(None) => Err((StatusCode::Eof, "End of file".to_owned())),
                    Err(e) => Err((StatusCode::Failure, format!("read failed: {e}"))),
                }
            }
            Packet::Close(c) => self.close(c.id, &c.handle),
            Packet::OpenDir(o) => {
                let p = self.resolve(&o.path)?;
                let entries = self
                    .ctx
                    .vfs
                    .read_dir(role, &p)
                    .map_err(|e| self.fail("opendir", &o.path, e))?;
                let mut all = Vec::with_capacity(entries.len() + 2);
                if let Ok(a) = self.ctx.vfs.stat(role, &p, true) {
                    all.push((".".to_owned(), a));
                    let parent = self.ctx.vfs.stat(role, &p.parent(), true).unwrap_or(a);
                    all.push(("..".to_owned(), parent));
                }
                all.extend(entries);
                self.new_handle(
                    Handle::Dir {
                        entries: all.into_iter(),
                        done: false,
                    },
                    o.id,
                )
            }
            Packet::ReadDir(r) => {
                let now = crate::vfs::now_secs();
                match Self::handle_id(&r.handle).and_then(|k| self.handles.get_mut(&k)) {
                    Some(Handle::Dir { entries, done }) => {
                        let files: Vec<File> = entries
                            .by_ref()
                            .take(READDIR_BATCH)
                            .map(|(name, a)| File {
                                longname: long_name(&name, &a, now),
                                filename: name,
                                attrs: to_file_attrs(&a),
                            })
                            .collect();
                        if files.is_empty() || *done {
                            *done = true;
                            return Err((StatusCode::Eof, "End of directory".to_owned()));
                        }
                        encode(Packet::Name(Name { id: r.id, files }))
                    }
                    _ => Err((StatusCode::Failure, "invalid handle".to_owned())),
                }
            }
            Packet::Write(_) => Err((StatusCode::BadMessage, "malformed write request".to_owned())),
            Packet::SetStat(s) => {
                let p = self.resolve(&s.path)?;
                let a = self.set_attrs_from(&s.attrs, &p)?;
                self.ctx
                    .vfs
                    .set_attrs(role, &p, a)
                    .map_err(|e| self.fail("setstat", &s.path, e))?;
                ok(s.id)
            }
            Packet::FSetStat(s) => {
                let a = match Self::handle_id(&s.handle).and_then(|k| self.handles.get(&k)) {
                    Some(Handle::Write(up)) => {
                        let cur = up
                            .attrs()
                            .map_err(|e| (StatusCode::Failure, e.to_string()))?;
                        set_attrs_checked(&s.attrs, &cur)?
                    }
                    Some(_) => {
                        return Err((
                            StatusCode::PermissionDenied,
                            "handle is not open for writing".to_owned(),
                        ));
                    }
                    None => return Err((StatusCode::Failure, "invalid handle".to_owned())),
                };
                if let Some(Handle::Write(up)) =
                    Self::handle_id(&s.handle).and_then(|k| self.handles.get(&k))
                {
                    up.set_attrs(a).map_err(|e| self.fail("fsetstat", "", e))?;
                }
                ok(s.id)
            }
            Packet::Remove(r) => {
                let p = self.resolve(&r.filename)?;
                self.ctx
                    .vfs
                    .remove(role, &p)
                    .map_err(|e| self.fail("remove", &r.filename, e))?;
                tracing::info!(user = %self.ctx.who.user, path = %p, "removed");
                ok(r.id)
            }
            Packet::MkDir(m) => {
                let p = self.resolve(&m.path)?;
                self.ctx
                    .vfs
                    .mkdir(role, &p, m.attrs.permissions)
                    .map_err(|e| self.fail("mkdir", &m.path, e))?;
                ok(m.id)
            }
            Packet::RmDir(r) => {
                let p = self.resolve(&r.path)?;
                self.ctx
                    .vfs
                    .rmdir(role, &p)
                    .map_err(|e| self.fail("rmdir", &r.path, e))?;
                ok(r.id)
            }
            Packet::Rename(r) => self.rename(r.id, &r.oldpath, &r.newpath, false),
            Packet::ReadLink(r) => {
                let p = self.resolve(&r.path)?;
                let target = self
                    .ctx
                    .vfs
                    .read_link(role, &p)
                    .map_err(|e| self.fail("readlink", &r.path, e))?;
                encode(Packet::Name(Name {
                    id: r.id,
                    files: vec![File::dummy(target)],
                }))
            }
            Packet::Symlink(_) => Err((
                StatusCode::PermissionDenied,
                "creating links is not allowed".to_owned(),
            )),
            Packet::Extended(x) => self.extended(x.id, &x.request, x.data),
            Packet::Init(_)
            | Packet::Version(_)
            | Packet::Status(_)
            | Packet::Handle(_)
            | Packet::Data(_)
            | Packet::Name(_)
            | Packet::Attrs(_)
            | Packet::ExtendedReply(_) => Err((StatusCode::BadMessage, "not a request".to_owned())),
        }
    }

    fn stat(&self, id: u32, path: &str, follow: bool) -> Reply {
        let p = self.resolve(path)?;
        let a = self
            .ctx
            .vfs
            .stat(self.ctx.who.role, &p, follow)
            .map_err(|e| self.fail("stat", path, e))?;
        encode(Packet::Attrs(AttrsReply {
            id,
            attrs: to_file_attrs(&a),
        }))
    }

    fn set_attrs_from(
        &self,
        fa: &FileAttributes,
        p: &VPath,
    ) -> Result<SetAttrs, (StatusCode, String)> {
        let cur = self
            .ctx
            .vfs
            .stat(self.ctx.who.role, p, true)
            .map_err(|e| self.fail("setstat", &p.to_string(), e))?;
        set_attrs_checked(fa, &cur)
    }

    fn close(&mut self, id: u32, handle: &str) -> Reply {
        let Some(h) = Self::handle_id(handle).and_then(|k| self.handles.remove(&k)) else {
            return Err((StatusCode::Failure, "invalid handle".to_owned()));
        };
        match h {
            Handle::Read {
                path, sent, opened, ..
            } => {
                self.ctx
                    .transfers
                    .download_finished(&self.ctx.who, &path, sent, opened);
                ok(id)
            }
            Handle::Dir { .. } => ok(id),
            Handle::Write(up) => {
                let path = up.vpath().to_string();
                let record = up.commit().map_err(|e| self.fail("close", &path, e))?;
                match self.ctx.transfers.upload_committed(&self.ctx.who, record) {
                    Some(verdict) => {
                        let _ = self.out.send(Outgoing::AwaitVerdict {
                            id,
                            verdict,
                            timeout: self.ctx.verdict_timeout,
                            path,
                        });
                        // The writer answers this CLOSE; signal "already answered" with an
                        // empty reply that `finish` would otherwise send.
                        Ok(Bytes::new())
                    }
                    None => ok(id),
                }
            }
        }
    }

    fn rename(&mut self, id: u32, from: &str, to: &str, overwrite: bool) -> Reply {
        let role = self.ctx.who.role;
        let pf = self.resolve(from)?;
        let pt = self.resolve(to)?;
        self.ctx
            .vfs
            .rename(role, &pf, &pt, overwrite)
            .map_err(|e| self.fail("rename", from, e))?;
        tracing::info!(user = %self.ctx.who.user, from = %pf, to = %pt, "renamed");
        let vfs = &self.ctx.vfs;
        if let (Some(df), Some(dt)) = (vfs.disk_path(&pf), vfs.disk_path(&pt))
            && let Some(verdict) = self
                .ctx
                .transfers
                .renamed(&self.ctx.who, (&pf, df), (&pt, dt))
        {
            let _ = self.out.send(Outgoing::AwaitVerdict {
                id,
                verdict,
                timeout: self.ctx.verdict_timeout,
                path: pt.to_string(),
            });
            return Ok(Bytes::new());
        }
        ok(id)
    }

    fn extended(&mut self, id: u32, request: &str, data: Vec<u8>) -> Reply {
        let role = self.ctx.who.role;
        let bad = |what: &str| (StatusCode::BadMessage, format!("malformed {what} request"));
        match request {
            "posix-rename@openssh.com" => {
                let r: extensions::HardlinkExtension =
                    russh_sftp::de::from_bytes(&mut Bytes::from(data)).map_err(|_| bad(request))?;
                self.rename(id, &r.oldpath, &r.newpath, true)
            }
            extensions::STATVFS | "fstatvfs@openssh.com" => {
                let p = if request == extensions::STATVFS {
                    let r: extensions::StatvfsExtension =
                        russh_sftp::de::from_bytes(&mut Bytes::from(data))
                            .map_err(|_| bad(request))?;
                    self.resolve(&r.path)?
                } else {
                    self.home.clone()
                };
                let s = self
                    .ctx
                    .vfs
                    .statvfs(role, &p)
                    .map_err(|e| self.fail("statvfs", &p.to_string(), e))?;
                let reply = Statvfs {
                    block_size: s.block_size,
                    fragment_size: s.fragment_size,
                    blocks: s.blocks,
                    blocks_free: s.blocks_free,
                    blocks_avail: s.blocks_avail,
                    inodes: s.files,
                    inodes_free: s.files_free,
                    inodes_avail: s.files_avail,
                    fs_id: s.fsid,
                    flags: s.flags,
                    name_max: s.name_max,
                };
                let data = russh_sftp::ser::to_bytes(&reply)
                    .map_err(|e| (StatusCode::Failure, e.to_string()))?;
                encode(Packet::ExtendedReply(russh_sftp::protocol::ExtendedReply {
                    id,
                    data: data.to_vec(),
                }))
            }
            extensions::FSYNC => {
                let r: extensions::FsyncExtension =
                    russh_sftp::de::from_bytes(&mut Bytes::from(data)).map_err(|_| bad(request))?;
                match Self::handle_id(&r.handle).and_then(|k| self.handles.get(&k)) {
                    Some(Handle::Write(up)) => {
                        up.sync()
                            .map_err(|e| (StatusCode::Failure, format!("fsync failed: {e}")))?;
                        ok(id)
                    }
                    Some(_) => ok(id),
                    None => Err((StatusCode::Failure, "invalid handle".to_owned())),
                }
            }
            extensions::LIMITS => {
                let l = LimitsExtension {
                    max_packet_len: wire::ADVERTISED_MAX_PACKET,
                    max_read_len: wire::ADVERTISED_MAX_READ,
                    max_write_len: wire::ADVERTISED_MAX_WRITE,
                    max_open_handles: self.ctx.max_open_handles as u64,
                };
                let data = russh_sftp::ser::to_bytes(&l)
                    .map_err(|e| (StatusCode::Failure, e.to_string()))?;
                encode(Packet::ExtendedReply(russh_sftp::protocol::ExtendedReply {
                    id,
                    data: data.to_vec(),
                }))
            }
            other => Err((
                StatusCode::OpUnsupported,
                format!("extension {other} is not supported"),
            )),
        }
    }
}

/// Turns client attributes into the changes we allow. Ownership changes are refused unless
/// they restate the current owner (some clients send every attribute back).
fn set_attrs_checked(fa: &FileAttributes, cur: &Attrs) -> Result<SetAttrs, (StatusCode, String)> {
    let uid_change = fa.uid.is_some_and(|u| u != cur.uid);
    let gid_change = fa.gid.is_some_and(|g| g != cur.gid);
    if uid_change || gid_change {
        return Err((
            StatusCode::PermissionDenied,
            "changing the owner is not allowed".to_owned(),
        ));
    }
    let times = match (fa.atime, fa.mtime) {
        (None, None) => None,
        (a, m) => Some((a.unwrap_or(cur.atime), m.unwrap_or(cur.mtime))),
    };
    Ok(SetAttrs {
        size: fa.size,
        permissions: fa.permissions,
        times,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_look_like_openssh() {
        let a = Attrs {
            size: 1234,
            mode: crate::vfs::S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            atime: 1_717_359_300,
            mtime: 1_717_359_300,
            nlink: 1,
        };
        let s = long_name("x.zip", &a, 1_717_359_400);
        assert_eq!(
            s,
            "-rw-r--r--   1 difusor  difusor      1234 Jun  2 20:15 x.zip"
        );
        let d = Attrs {
            mode: crate::vfs::S_IFDIR | 0o555,
            ..a
        };
        let s = long_name("incoming", &d, 1_717_359_300 + 365 * 86400);
        assert!(s.starts_with("dr-xr-xr-x"), "{s}");
        assert!(s.contains("Jun  2  2024"), "{s}");
    }
}
