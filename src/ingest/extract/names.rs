#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
//! Entry names and link targets: decoding raw archive bytes to UTF-8 and normalising them into
//! safe relative paths.
//!
//! Owns: the zip name rules (UTF-8 flag, Info-ZIP Unicode Path extra, else UTF-8 if valid, else
//! CP437), the tar name rule (UTF-8 if valid, else Latin-1), lexical normalisation (`./`, `//`)
//! and the unsafe-path rules, the lexical resolution of symlink targets.
//!
//! Must never: touch the filesystem (these checks are lexical; the kernel jail of `cap_std` is
//! the second line), accept a `..` component anywhere in an entry name, or return a path that
//! is absolute, empty or contains a backslash or control character.

use std::borrow::Cow;

use super::{ExtractError, MAX_COMPONENT_BYTES, MAX_PATH_BYTES};

/// How much of a hostile name goes into an error message.
const SHOWN_CHARS: usize = 200;

/// A name shortened for error messages (a 64 KiB name must not become a 64 KiB log line).
pub(crate) fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// CP437 (the zip specification's default code page), bytes 0x80..=0xFF.
const CP437_HIGH: [char; 128] = [
    'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å', //
    'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ', //
    'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»', //
    '░', '▒', '▓', '│', '┤', '╡', '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐', //
    '└', '┴', '┬', '├', '─', '┼', '╞', '╟', '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧', //
    '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘', '┌', '█', '▄', '▌', '▐', '▀', //
    'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ', '∞', 'φ', 'ε', '∩', //
    '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²', '■', '\u{a0}',
];

fn cp437(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| match b.checked_sub(0x80) {
            Some(i) => CP437_HIGH
                .get(usize::from(i))
                .copied()
                .unwrap_or('\u{fffd}'),
            None => char::from(b),
        })
        .collect()
}

fn latin1(raw: &[u8]) -> String {
    raw.iter().map(|&b| char::from(b)).collect()
}

/// Decodes a zip entry name. `utf8_flag` is general-purpose bit 11; `unicode_path` is the
/// UTF-8 name of an Info-ZIP Unicode Path extra field (0x7075) whose CRC matched the raw name.
pub(crate) fn zip_name<'a>(
    raw: &'a [u8],
    utf8_flag: bool,
    unicode_path: Option<&'a [u8]>,
) -> Result<Cow<'a, str>, ExtractError> {
    if let Some(u) = unicode_path {
        return std::str::from_utf8(u)
            .map(Cow::Borrowed)
            .map_err(|_| ExtractError::UnsafePath {
                name: shown(&String::from_utf8_lossy(u)),
                reason: "its unicode path extra field is not valid utf-8",
            });
    }
    match std::str::from_utf8(raw) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(_) if utf8_flag => Err(ExtractError::UnsafePath {
            name: shown(&String::from_utf8_lossy(raw)),
            reason: "the name is flagged utf-8 but is not valid utf-8",
        }),
        Err(_) => Ok(Cow::Owned(cp437(raw))),
    }
}

/// Decodes a tar entry name or link target: UTF-8 when valid, else Latin-1 (ISO-8859-1),
/// which is what old tar writers on Latin-American Windows and Unix systems produce.
pub(crate) fn tar_name(raw: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(latin1(raw)),
    }
}

/// The checks shared by entry names and link targets; `None` when the text is fine.
fn text_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("the name is empty");
    }
    if s.chars().any(|c| c == '\0') {
        return Some("the name contains a nul byte");
    }
    if s.chars().any(char::is_control) {
        return Some("the name contains a control character");
    }
    if s.contains('\\') {
        return Some("the name contains a backslash (a windows path separator)");
    }
    if s.starts_with('/') {
        return Some("the name is an absolute path");
    }
    let mut b = s.bytes();
    if let (Some(d), Some(b':')) = (b.next(), b.next())
        && d.is_ascii_alphabetic()
    {
        return Some("the name starts with a windows drive letter");
    }
    None
}

/// Normalises an entry name into a relative '/'-separated path: strips `./` and empty
/// components (`a//b`, `./a/b` and `a/b/` are all `a/b`), then refuses anything unsafe.
/// Returns `None` for a name that is the cut root itself (`./`, `.`), which only a directory
/// entry may be (tar writes `./` first when run as `tar -C site -czf pkg.tar.gz .`).
pub(crate) fn normalise(name: &str) -> Result<Option<String>, ExtractError> {
    if let Some(reason) = text_problem(name) {
        return Err(ExtractError::UnsafePath {
            name: shown(name),
            reason,
        });
    }
    if name.len() > MAX_PATH_BYTES * 2 {
        // Far past any legitimate name even before `./` and `//` are removed.
        return Err(too_long(name, format!("{} bytes", name.len())));
    }
    let mut out = String::with_capacity(name.len());
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                return Err(ExtractError::UnsafePath {
                    name: shown(name),
                    reason: "the name contains a '..' component",
                });
            }
            c => {
                if c.len() > MAX_COMPONENT_BYTES {
                    return Err(too_long(
                        name,
                        format!(
                            "a component is {} bytes (at most {MAX_COMPONENT_BYTES})",
                            c.len()
                        ),
                    ));
                }
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    if out.len() > MAX_PATH_BYTES {
        return Err(too_long(
            name,
            format!("the path is {} bytes (at most {MAX_PATH_BYTES})", out.len()),
        ));
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

fn too_long(name: &str, detail: String) -> ExtractError {
    ExtractError::NameTooLong {
        name: shown(name),
        detail,
    }
}

/// The error for an entry that names the cut root but is not a directory.
pub(crate) fn root_error(name: &str) -> ExtractError {
    ExtractError::UnsafePath {
        name: shown(name),
        reason: "the name is the cut root itself",
    }
}

/// A symlink target resolved lexically.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The path the link designates, relative to the cut root ("" is the root). Only the
    /// tests read it today; the walk above is what the checks need.
    #[cfg_attr(not(test), allow(dead_code))]
    pub target: String,
    /// Paths the resolution walks *through* as directories (`x/b` for `x/b/../c`). If one of
    /// them is itself a link, the lexical result means nothing (`x/b -> ..` makes `x/b/..`
    /// the root's parent), so the caller refuses that once the whole tree is known.
    pub traversed: Vec<String>,
}

/// Resolves a symlink target lexically from the link's own directory and returns the path it
/// designates, relative to the cut root. Refuses absolute targets and any that climb above
/// the root at any point (`a/l -> ../../x`).
pub(crate) fn resolve_symlink(link: &str, target: &str) -> Result<Resolved, ExtractError> {
    let escape = |reason| ExtractError::LinkEscape {
        name: shown(link),
        target: shown(target),
        reason,
    };
    if let Some(reason) = text_problem(target) {
        return Err(escape(as_target(reason)));
    }
    if target.len() > MAX_PATH_BYTES {
        return Err(too_long(
            link,
            format!("the link target is {} bytes", target.len()),
        ));
    }
    let mut stack: Vec<&str> = link.split('/').collect();
    stack.pop(); // the link's own name: targets are relative to its directory
    let mut traversed = Vec::new();
    // Whether the top of the stack was pushed by the target (the link's own parents are real
    // directories of this package: the tree guarantees it).
    let mut pushed = false;
    for comp in target.split('/') {
        if matches!(comp, "" | ".") {
            continue;
        }
        if pushed {
            traversed.push(stack.join("/"));
        }
        if comp == ".." {
            if stack.pop().is_none() {
                return Err(escape("the target resolves above the cut root"));
            }
            pushed = false;
        } else {
            stack.push(comp);
            pushed = true;
        }
    }
    Ok(Resolved {
        target: stack.join("/"),
        traversed,
    })
}

/// The same reason, said of a link target instead of an entry name.
fn as_target(reason: &'static str) -> &'static str {
    match reason {
        "the name is an absolute path" => "the target is an absolute path",
        "the name starts with a windows drive letter" => {
            "the target starts with a windows drive letter"
        }
        "the name contains a backslash (a windows path separator)" => {
            "the target contains a backslash (a windows path separator)"
        }
        "the name contains a '..' component" => "the target climbs out with '..'",
        "the name is empty" => "the target is empty",
        "the name is the cut root itself" => "the target is the cut root itself",
        _ => "the target contains a control character",
    }
}

/// Normalises a tar hard-link target (a path from the archive root, not from the link).
pub(crate) fn hardlink_target(link: &str, target: &str) -> Result<String, ExtractError> {
    let escape = |reason| ExtractError::LinkEscape {
        name: shown(link),
        target: shown(target),
        reason,
    };
    match normalise(target) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(escape("a hard link cannot point to the cut root")),
        Err(ExtractError::UnsafePath { reason, .. }) => Err(escape(as_target(reason))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<Option<String>, &'static str> {
        normalise(s).map_err(|e| e.kind())
    }

    #[test]
    fn normalisation_strips_dot_slash_and_collapses_slashes() {
        assert_eq!(norm("a/b").unwrap().unwrap(), "a/b");
        assert_eq!(norm("a//b").unwrap().unwrap(), "a/b");
        assert_eq!(norm("./a/b").unwrap().unwrap(), "a/b");
        assert_eq!(norm("a/./b/").unwrap().unwrap(), "a/b");
        assert_eq!(norm("./").unwrap(), None);
        assert_eq!(norm(".").unwrap(), None);
        assert_eq!(norm("...").unwrap().unwrap(), "...");
        assert_eq!(norm("10:30.json").unwrap().unwrap(), "10:30.json");
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "a/..",
            "/etc/x",
            "C:\\x",
            "C:x",
            "a\\..\\..\\x",
            "",
            "a\0b",
            "a\nb",
            "a\u{85}b",
        ] {
            assert_eq!(norm(bad), Err("unsafe-path"), "{bad:?}");
        }
    }

    #[test]
    fn long_components_and_paths_are_refused() {
        let c255 = "a".repeat(255);
        assert!(norm(&c255).is_ok());
        assert_eq!(norm(&"a".repeat(256)), Err("name-too-long"));
        let deep = vec!["abcdefgh"; 600].join("/");
        assert_eq!(norm(&deep), Err("name-too-long"));
    }

    #[test]
    fn cp437_and_latin1_decode_spanish() {
        // "año/ñandú.json" in CP437: ñ = 0xA4, ú = 0xA3.
        let raw = b"a\xa4o/\xa4and\xa3.json";
        assert_eq!(zip_name(raw, false, None).unwrap(), "año/ñandú.json");
        // ... and in Latin-1: ñ = 0xF1, ú = 0xFA.
        assert_eq!(tar_name(b"a\xf1o/\xf1and\xfa.json"), "año/ñandú.json");
        // Valid UTF-8 is used as such even without the flag.
        assert_eq!(zip_name("año".as_bytes(), false, None).unwrap(), "año");
        // Flagged UTF-8 that is not UTF-8 is refused rather than guessed.
        assert_eq!(zip_name(raw, true, None).unwrap_err().kind(), "unsafe-path");
        assert_eq!(
            zip_name(raw, false, Some("año/ñandú.json".as_bytes())).unwrap(),
            "año/ñandú.json"
        );
    }

    #[test]
    fn symlink_targets_resolve_lexically() {
        assert_eq!(resolve_symlink("a/b/l", "../c").unwrap().target, "a/c");
        assert_eq!(resolve_symlink("a/l", "..").unwrap().target, "");
        let r = resolve_symlink("l", "x/./y").unwrap();
        assert_eq!(
            (r.target.as_str(), r.traversed),
            ("x/y", vec!["x".to_string()])
        );
        let r = resolve_symlink("d/l", "x/b/../c").unwrap();
        assert_eq!(r.target, "d/x/c");
        assert_eq!(r.traversed, ["d/x", "d/x/b"]);
        for bad in ["../x", "/etc/passwd", "a/../../x", "C:\\x", ""] {
            assert_eq!(
                resolve_symlink("l", bad).unwrap_err().kind(),
                "link-escape",
                "{bad:?}"
            );
        }
        assert_eq!(
            resolve_symlink("a/b/l", "../../../x").unwrap_err().kind(),
            "link-escape"
        );
    }

    #[test]
    fn shown_shortens() {
        let s = "ñ".repeat(500);
        assert!(shown(&s).chars().count() <= SHOWN_CHARS + 1);
        assert_eq!(shown("abc"), "abc");
    }
}
