//! What changed between two cut directories.
//!
//! Owns: [`diff_cuts`], the one answer to "which files of this cut are new or different from
//! the previous cut, and which are gone" — for the CDN purge, the notifiers' counts and the
//! object-storage mirror. A file is unchanged when it is the very same inode as before (an
//! increment hard-links every file it did not replace) or, failing that, has the same size and
//! the same bytes (a replace-mode cut, or an increment re-sending a file unchanged).
//!
//! Must never: write anything, follow a symbolic link (links are compared by their target),
//! or read a whole file into memory (contents are compared in fixed-size blocks).

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Files of a cut that differ from the previous cut: paths relative to the cut, `/`-separated,
/// sorted. Directories are never listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutDiff {
    /// New or modified files (and symbolic links) in the new cut.
    pub changed: Vec<String>,
    /// Files (and links) of the previous cut that the new cut does not have.
    pub removed: Vec<String>,
}

/// Compares cut `new` with `previous`. With no previous cut, or one whose directory no longer
/// exists (pruned, or this is the first cut), every file of `new` is changed.
pub fn diff_cuts(previous: Option<&Path>, new: &Path) -> io::Result<CutDiff> {
    let new_files = list_files(new)?;
    let old_files = match previous {
        Some(p) => match list_files(p) {
            Ok(files) => files,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        },
        None => BTreeMap::new(),
    };
    let mut diff = CutDiff::default();
    for (rel, new_entry) in &new_files {
        let unchanged = match old_files.get(rel) {
            Some(old_entry) => same_entry(old_entry, new_entry)?,
            None => false,
        };
        if !unchanged {
            diff.changed.push(rel.clone());
        }
    }
    diff.removed = old_files
        .keys()
        .filter(|rel| !new_files.contains_key(*rel))
        .cloned()
        .collect();
    Ok(diff)
}

/// A non-directory entry of a cut.
struct Entry {
    path: PathBuf,
    meta: Metadata,
}

/// Every non-directory entry under `root`, by relative `/`-separated path (sorted by the map).
fn list_files(root: &Path) -> io::Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    // Fails with NotFound when the cut directory itself is missing.
    let top = fs::symlink_metadata(root)?;
    if !top.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                // The extractor only ever writes UTF-8 names; anything else is not a cut.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: a name that is not UTF-8", dir.display()),
                ));
            };
            let rel = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                pending.push((path, rel));
            } else {
                out.insert(rel, Entry { path, meta });
            }
        }
    }
    Ok(out)
}

fn same_entry(old: &Entry, new: &Entry) -> io::Result<bool> {
    let (o, n) = (&old.meta, &new.meta);
    if o.file_type().is_symlink() || n.file_type().is_symlink() {
        return Ok(o.file_type().is_symlink()
            && n.file_type().is_symlink()
            && fs::read_link(&old.path)? == fs::read_link(&new.path)?);
    }
    if o.dev() == n.dev() && o.ino() == n.ino() {
        return Ok(true);
    }
    if !(o.is_file() && n.is_file()) || o.len() != n.len() {
        return Ok(false);
    }
    same_bytes(&old.path, &new.path)
}

/// Compares two files of equal length block by block, stopping at the first difference.
fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    const BLOCK: usize = 64 * 1024;
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na < BLOCK {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A previous cut `a` with a few files in nested directories.
    fn previous(root: &Path) -> PathBuf {
        let a = root.join("a");
        write(&a, "index.html", b"<h1>1</h1>");
        write(&a, "json/main.json", b"{\"cut\":1}");
        write(&a, "json/e/01.json", b"{\"e\":1}");
        write(&a, "css/site.css", b"body{}");
        a
    }

    /// Hard-links every file of `from` into `to` (what an increment starts with).
    fn link_all(from: &Path, to: &Path) {
        for (rel, e) in list_files(from).unwrap() {
            let dst = to.join(&rel);
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::hard_link(&e.path, dst).unwrap();
        }
    }

    #[test]
    fn first_cut_or_pruned_previous_changes_everything() {
        let t = tempfile::tempdir().unwrap();
        let a = previous(t.path());
        let all = strings(&[
            "css/site.css",
            "index.html",
            "json/e/01.json",
            "json/main.json",
        ]);
        let d = diff_cuts(None, &a).unwrap();
        assert_eq!(d.changed, all);
        assert!(d.removed.is_empty());
        let d = diff_cuts(Some(&t.path().join("pruned")), &a).unwrap();
        assert_eq!(d.changed, all);
        assert!(d.removed.is_empty());
    }

    #[test]
    fn increment_hard_links_are_unchanged_new_inodes_are_compared() {
        let t = tempfile::tempdir().unwrap();
        let a = previous(t.path());
        let b = t.path().join("b");
        link_all(&a, &b);
        // Replaced files get new inodes: one with new bytes, one re-sent identical, one with
        // the same length but different bytes; plus a new file.
        for rel in ["json/main.json", "css/site.css", "json/e/01.json"] {
            fs::remove_file(b.join(rel)).unwrap();
        }
        write(&b, "json/main.json", b"{\"cut\":22}");
        write(&b, "css/site.css", b"body{}");
        write(&b, "json/e/01.json", b"{\"e\":2}");
        write(&b, "json/e/02.json", b"{}");
        let d = diff_cuts(Some(&a), &b).unwrap();
        assert_eq!(
            d.changed,
            strings(&["json/e/01.json", "json/e/02.json", "json/main.json"])
        );
        assert!(d.removed.is_empty());
    }

    #[test]
    fn replace_compares_contents_and_lists_removals() {
        let t = tempfile::tempdir().unwrap();
        let a = previous(t.path());
        let b = t.path().join("b");
        write(&b, "index.html", b"<h1>1</h1>"); // identical copy
        write(&b, "json/main.json", b"{\"cut\":2}"); // same length, other bytes
        write(&b, "css/site.css", b"body{color:red}"); // other length
        // A file bigger than one comparison block that differs only in its last byte.
        let mut big = vec![7u8; 200_000];
        write(&a, "img/big.bin", &big);
        *big.last_mut().unwrap() = 8;
        write(&b, "img/big.bin", &big);
        let same = vec![9u8; 150_000];
        write(&a, "img/same.bin", &same);
        write(&b, "img/same.bin", &same);
        let d = diff_cuts(Some(&a), &b).unwrap();
        assert_eq!(
            d.changed,
            strings(&["css/site.css", "img/big.bin", "json/main.json"])
        );
        assert_eq!(d.removed, strings(&["json/e/01.json"]));
    }

    #[test]
    fn symlinks_are_compared_by_target_and_directories_never_listed() {
        let t = tempfile::tempdir().unwrap();
        let a = previous(t.path());
        let b = t.path().join("b");
        link_all(&a, &b);
        std::os::unix::fs::symlink("index.html", a.join("home.html")).unwrap();
        std::os::unix::fs::symlink("index.html", b.join("home.html")).unwrap();
        std::os::unix::fs::symlink("json/main.json", a.join("latest.json")).unwrap();
        std::os::unix::fs::symlink("json/e/01.json", b.join("latest.json")).unwrap();
        fs::create_dir_all(b.join("empty/dir")).unwrap();
        let d = diff_cuts(Some(&a), &b).unwrap();
        assert_eq!(d.changed, strings(&["latest.json"]));
        assert!(d.removed.is_empty());
    }

    #[test]
    fn a_missing_new_cut_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let a = previous(t.path());
        assert!(diff_cuts(Some(&a), &t.path().join("nope")).is_err());
    }
}
