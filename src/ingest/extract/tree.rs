#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
//! The tree a package creates: which normalised paths it holds (so duplicates, a file and a
//! directory of the same name, and paths "inside" a file or link are refused), its implicit
//! parent directories, the entry count; and the writing of that tree into the cut directory.
//!
//! Owns: `Tree` (bookkeeping, no I/O) and `Out` (every filesystem call of the extractor, all
//! through one `cap_std::fs::Dir`).
//!
//! Must never: open an existing file for writing (in increment mode it is a hard link shared
//! with the live cut: writing it would change the published cut under its readers), change
//! the permissions or times of anything it did not create, or follow a symlink while writing
//! (every parent of a written path is a directory this run created or checked with `lstat`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::time::{Duration, SystemTime};

use cap_std::fs::PermissionsExt;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt, Permissions};

use super::ExtractError;
use super::names::shown;

/// Mode of every file we write, whatever the archive says.
const FILE_MODE: u32 = 0o644;
/// Mode of every directory we create.
const DIR_MODE: u32 = 0o755;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Link,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    kind: Kind,
    /// A directory that was only created as somebody's parent so far; an explicit entry for
    /// it later is not a duplicate.
    implicit: bool,
}

/// Bookkeeping of the paths a package creates, in archive order.
pub(crate) struct Tree {
    nodes: HashMap<String, Node>,
    max_entries: u64,
    /// Files + dirs (explicit and implicit) + links.
    pub entries: u64,
    /// Regular files (and tar hard links, which are regular files on disk).
    pub files: u64,
    /// Paths of the files, in the order they were added.
    pub written: Vec<String>,
    /// Directories added (explicitly or as parents) and not yet created on disk, in an order
    /// where a parent always comes before its children. Drained by the readers.
    pub new_dirs: Vec<String>,
}

impl Tree {
    pub fn new(max_entries: u64) -> Self {
        Tree {
            nodes: HashMap::new(),
            max_entries,
            entries: 0,
            files: 0,
            written: Vec::new(),
            new_dirs: Vec::new(),
        }
    }

    pub fn kind(&self, path: &str) -> Option<Kind> {
        self.nodes.get(path).map(|n| n.kind)
    }

    fn count(&mut self) -> Result<(), ExtractError> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(ExtractError::TooManyEntries {
                limit: self.max_entries,
            });
        }
        Ok(())
    }

    /// Adds a normalised path. Its missing parents become implicit directories (counted as
    /// entries). Refuses a path seen before (as anything), a directory where a file or link
    /// is, and a path below a file or link.
    pub fn add(&mut self, path: &str, kind: Kind) -> Result<(), ExtractError> {
        // Find the deepest ancestor that already exists; everything below it is new. Walking
        // up from the deepest parent stops at the first known directory, so a package of
        // thousands of files in a few directories does one lookup per file.
        let mut first_missing = None;
        for (slash, _) in path.rmatch_indices('/') {
            let parent = path.get(..slash).unwrap_or_default();
            match self.nodes.get(parent) {
                Some(Node {
                    kind: Kind::Dir, ..
                }) => break,
                Some(_) => {
                    return Err(ExtractError::DuplicatePath {
                        name: shown(path),
                        detail: "a parent of this path is a file or link of the package",
                    });
                }
                None => first_missing = Some(slash),
            }
        }
        if let Some(first) = first_missing {
            // Create the missing parents shallowest first.
            let mut from = 0;
            while let Some(rel) = path.get(from..).and_then(|rest| rest.find('/')) {
                let slash = from + rel;
                if slash >= first {
                    let parent = path.get(..slash).unwrap_or_default().to_owned();
                    self.count()?;
                    self.new_dirs.push(parent.clone());
                    self.nodes.insert(
                        parent,
                        Node {
                            kind: Kind::Dir,
                            implicit: true,
                        },
                    );
                }
                from = slash + 1;
            }
        }
        match self.nodes.entry(path.to_owned()) {
            Entry::Occupied(mut o) => {
                let node = o.get_mut();
                if node.kind == Kind::Dir && node.implicit && kind == Kind::Dir {
                    node.implicit = false;
                    return Ok(());
                }
                let detail = match (node.kind, kind) {
                    (Kind::Dir, Kind::Dir) => "the directory is listed twice",
                    (Kind::Dir, _) | (_, Kind::Dir) => "a file and a directory of the same name",
                    _ => "the path is listed twice",
                };
                return Err(ExtractError::DuplicatePath {
                    name: shown(path),
                    detail,
                });
            }
            Entry::Vacant(v) => {
                v.insert(Node {
                    kind,
                    implicit: false,
                });
            }
        }
        self.count()?;
        match kind {
            Kind::Dir => self.new_dirs.push(path.to_owned()),
            Kind::File => {
                self.files += 1;
                self.written.push(path.to_owned());
            }
            Kind::Link => {}
        }
        Ok(())
    }
}

/// A symlink of the package, kept until the whole tree is known.
pub(crate) struct LinkCheck {
    pub path: String,
    pub target: String,
    pub traversed: Vec<String>,
}

/// Refuses a symlink whose target walks through another symlink (of this package, or one the
/// previous cut left in `dest`): lexical resolution is only sound through real directories.
/// Runs after the last entry, since the other link may come later in the archive.
pub(crate) fn check_link_chains(
    links: &[LinkCheck],
    tree: &Tree,
    out: Option<&Out<'_>>,
) -> Result<(), ExtractError> {
    for l in links {
        for p in &l.traversed {
            let through_link = match tree.kind(p) {
                Some(Kind::Link) => true,
                Some(_) => false,
                None => out.is_some_and(|o| o.is_symlink(p)),
            };
            if through_link {
                return Err(ExtractError::LinkEscape {
                    name: shown(&l.path),
                    target: shown(&l.target),
                    reason: "the target passes through another link",
                });
            }
        }
    }
    Ok(())
}

/// Writes into the cut directory. Every call is relative to `dir`, so the kernel refuses any
/// path that would resolve outside it, whatever bug sits above.
pub(crate) struct Out<'a> {
    dir: &'a Dir,
    file_options: OpenOptions,
    /// The umask would strip bits from 0644/0755, so modes are set explicitly after create.
    chmod: bool,
}

impl<'a> Out<'a> {
    pub fn new(dir: &'a Dir) -> Self {
        let mut file_options = OpenOptions::new();
        file_options.write(true).create_new(true).mode(FILE_MODE);
        Out {
            dir,
            file_options,
            chmod: umask_interferes(),
        }
    }

    fn err(op: &'static str, path: &str, e: io::Error) -> ExtractError {
        ExtractError::io(op, path, e)
    }

    /// Removes whatever is at `path` (a file, a symlink, or a whole directory of the previous
    /// cut). Unlinking a hard link leaves the live cut's inode untouched; `remove_dir_all`
    /// never follows symlinks.
    fn remove_existing(&self, path: &str) -> Result<(), ExtractError> {
        let meta = self
            .dir
            .symlink_metadata(path)
            .map_err(|e| Self::err("inspecting", path, e))?;
        if meta.is_dir() {
            self.dir
                .remove_dir_all(path)
                .map_err(|e| Self::err("removing the old directory", path, e))
        } else {
            self.dir
                .remove_file(path)
                .map_err(|e| Self::err("removing the old file", path, e))
        }
    }

    /// Creates a directory; an existing directory is kept (it belongs to this cut: hard links
    /// are never directories), an existing file or link is replaced.
    pub fn create_dir(&self, path: &str) -> Result<(), ExtractError> {
        let mut builder = DirBuilder::new();
        builder.mode(DIR_MODE);
        match self.dir.create_dir_with(path, &builder) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = self
                    .dir
                    .symlink_metadata(path)
                    .map_err(|e| Self::err("inspecting", path, e))?;
                if meta.is_dir() {
                    return Ok(());
                }
                self.remove_existing(path)?;
                self.dir
                    .create_dir_with(path, &builder)
                    .map_err(|e| Self::err("creating the directory", path, e))?;
            }
            Err(e) => return Err(Self::err("creating the directory", path, e)),
        }
        if self.chmod {
            self.dir
                .set_permissions(path, Permissions::from_mode(DIR_MODE))
                .map_err(|e| Self::err("setting the mode of", path, e))?;
        }
        Ok(())
    }

    /// Creates a new file at `path` (a new inode: whatever was there is unlinked first).
    pub fn create_file(&self, path: &str) -> Result<std::fs::File, ExtractError> {
        let file = match self.dir.open_with(path, &self.file_options) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(path)?;
                self.dir
                    .open_with(path, &self.file_options)
                    .map_err(|e| Self::err("creating", path, e))?
            }
            Err(e) => return Err(Self::err("creating", path, e)),
        };
        let file = file.into_std();
        if self.chmod {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
                .map_err(|e| Self::err("setting the mode of", path, e))?;
        }
        Ok(file)
    }

    /// Sets a written file's modification time from the archive (seconds since the epoch).
    pub fn set_mtime(file: &std::fs::File, path: &str, mtime: i64) -> Result<(), ExtractError> {
        let t = if mtime >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(mtime.unsigned_abs()))
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(mtime.unsigned_abs()))
        };
        match t {
            Some(t) => file
                .set_modified(t)
                .map_err(|e| Self::err("setting the time of", path, e)),
            None => Ok(()),
        }
    }

    /// Creates a symlink (its target was checked to stay inside the cut).
    pub fn symlink(&self, target: &str, path: &str) -> Result<(), ExtractError> {
        match self.dir.symlink(target, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(path)?;
                self.dir
                    .symlink(target, path)
                    .map_err(|e| Self::err("creating the symlink", path, e))
            }
            Err(e) => Err(Self::err("creating the symlink", path, e)),
        }
    }

    /// Hard-links `path` to `target`, a file this package wrote earlier.
    pub fn hard_link(&self, target: &str, path: &str) -> Result<(), ExtractError> {
        match self.dir.hard_link(target, self.dir, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_existing(path)?;
                self.dir
                    .hard_link(target, self.dir, path)
                    .map_err(|e| Self::err("creating the hard link", path, e))
            }
            Err(e) => Err(Self::err("creating the hard link", path, e)),
        }
    }

    /// Whether `path` in the cut is a symlink (a link left by the previous cut).
    pub fn is_symlink(&self, path: &str) -> bool {
        self.dir
            .symlink_metadata(path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    }
}

/// Whether the process umask would turn 0644/0755 into something else. Read once per
/// extraction from /proc (reading it with umask(2) would mean setting it, racing other
/// threads); when unknown, assume it does and chmod every file.
fn umask_interferes() -> bool {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(_) => return true,
    };
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok());
    match umask {
        Some(m) => m & (FILE_MODE | DIR_MODE) != 0,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_parents_are_counted_once_and_explicit_dir_after_is_fine() {
        let mut t = Tree::new(100);
        t.add("a/b/c.json", Kind::File).unwrap();
        assert_eq!(t.new_dirs, ["a", "a/b"]);
        assert_eq!(t.entries, 3);
        t.add("a/b", Kind::Dir).unwrap();
        t.add("a/d.json", Kind::File).unwrap();
        assert_eq!(t.entries, 4);
        assert_eq!(t.files, 2);
        assert_eq!(t.written, ["a/b/c.json", "a/d.json"]);
    }

    #[test]
    fn duplicates_and_file_dir_clashes_are_refused() {
        let mut t = Tree::new(100);
        t.add("a/b", Kind::File).unwrap();
        assert_eq!(
            t.add("a/b", Kind::File).unwrap_err().kind(),
            "duplicate-path"
        );
        assert_eq!(
            t.add("a/b", Kind::Dir).unwrap_err().kind(),
            "duplicate-path"
        );
        assert_eq!(
            t.add("a/b/c", Kind::File).unwrap_err().kind(),
            "duplicate-path"
        );
        assert_eq!(t.add("a", Kind::File).unwrap_err().kind(), "duplicate-path");
        t.add("d", Kind::Dir).unwrap();
        assert_eq!(t.add("d", Kind::Dir).unwrap_err().kind(), "duplicate-path");
        t.add("l", Kind::Link).unwrap();
        assert_eq!(
            t.add("l/x", Kind::File).unwrap_err().kind(),
            "duplicate-path"
        );
    }

    #[test]
    fn entry_limit_counts_implicit_dirs() {
        let mut t = Tree::new(2);
        assert_eq!(
            t.add("a/b/c", Kind::File).unwrap_err().kind(),
            "too-many-entries"
        );
    }
}
