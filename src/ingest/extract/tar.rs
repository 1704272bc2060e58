#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
//! `.tar.gz` packages: one pass over the gzip stream, reading tar headers and streaming each
//! file's data straight into its new file.
//!
//! Owns: tar header parsing (v7, ustar with prefix, GNU long names `L`/`K`, PAX `x` records for
//! path/linkpath/size/mtime, PAX `g` and GNU volume labels skipped), header checksums, entry
//! types, the end-of-archive check (only zero padding may follow), per-entry and overall
//! ratio in a stream that has no per-entry compressed size.
//!
//! Must never: read a header's size as permission to write more than it (data is streamed in
//! bounded chunks and counted), accept an entry type other than file, directory or link, or
//! let bytes follow the end of the archive.
//!
//! PERF: decompression runs on its own thread, handing 256 KiB chunks to the thread that
//! parses and writes (as `tar xzf` runs gzip as a separate process); four chunks in flight.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::gzip::GzReader;
use super::names::{self, shown};
use super::tree::{self, Kind, LinkCheck, Out, Tree};
use super::{Ctx, ExtractError, Extracted};

const BLOCK: usize = 512;
/// Size of one decompressed chunk.
const CHUNK: usize = 256 * 1024;
/// Chunks the decompressor may run ahead.
const DEPTH: usize = 4;
/// PAX extended headers larger than this are refused (real ones are a few hundred bytes).
const MAX_PAX: u64 = 1 << 20;
/// GNU long names larger than this are refused (names are at most 4096 bytes anyway).
const MAX_LONG_NAME: u64 = 64 * 1024;
/// Extension headers (PAX, GNU long names) allowed before one real entry.
const MAX_META: u32 = 16;
/// Zero padding allowed after the end of the archive (GNU tar pads to its record size, 10 KiB
/// by default, at most 1 MiB with `-b 2048`).
const MAX_PADDING: u64 = 4 << 20;

struct Chunk {
    buf: Vec<u8>,
    len: usize,
    /// Compressed bytes consumed once this chunk was produced.
    consumed: u64,
}

enum Msg {
    Data(Chunk),
    End,
    Fail(ExtractError),
}

/// Where decompressed chunks come from: the decompression thread, or (small packages) the
/// gzip reader called in line.
enum Source {
    Direct(Box<GzReader<File>>),
    Piped {
        rx: Receiver<Msg>,
        recycle: Sender<Vec<u8>>,
    },
}

impl Source {
    fn next(&mut self, mut old: Vec<u8>) -> Result<Option<Chunk>, ExtractError> {
        match self {
            Source::Direct(gz) => {
                old.resize(CHUNK, 0);
                let len = gz.read_full(&mut old)?;
                if len == 0 {
                    return Ok(None);
                }
                Ok(Some(Chunk {
                    buf: old,
                    len,
                    consumed: gz.consumed(),
                }))
            }
            Source::Piped { rx, recycle } => {
                if old.capacity() > 0 {
                    let _ = recycle.send(old); // the producer may have finished: fine
                }
                match rx.recv() {
                    Ok(Msg::Data(c)) => Ok(Some(c)),
                    Ok(Msg::End) => Ok(None),
                    Ok(Msg::Fail(e)) => Err(e),
                    Err(_) => Err(ExtractError::io(
                        "decompressing",
                        "the package",
                        std::io::Error::other("the decompression thread stopped"),
                    )),
                }
            }
        }
    }
}

/// The decompression thread: fills chunks until the stream ends, an error, or the consumer
/// hangs up (dropping its receiver).
fn produce(mut gz: GzReader<File>, tx: SyncSender<Msg>, free: Receiver<Vec<u8>>) {
    let mut allocated = 0;
    loop {
        let mut buf = match free.try_recv() {
            Ok(b) => b,
            Err(_) if allocated < DEPTH + 1 => {
                allocated += 1;
                Vec::new()
            }
            Err(_) => match free.recv() {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        buf.resize(CHUNK, 0);
        let msg = match gz.read_full(&mut buf) {
            Ok(0) => Msg::End,
            Ok(len) => Msg::Data(Chunk {
                buf,
                len,
                consumed: gz.consumed(),
            }),
            Err(e) => Msg::Fail(e),
        };
        let last = !matches!(msg, Msg::Data(_));
        if tx.send(msg).is_err() || last {
            return;
        }
    }
}

/// The decompressed tar stream, chunk by chunk.
struct Stream<'c> {
    src: Source,
    cur: Chunk,
    /// Compressed bytes consumed before the current chunk (to interpolate inside it).
    prev_consumed: u64,
    pos: usize,
    eof: bool,
    /// Decompressed bytes received so far (end of the current chunk).
    total: u64,
    ctx: &'c Ctx,
}

impl Stream<'_> {
    /// The unread rest of the current chunk, fetching the next one when it is used up; empty
    /// only at the verified end of the gzip stream.
    fn avail(&mut self) -> Result<&[u8], ExtractError> {
        if self.pos >= self.cur.len && !self.eof {
            let old = std::mem::take(&mut self.cur.buf);
            match self.src.next(old)? {
                Some(c) => {
                    self.prev_consumed = self.cur.consumed;
                    self.total += c.len as u64;
                    self.cur = c;
                    self.pos = 0;
                    self.ctx.check_overall_ratio(self.total)?;
                }
                None => {
                    self.eof = true;
                    self.cur.len = 0;
                    self.pos = 0;
                }
            }
        }
        Ok(self.cur.buf.get(self.pos..self.cur.len).unwrap_or_default())
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Offset in the tar stream of the next unread byte.
    fn offset(&self) -> u64 {
        self.total - (self.cur.len.saturating_sub(self.pos)) as u64
    }

    /// Estimated compressed bytes consumed up to the next unread byte: interpolated inside
    /// the current chunk, so per-entry ratios do not jump by a chunk at a time.
    fn consumed(&self) -> u64 {
        self.consumed_at(self.pos)
    }

    /// The same estimate at position `pos` of the current chunk.
    fn consumed_at(&self, pos: usize) -> u64 {
        if self.cur.len == 0 {
            return self.cur.consumed;
        }
        let span = self.cur.consumed.saturating_sub(self.prev_consumed);
        self.prev_consumed + span * pos.min(self.cur.len) as u64 / self.cur.len as u64
    }

    /// Reads one 512-byte block; returns how many bytes it got (less than 512 only at EOF).
    fn block(&mut self, hdr: &mut [u8; BLOCK]) -> Result<usize, ExtractError> {
        let mut got = 0;
        while got < BLOCK {
            let a = self.avail()?;
            if a.is_empty() {
                break;
            }
            let n = a.len().min(BLOCK - got);
            if let (Some(dst), Some(src)) = (hdr.get_mut(got..got + n), a.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.advance(n);
            got += n;
        }
        Ok(got)
    }

    /// Streams `n` bytes to `sink(bytes, compressed_consumed_so_far)`; returns how many were
    /// delivered (less than `n` only at EOF).
    fn data(
        &mut self,
        n: u64,
        mut sink: impl FnMut(&[u8], u64) -> Result<(), ExtractError>,
    ) -> Result<u64, ExtractError> {
        let mut done = 0;
        while done < n {
            let have = self.avail()?.len();
            if have == 0 {
                break;
            }
            let take = have.min(usize::try_from(n - done).unwrap_or(usize::MAX));
            let consumed = self.consumed_at(self.pos + take);
            let slice = self
                .cur
                .buf
                .get(self.pos..self.pos + take)
                .unwrap_or_default();
            sink(slice, consumed)?;
            self.advance(take);
            done += take as u64;
        }
        Ok(done)
    }

    /// Skips `n` bytes (data we do not keep, or block padding); false if the stream ended.
    fn skip(&mut self, n: u64) -> Result<bool, ExtractError> {
        Ok(self.data(n, |_, _| Ok(()))? == n)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn field(h: &[u8; BLOCK], start: usize, len: usize) -> &[u8] {
    h.get(start..start + len).unwrap_or_default()
}

/// The bytes of a NUL-terminated (or full-width) header field.
fn cstr(f: &[u8]) -> &[u8] {
    match f.iter().position(|&b| b == 0) {
        Some(end) => f.get(..end).unwrap_or_default(),
        None => f,
    }
}

/// A numeric header field: octal digits (space/NUL padded) or GNU base-256 (high bit set).
fn number(f: &[u8]) -> Option<u64> {
    let (first, rest) = f.split_first()?;
    if first & 0x80 != 0 {
        if first & 0x40 != 0 {
            return None; // negative
        }
        let mut v = u64::from(first & 0x3f);
        for &b in rest {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let digits = f
        .iter()
        .skip_while(|&&b| b == b' ' || b == 0)
        .take_while(|&&b| b != b' ' && b != 0);
    let mut v: u64 = 0;
    for &b in digits {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(stored) = number(field(h, 148, 8)) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8); // some old writers summed signed chars
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// What extension headers said about the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<i64>,
    meta: u32,
}

/// Parses PAX records (`"%d %s=%s\n"`), keeping the keys we use.
fn parse_pax(data: &[u8], p: &mut Pending) -> Result<(), ExtractError> {
    let bad = || ExtractError::corrupt("malformed pax extended header");
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break; // some writers pad the record block with NULs
        }
        let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(rest.get(..sp).ok_or_else(bad)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let record = rest.get(..len).ok_or_else(bad)?;
        rest = rest.get(len..).ok_or_else(bad)?;
        let kv = record
            .get(sp + 1..)
            .and_then(|r| r.strip_suffix(b"\n"))
            .ok_or_else(bad)?;
        let eq = kv.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (
            kv.get(..eq).unwrap_or_default(),
            kv.get(eq + 1..).unwrap_or_default(),
        );
        match key {
            b"path" => p.path = Some(value.to_vec()),
            b"linkpath" => p.linkpath = Some(value.to_vec()),
            b"size" => {
                p.size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(bad)?,
                )
            }
            b"mtime" => {
                p.mtime = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.split('.').next())
                    .and_then(|s| s.parse().ok())
            }
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(ExtractError::Unsupported {
                    name: shown(&String::from_utf8_lossy(p.path.as_deref().unwrap_or(b"?"))),
                    what: "tar sparse file".into(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads an extension header's data (PAX records, GNU long name) into memory, bounded.
fn read_meta(s: &mut Stream<'_>, size: u64, max: u64, what: &str) -> Result<Vec<u8>, ExtractError> {
    if size > max {
        return Err(ExtractError::corrupt(format!(
            "{what} of {size} bytes at offset {} (at most {max})",
            s.offset()
        )));
    }
    let mut v = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let got = s.data(size, |b, _| {
        v.extend_from_slice(b);
        Ok(())
    })?;
    if got < size || !s.skip(padding(size))? {
        return Err(ExtractError::truncated(format!(
            "the tar stream ends inside a {what}"
        )));
    }
    Ok(v)
}

pub(crate) fn run(file: File, out: Option<&Out<'_>>, ctx: &Ctx) -> Result<Extracted, ExtractError> {
    let gz = GzReader::new(file, ctx.package_name.clone());
    // Below one chunk there is nothing to overlap.
    if ctx.package_len < (CHUNK / 4) as u64 {
        let src = Source::Direct(Box::new(gz));
        return read_tar(src, out, ctx);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(DEPTH);
        let (recycle, free) = channel();
        scope.spawn(move || produce(gz, tx, free));
        // `src` (and with it the receiver and the recycle sender) is dropped when read_tar
        // returns, which stops the producer if we stopped first.
        read_tar(Source::Piped { rx, recycle }, out, ctx)
    })
}

fn read_tar(src: Source, out: Option<&Out<'_>>, ctx: &Ctx) -> Result<Extracted, ExtractError> {
    let mut s = Stream {
        src,
        cur: Chunk {
            buf: Vec::new(),
            len: 0,
            consumed: 0,
        },
        prev_consumed: 0,
        pos: 0,
        eof: false,
        total: 0,
        ctx,
    };
    let limits = &ctx.limits;
    let mut tree = Tree::new(limits.max_entries);
    let mut links: Vec<LinkCheck> = Vec::new();
    let mut pending = Pending::default();
    let mut hdr = [0u8; BLOCK];
    let mut first = true;
    let mut uncompressed = 0u64;

    loop {
        let at = s.offset();
        let got = s.block(&mut hdr)?;
        if got == 0 && first {
            return Err(ExtractError::Empty);
        }
        if got < BLOCK {
            return Err(ExtractError::truncated(if got == 0 {
                format!("the tar archive ends at offset {at} without its end-of-archive blocks")
            } else {
                format!("the tar stream ends inside the header at offset {at}")
            }));
        }
        if hdr.iter().all(|&b| b == 0) {
            if first {
                return Err(ExtractError::Empty);
            }
            // End of archive: everything after must be zeros (the second end block and the
            // record padding), up to the verified end of the gzip stream.
            let mut pad = 0u64;
            loop {
                let a = s.avail()?;
                if a.is_empty() {
                    break;
                }
                if a.iter().any(|&b| b != 0) {
                    return Err(ExtractError::corrupt(format!(
                        "data after the end of the tar archive (end marker at offset {at})"
                    )));
                }
                pad += a.len() as u64;
                let n = a.len();
                s.advance(n);
                if pad > MAX_PADDING {
                    return Err(ExtractError::corrupt(format!(
                        "more than {MAX_PADDING} bytes of padding after the end of the tar archive"
                    )));
                }
            }
            break;
        }
        if !checksum_ok(&hdr) {
            let ustar = field(&hdr, 257, 5) == b"ustar";
            if first && !ustar {
                return Err(ExtractError::WrongFormat {
                    reason: "the gzip stream does not contain a tar archive".into(),
                });
            }
            return Err(ExtractError::corrupt(format!(
                "bad tar header checksum at offset {at} (entry {:?})",
                shown(&names::tar_name(cstr(field(&hdr, 0, 100))))
            )));
        }
        first = false;
        let typ = field(&hdr, 156, 1).first().copied().unwrap_or(0);
        let hsize = number(field(&hdr, 124, 12)).ok_or_else(|| {
            ExtractError::corrupt(format!("bad size field in the tar header at offset {at}"))
        })?;

        // Extension headers: they describe the next entry.
        match typ {
            b'x' | b'g' | b'L' | b'K' => {
                pending.meta += 1;
                if pending.meta > MAX_META {
                    return Err(ExtractError::corrupt(format!(
                        "more than {MAX_META} extension headers in a row at offset {at}"
                    )));
                }
                match typ {
                    b'x' => {
                        let data = read_meta(&mut s, hsize, MAX_PAX, "pax extended header")?;
                        parse_pax(&data, &mut pending)?;
                    }
                    b'g' => {
                        // Global PAX header (git archive writes its commit id here): nothing
                        // in it changes what we write.
                        read_meta(&mut s, hsize, MAX_PAX, "pax global header")?;
                    }
                    b'L' => {
                        let mut v = read_meta(&mut s, hsize, MAX_LONG_NAME, "gnu long name")?;
                        v.truncate(cstr(&v).len());
                        pending.path = Some(v);
                    }
                    _ => {
                        let mut v = read_meta(&mut s, hsize, MAX_LONG_NAME, "gnu long link")?;
                        v.truncate(cstr(&v).len());
                        pending.linkpath = Some(v);
                    }
                }
                continue;
            }
            _ => {}
        }

        let p = std::mem::take(&mut pending);
        let size = p.size.unwrap_or(hsize);
        let raw_name: Vec<u8> = match p.path {
            Some(v) => v,
            None => {
                let name = cstr(field(&hdr, 0, 100));
                let prefix = cstr(field(&hdr, 345, 155));
                // The prefix field exists in POSIX ustar only; GNU uses that area for times.
                if field(&hdr, 257, 6) == b"ustar\0" && !prefix.is_empty() {
                    [prefix, b"/", name].concat()
                } else {
                    name.to_vec()
                }
            }
        };
        let name = names::tar_name(&raw_name).into_owned();
        let raw_link: Vec<u8> = match p.linkpath {
            Some(v) => v,
            None => cstr(field(&hdr, 157, 100)).to_vec(),
        };
        let mtime = p
            .mtime
            .or_else(|| number(field(&hdr, 136, 12)).and_then(|t| i64::try_from(t).ok()));

        let special = |what: &str| ExtractError::SpecialFile {
            name: shown(&name),
            what: what.to_owned(),
        };
        let is_dir = typ == b'5' || (matches!(typ, 0 | b'0') && name.ends_with('/'));
        match typ {
            _ if is_dir => {
                // `None` is `./`: the cut root itself, which exists.
                if let Some(path) = names::normalise(&name)? {
                    tree.add(&path, Kind::Dir)?;
                    create_dirs(&mut tree, out)?;
                }
                skip_entry(&mut s, size, &name)?;
            }
            0 | b'0' | b'7' => {
                let path = names::normalise(&name)?.ok_or_else(|| names::root_error(&name))?;
                tree.add(&path, Kind::File)?;
                create_dirs(&mut tree, out)?;
                let mut f = match out {
                    Some(o) => Some(o.create_file(&path)?),
                    None => None,
                };
                let c0 = s.consumed();
                let mut written = 0u64;
                let got = s
                    .data(size, |bytes, consumed| {
                        written += bytes.len() as u64;
                        ctx.add_file_bytes(bytes.len() as u64, &path)?;
                        ctx.check_entry_ratio(&path, written, consumed.saturating_sub(c0))?;
                        if let Some(f) = f.as_mut() {
                            f.write_all(bytes)
                                .map_err(|e| ExtractError::io("writing", &path, e))?;
                        }
                        Ok(())
                    })
                    .map_err(|e| within(e, &path))?;
                if got < size {
                    return Err(ExtractError::truncated(format!(
                        "tar entry {:?} is cut short: {got} of {size} bytes",
                        shown(&path)
                    )));
                }
                uncompressed += got;
                if !s.skip(padding(size))? {
                    return Err(ExtractError::truncated(format!(
                        "the tar stream ends inside the padding after {:?}",
                        shown(&path)
                    )));
                }
                if let (Some(f), Some(t)) = (f.as_ref(), mtime) {
                    Out::set_mtime(f, &path, t)?;
                }
            }
            b'1' | b'2' => {
                // An escaping link is reported as such even when links are refused anyway:
                // the incident should say "escape attempt", not just "a link".
                let path = names::normalise(&name)?.ok_or_else(|| names::root_error(&name))?;
                let target = names::tar_name(&raw_link).into_owned();
                let not_allowed = || ExtractError::LinkNotAllowed { name: shown(&name) };
                if typ == b'2' {
                    let r = names::resolve_symlink(&path, &target)?;
                    if !limits.allow_links {
                        return Err(not_allowed());
                    }
                    tree.add(&path, Kind::Link)?;
                    create_dirs(&mut tree, out)?;
                    if let Some(o) = out {
                        o.symlink(&target, &path)?;
                    }
                    links.push(LinkCheck {
                        path,
                        target,
                        traversed: r.traversed,
                    });
                } else {
                    let t = names::hardlink_target(&path, &target)?;
                    if !limits.allow_links {
                        return Err(not_allowed());
                    }
                    if tree.kind(&t) != Some(Kind::File) {
                        return Err(ExtractError::LinkEscape {
                            name: shown(&path),
                            target: shown(&target),
                            reason: "a hard link must point to a regular file extracted \
                                     earlier from this package",
                        });
                    }
                    tree.add(&path, Kind::File)?;
                    create_dirs(&mut tree, out)?;
                    if let Some(o) = out {
                        o.hard_link(&t, &path)?;
                    }
                }
                skip_entry(&mut s, size, &name)?;
            }
            b'3' => return Err(special("a character device")),
            b'4' => return Err(special("a block device")),
            b'6' => return Err(special("a fifo (named pipe)")),
            b'S' => {
                return Err(ExtractError::Unsupported {
                    name: shown(&name),
                    what: "tar sparse file".into(),
                });
            }
            b'M' => {
                return Err(ExtractError::Unsupported {
                    name: shown(&name),
                    what: "multi-volume tar continuation".into(),
                });
            }
            b'V' => skip_entry(&mut s, size, &name)?, // GNU volume label: not a file
            other => {
                return Err(special(&format!(
                    "an unknown tar entry type {:?}",
                    char::from(other)
                )));
            }
        }
    }
    if tree.entries == 0 {
        // Only `./`, PAX globals or volume labels: nothing to publish.
        return Err(ExtractError::Empty);
    }
    tree::check_link_chains(&links, &tree, out)?;
    Ok(Extracted {
        entries: tree.entries,
        files: tree.files,
        uncompressed_bytes: uncompressed,
        compressed_bytes: ctx.package_len,
        written: tree.written,
    })
}

/// Says which entry was being read when the gzip stream turned out cut short or damaged.
fn within(e: ExtractError, path: &str) -> ExtractError {
    match e {
        ExtractError::Truncated { detail } => ExtractError::Truncated {
            detail: format!("{detail} (while reading {:?})", shown(path)),
        },
        ExtractError::Corrupt { detail } => ExtractError::Corrupt {
            detail: format!("{detail} (while reading {:?})", shown(path)),
        },
        other => other,
    }
}

/// Skips an entry's data (and its padding): directories and links normally have none.
fn skip_entry(s: &mut Stream<'_>, size: u64, name: &str) -> Result<(), ExtractError> {
    if !s.skip(size + padding(size))? {
        return Err(ExtractError::truncated(format!(
            "tar entry {:?} is cut short",
            shown(name)
        )));
    }
    Ok(())
}

/// Creates on disk the directories the tree just added (parents first).
fn create_dirs(tree: &mut Tree, out: Option<&Out<'_>>) -> Result<(), ExtractError> {
    for d in tree.new_dirs.drain(..) {
        if let Some(o) = out {
            o.create_dir(&d)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Limits, detect_format};
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn kind(entries: &[T]) -> (String, String) {
        tgz_kind(&tgz(entries), &Limits::default())
    }

    fn ok_entry() -> T {
        T::file("index.html", b"<html></html>\n")
    }

    #[test]
    fn happy_path_site_extracts_every_file() {
        let files = site(400);
        let mut entries = vec![T::dir("./")];
        entries.extend(files.iter().map(|(p, d)| T::file(format!("./{p}"), d)));
        // Big enough for the decompression thread.
        entries.push(T::file("csv/PRES_2024.csv", &noise(600_000, 8)));
        let s = Scene::new("20240602_2015_PREP.tar.gz", &tgz(&entries));
        assert_eq!(
            detect_format(&s.pkg, "20240602_2015_PREP.tar.gz").unwrap(),
            super::super::Format::TarGz
        );
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(x.files, files.len() as u64 + 1);
        assert_eq!(x.written.first().map(String::as_str), Some("index.html"));
        assert_eq!(x.written.len(), files.len() + 1);
        for (p, d) in &files {
            assert_eq!(&s.read(p), d, "{p}");
            assert_eq!(s.mode(p), 0o644);
        }
        assert_eq!(s.read("csv/PRES_2024.csv"), noise(600_000, 8));
        let mtime = std::fs::metadata(s.path("index.html")).unwrap().mtime();
        assert_eq!(mtime, 1_717_380_900, "mtime from the archive");
        assert_eq!(files_under(&s.dest).len(), files.len() + 1);
        let v = s.verify(&Limits::default()).unwrap();
        assert_eq!(v, x);
    }

    #[test]
    fn long_names_gnu_and_pax() {
        let long = format!("largo/{}.json", "n".repeat(150));
        let mut pax = T::file("placeholder", b"pax");
        let pax_name = format!("largo/pax-{}.json", "p".repeat(150));
        pax.pax = vec![("path".into(), pax_name.clone().into_bytes())];
        let s = Scene::new("a.tgz", &tgz(&[T::file(long.as_str(), b"gnu"), pax]));
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(x.written, [long.clone(), pax_name.clone()]);
        assert_eq!(s.read(&long), b"gnu");
        assert_eq!(s.read(&pax_name), b"pax");
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "../x",
            "json/../../x",
            "/etc/x",
            "C:\\x",
            "a\\..\\..\\x",
            "a\u{7f}",
        ] {
            let (k, msg) = kind(&[ok_entry(), T::file(bad, b"pwned")]);
            assert_eq!(k, "unsafe-path", "{bad:?}: {msg}");
        }
        let mut e = T::file("harmless.txt", b"x");
        e.pax = vec![("path".into(), b"../../pax-x".to_vec())];
        assert_eq!(kind(&[e]).0, "unsafe-path");
        assert_eq!(
            kind(&[T::file(".", b"")]).0,
            "unsafe-path",
            "a file named like the root"
        );
    }

    #[test]
    fn links_escape_or_not_allowed() {
        let sym = [ok_entry(), T::link(b'2', "evil", "../../../etc")];
        assert_eq!(tgz_kind(&tgz(&sym), &links()).0, "link-escape");
        assert_eq!(
            kind(&sym).0,
            "link-escape",
            "reported as an escape even when refused"
        );
        let abs = [T::link(b'2', "evil", "/etc")];
        assert_eq!(tgz_kind(&tgz(&abs), &links()).0, "link-escape");
        let hard = [ok_entry(), T::link(b'1', "pw", "../../etc/passwd")];
        let (k, msg) = tgz_kind(&tgz(&hard), &links());
        assert_eq!(k, "link-escape", "{msg}");
        let hard_abs = [T::link(b'1', "pw", "/etc/passwd")];
        assert_eq!(tgz_kind(&tgz(&hard_abs), &links()).0, "link-escape");
        // A hard link to a file of the previous cut, or to a directory, is not allowed either.
        let hard_missing = [T::link(b'1', "pw", "json/old.json")];
        assert_eq!(tgz_kind(&tgz(&hard_missing), &links()).0, "link-escape");
        let inside = [ok_entry(), T::link(b'2', "inicio.html", "index.html")];
        assert_eq!(kind(&inside).0, "link-not-allowed");
        let hard_inside = [ok_entry(), T::link(b'1', "inicio.html", "index.html")];
        assert_eq!(kind(&hard_inside).0, "link-not-allowed");
        // Allowed: created, and the hard link shares the file's inode.
        let both = [
            ok_entry(),
            T::link(b'2', "a/inicio.html", "../index.html"),
            T::link(b'1', "copia.html", "index.html"),
        ];
        let s = Scene::new("a.tgz", &tgz(&both));
        let x = s.extract(&links()).unwrap();
        assert_eq!(x.files, 2);
        assert_eq!(x.entries, 4);
        assert_eq!(
            std::fs::read_link(s.path("a/inicio.html"))
                .unwrap()
                .to_str(),
            Some("../index.html")
        );
        assert_eq!(s.read("copia.html"), b"<html></html>\n");
        // Writing "through" a link is a path clash.
        let through = [T::link(b'2', "d", "sub"), T::file("d/x", b"x")];
        assert_eq!(tgz_kind(&tgz(&through), &links()).0, "duplicate-path");
    }

    #[test]
    fn devices_and_fifos_are_special_files() {
        for (t, what) in [
            (b'3', "character device"),
            (b'4', "block device"),
            (b'6', "fifo"),
        ] {
            let (k, msg) = kind(&[ok_entry(), T::special(t, "dev")]);
            assert_eq!(k, "special-file");
            assert!(msg.contains(what), "{msg}");
        }
        assert_eq!(kind(&[T::special(b'Z', "odd")]).0, "special-file");
        assert_eq!(kind(&[T::special(b'S', "sparse")]).0, "unsupported");
    }

    #[test]
    fn duplicates_after_normalisation() {
        for (a, b) in [("a/b", "a/b"), ("a/b", "a//b"), ("a/b", "./a/b")] {
            let (k, msg) = kind(&[T::file(a, b"1"), T::file(b, b"2")]);
            assert_eq!(k, "duplicate-path", "{a} {b}: {msg}");
        }
        assert_eq!(
            kind(&[T::file("a/b", b"1"), T::dir("a/b/")]).0,
            "duplicate-path"
        );
        assert_eq!(
            kind(&[T::dir("a/"), T::file("a", b"1")]).0,
            "duplicate-path"
        );
        assert_eq!(kind(&[T::file("a/b", b"1"), T::dir("a/")]).0, "ok");
    }

    #[test]
    fn per_entry_ratio_without_per_entry_sizes() {
        // An incompressible file first keeps the overall ratio low: only the entry's counts.
        let es = [
            T::file("assets/db.zip", &noise(2 << 20, 1)),
            T::file("json/bomb.json", &vec![0u8; 5 << 20]),
        ];
        let (k, msg) = kind(&es);
        assert_eq!(k, "ratio-exceeded", "{msg}");
        assert!(msg.contains("entry \"json/bomb.json\""), "{msg}");
        // Alone, the whole package is a bomb too.
        let (k, msg) = kind(&[T::file("json/bomb.json", &vec![0u8; 5 << 20])]);
        assert_eq!(k, "ratio-exceeded", "{msg}");
    }

    #[test]
    fn overall_ratio_is_checked() {
        let es: Vec<T> = (0..30)
            .map(|i| T::file(format!("json/{i}.json"), &vec![0u8; 600 << 10]))
            .collect();
        let (k, msg) = kind(&es);
        assert_eq!(k, "ratio-exceeded");
        assert!(msg.contains("overall"), "{msg}");
    }

    #[test]
    fn compressible_json_passes() {
        // Realistic JSON compresses ~10:1; must pass.
        let json: Vec<u8> = (0..200_000)
            .flat_map(|i: u32| format!("{{\"id\":{i},\"v\":{}}},", i % 97).into_bytes())
            .collect();
        assert_eq!(kind(&[T::file("json/big.json", &json)]).0, "ok");
    }

    #[test]
    fn too_many_entries_and_too_large() {
        let limits = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        let es = [T::file("a/b/c", b""), T::file("a/d", b"")];
        assert_eq!(tgz_kind(&tgz(&es), &limits).0, "too-many-entries");
        let limits = Limits {
            max_total_bytes: 100_000,
            ..Limits::default()
        };
        let es = [
            T::file("a", &noise(60_000, 1)),
            T::file("b", &noise(60_000, 2)),
        ];
        let s = Scene::new("a.tgz", &tgz(&es));
        let e = s.extract(&limits).unwrap_err();
        assert_eq!(e.kind(), "too-large");
        assert_eq!(
            e.to_string(),
            "package too large: more than 100000 bytes uncompressed (limit reached at \"b\")"
        );
        let written = std::fs::metadata(s.path("b")).unwrap().len();
        assert!(written <= 40_000, "{written} bytes of b written");
    }

    #[test]
    fn truncation_is_truncated() {
        let b = tgz(&site(100)
            .iter()
            .map(|(p, d)| T::file(p.as_str(), d))
            .collect::<Vec<_>>());
        for cut in [b.len() * 6 / 10, b.len() - 4, 12] {
            let (k, msg) = tgz_kind(&b[..cut], &Limits::default());
            assert_eq!(k, "truncated", "cut at {cut}: {msg}");
        }
        // A complete gzip stream around a tar whose last file is short.
        let t = tar_raw(&[T::file("big.csv", &noise(20_000, 3))]);
        let (k, msg) = tgz_kind(&gz(&t[..512 + 8000]), &Limits::default());
        assert_eq!(k, "truncated");
        assert!(
            msg.contains("\"big.csv\" is cut short: 8000 of 20000 bytes"),
            "{msg}"
        );
        // ... or that stops at a header boundary, without its end blocks.
        let t = tar_raw(&[T::file("a", b"a")]);
        assert_eq!(tgz_kind(&gz(&t[..1024]), &Limits::default()).0, "truncated");
    }

    #[test]
    fn bad_header_checksum_is_corrupt() {
        let mut t = tar_raw(&[ok_entry(), T::file("b", b"b")]);
        t[1024 + 148] ^= 1;
        let (k, msg) = tgz_kind(&gz(&t), &Limits::default());
        assert_eq!(k, "corrupt");
        assert!(
            msg.contains("bad tar header checksum at offset 1024 (entry \"b\")"),
            "{msg}"
        );
        let mut t = tar_raw(&[ok_entry()]);
        t[0] = b'j'; // name changed, checksum not
        assert_eq!(tgz_kind(&gz(&t), &Limits::default()).0, "corrupt");
        // Not a tar at all inside the gzip.
        let (k, msg) = tgz_kind(&gz(&noise(5000, 1)), &Limits::default());
        assert_eq!(k, "wrong-format", "{msg}");
    }

    #[test]
    fn bad_gzip_trailer_is_corrupt() {
        let good = tgz(&[ok_entry()]);
        let n = good.len();
        let mut crc = good.clone();
        crc[n - 8] ^= 0xff;
        let (k, msg) = tgz_kind(&crc, &Limits::default());
        assert_eq!(
            (k.as_str(), msg.contains("gzip crc-32 mismatch")),
            ("corrupt", true),
            "{msg}"
        );
        let mut len = good.clone();
        len[n - 4] ^= 1;
        let (k, msg) = tgz_kind(&len, &Limits::default());
        assert_eq!(
            (k.as_str(), msg.contains("gzip length mismatch")),
            ("corrupt", true),
            "{msg}"
        );
    }

    #[test]
    fn flipped_byte_in_stored_gzip_is_caught_by_the_trailer() {
        let t = tar_raw(&[T::file(
            "json/main.json",
            b"{\"fechaCorte\":\"02/06/2024\"}",
        )]);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        e.write_all(&t).unwrap();
        let mut g = e.finish().unwrap();
        g[10 + 5 + 512 + 3] ^= 1;
        assert_eq!(tgz_kind(&g, &Limits::default()).0, "corrupt");
    }

    #[test]
    fn only_zeros_may_follow_the_end_of_archive() {
        let mut t = tar_raw(&[ok_entry()]);
        t.extend_from_slice(&header(b"late", b'0', 0o644, 0, b"", 0));
        let (k, msg) = tgz_kind(&gz(&t), &Limits::default());
        assert_eq!(k, "corrupt");
        assert!(
            msg.contains("data after the end of the tar archive"),
            "{msg}"
        );
    }

    #[test]
    fn multi_member_gzip_is_one_stream() {
        let t = tar_raw(&[ok_entry(), T::file("b", &noise(3000, 1))]);
        let mut g = gz(&t[..1000]);
        g.extend(gz(&t[1000..]));
        let s = Scene::new("a.tgz", &g);
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(x.files, 2);
        assert_eq!(s.read("b"), noise(3000, 1));
        let mut junk = gz(&t);
        junk.extend_from_slice(b"junk");
        assert_eq!(tgz_kind(&junk, &Limits::default()).0, "corrupt");
    }

    #[test]
    fn empty_tar_is_empty_archive() {
        assert_eq!(kind(&[]).0, "empty-archive");
        assert_eq!(kind(&[T::dir("./")]).0, "empty-archive");
        assert_eq!(tgz_kind(&gz(b""), &Limits::default()).0, "empty-archive");
    }

    #[test]
    fn long_component_is_refused() {
        let (k, msg) = kind(&[T::file(format!("json/{}", "a".repeat(256)), b"{}")]);
        assert_eq!(k, "name-too-long", "{msg}");
    }

    #[test]
    fn latin1_names_are_decoded() {
        let s = Scene::new(
            "a.tgz",
            &tgz(&[T::file(b"a\xf1o/\xf1and\xfa.json".to_vec(), b"{}")]),
        );
        let x = s.extract(&Limits::default()).unwrap();
        assert_eq!(x.written, ["año/ñandú.json"]);
        assert_eq!(s.read("año/ñandú.json"), b"{}");
    }

    #[test]
    fn modes_are_normalised() {
        let mut sticky = T::dir("tmp/");
        sticky.mode = 0o1777;
        let mut suid = T::file("tmp/suid", b"#!/bin/sh\n");
        suid.mode = 0o4755;
        let mut all = T::file("tmp/all", b"#!/bin/sh\n");
        all.mode = 0o7777;
        let s = Scene::new("a.tgz", &tgz(&[sticky, suid, all]));
        s.extract(&Limits::default()).unwrap();
        assert_eq!(s.mode("tmp"), 0o755);
        assert_eq!(s.mode("tmp/suid"), 0o644);
        assert_eq!(s.mode("tmp/all"), 0o644);
    }

    #[test]
    fn nested_zip_is_kept_as_a_file() {
        let inner = zip(&[Z::new("PRES_2024.csv", b"a|b\n")]);
        let s = Scene::new(
            "a.tgz",
            &tgz(&[T::file("assets/20240602_2015_PREP.zip", &inner)]),
        );
        s.extract(&Limits::default()).unwrap();
        assert_eq!(s.read("assets/20240602_2015_PREP.zip"), inner);
        assert_eq!(files_under(&s.dest), ["assets/20240602_2015_PREP.zip"]);
    }

    #[test]
    fn increment_mode_replaces_hard_links_without_touching_the_old_inode() {
        let s = Scene::new(
            "a.tgz",
            &tgz(&[
                T::file("json/main.json", b"{\"cut\":2}"),
                T::dir("was_file/"),
            ]),
        );
        let prev = s.dir.path().join("prev");
        std::fs::create_dir_all(prev.join("json")).unwrap();
        std::fs::write(prev.join("json/main.json"), b"{\"cut\":1}").unwrap();
        std::fs::write(prev.join("was_file"), b"old").unwrap();
        std::fs::create_dir_all(s.dest.join("json")).unwrap();
        for f in ["json/main.json", "was_file"] {
            std::fs::hard_link(prev.join(f), s.dest.join(f)).unwrap();
        }
        let ino = std::fs::metadata(prev.join("json/main.json"))
            .unwrap()
            .ino();
        s.extract(&Limits::default()).unwrap();
        assert_eq!(
            std::fs::read(prev.join("json/main.json")).unwrap(),
            b"{\"cut\":1}"
        );
        assert_eq!(
            std::fs::metadata(prev.join("json/main.json"))
                .unwrap()
                .mode()
                & 0o7777,
            0o644
        );
        assert_eq!(s.read("json/main.json"), b"{\"cut\":2}");
        assert_ne!(
            std::fs::metadata(s.path("json/main.json")).unwrap().ino(),
            ino
        );
        assert!(s.path("was_file").is_dir());
        assert_eq!(std::fs::read(prev.join("was_file")).unwrap(), b"old");
    }

    #[test]
    fn header_numbers() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"   12 \0"), Some(0o12));
        assert_eq!(number(b"\0\0\0\0"), Some(0));
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some(1 << 32)
        );
        assert_eq!(number(b"0009"), None);
        assert_eq!(number(&[0xff, 0xff]), None);
    }

    #[test]
    fn system_tar_output_is_read_when_available() {
        let t = tempfile::tempdir().unwrap();
        let site_dir = t.path().join("site");
        for (p, d) in site(60) {
            let f = site_dir.join(&p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, d).unwrap();
        }
        let pkg = t.path().join("p.tar.gz");
        let st = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&pkg)
            .arg("-C")
            .arg(&site_dir)
            .arg(".")
            .status();
        match st {
            Ok(s) if s.success() => {}
            _ => {
                println!("tar(1) not available: interop not checked");
                return;
            }
        }
        let dest = t.path().join("cut");
        std::fs::create_dir(&dest).unwrap();
        let x = super::super::extract(&pkg, super::super::Format::TarGz, &dest, &Limits::default())
            .unwrap();
        assert_eq!(x.files, 62);
        for (p, d) in site(60) {
            assert_eq!(std::fs::read(dest.join(&p)).unwrap(), d, "{p}");
        }
    }
}
