//! Attempts, back-off and the HTTP answer rules shared by the notifiers.
//!
//! Owns: the retry loop (first attempt, then `retries` more, waiting `retry_backoff` doubled
//! each time and capped at [`MAX_BACKOFF`], or what a `Retry-After` header asks, capped too),
//! which HTTP answers are worth another attempt, and short, single-line excerpts of what a
//! remote end said.
//!
//! Must never: wait longer than [`MAX_BACKOFF`] between attempts whatever a server asks, or
//! retry an answer that cannot change (a 4xx other than 408/429).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Counters;

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt {
    Delivered,
    /// Worth trying again, after `after` if the server said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Trying again would give the same answer.
    Fail(String),
}

/// How many attempts and how far apart.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub retries: u32,
    pub backoff: Duration,
}

impl Policy {
    /// The wait before retry number `n` (0 for the first retry).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// Runs `attempt` until it delivers, fails for good, or the retries are spent; the error
/// is the last attempt's reason with the number of attempts made.
pub async fn with_retries<F, Fut>(
    policy: Policy,
    counters: &Counters,
    name: &str,
    mut attempt: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut n = 0u32;
    loop {
        match attempt().await {
            Attempt::Delivered => return Ok(()),
            Attempt::Fail(reason) => {
                return Err(format!(
                    "{reason} (attempt {} of {}, not retried)",
                    n + 1,
                    policy.retries + 1
                ));
            }
            Attempt::Retry { reason, after } => {
                if n >= policy.retries {
                    return Err(format!("{reason} (after {} attempts)", n + 1));
                }
                let wait = after.map_or_else(|| policy.backoff(n), |a| a.min(MAX_BACKOFF));
                tracing::info!(
                    notifier = %name,
                    %reason,
                    retry_in_ms = wait.as_millis() as u64,
                    "notifier attempt failed; retrying"
                );
                counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                n += 1;
            }
        }
    }
}

/// `Retry-After` as a wait: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The rule for a non-2xx HTTP status: 408, 429 and 5xx may pass, other statuses will not.
pub fn for_status(status: reqwest::StatusCode, after: Option<Duration>, reason: String) -> Attempt {
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Attempt::Retry { reason, after }
    } else {
        Attempt::Fail(reason)
    }
}

/// A request that got no answer (timeout, refused, reset, TLS): always worth a retry.
pub fn for_error(what: &str, e: &reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // The error chain says why (DNS, refused, certificate) without the URL's path.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let reason = if cause.is_empty() {
        format!("{what} {kind}")
    } else {
        format!("{what} {kind}: {}", excerpt(cause.as_bytes(), 200))
    };
    Attempt::Retry {
        reason,
        after: None,
    }
}

/// Up to `limit` bytes of a response body.
pub async fn body_prefix(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// A one-line, printable excerpt of at most `max` characters (for reasons and logs).
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = Policy {
            retries: 10,
            backoff: Duration::from_millis(1000),
        };
        let waits: Vec<u64> = (0..7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.backoff(200), MAX_BACKOFF);
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn which_statuses_are_retried() {
        let retried = |s: u16| {
            matches!(
                for_status(
                    reqwest::StatusCode::from_u16(s).unwrap(),
                    None,
                    String::new()
                ),
                Attempt::Retry { .. }
            )
        };
        assert!(retried(500) && retried(503) && retried(429) && retried(408));
        assert!(!retried(400) && !retried(401) && !retried(404) && !retried(301));
    }

    #[test]
    fn excerpts_are_one_line_and_short() {
        assert_eq!(excerpt(b"a\nb\r\nc", 100), "a b  c");
        assert_eq!(excerpt("ñandú".as_bytes(), 3), "ñan…");
    }
}
