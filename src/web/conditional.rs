//! Validators and conditional requests: strong `ETag`, `Last-Modified`, `If-None-Match`,
//! `If-Modified-Since` (→ 304) and `If-Range`.
//!
//! Owns: how an ETag is made from a file's content hash (so an unchanged file keeps its ETag
//! across cuts and clients keep getting 304s) and the RFC 9110 §13 evaluation order:
//! `If-None-Match` (weak comparison) wins over `If-Modified-Since`.
//!
//! Must never: touch the file system or allocate on the 200 path; `If-Match` and
//! `If-Unmodified-Since` are not evaluated (the site is read-only: no lost-update to prevent).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE};
use http::{HeaderMap, HeaderValue};

/// Strong ETags from a content digest: `"<first 20 hex digits>"` for the file, `"<…>-gz"` and
/// `"<…>-br"` for its compressed variants (a different representation needs its own tag).
pub struct Etags {
    pub identity: HeaderValue,
    pub gzip: HeaderValue,
    pub brotli: HeaderValue,
}

/// See [`Etags`].
pub fn etags(digest: &[u8]) -> Etags {
    let mut hex = String::with_capacity(24);
    for b in digest.iter().take(10) {
        hex.push_str(&format!("{b:02x}"));
    }
    let tag = |suffix: &str, fallback: &'static str| {
        // Hex digits, '-' and quotes are always valid header bytes.
        HeaderValue::from_str(&format!("\"{hex}{suffix}\""))
            .unwrap_or_else(|_| HeaderValue::from_static(fallback))
    };
    Etags {
        identity: tag("", "\"0\""),
        gzip: tag("-gz", "\"0-gz\""),
        brotli: tag("-br", "\"0-br\""),
    }
}

/// Seconds-precision modification time (HTTP dates have no sub-seconds).
pub fn http_time(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn opaque(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

/// True when the request's validators say the client's copy is current (answer 304).
/// `tags` are every ETag this resource has (identity and gzip).
pub fn is_not_modified(req: &HeaderMap, tags: &[&HeaderValue], last_modified: SystemTime) -> bool {
    if let Some(inm) = req.get(IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        return inm.split(',').any(|t| {
            let t = opaque(t);
            t == "*"
                || tags
                    .iter()
                    .any(|ours| ours.to_str().is_ok_and(|o| opaque(o) == t))
        });
    }
    if let Some(ims) = req.get(IF_MODIFIED_SINCE)
        && let Some(since) = ims
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
    {
        return last_modified <= since;
    }
    false
}

/// `If-Range`: whether a `Range` may be honoured. Strong comparison for tags, exact date.
pub fn if_range_allows(req: &HeaderMap, etag: &HeaderValue, last_modified: SystemTime) -> bool {
    let Some(v) = req.get(IF_RANGE) else {
        return true;
    };
    let Ok(v) = v.to_str() else { return false };
    let v = v.trim();
    if v.starts_with('"') {
        return etag.to_str().is_ok_and(|e| e == v);
    }
    httpdate::parse_http_date(v).is_ok_and(|d| d == last_modified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: http::header::HeaderName, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(k, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn if_none_match_is_weakly_compared_and_wins_over_dates() {
        let t = etags(&[0xab; 32]);
        let (tag, gz) = (t.identity, t.gzip);
        assert_eq!(tag, "\"abababababababababab\"");
        let lm = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let tags = [&tag, &gz];
        assert!(is_not_modified(
            &h(IF_NONE_MATCH, "\"x\", W/\"abababababababababab\""),
            &tags,
            lm
        ));
        assert!(is_not_modified(
            &h(IF_NONE_MATCH, "\"abababababababababab-gz\""),
            &tags,
            lm
        ));
        assert!(is_not_modified(&h(IF_NONE_MATCH, "*"), &tags, lm));
        assert!(!is_not_modified(&h(IF_NONE_MATCH, "\"other\""), &tags, lm));
        let date = httpdate::fmt_http_date(lm);
        assert!(is_not_modified(&h(IF_MODIFIED_SINCE, &date), &tags, lm));
        let before = httpdate::fmt_http_date(lm - Duration::from_secs(1));
        assert!(!is_not_modified(&h(IF_MODIFIED_SINCE, &before), &tags, lm));
        assert!(!is_not_modified(
            &h(IF_MODIFIED_SINCE, "garbage"),
            &tags,
            lm
        ));
    }

    #[test]
    fn if_range_needs_an_exact_validator() {
        let tag = etags(&[1; 32]).identity;
        let lm = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(if_range_allows(&HeaderMap::new(), &tag, lm));
        assert!(if_range_allows(
            &h(IF_RANGE, tag.to_str().unwrap()),
            &tag,
            lm
        ));
        assert!(!if_range_allows(&h(IF_RANGE, "\"nope\""), &tag, lm));
        assert!(if_range_allows(
            &h(IF_RANGE, &httpdate::fmt_http_date(lm)),
            &tag,
            lm
        ));
    }
}
