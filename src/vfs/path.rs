//! Lexical handling of the paths clients send: normalisation to a virtual absolute path and
//! the checks every name must pass before it reaches the kernel.
//!
//! Owns: [`VPath`], a normalised absolute virtual path (a list of checked components).
//! Must never: touch the filesystem, or be the thing that keeps a client inside the jail —
//! that is the kernel's job (`cap-std`, `RESOLVE_BENEATH`) in `vfs`. This only decides what a
//! name *means*; a `..` here can never climb above the virtual root.

use std::fmt;

/// Longest single component we accept (Linux NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest whole path we accept (Linux PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// Names with this prefix are difusor's own staging files; clients can neither see nor address
/// them, so a half-written upload can never be read, renamed or overwritten by anyone.
pub const STAGING_PREFIX: &str = ".difusor-";

/// Why a client's path was refused before any filesystem access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path contains a NUL byte (a classic truncation trick).
    #[error("invalid path: contains a NUL byte")]
    Nul,
    /// The client's bytes were not UTF-8 (the SFTP decoder replaced them with U+FFFD).
    #[error("invalid path: file names must be UTF-8")]
    NotUtf8,
    /// A control character (newline, escape…) in a name: refused so logs and listings stay honest.
    #[error("invalid path: contains a control character")]
    Control,
    /// One component is longer than 255 bytes.
    #[error("invalid path: a name is longer than 255 bytes")]
    ComponentTooLong,
    /// The whole path is longer than 4096 bytes.
    #[error("invalid path: longer than 4096 bytes")]
    TooLong,
    /// The name addresses one of difusor's own staging files.
    #[error("no such file")]
    Reserved,
}

/// A normalised absolute virtual path: no `.`/`..`/empty components, every component checked.
/// The root is the empty list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VPath {
    parts: Vec<String>,
}

impl VPath {
    pub fn root() -> VPath {
        VPath::default()
    }

    /// Resolves `input` (absolute, or relative to `cwd`) lexically. `..` at the root stays at
    /// the root, as in a chroot.
    pub fn resolve(cwd: &VPath, input: &str) -> Result<VPath, PathError> {
        check_text(input)?;
        let mut parts = if input.starts_with('/') {
            Vec::new()
        } else {
            cwd.parts.clone()
        };
        for comp in input.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => {
                    if name.len() > MAX_COMPONENT_BYTES {
                        return Err(PathError::ComponentTooLong);
                    }
                    if name.starts_with(STAGING_PREFIX) {
                        return Err(PathError::Reserved);
                    }
                    parts.push(name.to_owned());
                }
            }
        }
        Ok(VPath { parts })
    }

    /// Parses an absolute path known to be well formed (used for built-in paths like homes).
    pub fn parse_absolute(input: &str) -> Result<VPath, PathError> {
        VPath::resolve(&VPath::root(), input)
    }

    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn components(&self) -> &[String] {
        &self.parts
    }

    /// The last component, or None at the root.
    pub fn file_name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    pub fn parent(&self) -> VPath {
        let mut parts = self.parts.clone();
        parts.pop();
        VPath { parts }
    }

    pub fn join(&self, name: &str) -> Result<VPath, PathError> {
        if name.contains('/') || name == "." || name == ".." || name.is_empty() {
            return Err(PathError::Control);
        }
        VPath::resolve(self, name)
    }
}

impl fmt::Display for VPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parts.is_empty() {
            return f.write_str("/");
        }
        for p in &self.parts {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

fn check_text(input: &str) -> Result<(), PathError> {
    if input.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    for c in input.chars() {
        match c {
            '\0' => return Err(PathError::Nul),
            '\u{FFFD}' => return Err(PathError::NotUtf8),
            c if c.is_control() => return Err(PathError::Control),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cwd: &str, p: &str) -> Result<String, PathError> {
        let cwd = VPath::parse_absolute(cwd).unwrap();
        VPath::resolve(&cwd, p).map(|v| v.to_string())
    }

    #[test]
    fn relative_paths_join_the_cwd() {
        assert_eq!(r("/incoming", "a.zip").unwrap(), "/incoming/a.zip");
        assert_eq!(r("/incoming", ".").unwrap(), "/incoming");
        assert_eq!(r("/incoming", "").unwrap(), "/incoming");
        assert_eq!(r("/incoming", "./x/./y").unwrap(), "/incoming/x/y");
    }

    #[test]
    fn dotdot_never_climbs_above_the_root() {
        assert_eq!(r("/incoming", "..").unwrap(), "/");
        assert_eq!(
            r("/incoming", "../../../../etc/passwd").unwrap(),
            "/etc/passwd"
        );
        assert_eq!(
            r("/", "/../..//incoming/../incoming/a").unwrap(),
            "/incoming/a"
        );
        assert_eq!(r("/incoming", "x/../../..").unwrap(), "/");
    }

    #[test]
    fn absolute_paths_start_at_the_virtual_root() {
        assert_eq!(r("/incoming", "/etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(
            r("/incoming", "//incoming//a.zip").unwrap(),
            "/incoming/a.zip"
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(r("/", "/incoming/a\0.zip"), Err(PathError::Nul));
        assert_eq!(r("/", "/incoming/a\u{FFFD}"), Err(PathError::NotUtf8));
        assert_eq!(r("/", "/incoming/a\nb"), Err(PathError::Control));
        assert_eq!(r("/", "/incoming/a\x1b[31m"), Err(PathError::Control));
        assert_eq!(
            r("/", &format!("/incoming/{}", "a".repeat(256))),
            Err(PathError::ComponentTooLong)
        );
        assert_eq!(r("/", &"/a".repeat(2049)), Err(PathError::TooLong));
        assert_eq!(
            r("/", "/incoming/.difusor-part-1"),
            Err(PathError::Reserved)
        );
    }

    #[test]
    fn ordinary_unicode_and_dotfiles_are_fine() {
        assert_eq!(
            r("/", "/incoming/año_ñ.zip").unwrap(),
            "/incoming/año_ñ.zip"
        );
        assert_eq!(r("/", "/incoming/.hidden").unwrap(), "/incoming/.hidden");
        assert_eq!(r("/", "/incoming/a\\b").unwrap(), "/incoming/a\\b");
    }

    #[test]
    fn join_refuses_separators() {
        let root = VPath::root();
        assert!(root.join("a/b").is_err());
        assert!(root.join("..").is_err());
        assert_eq!(root.join("a").unwrap().to_string(), "/a");
    }
}
