//! `Content-Type` by file extension, and whether a type is worth compressing.
//!
//! Owns: the closed table of types difusor knows. Text types carry `charset=utf-8` (PREP sites
//! are Spanish: accents must not turn into mojibake). Anything unknown is
//! `application/octet-stream`, which `nosniff` keeps from being rendered as HTML.
//!
//! Must never: guess from file contents (sniffing a results file as HTML would be an XSS hole).

/// `(Content-Type, compressible)` for `path` (only its extension is looked at).
pub fn for_path(path: &str) -> (&'static str, bool) {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext,
        _ => return ("application/octet-stream", false),
    };
    let mut lower = [0u8; 16];
    let Some(slot) = lower.get_mut(..ext.len()) else {
        return ("application/octet-stream", false);
    };
    for (d, s) in slot.iter_mut().zip(ext.bytes()) {
        *d = s.to_ascii_lowercase();
    }
    match &*slot {
        b"html" | b"htm" => ("text/html; charset=utf-8", true),
        b"css" => ("text/css; charset=utf-8", true),
        b"js" | b"mjs" => ("text/javascript; charset=utf-8", true),
        b"json" | b"map" => ("application/json; charset=utf-8", true),
        b"webmanifest" => ("application/manifest+json; charset=utf-8", true),
        b"csv" => ("text/csv; charset=utf-8", true),
        b"tsv" => ("text/tab-separated-values; charset=utf-8", true),
        b"txt" | b"md" => ("text/plain; charset=utf-8", true),
        b"xml" => ("application/xml; charset=utf-8", true),
        b"svg" => ("image/svg+xml; charset=utf-8", true),
        b"ico" => ("image/x-icon", true),
        b"ttf" => ("font/ttf", true),
        b"otf" => ("font/otf", true),
        b"eot" => ("application/vnd.ms-fontobject", true),
        b"wasm" => ("application/wasm", true),
        b"woff2" => ("font/woff2", false),
        b"woff" => ("font/woff", false),
        b"png" => ("image/png", false),
        b"jpg" | b"jpeg" => ("image/jpeg", false),
        b"gif" => ("image/gif", false),
        b"webp" => ("image/webp", false),
        b"avif" => ("image/avif", false),
        b"pdf" => ("application/pdf", false),
        b"zip" => ("application/zip", false),
        b"gz" | b"tgz" => ("application/gzip", false),
        b"xlsx" => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            false,
        ),
        b"mp4" => ("video/mp4", false),
        b"webm" => ("video/webm", false),
        b"mp3" => ("audio/mpeg", false),
        _ => ("application/octet-stream", false),
    }
}

#[cfg(test)]
mod tests {
    use super::for_path;

    #[test]
    fn text_types_are_utf8_and_compressible() {
        assert_eq!(
            for_path("json/main.json"),
            ("application/json; charset=utf-8", true)
        );
        assert_eq!(for_path("index.HTML").0, "text/html; charset=utf-8");
        assert_eq!(for_path("a/b.csv").0, "text/csv; charset=utf-8");
        assert_eq!(for_path("x.woff2"), ("font/woff2", false));
        assert_eq!(for_path("x.png"), ("image/png", false));
    }

    #[test]
    fn unknown_or_missing_extensions_are_octet_stream() {
        assert_eq!(for_path("README").0, "application/octet-stream");
        assert_eq!(for_path("dir.d/file").0, "application/octet-stream");
        assert_eq!(for_path(".htaccess").0, "application/octet-stream");
        assert_eq!(
            for_path("x.averyveryverylongextension").0,
            "application/octet-stream"
        );
    }
}
