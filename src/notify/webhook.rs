//! The webhook notifier: one JSON `POST` per event, optionally signed.
//!
//! Owns: the JSON bodies of the `cut-published` and `incident` events (a stable contract with
//! whoever receives them), the `X-Difusor-Signature: sha256=<hex HMAC-SHA256 of the exact
//! body bytes>` and `X-Difusor-Event` headers, and which answers count as delivered (2xx).
//!
//! Must never: follow a redirect (a 3xx is a failure: a POST must not silently become a GET
//! elsewhere), log the URL's path or query (webhook URLs often carry a token), or log the secret.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::config::{Secret, WebhookTarget};
use super::retry::{self, Attempt};
use crate::events::CutPublished;
use crate::store::Incident;
use crate::store::diff::CutDiff;

/// `User-Agent` of every request difusor makes.
pub fn user_agent() -> String {
    format!("difusor/{}", env!("CARGO_PKG_VERSION"))
}

fn rfc3339(t: Option<time::OffsetDateTime>) -> Option<String> {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
}

/// The `cut-published` body. `diff` is `None` when it could not be computed (the counts
/// `changed`/`removed` are then `null`).
pub fn cut_body(ev: &CutPublished, diff: Option<&CutDiff>) -> Vec<u8> {
    let m = &ev.manifest;
    let body = json!({
        "event": "cut-published",
        "cut_id": ev.cut_id,
        "cut_time": rfc3339(m.cut_time),
        "published_at": rfc3339(m.published_at),
        "package": m.original_name,
        "sha256": m.sha256,
        "size": m.size,
        "mode": m.mode,
        "previous_cut_id": ev.previous_live,
        "counts": {
            "files": m.files,
            "entries": m.entries,
            "uncompressed_bytes": m.uncompressed_bytes,
            "changed": diff.map(|d| d.changed.len()),
            "removed": diff.map(|d| d.removed.len()),
            "packages_in_history": ev.packages_in_history,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The `incident` body.
pub fn incident_body(i: &Incident) -> Vec<u8> {
    let body = json!({
        "event": "incident",
        "time": rfc3339(Some(i.time)),
        "severity": i.severity,
        "kind": i.kind,
        "package": i.package,
        "uploader": i.uploader,
        "subject": i.subject,
        "reason": i.reason,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A configured webhook with its HTTP client.
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Option<Secret>,
    /// `scheme://host[:port]`, all the logs show of the URL.
    shown: String,
}

impl Webhook {
    pub fn new(t: &WebhookTarget, client: reqwest::Client) -> Webhook {
        Webhook {
            client,
            shown: t.url.origin().ascii_serialization(),
            url: t.url.clone(),
            secret: t.secret.clone(),
        }
    }

    /// One attempt at delivering `body` as event `event`.
    pub async fn post(&self, event: &str, body: &[u8]) -> Attempt {
        let mut req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Difusor-Event", event)
            .body(body.to_vec());
        if let Some(secret) = &self.secret {
            req = req.header(
                "X-Difusor-Signature",
                format!("sha256={}", signature(secret, body)),
            );
        }
        let what = format!("POST {}", self.shown);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return retry::for_error(&what, &e),
        };
        let status = resp.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let after = retry::retry_after(resp.headers());
        let body = retry::body_prefix(resp, 4096).await;
        retry::for_status(
            status,
            after,
            format!("{what}: HTTP {status}: {}", retry::excerpt(&body, 300)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let s = Secret::new("Jefe");
        assert_eq!(
            signature(&s, b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn incident_body_shape() {
        let i = Incident {
            time: time::macros::datetime!(2024-06-03 02:15 UTC),
            severity: crate::store::Severity::Warning,
            kind: "package-rejected".into(),
            package: Some("x.zip".into()),
            uploader: None,
            reason: "bad".into(),
            subject: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&incident_body(&i)).unwrap();
        assert_eq!(v["event"], "incident");
        assert_eq!(v["time"], "2024-06-03T02:15:00Z");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["package"], "x.zip");
        assert!(v["uploader"].is_null());
    }
}
