//! `Content-Encoding: br` and `gzip`: compressing once per snapshot, choosing per request.
//!
//! Owns: the variants made when a snapshot is built ([`gzip()`], [`brotli()`]) and the
//! `Accept-Encoding` negotiation ([`negotiate`]: q-values honoured, `gzip;q=0` refuses gzip,
//! `*` covers codings not named; the highest q wins and br wins a tie — it is ~15-20 %
//! smaller on JSON).
//!
//! Must never: compress on the request path (every variant is made once, off the serving path,
//! and shared by all requests), or compress types that are already compressed (png, woff2,
//! zip…: see `content_type`).

use std::io::Write;

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

/// Files smaller than this are not worth a gzip variant (headers dominate).
pub const MIN_SIZE: usize = 256;

/// Files smaller than this get gzip but no brotli variant.
// PERF: measured on PREP CSV, text and JSON (README, "Performance", the mirror increment):
// below 2 KiB brotli saves 0.5-3 % over gzip (3-30 bytes, less than the headers vary) and
// costs 3× gzip's CPU — mostly the 1 MiB match-finder table it zeroes per file — which an
// increment of hundreds of small JSON files pays before it is live.
pub const BROTLI_MIN_SIZE: usize = 2048;

/// Whether a file of `len` bytes gets a gzip variant at all.
pub fn gzip_worth_trying(len: u64) -> bool {
    len >= MIN_SIZE as u64
}

/// Whether a file of `len` bytes gets a brotli variant at all (when brotli is on).
pub fn brotli_worth_trying(len: u64) -> bool {
    len >= BROTLI_MIN_SIZE as u64
}

/// `out`, the compressed form of `len` bytes, when it saves at least 5 %.
pub fn if_worth(out: Vec<u8>, len: u64) -> Option<Vec<u8>> {
    ((out.len() as u64) < len - len / 20).then_some(out)
}

/// A streaming gzip encoder with difusor's settings (for large files).
pub fn gzip_writer(out: Vec<u8>) -> flate2::write::GzEncoder<Vec<u8>> {
    // PERF: level 6 (zlib's default) — level 9 costs 2-3× the CPU for 1-3 % fewer bytes, and a
    // cut with many changed files must go live in seconds.
    flate2::write::GzEncoder::new(out, flate2::Compression::new(6))
}

/// gzip of `data`, or None when it does not save at least 5 % (or `data` is below
/// [`MIN_SIZE`]).
pub fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    if !gzip_worth_trying(data.len() as u64) {
        return None;
    }
    let mut enc = gzip_writer(Vec::with_capacity(data.len() / 4 + 64));
    enc.write_all(data).ok()?;
    if_worth(enc.finish().ok()?, data.len() as u64)
}

/// Brotli quality for precomputed variants.
// PERF: 5 compresses JSON better than gzip -6 at similar speed; 9-11 gain a few % for 5-50×
// the CPU, which a cut with many changed files cannot afford before going live.
pub const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW: u32 = 22;

/// A streaming brotli encoder with difusor's settings (for large files).
pub fn brotli_writer(out: Vec<u8>) -> brotli::CompressorWriter<Vec<u8>> {
    brotli::CompressorWriter::new(out, 64 << 10, BROTLI_QUALITY, BROTLI_WINDOW)
}

/// brotli of `data`, or None when it does not save at least 5 % (or `data` is below
/// [`BROTLI_MIN_SIZE`]).
pub fn brotli(data: &[u8]) -> Option<Vec<u8>> {
    if !brotli_worth_trying(data.len() as u64) {
        return None;
    }
    let mut w = brotli_writer(Vec::with_capacity(data.len() / 4 + 64));
    w.write_all(data).ok()?;
    w.flush().ok()?;
    if_worth(w.into_inner(), data.len() as u64)
}

/// The representation to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Brotli,
}

/// Picks the coding for a request, among those the file has.
pub fn negotiate(headers: &HeaderMap, has_gzip: bool, has_brotli: bool) -> Coding {
    if !has_gzip && !has_brotli {
        return Coding::Identity;
    }
    let (gzip_q, br_q) = accepted(headers);
    let gzip_q = if has_gzip { gzip_q } else { 0.0 };
    let br_q = if has_brotli { br_q } else { 0.0 };
    if br_q > 0.0 && br_q >= gzip_q {
        Coding::Brotli
    } else if gzip_q > 0.0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

/// Whether the client accepts gzip, by `Accept-Encoding` with q-values.
pub fn wants_gzip(headers: &HeaderMap) -> bool {
    accepted(headers).0 > 0.0
}

/// q-values for (gzip, br) from `Accept-Encoding` (0 = not acceptable).
fn accepted(headers: &HeaderMap) -> (f32, f32) {
    let mut gzip_q: Option<f32> = None;
    let mut br_q: Option<f32> = None;
    let mut star_q: Option<f32> = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let mut q = 1.0f32;
            for p in parts {
                let p = p.trim();
                if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip_q = Some(gzip_q.map_or(q, |o: f32| o.max(q)));
            } else if coding.eq_ignore_ascii_case("br") {
                br_q = Some(q);
            } else if coding == "*" {
                star_q = Some(q);
            }
        }
    }
    // An explicit `gzip;q=…` overrides `*`. A lower q for a coding than for identity is still
    // a "yes": the client accepts it, and the smaller body is what it prefers in practice.
    (
        gzip_q.or(star_q).unwrap_or(0.0).max(0.0),
        br_q.or(star_q).unwrap_or(0.0).max(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn q_values_are_honoured() {
        assert!(wants_gzip(&ae("gzip, deflate, br")));
        assert!(wants_gzip(&ae("br;q=1.0, gzip;q=0.8")));
        assert!(!wants_gzip(&ae("gzip;q=0")));
        assert!(!wants_gzip(&ae("br")));
        assert!(wants_gzip(&ae("*")));
        assert!(!wants_gzip(&ae("*;q=0")));
        assert!(!wants_gzip(&ae("gzip;q=0, *")));
        assert!(!wants_gzip(&HeaderMap::new()));
        assert!(wants_gzip(&ae("identity;q=0.5, GZIP")));
    }

    #[test]
    fn brotli_wins_ties_and_q_zero_refuses_it() {
        assert_eq!(
            negotiate(&ae("gzip, deflate, br, zstd"), true, true),
            Coding::Brotli
        );
        assert_eq!(
            negotiate(&ae("gzip, deflate, br"), true, false),
            Coding::Gzip
        );
        assert_eq!(negotiate(&ae("br;q=0.5, gzip"), true, true), Coding::Gzip);
        assert_eq!(negotiate(&ae("br;q=0, *"), true, true), Coding::Gzip);
        assert_eq!(negotiate(&ae("identity"), true, true), Coding::Identity);
        assert_eq!(negotiate(&ae("br"), false, false), Coding::Identity);
    }

    #[test]
    fn gzip_round_trips_and_skips_incompressible_data() {
        let text = "{\"votos\": 12345, \"partido\": \"X\"}\n".repeat(100);
        let gz = gzip(text.as_bytes()).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out)
            .unwrap();
        assert_eq!(out, text);
        assert!(gzip(b"tiny").is_none());
        let br = brotli(text.as_bytes()).unwrap();
        let mut out = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut out).unwrap();
        assert_eq!(out, text.as_bytes());
    }
}
