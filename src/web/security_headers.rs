//! Security headers every response carries.
//!
//! Owns: `X-Content-Type-Options: nosniff`, `Referrer-Policy: strict-origin-when-cross-origin`
//! and, only when a real (configured) certificate is served, `Strict-Transport-Security`.
//!
//! Must never: forbid framing (`X-Frame-Options`, `frame-ancestors`): electoral institutes and
//! media embed the results site in their own pages. HSTS is never sent with the self-signed
//! certificate: pinning browsers to a certificate they cannot verify would lock them out.

use http::header::{REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, HeaderValue};

/// Adds the security headers to `h` (done once per precomputed header map).
pub fn apply(h: &mut HeaderMap, hsts_max_age: Option<u64>) {
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if let Some(age) = hsts_max_age
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={age}"))
    {
        h.insert(STRICT_TRANSPORT_SECURITY, v);
    }
}
