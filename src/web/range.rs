//! `Range: bytes=…` on a file of known length → 206 with `Content-Range`, or 416.
//!
//! Owns: parsing one byte range (`a-b`, `a-`, `-n`) and the policy for the rest. A range
//! list with more than one range is answered with the whole file (200): multipart/byteranges
//! costs more than it saves for files this size, and RFC 9110 §14.2 lets a server ignore
//! `Range`. A header that does not parse is ignored the same way.
//!
//! Must never: produce a range past the end of the file, or one for a compressed variant
//! (ranges always apply to the identity bytes).

use http::HeaderMap;
use http::header::RANGE;

/// What to do about a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// No (usable) range: send the whole representation.
    Full,
    /// Send bytes `start..end` (end exclusive) with 206.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates the request's `Range` against a file of `len` bytes.
pub fn evaluate(req: &HeaderMap, len: u64) -> Ranged {
    let Some(v) = req.get(RANGE) else {
        return Ranged::Full;
    };
    let Some(spec) = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().strip_prefix("bytes="))
    else {
        return Ranged::Full;
    };
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Some(n) = num(b) else { return Ranged::Full };
        if n == 0 || len == 0 {
            return Ranged::Unsatisfiable;
        }
        return Ranged::Partial {
            start: len.saturating_sub(n),
            end: len,
        };
    }
    let Some(start) = num(a) else {
        return Ranged::Full;
    };
    let end = if b.is_empty() {
        len
    } else {
        match num(b) {
            Some(last) if last >= start => last.saturating_add(1).min(len),
            _ => return Ranged::Full,
        }
    };
    if start >= len {
        return Ranged::Unsatisfiable;
    }
    Ranged::Partial { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn r(v: &str, len: u64) -> Ranged {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_str(v).unwrap());
        evaluate(&h, len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(r("bytes=0-9", 100), Ranged::Partial { start: 0, end: 10 });
        assert_eq!(
            r("bytes=90-", 100),
            Ranged::Partial {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            r("bytes=-5", 100),
            Ranged::Partial {
                start: 95,
                end: 100
            }
        );
        assert_eq!(r("bytes=-500", 100), Ranged::Partial { start: 0, end: 100 });
        assert_eq!(
            r("bytes=50-5000", 100),
            Ranged::Partial {
                start: 50,
                end: 100
            }
        );
        assert_eq!(r("bytes=100-", 100), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), Ranged::Unsatisfiable);
    }

    #[test]
    fn multi_and_malformed_ranges_get_the_whole_file() {
        assert_eq!(r("bytes=0-1,5-6", 100), Ranged::Full);
        assert_eq!(r("items=0-1", 100), Ranged::Full);
        assert_eq!(r("bytes=5-1", 100), Ranged::Full);
        assert_eq!(r("bytes=x-", 100), Ranged::Full);
        assert_eq!(r("bytes=+1-2", 100), Ranged::Full);
        assert_eq!(evaluate(&HeaderMap::new(), 100), Ranged::Full);
    }
}
