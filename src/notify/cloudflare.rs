//! The Cloudflare CDN purge: after a cut, purge the public URLs of what changed.
//!
//! Owns: turning changed and removed cut paths into public URLs (each base URL + the path,
//! percent-encoded per segment; `x/index.html` also purges `x/`, and `index.html` the site's
//! `/`), batching them (at most `batch_size` ≤ 30 per call, Cloudflare's limit), the
//! `purge_cache` call itself, and what counts as done (2xx **and** `"success": true`).
//!
//! Must never: stop at a failed batch (the later ones still go), send more than 30 URLs in one
//! call, or let the API token reach a log line (its header value is marked sensitive).

use std::collections::HashSet;

use serde_json::json;

use super::Counters;
use super::config::CloudflareTarget;
use super::retry::{self, Attempt, Policy};

/// What one purge asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    Everything,
    /// Full public URLs, in the order they are sent.
    Urls(Vec<String>),
}

/// Bytes a browser percent-encodes in a path (WHATWG "path percent-encode set": controls,
/// space, `"`, `#`, `<`, `>`, `?`, `` ` ``, `{`, `}`, non-ASCII) plus `%` itself, so the URL we
/// purge is the one a browser asks for.
fn keep_in_path(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' | b'%'
        )
}

/// `a b/ñ.html` → `a%20b/%C3%B1.html` (segments encoded, `/` kept).
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b == b'/' || keep_in_path(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URLs to purge for cut-relative `paths` under each of `base_urls` (no trailing `/`),
/// without duplicates, in order: per base URL, each path (then its directory URL if it is an
/// `index.html`).
pub fn purge_urls<'a>(
    base_urls: &[String],
    paths: impl IntoIterator<Item = &'a str> + Clone,
) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for base in base_urls {
        for p in paths.clone() {
            let mut urls = vec![format!("{base}/{}", encode_path(p))];
            if p == "index.html" {
                urls.push(format!("{base}/"));
            } else if let Some(dir) = p.strip_suffix("/index.html") {
                urls.push(format!("{base}/{}/", encode_path(dir)));
            }
            for u in urls {
                if seen.insert(u.clone()) {
                    out.push(u);
                }
            }
        }
    }
    out
}

/// A configured zone with its HTTP client.
pub struct Cloudflare {
    client: reqwest::Client,
    endpoint: String,
    authorization: Result<reqwest::header::HeaderValue, String>,
    pub target: CloudflareTarget,
}

impl Cloudflare {
    pub fn new(t: &CloudflareTarget, client: reqwest::Client) -> Cloudflare {
        let authorization =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.token.expose()))
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| {
                    "the API token has characters not allowed in an HTTP header".to_owned()
                });
        Cloudflare {
            client,
            endpoint: format!("{}/client/v4/zones/{}/purge_cache", t.api_base, t.zone_id),
            authorization,
            target: t.clone(),
        }
    }

    /// Sends `what` in batches, each with its retries; every batch is tried even if an
    /// earlier one failed. The error summarises the batches that failed.
    pub async fn purge(
        &self,
        what: &Purge,
        policy: Policy,
        counters: &Counters,
        name: &str,
    ) -> Result<(), String> {
        let limit = self.target.purge_everything_above;
        let bodies: Vec<(usize, Vec<u8>)> = match what {
            Purge::Urls(urls) if limit > 0 && urls.len() > limit => {
                tracing::info!(notifier = %name, urls = urls.len(), limit, "many URLs changed: purging everything instead");
                vec![(0, br#"{"purge_everything":true}"#.to_vec())]
            }
            Purge::Everything => vec![(0, br#"{"purge_everything":true}"#.to_vec())],
            Purge::Urls(urls) => urls
                .chunks(self.target.batch_size.clamp(1, 30))
                .map(|c| {
                    (
                        c.len(),
                        serde_json::to_vec(&json!({ "files": c })).unwrap_or_default(),
                    )
                })
                .collect(),
        };
        let total = bodies.len();
        let mut failed: Vec<String> = Vec::new();
        for (i, (urls, body)) in bodies.iter().enumerate() {
            let r = retry::with_retries(policy, counters, name, || self.call(body)).await;
            match r {
                Ok(()) => {
                    tracing::debug!(notifier = %name, batch = i + 1, of = total, urls, "cdn purge batch done")
                }
                Err(reason) => {
                    tracing::warn!(notifier = %name, batch = i + 1, of = total, urls, %reason, "cdn purge batch failed");
                    failed.push(format!("batch {} ({urls} URLs): {reason}", i + 1));
                }
            }
        }
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "{} of {total} purge call(s) failed; {first}",
                failed.len()
            )),
        }
    }

    /// One `purge_cache` call.
    async fn call(&self, body: &[u8]) -> Attempt {
        let auth = match &self.authorization {
            Ok(v) => v.clone(),
            Err(e) => return Attempt::Fail(e.clone()),
        };
        let what = "cloudflare purge_cache";
        let resp = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return retry::for_error(what, &e),
        };
        let status = resp.status();
        let after = retry::retry_after(resp.headers());
        let answer = retry::body_prefix(resp, 64 * 1024).await;
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&answer).ok();
        let success = parsed
            .as_ref()
            .and_then(|v| v.get("success"))
            .and_then(serde_json::Value::as_bool)
            == Some(true);
        if status.is_success() && success {
            return Attempt::Delivered;
        }
        // Cloudflare explains itself in "errors"; show that rather than the whole body.
        let said = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .map(|e| e.to_string())
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
        let reason = format!(
            "{what}: HTTP {status}: {}",
            retry::excerpt(said.as_bytes(), 300)
        );
        if status.is_success() {
            // 2xx with "success": false (or not JSON): Cloudflare did not purge; try again.
            Attempt::Retry { reason, after }
        } else {
            retry::for_status(status, after, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("json/main.json"), "json/main.json");
        assert_eq!(encode_path("a b/ñ#1?.html"), "a%20b/%C3%B1%231%3F.html");
        assert_eq!(encode_path("100%.csv"), "100%25.csv");
        assert_eq!(encode_path("x_(1)-a~b.js"), "x_(1)-a~b.js");
    }

    #[test]
    fn index_pages_also_purge_their_directory() {
        let bases = vec!["https://a.mx".to_owned(), "https://b.mx/prep".to_owned()];
        let urls = purge_urls(&bases, ["index.html", "dip/index.html", "json/main.json"]);
        assert_eq!(
            urls,
            [
                "https://a.mx/index.html",
                "https://a.mx/",
                "https://a.mx/dip/index.html",
                "https://a.mx/dip/",
                "https://a.mx/json/main.json",
                "https://b.mx/prep/index.html",
                "https://b.mx/prep/",
                "https://b.mx/prep/dip/index.html",
                "https://b.mx/prep/dip/",
                "https://b.mx/prep/json/main.json",
            ]
        );
    }
}
