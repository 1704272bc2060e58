#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
//! Safe, verifying extraction of one results package (`.zip` or `.tar.gz`) into a new cut
//! directory.
//!
//! Owns: recognising the package format ([`detect_format`]), the archive's own integrity checks
//! (zip CRC-32 and local/central agreement, gzip CRC and length trailer, tar header checksums,
//! truncation anywhere), the extraction rules of the design (no absolute paths, no `..`, no
//! links leading out, no device files, no duplicate paths, limits on size, entry count and
//! compression ratio) and writing the tree, all in one streaming pass over the package.
//!
//! Must never: write outside `dest` (every write goes through a `cap_std::fs::Dir` opened on
//! it), open an existing file of `dest` for writing (in increment mode those are hard links
//! shared with the live cut), trust a size or count that an archive header declares as a reason
//! to *accept* (only to reject early), hold a whole entry or the whole package in memory,
//! unpack a nested archive, or preserve permissions, owners or setuid bits from the archive.
//!
//! Layout: `names.rs` decodes and normalises entry names and link targets; `tree.rs` keeps the
//! set of paths a package creates (duplicates, implicit parents, the entry count) and does the
//! writing into `dest`; `zip.rs` reads zip archives (central directory first, then each entry's
//! data once, on two threads); `gzip.rs` is our own gzip member reader (so every failure maps to
//! a precise error kind) and `tar.rs` reads the tar stream from it.
//!
//! Multi-member gzip (concatenated `.gz` files, as `cat a.gz b.gz` or bgzip produce) is accepted
//! and read as one stream: it is valid gzip and each member's trailer is still verified. Bytes
//! after the last member that are not another gzip member are refused as corrupt.

mod gzip;
mod names;
mod tar;
mod tree;
mod zip;

#[cfg(test)]
mod testkit;

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A package's container format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// PKZIP archive (stored or deflated entries).
    Zip,
    /// A tar archive in a gzip stream (`.tar.gz` / `.tgz`).
    TarGz,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Zip => "zip",
            Format::TarGz => "tar.gz",
        })
    }
}

/// Limits that turn a hostile or broken package into a rejection instead of a full disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total uncompressed bytes of all files, counted from the bytes actually produced.
    pub max_total_bytes: u64,
    /// Files + directories (explicit and implicit) + links.
    pub max_entries: u64,
    /// Largest uncompressed/compressed ratio, per entry (once the entry is bigger than
    /// [`RATIO_FLOOR`]) and for the whole package (once its output is bigger than that).
    pub max_ratio: u64,
    /// Whether symbolic and (tar) hard links are accepted at all; even then they must stay
    /// inside the cut.
    pub allow_links: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 4 << 30,
            max_entries: 200_000,
            max_ratio: 200,
            allow_links: false,
        }
    }
}

/// The ratio limit only applies to outputs bigger than this: a 300-byte JSON file of zeros
/// and commas compresses 50:1 and is no bomb. Below 1 MiB an entry cannot hurt anyone.
pub const RATIO_FLOOR: u64 = 1 << 20;
/// Longest name component (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest normalised path (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// What a package contains (or, for [`extract`], what was written).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Files + directories (including implicitly created parents) + links.
    pub entries: u64,
    /// Regular files written (tar hard links count: on disk they are regular files).
    pub files: u64,
    /// Bytes of file data written, as counted while writing.
    pub uncompressed_bytes: u64,
    /// Zip: the sum of the entries' compressed sizes; tar.gz: the size of the gzip file.
    pub compressed_bytes: u64,
    /// Relative '/'-separated paths of the files written, in archive order (zip: central
    /// directory order).
    pub written: Vec<String>,
}

/// Why a package was refused. Every message names the entry it is about; see
/// [`ExtractError::kind`] for the closed set of machine labels.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The bytes are not the format the name says, or not an archive at all.
    #[error("wrong format: {reason}")]
    WrongFormat { reason: String },
    /// The package ends before the archive does (cut-short upload).
    #[error("truncated package: {detail}")]
    Truncated { detail: String },
    /// A checksum, length or header disagrees with the data.
    #[error("corrupt package: {detail}")]
    Corrupt { detail: String },
    /// An entry name that could land outside the cut, or is not a plain relative path.
    #[error("unsafe path {name:?}: {reason}")]
    UnsafePath { name: String, reason: &'static str },
    /// A link whose target is outside the cut.
    #[error("link {name:?} points outside the cut (target {target:?}): {reason}")]
    LinkEscape {
        name: String,
        target: String,
        reason: &'static str,
    },
    /// A link in a package while links are not allowed.
    #[error("link {name:?} refused: links are not allowed in packages")]
    LinkNotAllowed { name: String },
    /// A device, FIFO, socket or any other entry that is not a file, directory or link.
    #[error(
        "special file {name:?} refused: {what} (only files, directories and links may be published)"
    )]
    SpecialFile { name: String, what: String },
    /// The same normalised path twice, or a path both a file and a directory.
    #[error("duplicate path {name:?}: {detail}")]
    DuplicatePath { name: String, detail: &'static str },
    /// A name component over 255 bytes or a path over 4096 bytes.
    #[error("name too long: {detail}: {name:?}")]
    NameTooLong { name: String, detail: String },
    /// More entries than [`Limits::max_entries`].
    #[error("too many entries: more than {limit} files, directories and links")]
    TooManyEntries { limit: u64 },
    /// More uncompressed bytes than [`Limits::max_total_bytes`].
    #[error("package too large: more than {limit} bytes uncompressed (limit reached at {name:?})")]
    TooLarge { limit: u64, name: String },
    /// An entry or the whole package expands more than [`Limits::max_ratio`].
    #[error("compression ratio exceeded: {detail}")]
    RatioExceeded { detail: String },
    /// A valid archive without a single entry.
    #[error("empty archive: the package contains no entries")]
    Empty,
    /// Zip entries whose data ranges overlap (the overlapping-file zip bomb).
    #[error("overlapping entries: {name:?} {detail}")]
    OverlappingEntries { name: String, detail: String },
    /// A zip entry protected by encryption.
    #[error("encrypted entry {name:?}: encrypted packages are not supported")]
    Encrypted { name: String },
    /// A zip compression method other than stored/deflate, or an archive feature we do not
    /// read (multi-disk zip, tar sparse files).
    #[error("unsupported {what} in {name:?}")]
    Unsupported { name: String, what: String },
    /// Our own disk error while reading the package or writing the cut.
    #[error("i/o error {op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl ExtractError {
    /// Closed set of machine labels, for metrics and incidents.
    pub fn kind(&self) -> &'static str {
        match self {
            ExtractError::WrongFormat { .. } => "wrong-format",
            ExtractError::Truncated { .. } => "truncated",
            ExtractError::Corrupt { .. } => "corrupt",
            ExtractError::UnsafePath { .. } => "unsafe-path",
            ExtractError::LinkEscape { .. } => "link-escape",
            ExtractError::LinkNotAllowed { .. } => "link-not-allowed",
            ExtractError::SpecialFile { .. } => "special-file",
            ExtractError::DuplicatePath { .. } => "duplicate-path",
            ExtractError::NameTooLong { .. } => "name-too-long",
            ExtractError::TooManyEntries { .. } => "too-many-entries",
            ExtractError::TooLarge { .. } => "too-large",
            ExtractError::RatioExceeded { .. } => "ratio-exceeded",
            ExtractError::Empty => "empty-archive",
            ExtractError::OverlappingEntries { .. } => "overlapping-entries",
            ExtractError::Encrypted { .. } => "encrypted",
            ExtractError::Unsupported { .. } => "unsupported",
            ExtractError::Io { .. } => "io",
        }
    }

    /// Every label [`ExtractError::kind`] can return, for pre-registering metric series.
    pub const KINDS: [&'static str; 17] = [
        "wrong-format",
        "truncated",
        "corrupt",
        "unsafe-path",
        "link-escape",
        "link-not-allowed",
        "special-file",
        "duplicate-path",
        "name-too-long",
        "too-many-entries",
        "too-large",
        "ratio-exceeded",
        "empty-archive",
        "overlapping-entries",
        "encrypted",
        "unsupported",
        "io",
    ];

    pub(crate) fn corrupt(detail: impl Into<String>) -> Self {
        ExtractError::Corrupt {
            detail: detail.into(),
        }
    }

    pub(crate) fn truncated(detail: impl Into<String>) -> Self {
        ExtractError::Truncated {
            detail: detail.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl AsRef<str>, source: io::Error) -> Self {
        ExtractError::Io {
            op,
            path: names::shown(path.as_ref()),
            source,
        }
    }
}

/// Recognises the package format by its magic bytes and checks that the name agrees.
///
/// A `.zip` must start with a local header (`PK\3\4`); one that is only an end record
/// (`PK\5\6`) is an empty archive. A `.tar.gz`/`.tgz` must be a gzip stream (`1f 8b`).
pub fn detect_format(path: &Path, file_name: &str) -> Result<Format, ExtractError> {
    let lower = file_name.to_ascii_lowercase();
    let named = if lower.ends_with(".zip") {
        Format::Zip
    } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        Format::TarGz
    } else {
        return Err(ExtractError::WrongFormat {
            reason: format!(
                "{:?} is not named .zip, .tar.gz or .tgz",
                names::shown(file_name)
            ),
        });
    };
    let mut magic = [0u8; 4];
    let mut file =
        std::fs::File::open(path).map_err(|e| ExtractError::io("opening", path_str(path), e))?;
    let mut got = 0;
    while got < magic.len() {
        let n = match magic.get_mut(got..) {
            Some(rest) => file
                .read(rest)
                .map_err(|e| ExtractError::io("reading", path_str(path), e))?,
            None => 0,
        };
        if n == 0 {
            break;
        }
        got += n;
    }
    let actual = match (got, magic) {
        (0, _) => {
            return Err(ExtractError::WrongFormat {
                reason: "the file is empty (0 bytes)".into(),
            });
        }
        (4, [b'P', b'K', 3, 4]) => "zip",
        (4, [b'P', b'K', 5, 6]) => "empty-zip",
        (4, [b'P', b'K', 7, 8]) => "split-zip",
        (n, [0x1f, 0x8b, ..]) if n >= 2 => "gzip",
        _ => "other",
    };
    match (named, actual) {
        (Format::Zip, "zip") => Ok(Format::Zip),
        (Format::Zip, "empty-zip") => Err(ExtractError::Empty),
        (Format::TarGz, "gzip") => Ok(Format::TarGz),
        (_, "split-zip") => Err(ExtractError::WrongFormat {
            reason: "this is one part of a split (multi-volume) zip archive".into(),
        }),
        (Format::Zip, "gzip") => Err(ExtractError::WrongFormat {
            reason: "named .zip but is a gzip stream".into(),
        }),
        (Format::TarGz, "zip" | "empty-zip") => Err(ExtractError::WrongFormat {
            reason: "named .tar.gz but is a zip archive".into(),
        }),
        _ => Err(ExtractError::WrongFormat {
            reason: "not a zip or gzip file".into(),
        }),
    }
}

/// Extracts `package` into the existing directory `dest`, verifying integrity in the same
/// single streaming pass.
///
/// `dest` may already hold the previous cut as hard links (increment mode): a package file at
/// an existing path is written to a new inode (the old name is unlinked first, never opened for
/// writing); a package directory replaces a file or link of the same name and a package file
/// replaces a directory. On error the caller discards `dest` entirely.
pub fn extract(
    package: &Path,
    format: Format,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    let dir = cap_std::fs::Dir::open_ambient_dir(dest, cap_std::ambient_authority())
        .map_err(|e| ExtractError::io("opening the cut directory", path_str(dest), e))?;
    run(package, format, Some(&dir), limits)
}

/// Same checks as [`extract`] without writing anything (for `difusor verify PACKAGE`),
/// returning what would be published.
pub fn verify_only(
    package: &Path,
    format: Format,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    run(package, format, None, limits)
}

fn run(
    package: &Path,
    format: Format,
    dest: Option<&cap_std::fs::Dir>,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    let file = std::fs::File::open(package)
        .map_err(|e| ExtractError::io("opening", path_str(package), e))?;
    let len = file
        .metadata()
        .map_err(|e| ExtractError::io("reading metadata of", path_str(package), e))?
        .len();
    let out = dest.map(tree::Out::new);
    let ctx = Ctx {
        limits: limits.clone(),
        package_len: len,
        package_name: path_str(package),
        file_bytes: AtomicU64::new(0),
    };
    match format {
        Format::Zip => zip::run(&file, package, out.as_ref(), &ctx),
        Format::TarGz => tar::run(file, out.as_ref(), &ctx),
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// What every reader shares: the limits and the running byte count (atomic: zip entries are
/// written by two threads at once).
pub(crate) struct Ctx {
    pub limits: Limits,
    /// Size of the package file: the denominator of the overall ratio.
    pub package_len: u64,
    /// For i/o error messages about the package itself.
    pub package_name: String,
    /// File bytes written so far (all threads).
    pub file_bytes: AtomicU64,
}

impl Ctx {
    /// Accounts `n` more bytes of file data for `name`; refuses once the total is over the
    /// limit. Returns the new total.
    pub fn add_file_bytes(&self, n: u64, name: &str) -> Result<u64, ExtractError> {
        let total = self
            .file_bytes
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        if total > self.limits.max_total_bytes {
            return Err(ExtractError::TooLarge {
                limit: self.limits.max_total_bytes,
                name: names::shown(name),
            });
        }
        Ok(total)
    }

    /// The whole package's expansion: `produced` bytes out of a `package_len`-byte file.
    pub fn check_overall_ratio(&self, produced: u64) -> Result<(), ExtractError> {
        if over_ratio(produced, self.package_len, self.limits.max_ratio) {
            return Err(ExtractError::RatioExceeded {
                detail: format!(
                    "the package expands to more than {produced} bytes from {} bytes \
                     (more than {}:1 overall)",
                    self.package_len, self.limits.max_ratio
                ),
            });
        }
        Ok(())
    }

    /// One entry's expansion: `produced` bytes so far from `compressed` bytes.
    pub fn check_entry_ratio(
        &self,
        name: &str,
        produced: u64,
        compressed: u64,
    ) -> Result<(), ExtractError> {
        if over_ratio(produced, compressed, self.limits.max_ratio) {
            return Err(ExtractError::RatioExceeded {
                detail: format!(
                    "entry {:?} expands to more than {produced} bytes from {compressed} \
                     compressed bytes (more than {}:1)",
                    names::shown(name),
                    self.limits.max_ratio
                ),
            });
        }
        Ok(())
    }
}

fn over_ratio(produced: u64, compressed: u64, max_ratio: u64) -> bool {
    produced > RATIO_FLOOR && produced > compressed.max(1).saturating_mul(max_ratio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn detect_format_accepts_matching_magic() {
        let t = tempfile::tempdir().unwrap();
        let z = write_tmp(t.path(), "a.zip", b"PK\x03\x04rest");
        assert_eq!(
            detect_format(&z, "20240602_2015_PREP.zip").unwrap(),
            Format::Zip
        );
        let g = write_tmp(t.path(), "a.tgz", &[0x1f, 0x8b, 8, 0, 0]);
        assert_eq!(detect_format(&g, "x.tar.gz").unwrap(), Format::TarGz);
        assert_eq!(detect_format(&g, "X.TGZ").unwrap(), Format::TarGz);
    }

    #[test]
    fn detect_format_zip_that_is_gzip_is_wrong_format() {
        let t = tempfile::tempdir().unwrap();
        let g = write_tmp(t.path(), "a", &[0x1f, 0x8b, 8, 0, 0, 0]);
        let e = detect_format(&g, "20240602_2015_PREP.zip").unwrap_err();
        assert_eq!(e.kind(), "wrong-format");
        assert!(
            e.to_string().contains("named .zip but is a gzip stream"),
            "{e}"
        );
    }

    #[test]
    fn detect_format_garbage_is_wrong_format() {
        let t = tempfile::tempdir().unwrap();
        let g = write_tmp(t.path(), "a", b"<html>not a zip</html>");
        let e = detect_format(&g, "a.zip").unwrap_err();
        assert_eq!(e.kind(), "wrong-format");
        assert!(e.to_string().contains("not a zip or gzip file"), "{e}");
        let e = detect_format(&g, "a.tar.gz").unwrap_err();
        assert!(e.to_string().contains("not a zip or gzip file"), "{e}");
        let z = write_tmp(t.path(), "b", b"PK\x03\x04");
        let e = detect_format(&z, "a.tar.gz").unwrap_err();
        assert!(
            e.to_string().contains("named .tar.gz but is a zip archive"),
            "{e}"
        );
        let e = detect_format(&z, "a.rar").unwrap_err();
        assert_eq!(e.kind(), "wrong-format");
        let empty = write_tmp(t.path(), "c", b"");
        assert_eq!(
            detect_format(&empty, "a.zip").unwrap_err().kind(),
            "wrong-format"
        );
    }

    #[test]
    fn detect_format_empty_zip_end_record_is_empty_archive() {
        let t = tempfile::tempdir().unwrap();
        let mut eocd = b"PK\x05\x06".to_vec();
        eocd.extend_from_slice(&[0; 18]);
        let z = write_tmp(t.path(), "a", &eocd);
        assert_eq!(
            detect_format(&z, "a.zip").unwrap_err().kind(),
            "empty-archive"
        );
    }

    #[test]
    fn kinds_are_the_closed_set() {
        let e = ExtractError::Empty;
        assert!(ExtractError::KINDS.contains(&e.kind()));
        assert_eq!(
            e.to_string(),
            "empty archive: the package contains no entries"
        );
    }
}
