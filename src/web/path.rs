//! From a request target to a key of the snapshot, or a refusal.
//!
//! Owns: percent-decoding the path and refusing anything that could name something outside
//! the cut. The snapshot only contains regular files found under the cut directory, so a key
//! that is not in it cannot be served whatever it says; these checks make hostile paths a
//! clear 400 instead of a lookup, and keep keys canonical.
//!
//! Refused with 400 (invariants, in order):
//! 1. the target does not start with `/`;
//! 2. a backslash, NUL or other control byte, raw or percent-encoded;
//! 3. an encoded `/` (`%2f`): a path separator must be visible;
//! 4. a bad `%` escape or a path that is not UTF-8;
//! 5. a `.` or `..` segment (raw or decoded).
//!
//! Empty segments (`a//b`) are not collapsed: they simply match nothing (404).
//!
//! Must never: allocate for a path without `%` (the common case), or touch the file system.

use std::borrow::Cow;

/// Why a path was refused (all map to 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path contains a forbidden byte")]
    ForbiddenByte,
    #[error("path contains an encoded '/'")]
    EncodedSlash,
    #[error("bad percent-encoding or not UTF-8")]
    BadEncoding,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The snapshot key for the request path (without the leading `/`; `""` is the root).
pub fn decode(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    let rest = raw.strip_prefix('/').ok_or(BadPath::NotAbsolute)?;
    let key: Cow<'_, str> = if rest.contains('%') {
        let bytes = rest.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(BadPath::BadEncoding);
                };
                let d = hi << 4 | lo;
                if d == b'/' {
                    return Err(BadPath::EncodedSlash);
                }
                out.push(d);
                i += 3;
            } else {
                out.push(b);
                i += 1;
            }
        }
        Cow::Owned(String::from_utf8(out).map_err(|_| BadPath::BadEncoding)?)
    } else {
        Cow::Borrowed(rest)
    };
    // SECURITY: checked after decoding, so `%5c`, `%00` and `%2e%2e` are caught as well.
    if key.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return Err(BadPath::ForbiddenByte);
    }
    if key.split('/').any(|s| s == "." || s == "..") {
        return Err(BadPath::DotSegment);
    }
    Ok(key)
}

/// True when some segment of `key` starts with `.` (a dotfile or dot-directory).
pub fn has_dot_segment(key: &str) -> bool {
    key.split('/').any(|s| s.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_decode_without_allocating() {
        assert!(matches!(
            decode("/json/main.json"),
            Ok(Cow::Borrowed("json/main.json"))
        ));
        assert_eq!(decode("/").unwrap(), "");
        assert_eq!(decode("/a%20b/ca%C3%B1a.json").unwrap(), "a b/caña.json");
    }

    #[test]
    fn traversal_and_hostile_bytes_are_refused() {
        for p in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/etc/passwd",
            "/%2E%2e%2fetc",
            "/..%2fetc/passwd",
            "/a\\..\\b",
            "/a%5c..%5cb",
            "/a%00.json",
            "/./a",
            "/a%zz",
            "/a%c3",
            "relative",
            "/a%0d%0aSet-Cookie:x",
        ] {
            assert!(decode(p).is_err(), "{p} was accepted");
        }
    }

    #[test]
    fn dot_segments_are_detected() {
        assert!(has_dot_segment(".env"));
        assert!(has_dot_segment("a/.git/config"));
        assert!(!has_dot_segment("a/b.c/d"));
    }
}
