#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
//! `.zip` packages: the central directory first (every name, type, size and limit is checked
//! before a single byte is written), then each entry's data once, decompressed on two threads.
//!
//! Owns: the end record (and zip64 end record), the central directory, the overlap check (the
//! "overlapping files" zip bomb shares one compressed stream between many entries), local
//! headers (they must agree with the central directory), data descriptors, stored/deflate
//! data with its CRC-32 and exact sizes.
//!
//! Must never: trust a local header over the central directory, read an entry's data outside
//! the byte range between its local header and the next entry, write more bytes for an entry
//! than its headers declare, or unpack a nested zip (it is a file like any other).
//!
//! File times come from the Info-ZIP extended timestamp (0x5455) or NTFS (0x000a) extra
//! fields, which are UTC; the DOS date/time alone is local time of an unknown zone, so entries
//! without those fields keep the extraction time.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::{Decompress, FlushDecompress, Status};

use super::names::{self, shown};
use super::tree::{self, Kind, LinkCheck, Out, Tree};
use super::{Ctx, ExtractError, Extracted, MAX_PATH_BYTES};

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const Z64_LOCATOR_SIG: u32 = 0x0706_4b50;
const Z64_EOCD_SIG: u32 = 0x0606_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const EOCD_LEN: usize = 22;
/// PERF: one positional read covers a whole small entry, or 1 MiB of a big one.
const IN_BUF: usize = 1 << 20;
const OUT_BUF: usize = 256 * 1024;
/// Central directory read buffer.
const CD_BUF: usize = 256 * 1024;

/// Little-endian field reader over a byte slice; `None` when the slice is too short.
struct Le<'a>(&'a [u8]);

impl<'a> Le<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (h, t) = self.0.split_first_chunk::<N>()?;
        self.0 = t;
        Some(*h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (h, t) = self.0.split_at_checked(n)?;
        self.0 = t;
        Some(h)
    }
}

/// Iterates the (id, data) fields of an extra block; stops at a malformed tail (some writers
/// pad the local extra with zeros for alignment).
fn extra_fields(extra: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut r = Le(extra);
    std::iter::from_fn(move || {
        let id = r.u16()?;
        let len = r.u16()?;
        let data = r.bytes(usize::from(len))?;
        Some((id, data))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EKind {
    File,
    Dir,
    Link,
    /// A directory entry for the cut root itself (`./`): checked, not created.
    Root,
}

/// One central directory entry, checked.
struct Entry {
    /// Normalised path ("" for `Root`).
    path: String,
    kind: EKind,
    method: u16,
    crc: u32,
    csize: u64,
    usize: u64,
    offset: u64,
    /// The raw name bytes, in `Central::arena`.
    name_at: usize,
    name_len: usize,
    mtime: Option<i64>,
    utf8: bool,
}

struct End {
    entries: u64,
    cd_offset: u64,
    cd_size: u64,
    /// Where the central directory must end: the (zip64) end record.
    cd_end: u64,
}

fn read_exact_at(file: &File, buf: &mut [u8], off: u64, name: &str) -> Result<(), ExtractError> {
    file.read_exact_at(buf, off).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ExtractError::truncated("the zip file is shorter than its own directory says")
        } else {
            ExtractError::io("reading", name, e)
        }
    })
}

fn multi_disk() -> ExtractError {
    ExtractError::Unsupported {
        name: "(end of central directory)".into(),
        what: "multi-disk (split) zip archive".into(),
    }
}

/// Finds the end of central directory record (it must end the file exactly) and the zip64
/// end record when there is one.
fn find_end(file: &File, len: u64, name: &str) -> Result<End, ExtractError> {
    let tail_len = len.min((EOCD_LEN + 0xffff) as u64);
    let start = len - tail_len;
    let mut tail = vec![0u8; usize::try_from(tail_len).unwrap_or(0)];
    read_exact_at(file, &mut tail, start, name)?;
    let mut found = None;
    let mut trailing = false;
    for i in (0..tail.len().saturating_sub(EOCD_LEN - 1)).rev() {
        let Some(rec) = tail.get(i..) else { continue };
        let mut r = Le(rec);
        if r.u32() != Some(EOCD_SIG) {
            continue;
        }
        let comment_len = rec
            .get(20..)
            .and_then(|b| Le(b).u16())
            .map_or(usize::MAX, usize::from);
        if i + EOCD_LEN + comment_len == tail.len() {
            found = Some((i, r));
            break;
        }
        // An end record that does not end the file is either a real one followed by junk,
        // or (far more often, in a cut-short upload) the end record of a nested zip that was
        // stored inside. Only a record whose directory ends right where it starts is real.
        if i + EOCD_LEN + comment_len < tail.len() {
            let mut f = Le(rec.get(12..).unwrap_or_default());
            let (cd_size, cd_offset) = (f.u32(), f.u32());
            if let (Some(size), Some(off)) = (cd_size, cd_offset)
                && u64::from(size) + u64::from(off) == start + i as u64
            {
                trailing = true;
            }
        }
    }
    let Some((i, mut r)) = found else {
        return Err(if trailing {
            ExtractError::corrupt("unexpected data after the end of the zip archive")
        } else {
            ExtractError::truncated(
                "the zip archive has no end of central directory record: the file is cut short",
            )
        });
    };
    let eocd_pos = start + i as u64;
    let bad = || ExtractError::corrupt("malformed end of central directory record");
    let disk = r.u16().ok_or_else(bad)?;
    let cd_disk = r.u16().ok_or_else(bad)?;
    let n_disk = r.u16().ok_or_else(bad)?;
    let n_total = r.u16().ok_or_else(bad)?;
    let cd_size = r.u32().ok_or_else(bad)?;
    let cd_offset = r.u32().ok_or_else(bad)?;
    if disk != 0 || cd_disk != 0 || n_disk != n_total {
        return Err(multi_disk());
    }
    // A zip64 end locator sits right before the end record.
    let mut locator = [0u8; 20];
    let has_z64 = eocd_pos >= 20 && {
        read_exact_at(file, &mut locator, eocd_pos - 20, name)?;
        Le(&locator).u32() == Some(Z64_LOCATOR_SIG)
    };
    if !has_z64 {
        if n_total == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
            return Err(ExtractError::corrupt(
                "the end record needs a zip64 end record, and there is none",
            ));
        }
        return Ok(End {
            entries: u64::from(n_total),
            cd_offset: u64::from(cd_offset),
            cd_size: u64::from(cd_size),
            cd_end: eocd_pos,
        });
    }
    let bad64 = || ExtractError::corrupt("malformed zip64 end of central directory record");
    let mut l = Le(locator.get(4..).unwrap_or_default());
    let z64_disk = l.u32().ok_or_else(bad64)?;
    let z64_off = l.u64().ok_or_else(bad64)?;
    let disks = l.u32().ok_or_else(bad64)?;
    if z64_disk != 0 || disks > 1 {
        return Err(multi_disk());
    }
    if z64_off.checked_add(56).is_none_or(|e| e > eocd_pos - 20) {
        return Err(bad64());
    }
    let mut rec = [0u8; 56];
    read_exact_at(file, &mut rec, z64_off, name)?;
    let mut r = Le(&rec);
    if r.u32() != Some(Z64_EOCD_SIG) {
        return Err(bad64());
    }
    let _size = r.u64();
    let _made = r.u16();
    let _need = r.u16();
    let disk = r.u32().ok_or_else(bad64)?;
    let cd_disk = r.u32().ok_or_else(bad64)?;
    let n_disk = r.u64().ok_or_else(bad64)?;
    let n_total = r.u64().ok_or_else(bad64)?;
    let cd_size = r.u64().ok_or_else(bad64)?;
    let cd_offset = r.u64().ok_or_else(bad64)?;
    if disk != 0 || cd_disk != 0 || n_disk != n_total {
        return Err(multi_disk());
    }
    Ok(End {
        entries: n_total,
        cd_offset,
        cd_size,
        cd_end: z64_off,
    })
}

/// `Read` over a byte range of the package with positional reads (no shared file cursor).
struct RangeReader<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        let n = self
            .file
            .read_at(buf.get_mut(..want).unwrap_or_default(), self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn method_name(m: u16) -> String {
    let known = match m {
        1 => "shrink",
        2..=5 => "reduce",
        6 => "implode",
        9 => "deflate64",
        10 => "ibm terse",
        12 => "bzip2",
        14 => "lzma",
        18 => "ibm terse (new)",
        19 => "ibm lz77",
        20 | 93 => "zstandard",
        94 => "mp3",
        95 => "xz",
        96 => "jpeg",
        97 => "wavpack",
        98 => "ppmd",
        _ => "unknown",
    };
    // The Display adds "in <entry>"; stored (0) and deflate (8) are the only ones accepted.
    format!("compression method {m} ({known})")
}

/// The entry type from the "version made by" host and external attributes.
fn entry_kind(made_by: u16, ext_attrs: u32, ends_slash: bool) -> Result<EKind, &'static str> {
    const UNIX: u16 = 3;
    let unix_type = if made_by >> 8 == UNIX {
        (ext_attrs >> 16) & 0o170000
    } else {
        0
    };
    match unix_type {
        0o120000 => Ok(EKind::Link),
        0o040000 => Ok(EKind::Dir),
        0o020000 => Err("a character device"),
        0o060000 => Err("a block device"),
        0o010000 => Err("a fifo (named pipe)"),
        0o140000 => Err("a unix socket"),
        0 | 0o100000 => {
            // MS-DOS attribute 0x10 marks directories on non-unix writers.
            if ends_slash || (unix_type == 0 && ext_attrs & 0x10 != 0) {
                Ok(EKind::Dir)
            } else {
                Ok(EKind::File)
            }
        }
        _ => Err("an unknown unix file type"),
    }
}

/// Windows FILETIME (100 ns since 1601) to Unix seconds.
fn filetime_to_unix(ft: u64) -> i64 {
    (ft / 10_000_000) as i64 - 11_644_473_600
}

struct Central {
    entries: Vec<Entry>,
    /// Raw names, back to back (one allocation for the whole directory).
    arena: Vec<u8>,
    tree: Tree,
    declared_total: u64,
    compressed_total: u64,
}

/// Reads and checks the whole central directory: names, types, methods, encryption, links,
/// duplicates, and every limit that the declared sizes already break.
fn read_central(file: &File, end: &End, ctx: &Ctx) -> Result<Central, ExtractError> {
    let limits = &ctx.limits;
    let mut r = BufReader::with_capacity(
        CD_BUF,
        RangeReader {
            file,
            pos: end.cd_offset,
            end: end.cd_end,
        },
    );
    let cut = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ExtractError::corrupt("the central directory is shorter than the end record says")
        } else {
            ExtractError::io("reading", &ctx.package_name, e)
        }
    };
    let mut c = Central {
        entries: Vec::with_capacity(usize::try_from(end.entries.min(1 << 16)).unwrap_or(0)),
        arena: Vec::new(),
        tree: Tree::new(limits.max_entries),
        declared_total: 0,
        compressed_total: 0,
    };
    let mut extra = Vec::new();
    let mut scratch = Vec::new();
    for index in 0..end.entries {
        let mut fixed = [0u8; 46];
        r.read_exact(&mut fixed).map_err(cut)?;
        let mut h = Le(&fixed);
        let bad = || ExtractError::corrupt(format!("malformed central directory header #{index}"));
        if h.u32() != Some(CENTRAL_SIG) {
            return Err(bad());
        }
        let made_by = h.u16().ok_or_else(bad)?;
        let _needed = h.u16();
        let flags = h.u16().ok_or_else(bad)?;
        let method = h.u16().ok_or_else(bad)?;
        let _time = h.u16();
        let _date = h.u16();
        let crc = h.u32().ok_or_else(bad)?;
        let csize32 = h.u32().ok_or_else(bad)?;
        let usize32 = h.u32().ok_or_else(bad)?;
        let name_len = usize::from(h.u16().ok_or_else(bad)?);
        let extra_len = usize::from(h.u16().ok_or_else(bad)?);
        let comment_len = usize::from(h.u16().ok_or_else(bad)?);
        let disk16 = h.u16().ok_or_else(bad)?;
        let _internal = h.u16();
        let ext_attrs = h.u32().ok_or_else(bad)?;
        let offset32 = h.u32().ok_or_else(bad)?;

        let name_at = c.arena.len();
        c.arena.resize(name_at + name_len, 0);
        r.read_exact(c.arena.get_mut(name_at..).unwrap_or_default())
            .map_err(cut)?;
        extra.resize(extra_len, 0);
        r.read_exact(&mut extra).map_err(cut)?;
        scratch.resize(comment_len, 0);
        r.read_exact(&mut scratch).map_err(cut)?;
        let raw = c.arena.get(name_at..).unwrap_or_default();

        // Extra fields: zip64 sizes, the Unicode path, UTC times.
        let (mut csize, mut usize_, mut offset) =
            (u64::from(csize32), u64::from(usize32), u64::from(offset32));
        let mut unicode = None;
        let mut mtime = None;
        let mut z64_seen = false;
        for (id, data) in extra_fields(&extra) {
            match id {
                0x0001 => {
                    z64_seen = true;
                    let mut z = Le(data);
                    let bad64 = || {
                        ExtractError::corrupt(format!(
                            "entry #{index} has a malformed zip64 extra field"
                        ))
                    };
                    if usize32 == u32::MAX {
                        usize_ = z.u64().ok_or_else(bad64)?;
                    }
                    if csize32 == u32::MAX {
                        csize = z.u64().ok_or_else(bad64)?;
                    }
                    if offset32 == u32::MAX {
                        offset = z.u64().ok_or_else(bad64)?;
                    }
                    if disk16 == u16::MAX && z.u32().ok_or_else(bad64)? != 0 {
                        return Err(multi_disk());
                    }
                }
                0x7075 => {
                    let mut u = Le(data);
                    if u.u8() == Some(1) && u.u32() == Some(crc32fast::hash(raw)) {
                        unicode = Some(u.0);
                    }
                }
                0x5455 => {
                    let mut t = Le(data);
                    if t.u8().is_some_and(|f| f & 1 != 0) {
                        mtime = t.u32().map(|s| i64::from(s as i32));
                    }
                }
                0x000a if mtime.is_none() => {
                    let mut t = Le(data.get(4..).unwrap_or_default());
                    while let (Some(tag), Some(len)) = (t.u16(), t.u16()) {
                        let Some(body) = t.bytes(usize::from(len)) else {
                            break;
                        };
                        if tag == 1 {
                            mtime = Le(body).u64().map(filetime_to_unix);
                        }
                    }
                }
                _ => {}
            }
        }
        let needs_z64 = csize32 == u32::MAX || usize32 == u32::MAX || offset32 == u32::MAX;
        if needs_z64 && !z64_seen {
            return Err(ExtractError::corrupt(format!(
                "entry #{index} needs a zip64 extra field and has none"
            )));
        }
        if disk16 != 0 && disk16 != u16::MAX {
            return Err(multi_disk());
        }

        let utf8 = flags & 0x0800 != 0;
        let name = names::zip_name(raw, utf8, unicode)?.into_owned();
        // Bit 0: traditional encryption; bit 6: strong encryption; bit 13: encrypted central
        // directory; method 99: WinZip AES.
        if flags & 0x2041 != 0 || method == 99 {
            return Err(ExtractError::Encrypted { name: shown(&name) });
        }
        if method != 0 && method != 8 {
            return Err(ExtractError::Unsupported {
                name: shown(&name),
                what: method_name(method),
            });
        }
        let mut kind = entry_kind(made_by, ext_attrs, name.ends_with('/')).map_err(|what| {
            ExtractError::SpecialFile {
                name: shown(&name),
                what: what.into(),
            }
        })?;
        let path = match names::normalise(&name)? {
            Some(p) => p,
            None if kind == EKind::Dir => {
                kind = EKind::Root;
                String::new()
            }
            None => return Err(names::root_error(&name)),
        };
        match kind {
            EKind::Dir | EKind::Root if csize != 0 || usize_ != 0 => {
                return Err(ExtractError::corrupt(format!(
                    "directory entry {:?} has data",
                    shown(&name)
                )));
            }
            EKind::Link if usize_ > MAX_PATH_BYTES as u64 => {
                return Err(ExtractError::NameTooLong {
                    name: shown(&name),
                    detail: format!("the link target is {usize_} bytes"),
                });
            }
            _ => {}
        }
        if method == 0 && csize != usize_ {
            return Err(ExtractError::corrupt(format!(
                "stored entry {:?} declares {csize} compressed and {usize_} uncompressed bytes",
                shown(&name)
            )));
        }
        // Early refusals from the declared sizes: the data is later held to exactly these
        // sizes, so a package that declares too much would produce too much.
        ctx.check_entry_ratio(&path, usize_, csize)?;
        c.declared_total = c.declared_total.saturating_add(usize_);
        if c.declared_total > limits.max_total_bytes {
            return Err(ExtractError::TooLarge {
                limit: limits.max_total_bytes,
                name: shown(&path),
            });
        }
        c.compressed_total = c.compressed_total.saturating_add(csize);
        match kind {
            EKind::File => c.tree.add(&path, Kind::File)?,
            EKind::Dir => c.tree.add(&path, Kind::Dir)?,
            EKind::Link => c.tree.add(&path, Kind::Link)?,
            EKind::Root => {}
        }
        c.entries.push(Entry {
            path,
            kind,
            method,
            crc,
            csize,
            usize: usize_,
            offset,
            name_at,
            name_len,
            mtime,
            utf8,
        });
    }
    // The directory must end exactly at the end record.
    let mut probe = [0u8; 1];
    if r.read(&mut probe).map_err(cut)? != 0 {
        return Err(ExtractError::corrupt(format!(
            "the central directory holds more than the {} entries the end record says",
            end.entries
        )));
    }
    ctx.check_overall_ratio(c.declared_total)?;
    Ok(c)
}

/// The name of an entry for messages: its path, or the raw name for the root entry.
fn label(e: &Entry) -> &str {
    if e.path.is_empty() { "./" } else { &e.path }
}

/// Sorts entries by local header offset and gives each the end of its byte range (the next
/// entry's offset, or the central directory). Refuses ranges that cannot hold the entry's
/// header and data: two entries sharing data, or one starting inside another.
fn regions(c: &Central, end: &End) -> Result<(Vec<usize>, Vec<u64>), ExtractError> {
    let mut order: Vec<usize> = (0..c.entries.len()).collect();
    order.sort_unstable_by_key(|&i| c.entries.get(i).map_or(0, |e| e.offset));
    let mut ends = vec![0u64; c.entries.len()];
    for (k, &i) in order.iter().enumerate() {
        let Some(e) = c.entries.get(i) else { continue };
        let (region_end, next) = match order.get(k + 1).and_then(|&j| c.entries.get(j)) {
            Some(n) => (n.offset, Some(n)),
            None => (end.cd_offset, None),
        };
        // The smallest this entry can be: its local header with the same name, no extra.
        let min_end = e
            .offset
            .checked_add(30 + e.name_len as u64)
            .and_then(|v| v.checked_add(e.csize));
        if min_end.is_none_or(|m| m > region_end) {
            return Err(ExtractError::OverlappingEntries {
                name: shown(label(e)),
                detail: match next {
                    Some(n) => format!(
                        "overlaps {:?}: its data would run past offset {}, where that entry's \
                         local header is",
                        shown(label(n)),
                        n.offset
                    ),
                    None => "runs into the central directory".into(),
                },
            });
        }
        if let Some(slot) = ends.get_mut(i) {
            *slot = region_end;
        }
    }
    Ok((order, ends))
}

/// Why a worker stopped: an error, or because the other worker failed first.
enum Fail {
    Error(ExtractError),
    Cancelled,
}

impl From<ExtractError> for Fail {
    fn from(e: ExtractError) -> Self {
        Fail::Error(e)
    }
}

/// A window of the package read with positional reads, never beyond `limit` (the end of the
/// current entry's region), so a small entry costs one read of exactly its bytes.
struct Window<'b> {
    file: &'b File,
    name: &'b str,
    buf: &'b mut [u8],
    start: u64,
    len: usize,
    limit: u64,
}

impl Window<'_> {
    /// The buffered bytes from `off` on, at least `min` of them (reading if needed); `None`
    /// if the region has fewer than `min` bytes from `off`.
    fn at(&mut self, off: u64, min: usize) -> Result<Option<&[u8]>, Fail> {
        let have = off >= self.start && off + min as u64 <= self.start + self.len as u64;
        if !have {
            if off + min as u64 > self.limit {
                return Ok(None);
            }
            let n = (self.limit - off).min(self.buf.len() as u64) as usize;
            let dst = self.buf.get_mut(..n).unwrap_or_default();
            read_exact_at(self.file, dst, off, self.name)?;
            self.start = off;
            self.len = n;
        }
        let from = (off - self.start) as usize;
        Ok(self.buf.get(from..self.len))
    }
}

/// Per-thread state: buffers and an inflater reused for every entry.
struct Worker {
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    inflate: Decompress,
}

impl Worker {
    fn new() -> Self {
        Worker {
            inbuf: vec![0u8; IN_BUF],
            outbuf: vec![0u8; OUT_BUF],
            inflate: Decompress::new(false),
        }
    }
}

/// What both workers share.
struct Shared<'a> {
    central: &'a Central,
    order: &'a [usize],
    ends: &'a [u64],
    out: Option<&'a Out<'a>>,
    ctx: &'a Ctx,
    /// The next position in `order` to hand out.
    next: AtomicUsize,
    /// The position of the first entry that failed (`usize::MAX`: none). Entries before it
    /// are still finished, so the error reported is the first in archive order whatever the
    /// threads' timing; entries after it stop at their next chunk.
    failed_at: AtomicUsize,
    errors: Mutex<Vec<(usize, ExtractError)>>,
    links: Mutex<Vec<LinkCheck>>,
}

impl Shared<'_> {
    /// Reads and checks every symlink entry before any file is written: links are refused
    /// (or found to escape) without leaving half a cut behind. Created at the very end.
    fn links_first(&self, file: &File) -> Result<(), ExtractError> {
        let mut w = None;
        for &i in self.order {
            let Some(e) = self.central.entries.get(i) else {
                continue;
            };
            if e.kind != EKind::Link {
                continue;
            }
            let w = w.get_or_insert_with(Worker::new);
            let region_end = self.ends.get(i).copied().unwrap_or(0);
            match self.entry(w, 0, file, e, region_end) {
                Ok(()) => {}
                Err(Fail::Error(err)) => return Err(err),
                Err(Fail::Cancelled) => {}
            }
        }
        Ok(())
    }

    fn work(&self, file: &File) {
        let mut w = Worker::new();
        loop {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            if k > self.failed_at.load(Ordering::Relaxed) {
                break;
            }
            let Some(&i) = self.order.get(k) else { break };
            let region_end = self.ends.get(i).copied().unwrap_or(0);
            let Some(e) = self.central.entries.get(i) else {
                break;
            };
            if e.kind == EKind::Link {
                continue; // done before the data phase (`links_first`)
            }
            match self.entry(&mut w, k, file, e, region_end) {
                Ok(()) => {}
                Err(Fail::Cancelled) => break,
                Err(Fail::Error(err)) => {
                    self.failed_at.fetch_min(k, Ordering::Relaxed);
                    if let Ok(mut v) = self.errors.lock() {
                        v.push((k, err));
                    }
                    break;
                }
            }
        }
    }

    /// Counts `n` more output bytes of entry `e` (`produced` so far) against every limit.
    fn account(&self, at: usize, e: &Entry, n: usize, produced: u64) -> Result<(), Fail> {
        if at > self.failed_at.load(Ordering::Relaxed) {
            return Err(Fail::Cancelled);
        }
        let total = self.ctx.add_file_bytes(n as u64, &e.path)?;
        self.ctx.check_overall_ratio(total)?;
        self.ctx.check_entry_ratio(&e.path, produced, e.csize)?;
        if produced > e.usize {
            return Err(ExtractError::corrupt(format!(
                "entry {:?} has more data than the {} bytes its headers declare",
                shown(label(e)),
                e.usize
            ))
            .into());
        }
        Ok(())
    }

    /// Reads entry `e` (at position `at` of the offset order) whose bytes end by `region_end`.
    fn entry(
        &self,
        w: &mut Worker,
        at: usize,
        file: &File,
        e: &Entry,
        region_end: u64,
    ) -> Result<(), Fail> {
        let name = label(e);
        let corrupt = |what: &str| -> Fail {
            ExtractError::corrupt(format!("entry {:?}: {what}", shown(name))).into()
        };
        let mut win = Window {
            file,
            name: &self.ctx.package_name,
            buf: &mut w.inbuf,
            start: 0,
            len: 0,
            limit: region_end,
        };
        // The local header: it must exist where the central directory says and agree with it.
        let (local_flags, local_method, lcrc, lcsize32, lusize32, nlen, elen) = {
            let Some(h) = win.at(e.offset, 30)? else {
                return Err(corrupt("its local header is missing"));
            };
            let mut h = Le(h);
            if h.u32() != Some(LOCAL_SIG) {
                return Err(corrupt(&format!("no local header at offset {}", e.offset)));
            }
            let _needed = h.u16();
            let f = h.u16().unwrap_or_default();
            let m = h.u16().unwrap_or_default();
            let _time = h.u32();
            let c = h.u32().unwrap_or_default();
            let cs = h.u32().unwrap_or_default();
            let us = h.u32().unwrap_or_default();
            let n = usize::from(h.u16().unwrap_or_default());
            let x = usize::from(h.u16().unwrap_or_default());
            (f, m, c, cs, us, n, x)
        };
        let central_name = self
            .central
            .arena
            .get(e.name_at..e.name_at + e.name_len)
            .unwrap_or_default();
        let Some(var) = win.at(e.offset + 30, nlen + elen)? else {
            return Err(ExtractError::OverlappingEntries {
                name: shown(name),
                detail: "has a local header that runs into the next entry".into(),
            }
            .into());
        };
        let (lname, lextra) = var.split_at_checked(nlen).unwrap_or_default();
        let lextra = lextra.get(..elen).unwrap_or_default();
        if lname != central_name {
            return Err(corrupt(
                "the local header's name differs from the central directory's",
            ));
        }
        if local_method != e.method {
            return Err(corrupt(&format!(
                "the local header says compression method {local_method}, the central directory \
                 says {}",
                e.method
            )));
        }
        if local_flags & 0x2041 != 0 {
            return Err(ExtractError::Encrypted { name: shown(name) }.into());
        }
        let (mut lcsize, mut lusize) = (u64::from(lcsize32), u64::from(lusize32));
        let mut local_z64 = false;
        for (id, data) in extra_fields(lextra) {
            if id == 0x0001 {
                local_z64 = true;
                let mut z = Le(data);
                if lusize32 == u32::MAX {
                    lusize = z.u64().unwrap_or(u64::MAX);
                }
                if lcsize32 == u32::MAX {
                    lcsize = z.u64().unwrap_or(u64::MAX);
                }
            }
        }
        let descriptor = local_flags & 0x0008 != 0;
        if !descriptor && (lcrc, lcsize, lusize) != (e.crc, e.csize, e.usize) {
            return Err(corrupt(&format!(
                "the local header says crc {lcrc:08x}, {lcsize} compressed and {lusize} \
                 uncompressed bytes; the central directory says crc {:08x}, {} and {}",
                e.crc, e.csize, e.usize
            )));
        }
        let data_start = e.offset + 30 + (nlen + elen) as u64;
        let data_end = data_start + e.csize;
        if data_end > region_end {
            return Err(ExtractError::OverlappingEntries {
                name: shown(name),
                detail: "has data that runs into the next entry".into(),
            }
            .into());
        }

        match e.kind {
            EKind::Dir | EKind::Root => {}
            EKind::File => {
                let mut f = match self.out {
                    Some(o) => Some(o.create_file(&e.path)?),
                    None => None,
                };
                self.data(
                    &mut w.outbuf,
                    &mut w.inflate,
                    &mut win,
                    (at, e),
                    data_start,
                    |bytes| match f.as_mut() {
                        Some(f) => f
                            .write_all(bytes)
                            .map_err(|err| ExtractError::io("writing", &e.path, err)),
                        None => Ok(()),
                    },
                )?;
                if let (Some(f), Some(t)) = (f.as_ref(), e.mtime) {
                    Out::set_mtime(f, &e.path, t)?;
                }
            }
            EKind::Link => {
                let mut raw = Vec::new();
                self.data(
                    &mut w.outbuf,
                    &mut w.inflate,
                    &mut win,
                    (at, e),
                    data_start,
                    |bytes| {
                        raw.extend_from_slice(bytes);
                        Ok(())
                    },
                )?;
                let target = names::zip_name(&raw, e.utf8, None)
                    .map_err(|_| ExtractError::LinkEscape {
                        name: shown(name),
                        target: shown(&String::from_utf8_lossy(&raw)),
                        reason: "the target is not valid utf-8",
                    })?
                    .into_owned();
                // The escape check comes first: an escape attempt is reported as one even
                // when links are refused anyway.
                let r = names::resolve_symlink(&e.path, &target)?;
                if !self.ctx.limits.allow_links {
                    return Err(ExtractError::LinkNotAllowed { name: shown(name) }.into());
                }
                if let Ok(mut v) = self.links.lock() {
                    v.push(LinkCheck {
                        path: e.path.clone(),
                        target,
                        traversed: r.traversed,
                    });
                }
            }
        }

        if descriptor {
            self.descriptor(&mut win, e, data_end, local_z64)?;
        }
        Ok(())
    }

    /// Decompresses (or copies) the entry's data, checking the CRC-32 and the exact size,
    /// handing the bytes to `sink` in bounded chunks.
    fn data(
        &self,
        outbuf: &mut [u8],
        inflate: &mut Decompress,
        win: &mut Window<'_>,
        (at, e): (usize, &Entry),
        data_start: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), ExtractError>,
    ) -> Result<(), Fail> {
        let name = label(e);
        let corrupt = |what: String| -> Fail {
            ExtractError::corrupt(format!("entry {:?}: {what}", shown(name))).into()
        };
        let end = data_start + e.csize;
        let mut pos = data_start;
        let mut produced = 0u64;
        let mut crc = crc32fast::Hasher::new();
        if e.method == 0 {
            while pos < end {
                let Some(a) = win.at(pos, 1)? else { break };
                let n = a.len().min((end - pos) as usize);
                let chunk = a.get(..n).unwrap_or_default();
                produced += n as u64;
                self.account(at, e, n, produced)?;
                crc.update(chunk);
                sink(chunk)?;
                pos += n as u64;
            }
        } else {
            inflate.reset(false);
            loop {
                let input: &[u8] = if pos < end {
                    match win.at(pos, 1)? {
                        Some(a) => a
                            .get(..a.len().min((end - pos) as usize))
                            .unwrap_or_default(),
                        None => &[],
                    }
                } else {
                    &[]
                };
                let (i0, o0) = (inflate.total_in(), inflate.total_out());
                let status = inflate
                    .decompress(input, outbuf, FlushDecompress::None)
                    .map_err(|err| corrupt(format!("invalid deflate data: {err}")))?;
                let used = inflate.total_in() - i0;
                let made = (inflate.total_out() - o0) as usize;
                pos += used;
                if made > 0 {
                    let chunk = outbuf.get(..made).unwrap_or_default();
                    produced += made as u64;
                    self.account(at, e, made, produced)?;
                    crc.update(chunk);
                    sink(chunk)?;
                }
                if status == Status::StreamEnd {
                    break;
                }
                if used == 0 && made == 0 {
                    return Err(corrupt(if pos >= end {
                        "the deflate data ends before its end-of-stream block".into()
                    } else {
                        "the deflate data cannot be decoded".into()
                    }));
                }
            }
            if pos != end {
                return Err(corrupt(format!(
                    "the deflate data ends {} bytes before the entry's compressed size",
                    end - pos
                )));
            }
        }
        if produced != e.usize {
            return Err(corrupt(format!(
                "the data is {produced} bytes, its headers declare {}",
                e.usize
            )));
        }
        let ours = crc.finalize();
        if ours != e.crc {
            return Err(corrupt(format!(
                "crc-32 mismatch: the archive says {:08x}, the data gives {ours:08x}",
                e.crc
            )));
        }
        Ok(())
    }

    /// Checks the data descriptor after an entry's data against the central directory.
    fn descriptor(
        &self,
        win: &mut Window<'_>,
        e: &Entry,
        data_end: u64,
        zip64: bool,
    ) -> Result<(), Fail> {
        // Up to 24 bytes (signed zip64 form) when the region has them, at least 12.
        let want = (win.limit.saturating_sub(data_end)).clamp(12, 24) as usize;
        let Some(bytes) = win.at(data_end, want)? else {
            return Err(ExtractError::OverlappingEntries {
                name: shown(label(e)),
                detail: "has a data descriptor that runs into the next entry".into(),
            }
            .into());
        };
        let matches = |signed: bool| {
            let mut d = Le(bytes);
            if signed && d.u32() != Some(DESCRIPTOR_SIG) {
                return false;
            }
            let crc = d.u32();
            let (cs, us) = if zip64 {
                (d.u64(), d.u64())
            } else {
                (d.u32().map(u64::from), d.u32().map(u64::from))
            };
            crc == Some(e.crc) && cs == Some(e.csize) && us == Some(e.usize)
        };
        if !matches(true) && !matches(false) {
            return Err(ExtractError::corrupt(format!(
                "entry {:?}: its data descriptor disagrees with the central directory",
                shown(label(e))
            ))
            .into());
        }
        Ok(())
    }
}

/// Opens a second handle on the package for the second worker (its own read-ahead state),
/// making sure it is the same file.
fn reopen(first: &File, path: &std::path::Path, name: &str) -> Result<File, ExtractError> {
    let f = File::open(path).map_err(|e| ExtractError::io("opening", name, e))?;
    let (a, b) = (
        first
            .metadata()
            .map_err(|e| ExtractError::io("reading metadata of", name, e))?,
        f.metadata()
            .map_err(|e| ExtractError::io("reading metadata of", name, e))?,
    );
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(ExtractError::io(
            "reopening",
            name,
            std::io::Error::other("the package was replaced during extraction"),
        ));
    }
    Ok(f)
}

pub(crate) fn run(
    file: &File,
    path: &std::path::Path,
    out: Option<&Out<'_>>,
    ctx: &Ctx,
) -> Result<Extracted, ExtractError> {
    let end = find_end(file, ctx.package_len, &ctx.package_name)?;
    if end.cd_offset.checked_add(end.cd_size) != Some(end.cd_end) {
        return Err(ExtractError::corrupt(format!(
            "the central directory ({} bytes at offset {}) does not end where the end record \
             is ({}): data was prepended to the zip or it is damaged",
            end.cd_size, end.cd_offset, end.cd_end
        )));
    }
    if end.entries == 0 {
        return Err(if end.cd_size == 0 {
            ExtractError::Empty
        } else {
            ExtractError::corrupt("the end record says 0 entries but the directory is not empty")
        });
    }
    if end.entries > ctx.limits.max_entries {
        return Err(ExtractError::TooManyEntries {
            limit: ctx.limits.max_entries,
        });
    }
    let mut central = read_central(file, &end, ctx)?;
    if central.tree.entries == 0 {
        return Err(ExtractError::Empty); // only a `./` entry
    }
    let (order, ends) = regions(&central, &end)?;
    let dirs = std::mem::take(&mut central.tree.new_dirs);

    let shared = Shared {
        central: &central,
        order: &order,
        ends: &ends,
        out,
        ctx,
        next: AtomicUsize::new(0),
        failed_at: AtomicUsize::new(usize::MAX),
        errors: Mutex::new(Vec::new()),
        links: Mutex::new(Vec::new()),
    };
    shared.links_first(file)?;
    // Every directory exists before any worker writes a file into it.
    if let Some(o) = out {
        for d in &dirs {
            o.create_dir(d)?;
        }
    }
    // PERF: a second thread only pays off with enough data to share.
    let two = central.tree.files >= 2
        && central.compressed_total >= 512 * 1024
        && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if two {
        let second = reopen(file, path, &ctx.package_name)?;
        std::thread::scope(|s| {
            s.spawn(|| shared.work(&second));
            shared.work(file);
        });
    } else {
        shared.work(file);
    }
    let mut errors = shared.errors.into_inner().unwrap_or_default();
    // The first failing entry in archive order.
    errors.sort_by_key(|(i, _)| *i);
    if let Some((_, e)) = errors.into_iter().next() {
        return Err(e);
    }
    let links = shared.links.into_inner().unwrap_or_default();
    tree::check_link_chains(&links, &central.tree, out)?;
    if let Some(o) = out {
        for l in &links {
            o.symlink(&l.target, &l.path)?;
        }
    }
    Ok(Extracted {
        entries: central.tree.entries,
        files: central.tree.files,
        uncompressed_bytes: ctx.file_bytes.load(Ordering::Relaxed),
        compressed_bytes: central.compressed_total,
        written: std::mem::take(&mut central.tree.written),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Limits, detect_format, verify_only};
    use std::os::unix::fs::MetadataExt;

    fn kind(entries: &[Z]) -> (String, String) {
        zip_kind(&zip(entries), &Limits::default())
    }

    fn ok_entry() -> Z {
        Z::new("index.html", b"<html></html>\n")
    }

    #[test]
    fn happy_path_site_extracts_every_file() {
        let files = site(400);
        let entries: Vec<Z> = files
            .iter()
            .enumerate()
            .map(|(i, (p, d))| {
                if i % 5 == 0 {
                    Z::stored(p.as_str(), d)
                } else {
                    Z::new(p.as_str(), d)
                }
            })
            .collect();
        let s = Scene::new("20240602_2015_PREP.zip", &zip(&entries));
        assert_eq!(
            detect_format(&s.pkg, "20240602_2015_PREP.zip").unwrap(),
            super::super::Format::Zip
        );
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(x.files, files.len() as u64);
        // index.html, assets/ + 400 json files in json/ and three subdirectories.
        assert_eq!(x.entries, files.len() as u64 + 5);
        assert_eq!(
            x.written,
            files.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
            "archive order"
        );
        let total: u64 = files.iter().map(|f| f.1.len() as u64).sum();
        assert_eq!(x.uncompressed_bytes, total);
        for (p, d) in &files {
            assert_eq!(&s.read(p), d, "{p}");
            assert_eq!(s.mode(p), 0o644, "{p}");
        }
        assert_eq!(s.mode("json/entidad"), 0o755);
        assert_eq!(files_under(&s.dest).len(), files.len());
        let v = verify_only(&s.pkg, s.format(), &Limits::default()).unwrap();
        assert_eq!(v, x);
    }

    #[test]
    fn big_entries_are_shared_by_two_workers() {
        // Enough data for the second thread, with entries bigger than one buffer.
        let mut entries = vec![Z::stored("assets/db.zip", &noise(3 << 20, 1))];
        for i in 0..50 {
            entries.push(Z::new(format!("json/{i}.json"), &noise(40_000, i)));
        }
        entries.push(Z::new("big.csv", &noise(2 << 20, 99)));
        let s = Scene::new("a.zip", &zip(&entries));
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(x.files, 52);
        for e in &entries {
            assert_eq!(s.read(std::str::from_utf8(&e.name).unwrap()), e.data);
        }
    }

    #[test]
    fn the_first_failing_entry_is_reported_whatever_the_threads_do() {
        // Two threads, two bad entries: the report always names the first in the archive.
        let mut entries: Vec<Z> = (0..40)
            .map(|i| Z::stored(format!("json/{i:02}.json"), &noise(60_000, i)))
            .collect();
        entries[7].central_lie = Some((1, 60_000, 60_000));
        entries[30].central_lie = Some((2, 60_000, 60_000));
        let b = zip(&entries);
        for _ in 0..5 {
            let (k, msg) = zip_kind(&b, &Limits::default());
            assert_eq!(k, "corrupt");
            assert!(msg.contains("json/07.json"), "{msg}");
        }
    }

    #[test]
    fn verify_only_writes_nothing() {
        let s = Scene::new("a.zip", &zip(&[ok_entry(), Z::new("json/a.json", b"{}")]));
        let x = s.verify(&Limits::default()).unwrap();
        assert_eq!(x.files, 2);
        assert_eq!(x.written, ["index.html", "json/a.json"]);
        assert!(files_under(&s.dest).is_empty());
    }

    #[test]
    fn real_fixture_matches_known_sizes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/20190603_0547_PREP_DIP_QROO.zip"
        );
        let bytes = std::fs::read(path).expect("the Quintana Roo 2019 fixture");
        let s = Scene::new("20190603_0547_PREP_DIP_QROO.zip", &bytes);
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(
            x.written,
            [
                "LEEME.txt",
                "QROO_DIP_LOC_2019.csv",
                "QROO_DIP_CANDIDATURAS_2019.csv"
            ]
        );
        assert_eq!(s.read("QROO_DIP_LOC_2019.csv").len(), 681_462);
        assert_eq!(s.mode("LEEME.txt"), 0o644, "the archive says 0666");
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "../x",
            "json/../../x",
            "/etc/x",
            "C:\\x",
            "C:/x",
            "a\\..\\..\\x",
            "",
            "a\u{1}b",
        ] {
            let (k, msg) = kind(&[ok_entry(), Z::new(bad, b"pwned")]);
            assert_eq!(k, "unsafe-path", "{bad:?}: {msg}");
        }
        // A file named like the root.
        assert_eq!(kind(&[Z::new(".", b"x")]).0, "unsafe-path");
        let (_, msg) = kind(&[Z::new("../x", b"")]);
        assert_eq!(
            msg,
            "unsafe path \"../x\": the name contains a '..' component"
        );
    }

    #[test]
    fn root_directory_entry_is_harmless() {
        let s = Scene::new("a.zip", &zip(&[Z::dir("./"), Z::new("./a.json", b"{}")]));
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!((x.files, x.entries), (1, 1));
        assert_eq!(s.read("a.json"), b"{}");
    }

    #[test]
    fn symlinks_escape_or_not_allowed() {
        let escape = [ok_entry(), Z::symlink("evil", "../../../../etc")];
        assert_eq!(zip_kind(&zip(&escape), &links()).0, "link-escape");
        // Even when links are refused, an escape is reported as an escape.
        assert_eq!(kind(&escape).0, "link-escape");
        let abs = [Z::symlink("evil", "/etc/passwd")];
        assert_eq!(zip_kind(&zip(&abs), &links()).0, "link-escape");
        let inside = [ok_entry(), Z::symlink("inicio.html", "index.html")];
        let (k, msg) = kind(&inside);
        assert_eq!(k, "link-not-allowed");
        assert_eq!(
            msg,
            "link \"inicio.html\" refused: links are not allowed in packages"
        );
        let s = Scene::new("a.zip", &zip(&inside));
        let x = s.extract(&links()).unwrap();
        assert_eq!(x.entries, 2);
        assert_eq!(
            std::fs::read_link(s.path("inicio.html")).unwrap().to_str(),
            Some("index.html")
        );
        // A file "inside" a link is a path clash, never a write through the link.
        let through = [Z::symlink("d", "sub"), Z::new("d/x", b"x")];
        assert_eq!(zip_kind(&zip(&through), &links()).0, "duplicate-path");
    }

    #[test]
    fn symlink_chains_cannot_escape() {
        // x/b -> .. is the root; y -> x/b/.. looks like "x" lexically but is above the root.
        let chain = [Z::symlink("x/b", ".."), Z::symlink("y", "x/b/..")];
        let (k, msg) = zip_kind(&zip(&chain), &links());
        assert_eq!(k, "link-escape", "{msg}");
        assert!(msg.contains("passes through another link"), "{msg}");
    }

    #[test]
    fn devices_and_fifos_are_special_files() {
        let fifo = Z::stored("pipe", b"").mode(S_IFIFO | 0o644);
        let (k, msg) = kind(&[ok_entry(), fifo]);
        assert_eq!(k, "special-file");
        assert!(msg.contains("fifo"), "{msg}");
        let chr = Z::stored("null", b"").mode(S_IFCHR | 0o666);
        assert_eq!(kind(&[chr]).0, "special-file");
    }

    #[test]
    fn duplicates_after_normalisation() {
        for (a, b) in [
            ("a/b", "a/b"),
            ("a/b", "a//b"),
            ("a/b", "./a/b"),
            ("a/b", "a/b/"),
        ] {
            let second = if b.ends_with('/') {
                Z::dir(b)
            } else {
                Z::new(b, b"2")
            };
            let (k, msg) = kind(&[Z::new(a, b"1"), second]);
            assert_eq!(k, "duplicate-path", "{a} {b}: {msg}");
        }
        assert_eq!(kind(&[Z::dir("a/"), Z::dir("a/")]).0, "duplicate-path");
        assert_eq!(
            kind(&[Z::new("a", b"1"), Z::new("a/b", b"2")]).0,
            "duplicate-path"
        );
        // An explicit directory after it was implied by a file is fine.
        assert_eq!(kind(&[Z::new("a/b", b"1"), Z::dir("a/")]).0, "ok");
    }

    #[test]
    fn zip_bomb_with_honest_headers_is_refused_before_inflating() {
        // Headers declaring 2 GiB from 2 KiB: refused from the central directory alone.
        let mut e = Z::new("json/bomb.json", b"");
        e.raw = Some(vec![0x03, 0x00]); // an empty final fixed block
        e.both_lie = Some((0, 2048, 2 << 30));
        let (k, msg) = kind(&[e]);
        assert_eq!(k, "ratio-exceeded", "{msg}");
        // A real one: 4 MiB of zeros deflate to ~4 KiB (1000:1).
        let (k, msg) = kind(&[Z::new("json/bomb.json", &vec![0u8; 4 << 20])]);
        assert_eq!(k, "ratio-exceeded", "{msg}");
        assert!(
            msg.starts_with("compression ratio exceeded: entry \"json/bomb.json\""),
            "{msg}"
        );
    }

    #[test]
    fn small_compressible_files_pass_the_ratio_check() {
        // 900 KiB of zeros is 1000:1 but under the 1 MiB floor.
        let s = Scene::new(
            "a.zip",
            &zip(&[
                Z::new("a.json", &vec![b' '; 900 << 10]),
                Z::stored("n", &noise(10_000, 1)),
            ]),
        );
        s.extract(&Limits::default()).unwrap();
    }

    #[test]
    fn overall_ratio_is_checked_across_entries() {
        // Forty 600 KiB entries of zeros: each under the floor, together 24 MiB from ~25 KiB.
        let es: Vec<Z> = (0..40)
            .map(|i| Z::new(format!("json/{i}.json"), &vec![0u8; 600 << 10]))
            .collect();
        let (k, msg) = kind(&es);
        assert_eq!(k, "ratio-exceeded");
        assert!(msg.contains("overall"), "{msg}");
    }

    #[test]
    fn too_many_entries_counts_implicit_directories() {
        let limits = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        let ok = [Z::new("a/b/c.json", b"{}")];
        assert_eq!(zip_kind(&zip(&ok), &limits).0, "ok");
        let over = [Z::new("a/b/c.json", b"{}"), Z::new("a/d.json", b"{}")];
        let (k, msg) = zip_kind(&zip(&over), &limits);
        assert_eq!(k, "too-many-entries");
        assert_eq!(
            msg,
            "too many entries: more than 3 files, directories and links"
        );
        let many: Vec<Z> = (0..5).map(|i| Z::new(format!("{i}"), b"")).collect();
        assert_eq!(zip_kind(&zip(&many), &limits).0, "too-many-entries");
    }

    #[test]
    fn total_size_is_limited() {
        let limits = Limits {
            max_total_bytes: 100_000,
            ..Limits::default()
        };
        let es = [
            Z::new("a", &noise(60_000, 1)),
            Z::new("b", &noise(60_000, 2)),
        ];
        let (k, msg) = zip_kind(&zip(&es), &limits);
        assert_eq!(k, "too-large", "{msg}");
    }

    #[test]
    fn lying_sizes_never_let_more_bytes_through() {
        // Both headers claim 10 bytes; the deflate stream holds 300 KB.
        let limits = Limits {
            max_total_bytes: 1000,
            ..Limits::default()
        };
        let mut e = Z::new("json/a.json", &noise(300_000, 3));
        let crc = crc32fast::hash(&e.data);
        let clen = deflate(&e.data).len() as u32;
        e.both_lie = Some((crc, clen, 10));
        let s = Scene::new("a.zip", &zip(&[e]));
        let err = s.extract(&limits).unwrap_err();
        assert!(matches!(err.kind(), "corrupt" | "too-large"), "{err}");
        let written = std::fs::metadata(s.path("json/a.json")).map_or(0, |m| m.len());
        assert!(written <= 10, "{written} bytes written");
        // Same with the default limits: refused as soon as it passes the declared size.
        let (k, msg) = zip_kind(
            &zip(&[{
                let mut e = Z::new("json/a.json", &noise(300_000, 3));
                e.both_lie = Some((crc, clen, 10));
                e
            }]),
            &Limits::default(),
        );
        assert_eq!(k, "corrupt", "{msg}");
        assert!(msg.contains("more data than the 10 bytes"), "{msg}");
    }

    #[test]
    fn truncated_zips_are_truncated() {
        let b = zip(&site(50)
            .iter()
            .map(|(p, d)| Z::new(p.as_str(), d))
            .collect::<Vec<_>>());
        for cut in [b.len() * 6 / 10, b.len() - 11, b.len() - 1, 40] {
            let (k, msg) = zip_kind(&b[..cut], &Limits::default());
            assert_eq!(k, "truncated", "cut at {cut}: {msg}");
        }
        // Cut right after a stored nested zip: its end record is not ours.
        let inner = zip(&[Z::new("PRES.csv", &noise(5000, 2))]);
        let b = zip(&[
            Z::stored("assets/db.zip", &inner),
            Z::new("index.html", b"x"),
        ]);
        let cut = 30 + "assets/db.zip".len() + inner.len() + 3;
        let (k, msg) = zip_kind(&b[..cut], &Limits::default());
        assert_eq!(k, "truncated", "{msg}");
    }

    #[test]
    fn flipped_data_byte_is_a_crc_error() {
        let e = Z::stored("json/main.json", b"{\"fechaCorte\":\"02/06/2024\"}");
        let at = 30 + e.name.len();
        let mut b = zip(&[e]);
        b[at] ^= 0x20;
        let (k, msg) = zip_kind(&b, &Limits::default());
        assert_eq!(k, "corrupt");
        assert!(msg.contains("crc-32 mismatch"), "{msg}");
        // Deflated: a flipped byte breaks the stream or the CRC; either way corrupt.
        let e = Z::new("a.csv", &noise(50_000, 4));
        let mut b = zip(&[e]);
        b[30 + 5 + 1000] ^= 0x01;
        assert_eq!(zip_kind(&b, &Limits::default()).0, "corrupt");
    }

    #[test]
    fn local_and_central_headers_must_agree() {
        let mut e = Z::stored("json/main.json", b"{\"a\":1}");
        e.local_lie = Some((crc32fast::hash(b"{\"a\":1}") ^ 1, 10, 10));
        let (k, msg) = kind(&[e]);
        assert_eq!(k, "corrupt");
        assert!(msg.contains("the local header says"), "{msg}");
        let mut e = Z::stored("json/main.json", b"x");
        e.local_name = Some(b"json/evil.json".to_vec());
        assert_eq!(kind(&[e]).0, "corrupt");
        let mut e = Z::stored("json/main.json", b"x");
        e.local_name = Some(b"json/main.jsoX".to_vec());
        assert_eq!(kind(&[e]).0, "corrupt");
    }

    #[test]
    fn data_descriptors_are_read_and_checked() {
        let es: Vec<Z> = (0..3)
            .map(|i| Z {
                descriptor: true,
                ..Z::new(format!("json/{i}.json"), &noise(5000, i))
            })
            .collect();
        assert_eq!(kind(&es).0, "ok");
        let mut bad = Z {
            descriptor: true,
            ..Z::new("a", b"abc")
        };
        bad.central_lie = Some((crc32fast::hash(b"abc"), deflate(b"abc").len() as u32, 3));
        bad.both_lie = Some((1, deflate(b"abc").len() as u32, 3));
        // descriptor says crc 1, central the truth: corrupt either way.
        assert_eq!(kind(&[bad]).0, "corrupt");
    }

    #[test]
    fn overlapping_entries_are_refused() {
        // Two central records sharing one local header and its data.
        let a = Z::new("json/a.json", &noise(10_000, 1));
        let b = Z {
            name: b"json/b.json".to_vec(),
            alias_of: Some(0),
            ..a.clone()
        };
        let (k, msg) = kind(&[a.clone(), b]);
        assert_eq!(k, "overlapping-entries", "{msg}");
        // A central record pointing inside another entry's data.
        let c = Z {
            name: b"json/c.json".to_vec(),
            offset_shift: -2000,
            ..Z::stored("json/c.json", b"x")
        };
        let a = Z::stored("json/a.json", &noise(10_000, 1));
        assert_eq!(kind(&[a, c]).0, "overlapping-entries");
    }

    #[test]
    fn empty_zip_is_empty_archive() {
        assert_eq!(kind(&[Z::dir("./")]).0, "empty-archive");
        let b = zip(&[]);
        let s = Scene::new("a.zip", &b);
        assert_eq!(
            detect_format(&s.pkg, "a.zip").unwrap_err().kind(),
            "empty-archive"
        );
        assert_eq!(
            s.extract(&Limits::default()).unwrap_err().kind(),
            "empty-archive"
        );
    }

    #[test]
    fn long_names_are_refused() {
        let (k, msg) = kind(&[Z::new(format!("json/{}", "a".repeat(256)), b"{}")]);
        assert_eq!(k, "name-too-long");
        assert!(
            msg.starts_with("name too long: a component is 256 bytes (at most 255)"),
            "{msg}"
        );
        let long = vec!["b".repeat(250); 20].join("/");
        assert_eq!(kind(&[Z::new(long, b"{}")]).0, "name-too-long");
    }

    #[test]
    fn non_utf8_names_are_decoded() {
        // CP437 without the UTF-8 flag: ñ = A4, ú = A3.
        let s = Scene::new(
            "a.zip",
            &zip(&[Z::new(b"a\xa4o/\xa4and\xa3.json".to_vec(), b"{}")]),
        );
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(x.written, ["año/ñandú.json"]);
        assert_eq!(s.read("año/ñandú.json"), b"{}");
        // The UTF-8 flag.
        let e = Z {
            flags: 0x0800,
            ..Z::new("estadística/Mérida.json".as_bytes(), b"{}")
        };
        let s = Scene::new("a.zip", &zip(&[e]));
        s.extract(&Limits::default()).unwrap();
        assert_eq!(s.read("estadística/Mérida.json"), b"{}");
        // Info-ZIP Unicode Path extra field (0x7075) over a CP437 raw name.
        let raw = b"a\xa4o.json".to_vec();
        let utf = "año.json".as_bytes();
        let mut extra = vec![0x75, 0x70];
        extra.extend_from_slice(&((5 + utf.len()) as u16).to_le_bytes());
        extra.push(1);
        extra.extend_from_slice(&crc32fast::hash(&raw).to_le_bytes());
        extra.extend_from_slice(utf);
        let e = Z {
            central_extra: extra,
            ..Z::new(raw, b"{}")
        };
        let s = Scene::new("a.zip", &zip(&[e]));
        assert_eq!(s.extract(&Limits::default()).unwrap().written, ["año.json"]);
    }

    #[test]
    fn modes_are_normalised() {
        let es = [
            Z::new("bin/suid", b"#!/bin/sh\n").mode(S_IFREG | 0o4755),
            Z::new("bin/all", b"#!/bin/sh\n").mode(S_IFREG | 0o7777),
            Z::dir("tmp/").mode(S_IFDIR | 0o1777),
        ];
        let s = Scene::new("a.zip", &zip(&es));
        s.extract(&Limits::default()).unwrap();
        assert_eq!(s.mode("bin/suid"), 0o644);
        assert_eq!(s.mode("bin/all"), 0o644);
        assert_eq!(s.mode("tmp"), 0o755);
    }

    #[test]
    fn nested_zip_is_kept_as_a_file() {
        let inner = zip(&[Z::new("PRES_2024.csv", b"a|b\n1|2\n")]);
        let s = Scene::new(
            "a.zip",
            &zip(&[Z::stored("assets/20240602_2015_PREP.zip", &inner)]),
        );
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(x.written, ["assets/20240602_2015_PREP.zip"]);
        assert_eq!(s.read("assets/20240602_2015_PREP.zip"), inner);
        assert!(!s.path("PRES_2024.csv").exists());
        assert!(!s.path("assets/PRES_2024.csv").exists());
    }

    #[test]
    fn increment_mode_replaces_hard_links_without_touching_the_old_inode() {
        let s = Scene::new(
            "a.zip",
            &zip(&[
                Z::new("json/main.json", b"{\"cut\":2}"),
                Z::new("was_dir", b"now a file"),
                Z::dir("was_file/"),
                Z::new("was_file/x", b"x"),
            ]),
        );
        // The previous cut, and the new cut made of hard links to it.
        let prev = s.dir.path().join("prev");
        std::fs::create_dir_all(prev.join("json")).unwrap();
        std::fs::write(prev.join("json/main.json"), b"{\"cut\":1}").unwrap();
        std::fs::write(prev.join("json/keep.json"), b"keep").unwrap();
        std::fs::write(prev.join("was_file"), b"old file").unwrap();
        std::fs::create_dir_all(s.dest.join("json")).unwrap();
        std::fs::create_dir_all(s.dest.join("was_dir/sub")).unwrap();
        std::fs::write(s.dest.join("was_dir/sub/f"), b"f").unwrap();
        for f in ["json/main.json", "json/keep.json", "was_file"] {
            std::fs::hard_link(prev.join(f), s.dest.join(f)).unwrap();
        }
        let old_ino = std::fs::metadata(prev.join("json/main.json"))
            .unwrap()
            .ino();
        s.extract(&Limits::default()).unwrap();
        assert_eq!(
            std::fs::read(prev.join("json/main.json")).unwrap(),
            b"{\"cut\":1}"
        );
        assert_eq!(std::fs::read(prev.join("was_file")).unwrap(), b"old file");
        assert_eq!(s.read("json/main.json"), b"{\"cut\":2}");
        assert_ne!(
            std::fs::metadata(s.path("json/main.json")).unwrap().ino(),
            old_ino
        );
        assert_eq!(
            s.read("json/keep.json"),
            b"keep",
            "unchanged files stay linked"
        );
        assert_eq!(s.read("was_dir"), b"now a file");
        assert_eq!(s.read("was_file/x"), b"x");
    }

    #[test]
    fn encryption_and_other_methods_are_refused() {
        let e = Z {
            flags: 1,
            ..Z::stored("json/main.json", b"xxxxxxxxxxxx{}")
        };
        let (k, msg) = kind(&[e]);
        assert_eq!(k, "encrypted");
        assert_eq!(
            msg,
            "encrypted entry \"json/main.json\": encrypted packages are not supported"
        );
        let e = Z {
            method: 12,
            ..Z::stored("json/main.json", b"BZh9")
        };
        let (k, msg) = kind(&[e]);
        assert_eq!(k, "unsupported");
        assert!(msg.contains("compression method 12 (bzip2)"), "{msg}");
    }

    #[test]
    fn zip64_end_record_is_read() {
        let s = Scene::new("a.zip", &zip_with(&[ok_entry(), Z::new("b", b"b")], true));
        assert_eq!(s.extract(&Limits::default()).unwrap().files, 2);
    }

    #[test]
    fn bytes_before_or_after_the_archive_are_refused() {
        let mut b = zip(&[ok_entry()]);
        b.extend_from_slice(b"trailing");
        assert_eq!(zip_kind(&b, &Limits::default()).0, "corrupt");
        // Data prepended: offsets no longer add up (and it no longer starts with PK\3\4).
        let mut p = b"PK\x03\x04 junk".to_vec();
        p.extend(zip(&[ok_entry()]));
        assert_eq!(zip_kind(&p, &Limits::default()).0, "corrupt");
    }

    #[test]
    fn system_zip_output_is_read_when_available() {
        let t = tempfile::tempdir().unwrap();
        let site_dir = t.path().join("site");
        for (p, d) in site(60) {
            let f = site_dir.join(&p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, d).unwrap();
        }
        let pkg = t.path().join("p.zip");
        let ok = std::process::Command::new("zip")
            .args(["-qr", "-X"])
            .arg(&pkg)
            .arg(".")
            .current_dir(&site_dir)
            .status();
        match ok {
            Ok(s) if s.success() => {}
            _ => {
                println!("zip(1) not available: interop not checked");
                return;
            }
        }
        let dest = t.path().join("cut");
        std::fs::create_dir(&dest).unwrap();
        let x = super::super::extract(&pkg, super::super::Format::Zip, &dest, &Limits::default())
            .unwrap();
        assert_eq!(x.files, 62);
        for (p, d) in site(60) {
            assert_eq!(std::fs::read(dest.join(&p)).unwrap(), d, "{p}");
        }
    }
}
