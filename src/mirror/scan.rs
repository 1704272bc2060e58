//! What a cut publishes, file by file, as the mirror needs it: key, source file, SHA-256,
//! size, `Content-Type` and `Cache-Control`.
//!
//! Owns: [`scan_cut`], the same selection the HTTPS snapshot makes (`publish`: regular files;
//! symlinks only when they resolve to a file inside the cut, as a copy of it; dotfiles only
//! with `web.serve_dotfiles`; names the request decoder would refuse are skipped), and
//! [`HashCache`], which keeps the SHA-256 of a file by inode so the hard links of an increment
//! (same device and inode as in the previous cut) are not read again.
//!
//! Must never: write anything, follow a link out of the cut, or hold more of the cut in memory
//! than the caller's budget for the small files it hands over with their bytes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::client::{Bucket, ObjectHeaders};
use crate::publish::Stamp;
use crate::web::cache_control::CacheRules;
use crate::web::content_type;

/// One object the cut puts in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutFile {
    /// Where its bytes are on disk (for a symlink: the file it resolves to).
    pub source: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub headers: ObjectHeaders,
}

/// SHA-256 by inode, kept from one scan to the next (only what the last scan saw).
#[derive(Debug, Default)]
pub struct HashCache {
    by_stamp: HashMap<Stamp, String>,
    /// Files hashed (not found in the cache) by the last scan.
    pub last_hashed: usize,
}

/// The cut's files by key (path inside the cut, `/`-separated).
pub type CutFiles = BTreeMap<String, CutFile>;

/// Files up to this size that have to be read for their hash are read whole, and
/// [`scan_cut_each`] hands their bytes on with them.
// PERF: an increment is mostly small JSON files; reading each once (for the hash and the PUT)
// spares the uploader a blocking-thread round trip and a second open and read per file.
pub const CARRY_MAX_FILE: u64 = 256 << 10;

/// Lists and hashes every file of `cut_dir` that the HTTPS server would serve. Blocking.
pub fn scan_cut(cut_dir: &Path, rules: &CacheRules, cache: &mut HashCache) -> io::Result<CutFiles> {
    scan_cut_each(cut_dir, rules, cache, 0, &mut |_, _, _| {})
}

/// [`scan_cut`], handing each file to `each` as soon as it is hashed (the mirror starts
/// uploading while the rest of the cut is still being read). A file that had to be read for
/// its hash and is at most [`CARRY_MAX_FILE`] bytes comes with its bytes, while the ones
/// handed over so far total at most `carry_budget` bytes.
pub fn scan_cut_each(
    cut_dir: &Path,
    rules: &CacheRules,
    cache: &mut HashCache,
    mut carry_budget: u64,
    each: &mut dyn FnMut(&str, &CutFile, Option<Bytes>),
) -> io::Result<CutFiles> {
    let root = cut_dir.canonicalize()?;
    let mut found = Vec::new();
    let mut links = Vec::new();
    crate::publish::walk(
        &root,
        String::new(),
        rules.serve_dotfiles,
        &mut found,
        &mut links,
    )?;
    let mut next: HashMap<Stamp, String> = HashMap::with_capacity(found.len());
    let mut hashed = 0usize;
    // What the links resolve to (only kept when the cut has links).
    let mut by_path: HashMap<PathBuf, (String, u64)> = HashMap::new();
    let mut out = CutFiles::new();
    for (key, path, meta) in found {
        let stamp = Stamp::of(&meta);
        let mut body = None;
        let sha = match cache.by_stamp.get(&stamp).or_else(|| next.get(&stamp)) {
            Some(s) => s.clone(),
            None if carry_budget > 0 && meta.len() <= CARRY_MAX_FILE.min(carry_budget) => {
                hashed += 1;
                let bytes = read_no_follow(&path, meta.len())?;
                if bytes.len() as u64 != meta.len() {
                    // Cut files are never written after the cut is made; refuse to guess.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} changed size while it was read", path.display()),
                    ));
                }
                carry_budget -= meta.len();
                let sha = crate::ingest::checksum::sha256_hex(&bytes);
                body = Some(Bytes::from(bytes));
                sha
            }
            None => {
                hashed += 1;
                crate::ingest::checksum::sha256_file(&path)?
            }
        };
        next.insert(stamp, sha.clone());
        if !links.is_empty() {
            by_path.insert(path.clone(), (sha.clone(), meta.len()));
        }
        if !Bucket::valid_key(&key) {
            tracing::warn!(key = %key, "file name cannot be an object key; not mirrored");
            continue;
        }
        let file = CutFile {
            source: path,
            sha256: sha,
            size: meta.len(),
            headers: headers_for(&key, rules),
        };
        each(&key, &file, body);
        out.insert(key, file);
    }
    // Links inside the cut are copies of what they point at, as the snapshot serves them.
    for (key, link) in links {
        let Ok(target) = link.canonicalize() else {
            continue;
        };
        if !target.starts_with(&root) || !Bucket::valid_key(&key) {
            continue;
        }
        if let Some((sha, size)) = by_path.get(&target) {
            let file = CutFile {
                source: target,
                sha256: sha.clone(),
                size: *size,
                headers: headers_for(&key, rules),
            };
            each(&key, &file, None);
            out.insert(key, file);
        }
    }
    cache.by_stamp = next;
    cache.last_hashed = hashed;
    Ok(out)
}

/// The whole file at `path` (which the walk saw as a regular file of `len` bytes), refusing a
/// link swapped in since: its bytes go to a public bucket.
fn read_no_follow(path: &Path, len: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = crate::publish::open_no_follow(path)?;
    let mut bytes = Vec::with_capacity(len as usize);
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The `Content-Type` and `Cache-Control` the HTTPS server sends for `key`.
pub fn headers_for(key: &str, rules: &CacheRules) -> ObjectHeaders {
    ObjectHeaders {
        content_type: content_type::for_path(key).0.to_owned(),
        cache_control: rules
            .for_path(key)
            .to_str()
            .unwrap_or("no-cache")
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn hard_links_are_not_hashed_again_and_headers_follow_the_server() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        for c in [&a, &b] {
            fs::create_dir_all(c.join("json")).unwrap();
        }
        fs::write(a.join("index.html"), "<h1>x</h1>").unwrap();
        fs::write(a.join("json/main.json"), "{\"c\":1}").unwrap();
        fs::write(a.join(".env"), "secret").unwrap();
        std::os::unix::fs::symlink("index.html", a.join("alias.html")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.join("leak.txt")).unwrap();
        let rules = CacheRules::defaults();
        let mut cache = HashCache::default();
        let one = scan_cut(&a, &rules, &mut cache).unwrap();
        assert_eq!(
            one.keys().collect::<Vec<_>>(),
            ["alias.html", "index.html", "json/main.json"]
        );
        assert_eq!(cache.last_hashed, 2);
        assert_eq!(one["alias.html"].sha256, one["index.html"].sha256);
        assert_eq!(
            one["json/main.json"].headers.cache_control,
            "no-cache, no-store, must-revalidate"
        );
        assert_eq!(
            one["json/main.json"].headers.content_type,
            "application/json; charset=utf-8"
        );
        fs::hard_link(a.join("index.html"), b.join("index.html")).unwrap();
        fs::write(b.join("json/main.json"), "{\"c\":2}").unwrap();
        let two = scan_cut(&b, &rules, &mut cache).unwrap();
        assert_eq!(cache.last_hashed, 1, "the hard link was not re-read");
        assert_eq!(two["index.html"].sha256, one["index.html"].sha256);
        assert_ne!(two["json/main.json"].sha256, one["json/main.json"].sha256);
    }

    #[test]
    fn files_read_for_their_hash_come_with_their_bytes_within_the_budget() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.json"), "[1]").unwrap();
        fs::write(d.path().join("b.json"), "[22]").unwrap();
        fs::write(d.path().join("c.json"), "[333]").unwrap();
        let rules = CacheRules::defaults();
        let mut cache = HashCache::default();
        let mut carried = BTreeMap::new();
        // 8 bytes of budget: two of the three files fit, whichever order the walk gives.
        let files = scan_cut_each(d.path(), &rules, &mut cache, 8, &mut |k, f, body| {
            if let Some(b) = body {
                assert_eq!(b.len() as u64, f.size);
                assert_eq!(crate::ingest::checksum::sha256_hex(&b), f.sha256);
                carried.insert(k.to_owned(), b);
            }
        })
        .unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(
            carried.len(),
            2,
            "files of 3, 4 and 5 bytes: in any order two fit in 8, three never"
        );
        assert!(carried.values().map(|b| b.len()).sum::<usize>() <= 8);
        assert_eq!(
            files["b.json"].sha256,
            crate::ingest::checksum::sha256_file(&d.path().join("b.json")).unwrap()
        );
        // Known files (the cache) are not read again, so they come without bytes.
        let mut again = 0;
        scan_cut_each(d.path(), &rules, &mut cache, 1 << 20, &mut |_, _, body| {
            again += usize::from(body.is_some());
        })
        .unwrap();
        assert_eq!(again, 0);
        assert_eq!(cache.last_hashed, 0);
    }
}
