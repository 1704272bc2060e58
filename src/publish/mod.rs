//! Making a cut live for HTTP: the in-memory [`Snapshot`] of one cut and the atomic swap.
//!
//! Owns: reading an immutable cut directory into a map `path → Entry` with everything a
//! response needs precomputed (header maps for the identity, gzip and brotli variants, strong ETags,
//! `Last-Modified`, `Content-Type`, `Cache-Control`; `X-Difusor-Cut` is the snapshot's, added
//! per response, so an unchanged file's entry is shared by every cut that keeps it), and
//! [`follow`], which builds each published cut off the serving path and swaps it in with one
//! atomic store.
//!
//! Invariants:
//! 1. A snapshot is never modified after it is built; a request loads the live one once and
//!    answers entirely from it, so no response mixes two cuts.
//! 2. Bodies are `Bytes` or an open file handle owned by the snapshot (`Arc`): a download
//!    that started before a swap finishes with the old cut's bytes even if the old cut
//!    directory is pruned meanwhile.
//! 3. Only regular files found under the cut directory are in the map. Symbolic links are
//!    served only when they resolve to a regular file inside the cut (aliasing it); a link
//!    leading out, to a directory, or dangling is skipped. Dotfiles are skipped unless
//!    `serve_dotfiles`.
//! 4. A failed build never replaces the live snapshot: the previous one keeps serving.
//!
//! Must never: run on a serving thread (building reads and compresses the whole cut: it runs
//! on `spawn_blocking`), or follow a symlink out of the cut.

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    LAST_MODIFIED, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::web::{compression, conditional, content_type, security_headers};

pub use crate::web::cache_control::CacheRules;

/// `X-Difusor-Cut`: which cut answered. On every response.
pub static X_DIFUSOR_CUT: HeaderName = HeaderName::from_static("x-difusor-cut");

/// What the status endpoint says about the live cut.
#[derive(Debug, Clone, PartialEq)]
pub struct CutMeta {
    pub cut_id: String,
    pub cut_time: Option<OffsetDateTime>,
    pub published_at: Option<OffsetDateTime>,
    pub packages_in_history: usize,
}

impl CutMeta {
    /// The metadata of a published cut, from its event.
    pub fn from_event(ev: &crate::events::CutPublished) -> CutMeta {
        CutMeta {
            cut_id: ev.cut_id.clone(),
            cut_time: ev.manifest.cut_time,
            published_at: ev.manifest.published_at,
            packages_in_history: ev.packages_in_history,
        }
    }
}

/// A file's bytes: in memory, or (large files) an open handle on the immutable cut.
#[derive(Debug, Clone)]
pub enum Content {
    Memory(Bytes),
    /// PERF: served by positional reads in chunks (`web::body`); the handle is opened once, at
    /// build time, so a pruned cut directory does not break a download in flight.
    File(Arc<File>),
}

/// Identity of a file's bytes on disk, to reuse what was computed from them in the next cut
/// (unchanged files of an increment are hard links: same device, inode, size and mtime; not
/// the ctime, which `link(2)` itself changes). Cut files are never written after the cut is
/// built. The mirror keys its SHA-256 cache by it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    pub(crate) fn of(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        }
    }
}

/// Everything about one file that does not depend on the cut it is served in.
#[derive(Debug)]
pub struct FileData {
    pub content: Content,
    pub len: u64,
    /// The gzip and brotli variants, when the type is compressible and they save something.
    pub gzip: Option<Bytes>,
    pub brotli: Option<Bytes>,
    pub etag: HeaderValue,
    pub gzip_etag: HeaderValue,
    pub brotli_etag: HeaderValue,
    /// Seconds precision, as sent in `Last-Modified`.
    pub last_modified: SystemTime,
    pub last_modified_value: HeaderValue,
    pub content_type: HeaderValue,
    stamp: Stamp,
}

/// One servable path of a snapshot: the same in every cut that keeps the file unchanged under
/// the same path (`X-Difusor-Cut` is an empty slot in these headers: each response puts its
/// snapshot's cut id there).
#[derive(Debug)]
pub struct Entry {
    pub data: Arc<FileData>,
    /// Complete 200 headers of the identity variant.
    pub identity: HeaderMap,
    /// Complete 200 headers of the gzip variant (when there is one).
    pub gzipped: Option<HeaderMap>,
    /// Complete 200 headers of the brotli variant (when there is one).
    pub brotlied: Option<HeaderMap>,
    /// The `Cache-Control` the rules gave this path.
    pub cache_control: HeaderValue,
}

impl Entry {
    fn new(data: Arc<FileData>, cache_control: HeaderValue, rules: &CacheRules) -> Arc<Entry> {
        let mut base = HeaderMap::with_capacity(12);
        base.insert(CONTENT_TYPE, data.content_type.clone());
        base.insert(LAST_MODIFIED, data.last_modified_value.clone());
        base.insert(CACHE_CONTROL, cache_control.clone());
        // PERF: a slot the response fills with its cut's id (`web::handler`), so the per-request
        // copy of these headers is overwritten in place rather than grown.
        base.insert(X_DIFUSOR_CUT.clone(), HeaderValue::from_static(""));
        security_headers::apply(&mut base, rules.hsts_max_age);
        if data.gzip.is_some() || data.brotli.is_some() {
            base.insert(VARY, HeaderValue::from_static("accept-encoding"));
        }
        let mut identity = base.clone();
        identity.insert(ETAG, data.etag.clone());
        identity.insert(CONTENT_LENGTH, HeaderValue::from(data.len));
        identity.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let variant = |body: &Bytes, etag: &HeaderValue, coding: &'static str| {
            let mut g = base.clone();
            g.insert(ETAG, etag.clone());
            g.insert(CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
            g.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
            g
        };
        let gzipped = data
            .gzip
            .as_ref()
            .map(|b| variant(b, &data.gzip_etag, "gzip"));
        let brotlied = data
            .brotli
            .as_ref()
            .map(|b| variant(b, &data.brotli_etag, "br"));
        Arc::new(Entry {
            data,
            identity,
            gzipped,
            brotlied,
            cache_control,
        })
    }
}

/// One cut, in memory, ready to serve. Immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    meta: Option<CutMeta>,
    /// `X-Difusor-Cut` value: the cut id, or `none` before the first cut.
    cut_header: HeaderValue,
    /// Key: path inside the cut without the leading `/` (`json/main.json`).
    files: HashMap<Box<str>, Arc<Entry>>,
    /// The cut's own `404.html`, served with status 404.
    not_found: Option<Arc<Entry>>,
    rules: CacheRules,
    /// When this snapshot was built (the fallback for "seconds since last cut").
    built_at: SystemTime,
    /// Total bytes held in memory (bodies and gzip variants).
    memory_bytes: u64,
}

impl Snapshot {
    /// Reads the cut directory into memory (files above `rules.in_memory_max` are served from
    /// an open file handle instead). Blocking: call on `spawn_blocking`.
    pub fn build(cut_dir: &Path, meta: CutMeta, rules: &CacheRules) -> std::io::Result<Snapshot> {
        Snapshot::build_reusing(cut_dir, meta, rules, None)
    }

    /// [`Snapshot::build`], reusing what `previous` computed for files that did not change
    /// (same device, inode, size and mtime: the hard links of an increment), so a cut that
    /// changes a few files is live in milliseconds, not after compressing the whole site.
    pub fn build_reusing(
        cut_dir: &Path,
        meta: CutMeta,
        rules: &CacheRules,
        previous: Option<&Snapshot>,
    ) -> std::io::Result<Snapshot> {
        let started = Instant::now();
        let cut_header = HeaderValue::from_str(&meta.cut_id).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cut id {:?} is not a valid header value", meta.cut_id),
            )
        })?;
        let root = cut_dir.canonicalize()?;
        let mut found = Vec::new();
        let mut links = Vec::new();
        walk(
            &root,
            String::new(),
            rules.serve_dotfiles,
            &mut found,
            &mut links,
        )?;

        // What the previous cut computed: whole entries by path (when the rules are the same,
        // an unchanged file under the same path has the same headers) and file data by stamp
        // (a file that moved or is also linked elsewhere).
        let entries = previous
            .filter(|p| p.rules.same_as(rules))
            .map(|p| &p.files);
        // File data depends on the rules only through where the body lives and which variants
        // it has.
        let reuse: HashMap<Stamp, Arc<FileData>> = previous
            .filter(|p| {
                p.rules.in_memory_max == rules.in_memory_max && p.rules.brotli == rules.brotli
            })
            .map(|p| {
                p.files
                    .values()
                    .map(|e| (e.data.stamp, Arc::clone(&e.data)))
                    .collect()
            })
            .unwrap_or_default();

        // PERF: hashing and gzip are CPU-bound; spread the changed files over the cores.
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let chunk = found.len().div_ceil(threads).max(1);
        let mut loaded: Vec<(String, Loaded)> = Vec::with_capacity(found.len());
        std::thread::scope(|s| -> std::io::Result<()> {
            let handles: Vec<_> = found
                .chunks(chunk)
                .map(|part| {
                    let reuse = &reuse;
                    s.spawn(move || -> std::io::Result<Vec<(String, Loaded)>> {
                        part.iter()
                            .map(|(key, path, meta)| {
                                let kept = entries.and_then(|e| e.get(key.as_str()));
                                let loaded = load_file(path, meta, key, rules, kept, reuse)?;
                                Ok((key.clone(), loaded))
                            })
                            .collect()
                    })
                })
                .collect();
            for h in handles {
                let part = h
                    .join()
                    .map_err(|_| std::io::Error::other("snapshot build thread panicked"))??;
                loaded.extend(part);
            }
            Ok(())
        })?;

        let mut files: HashMap<Box<str>, Arc<Entry>> =
            HashMap::with_capacity(loaded.len() + links.len());
        let mut by_path: HashMap<PathBuf, Arc<FileData>> = HashMap::with_capacity(loaded.len());
        let mut memory_bytes = 0u64;
        let mut reused = 0usize;
        for (key, loaded) in loaded {
            let entry = match loaded {
                Loaded::Kept(entry) => {
                    reused += 1;
                    entry
                }
                Loaded::Data { data, reused: r } => {
                    reused += usize::from(r);
                    Entry::new(data, rules.for_path(&key), rules)
                }
            };
            let data = &entry.data;
            if let Content::Memory(b) = &data.content {
                memory_bytes += b.len() as u64;
            }
            memory_bytes += data.gzip.as_ref().map_or(0, |g| g.len() as u64);
            memory_bytes += data.brotli.as_ref().map_or(0, |g| g.len() as u64);
            by_path.insert(root.join(&key), Arc::clone(data));
            files.insert(key.into_boxed_str(), entry);
        }
        // Links that stay inside the cut alias the file they point at.
        for (key, link) in links {
            let Ok(target) = link.canonicalize() else {
                continue;
            };
            // SECURITY: resolved by the kernel, then required to be a file we loaded from
            // inside the (canonical) root; anything else is not served.
            if !target.starts_with(&root) {
                tracing::debug!(link = %key, "symlink leaving the cut skipped");
                continue;
            }
            if let Some(data) = by_path.get(&target) {
                let kept = entries
                    .and_then(|e| e.get(key.as_str()))
                    .filter(|e| Arc::ptr_eq(&e.data, data));
                let entry = match kept {
                    Some(e) => Arc::clone(e),
                    None => Entry::new(Arc::clone(data), rules.for_path(&key), rules),
                };
                files.insert(key.into_boxed_str(), entry);
            }
        }
        let not_found = files.get("404.html").cloned();
        tracing::info!(
            cut = %meta.cut_id,
            files = files.len(),
            reused,
            memory_mib = memory_bytes / (1 << 20),
            ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        Ok(Snapshot {
            meta: Some(meta),
            cut_header,
            files,
            not_found,
            rules: rules.clone(),
            built_at: SystemTime::now(),
            memory_bytes,
        })
    }

    /// What is served before the first cut: a small page saying difusor is waiting for the
    /// first cut (Spanish and English), 200 on `/`, 404 elsewhere, `X-Difusor-Cut: none`.
    pub fn waiting() -> Snapshot {
        Snapshot::waiting_with(&CacheRules::defaults())
    }

    /// [`Snapshot::waiting`] with this server's security headers.
    pub fn waiting_with(rules: &CacheRules) -> Snapshot {
        let cut_header = HeaderValue::from_static("none");
        let body = Bytes::from_static(WAITING_PAGE.as_bytes());
        let digest = Sha256::digest(&body);
        let tags = conditional::etags(&digest);
        let now = conditional::http_time(SystemTime::now());
        let data = Arc::new(FileData {
            len: body.len() as u64,
            content: Content::Memory(body),
            gzip: None,
            brotli: None,
            etag: tags.identity,
            gzip_etag: tags.gzip,
            brotli_etag: tags.brotli,
            last_modified: now,
            last_modified_value: http_date(now),
            content_type: HeaderValue::from_static("text/html; charset=utf-8"),
            stamp: Stamp {
                dev: 0,
                ino: 0,
                len: 0,
                mtime_ns: 0,
            },
        });
        // The page must not outlive the wait: no caching at all.
        let cc = HeaderValue::from_static(crate::web::config::NO_CACHE);
        let entry = Entry::new(data, cc, rules);
        let mut files = HashMap::with_capacity(1);
        files.insert(Box::from("index.html"), entry);
        Snapshot {
            meta: None,
            cut_header,
            files,
            not_found: None,
            rules: rules.clone(),
            built_at: SystemTime::now(),
            memory_bytes: WAITING_PAGE.len() as u64,
        }
    }

    /// The live cut's metadata (None while waiting for the first cut).
    pub fn meta(&self) -> Option<&CutMeta> {
        self.meta.as_ref()
    }

    pub fn cut_id(&self) -> Option<&str> {
        self.meta.as_ref().map(|m| m.cut_id.as_str())
    }

    /// `X-Difusor-Cut` value.
    pub fn cut_header(&self) -> &HeaderValue {
        &self.cut_header
    }

    /// The entry for `key` (no leading `/`).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.files.get(key).map(|e| &**e)
    }

    pub fn not_found_page(&self) -> Option<&Entry> {
        self.not_found.as_deref()
    }

    pub fn rules(&self) -> &CacheRules {
        &self.rules
    }

    pub fn is_waiting(&self) -> bool {
        self.meta.is_none()
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    pub fn built_at(&self) -> SystemTime {
        self.built_at
    }

    /// Every path served, sorted (for tests and diagnostics).
    pub fn paths(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.files.keys().map(|k| &**k).collect();
        v.sort_unstable();
        v
    }
}

const WAITING_PAGE: &str = r#"<!doctype html>
<html lang="es">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>Difusor — esperando el primer corte</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:#f3f1f7;color:#2b2233}
main{max-width:40rem;padding:2.5rem;background:#fff;border-radius:12px;box-shadow:0 2px 16px rgba(0,0,0,.08);border-top:8px solid #6c2c8c}
h1{margin-top:0;font-size:1.6rem}p{line-height:1.5}.en{color:#5a5166;border-top:1px solid #e4e0ea;padding-top:1rem}
</style>
</head>
<body>
<main>
<h1>Esperando el primer corte</h1>
<p>El difusor está en funcionamiento y publicará los resultados en cuanto reciba el primer corte. Esta página se actualiza sola cada 30 segundos.</p>
<div class="en" lang="en">
<h1>Waiting for the first cut</h1>
<p>The difusor is running and will publish the results as soon as it receives the first cut. This page refreshes itself every 30 seconds.</p>
</div>
</main>
</body>
</html>
"#;

fn http_date(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// A regular file found by [`walk`]: its key, its path, and its `lstat`.
pub(crate) type WalkedFile = (String, PathBuf, Metadata);

/// Collects regular files (with their metadata) and, separately, symlinks under `dir`, keyed
/// by their path relative to the root. Directories are entered by their real path only (no
/// link is followed while walking). The mirror lists a cut with it too, so the bucket holds
/// exactly what the HTTPS server serves.
pub(crate) fn walk(
    dir: &Path,
    prefix: String,
    dotfiles: bool,
    files: &mut Vec<WalkedFile>,
    links: &mut Vec<(String, PathBuf)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(dir = %dir.display(), "file name that is not UTF-8 skipped");
            continue;
        };
        if name.starts_with('.') && !dotfiles {
            continue;
        }
        // SECURITY: names that the request path decoder would refuse can never be asked for;
        // skip them rather than keep unreachable keys.
        if name.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
            continue;
        }
        let key = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type()?; // does not follow links
        if ft.is_dir() {
            walk(&entry.path(), key, dotfiles, files, links)?;
        } else if ft.is_file() {
            // PERF: `DirEntry::metadata` is an `lstat` relative to the open directory, not a
            // lookup of the whole path again.
            let meta = entry.metadata()?;
            files.push((key, entry.path(), meta));
        } else if ft.is_symlink() {
            links.push((key, entry.path()));
        }
        // Sockets, FIFOs, devices: never served.
    }
    Ok(())
}

/// Opens a file [`walk`] found, for reading. SECURITY: `O_NOFOLLOW` — if the file was swapped
/// for a link since the walk, fail rather than follow it (cuts are immutable, so this is a
/// should-never-happen guard). The mirror reads the bytes it uploads through it too.
pub(crate) fn open_no_follow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// What the build thread made of one file.
enum Loaded {
    /// The previous cut's entry for this path, unchanged.
    Kept(Arc<Entry>),
    /// The file's data (`reused` when the previous cut had it under another path).
    Data { data: Arc<FileData>, reused: bool },
}

/// Loads the file the walk found at `path` with `walked` (its `lstat`).
fn load_file(
    path: &Path,
    walked: &Metadata,
    key: &str,
    rules: &CacheRules,
    kept: Option<&Arc<Entry>>,
    reuse: &HashMap<Stamp, Arc<FileData>>,
) -> std::io::Result<Loaded> {
    // PERF: an unchanged file of an increment (a hard link: same stamp) is known by the walk's
    // lstat, without opening it (the walk saw a regular file, not a link).
    if let Some(entry) = kept
        && Stamp::of(walked) == entry.data.stamp
    {
        return Ok(Loaded::Kept(Arc::clone(entry)));
    }
    let mut file = open_no_follow(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let stamp = Stamp::of(&meta);
    let (ctype, compressible) = content_type::for_path(key);
    // The data of the same bytes under another path is reused only when that path has the
    // same type (the type decides `Content-Type` and whether there are compressed variants).
    if let Some(d) = reuse.get(&stamp).filter(|d| d.content_type == ctype) {
        return Ok(Loaded::Data {
            data: Arc::clone(d),
            reused: true,
        });
    }
    let len = meta.len();
    let modified = conditional::http_time(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
    let (content, digest, gzip, brotli) = if len <= rules.in_memory_max {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf)?;
        let digest = Sha256::digest(&buf);
        let (gzip, brotli) = if compressible {
            let br = rules.brotli.then(|| compression::brotli(&buf)).flatten();
            (compression::gzip(&buf), br)
        } else {
            (None, None)
        };
        (Content::Memory(Bytes::from(buf)), digest, gzip, brotli)
    } else {
        // Hash (and, for text, compress) by streaming; keep only the handle.
        let mut hasher = Sha256::new();
        // The same size floors as the in-memory variants (`in_memory_max` may be tiny).
        let compress = compressible && len <= MAX_GZIP_SOURCE;
        let mut gz = (compress && compression::gzip_worth_trying(len))
            .then(|| compression::gzip_writer(Vec::new()));
        let mut br = (compress && rules.brotli && compression::brotli_worth_trying(len))
            .then(|| compression::brotli_writer(Vec::new()));
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = file.read(&mut buf)?;
            let Some(chunk) = buf.get(..n) else { break };
            if n == 0 {
                break;
            }
            hasher.update(chunk);
            if let Some(g) = gz.as_mut() {
                std::io::Write::write_all(g, chunk)?;
            }
            if let Some(b) = br.as_mut() {
                std::io::Write::write_all(b, chunk)?;
            }
        }
        let gzip = match gz {
            Some(g) => compression::if_worth(g.finish()?, len),
            None => None,
        };
        let brotli = match br {
            Some(mut b) => {
                std::io::Write::flush(&mut b)?;
                compression::if_worth(b.into_inner(), len)
            }
            None => None,
        };
        (
            Content::File(Arc::new(file)),
            hasher.finalize(),
            gzip,
            brotli,
        )
    };
    let tags = conditional::etags(&digest);
    Ok(Loaded::Data {
        data: Arc::new(FileData {
            content,
            len,
            gzip: gzip.map(Bytes::from),
            brotli: brotli.map(Bytes::from),
            etag: tags.identity,
            gzip_etag: tags.gzip,
            brotli_etag: tags.brotli,
            last_modified: modified,
            last_modified_value: http_date(modified),
            content_type: HeaderValue::from_static(ctype),
            stamp,
        }),
        reused: false,
    })
}

/// Text files larger than this get no compressed variants (bounded build time and memory).
const MAX_GZIP_SOURCE: u64 = 256 << 20;

/// The snapshot being served; requests `load()` it once, [`follow`] `store()`s new ones.
pub type LiveSite = Arc<arc_swap::ArcSwap<Snapshot>>;

/// A live site serving the waiting page.
pub fn waiting_site(rules: &CacheRules) -> LiveSite {
    Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::waiting_with(
        rules,
    )))
}

/// Follows cut-published events: builds each new snapshot off the serving path
/// (`spawn_blocking`) and swaps it in with one atomic store. Never blocks serving; if a build
/// fails, logs and keeps the previous snapshot. When several cuts were published while one was
/// being built, only the newest is built (the older ones are no longer live anyway). Returns
/// when the channel closes.
pub async fn follow(
    live: LiveSite,
    mut rx: tokio::sync::broadcast::Receiver<crate::events::CutPublished>,
    rules: CacheRules,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    loop {
        let mut ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "cut events skipped; building the newest");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        loop {
            match rx.try_recv() {
                Ok(newer) => ev = newer,
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        let previous = live.load_full();
        let meta = CutMeta::from_event(&ev);
        let dir = ev.cut_dir.clone();
        let r = rules.clone();
        let built = tokio::task::spawn_blocking(move || {
            let snap = Snapshot::build_reusing(&dir, meta, &r, Some(&previous));
            (snap, previous)
        })
        .await;
        match built {
            Ok((Ok(snap), previous)) => {
                let replaced = live.swap(Arc::new(snap));
                tracing::info!(cut = %ev.cut_id, "cut is live over https");
                // PERF: freeing the replaced snapshot (its map and the entries of the files
                // that changed) is not work for a thread that serves requests.
                tokio::task::spawn_blocking(move || drop((replaced, previous)));
            }
            Ok((Err(e), _)) => {
                tracing::error!(cut = %ev.cut_id, dir = %ev.cut_dir.display(), error = %e,
                    "snapshot build failed; the previous cut stays live");
            }
            Err(e) => {
                tracing::error!(cut = %ev.cut_id, error = %e,
                    "snapshot build panicked; the previous cut stays live");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> CutMeta {
        CutMeta {
            cut_id: id.into(),
            cut_time: None,
            published_at: None,
            packages_in_history: 1,
        }
    }

    #[test]
    fn build_loads_regular_files_skips_dotfiles_and_escaping_links() {
        let d = tempfile::tempdir().unwrap();
        let cut = d.path().join("cut");
        std::fs::create_dir_all(cut.join("json")).unwrap();
        std::fs::create_dir_all(cut.join(".git")).unwrap();
        std::fs::write(cut.join("index.html"), "<h1>hola</h1>").unwrap();
        std::fs::write(cut.join("json/main.json"), "{}".repeat(1500)).unwrap();
        std::fs::write(cut.join("json/small.json"), "{}".repeat(500)).unwrap();
        std::fs::write(cut.join(".git/config"), "secret").unwrap();
        std::fs::write(cut.join(".env"), "secret").unwrap();
        std::fs::write(d.path().join("outside.txt"), "secret").unwrap();
        std::os::unix::fs::symlink("../outside.txt", cut.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink("/etc", cut.join("etc")).unwrap();
        std::os::unix::fs::symlink("index.html", cut.join("alias.html")).unwrap();
        let s = Snapshot::build(&cut, meta("c1"), &CacheRules::defaults()).unwrap();
        assert_eq!(
            s.paths(),
            vec![
                "alias.html",
                "index.html",
                "json/main.json",
                "json/small.json"
            ]
        );
        let main = s.get("json/main.json").unwrap();
        assert_eq!(main.identity[CACHE_CONTROL], crate::web::config::NO_CACHE);
        assert_eq!(
            main.identity[&X_DIFUSOR_CUT], "",
            "the cut header is filled per response"
        );
        assert_eq!(s.cut_header(), "c1");
        assert!(main.gzipped.is_some() && main.brotlied.is_some());
        let small = s.get("json/small.json").unwrap();
        assert!(
            small.gzipped.is_some() && small.brotlied.is_none(),
            "below 2 KiB: gzip only"
        );
        assert_eq!(
            s.get("index.html").unwrap().identity[CACHE_CONTROL],
            "public, max-age=60"
        );
    }

    #[test]
    fn unchanged_files_are_reused_across_cuts() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("same.json"), "{\"x\":1}").unwrap();
        std::fs::write(a.join("changed.json"), "{\"x\":1}").unwrap();
        std::fs::hard_link(a.join("same.json"), b.join("same.json")).unwrap();
        std::fs::write(b.join("changed.json"), "{\"x\":2}").unwrap();
        let rules = CacheRules::defaults();
        let s1 = Snapshot::build(&a, meta("c1"), &rules).unwrap();
        let s2 = Snapshot::build_reusing(&b, meta("c2"), &rules, Some(&s1)).unwrap();
        assert!(
            std::ptr::eq(s1.get("same.json").unwrap(), s2.get("same.json").unwrap()),
            "an unchanged file keeps its whole entry"
        );
        assert_eq!(s2.cut_header(), "c2");
        // The same rules compiled again (a restart builds the first snapshot with its own
        // copy) still share the entry.
        let again = CacheRules::defaults();
        let s3 = Snapshot::build_reusing(&b, meta("c3"), &again, Some(&s2)).unwrap();
        assert!(std::ptr::eq(
            s2.get("same.json").unwrap(),
            s3.get("same.json").unwrap()
        ));
        // Other rules (here: HSTS) make new headers over the same file data.
        let mut other = CacheRules::defaults();
        other.hsts_max_age = Some(60);
        let s4 = Snapshot::build_reusing(&b, meta("c4"), &other, Some(&s3)).unwrap();
        assert!(
            s4.get("same.json")
                .unwrap()
                .identity
                .contains_key("strict-transport-security")
        );
        assert!(Arc::ptr_eq(
            &s3.get("same.json").unwrap().data,
            &s4.get("same.json").unwrap().data
        ));
        assert_ne!(
            s1.get("changed.json").unwrap().data.etag,
            s2.get("changed.json").unwrap().data.etag
        );
        // The same inode under a path of another type gets that type, not the old path's.
        let c = d.path().join("c");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::hard_link(a.join("same.json"), c.join("same.txt")).unwrap();
        let s5 = Snapshot::build_reusing(&c, meta("c5"), &rules, Some(&s2)).unwrap();
        assert_eq!(
            s5.get("same.txt").unwrap().data.content_type,
            "text/plain; charset=utf-8"
        );
    }

    #[test]
    fn large_files_are_served_from_a_handle() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("big.csv"), "a,b\n".repeat(1000)).unwrap();
        let rules = CacheRules::new(&[], "public", false, 100, None).unwrap();
        let s = Snapshot::build(d.path(), meta("c"), &rules).unwrap();
        let e = s.get("big.csv").unwrap();
        assert!(matches!(e.data.content, Content::File(_)));
        assert_eq!(e.data.len, 4000);
        assert!(e.data.gzip.is_some() && e.data.brotli.is_some());
        // The streamed variants keep the in-memory size floors.
        std::fs::write(d.path().join("small.csv"), "a,b\n".repeat(250)).unwrap();
        std::fs::write(d.path().join("tiny.csv"), "a,b\n".repeat(25)).unwrap();
        let s = Snapshot::build(d.path(), meta("c"), &rules).unwrap();
        let small = &s.get("small.csv").unwrap().data;
        assert!(matches!(small.content, Content::File(_)));
        assert!(
            small.gzip.is_some() && small.brotli.is_none(),
            "1000 B: gzip only"
        );
        let tiny = &s.get("tiny.csv").unwrap().data;
        assert!(tiny.gzip.is_none() && tiny.brotli.is_none(), "100 B: none");
    }

    #[test]
    fn waiting_snapshot_says_none() {
        let s = Snapshot::waiting();
        assert!(s.is_waiting());
        assert_eq!(s.cut_header(), "none");
        assert!(s.get("index.html").is_some());
    }
}
