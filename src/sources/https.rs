//! One `[[sources.https]]`: a package URL polled with `If-None-Match` / `If-Modified-Since`,
//! or a listing whose links name packages (new names are fetched in name order — PREP names
//! start with the cut time).
//!
//! Owns: the HTTP side — conditional polls, streaming downloads into the partial dir,
//! resuming an interrupted one with `Range` + `If-Range`, the `.sha256` beside a package.
//!
//! Must never: hold a package in memory, follow a listing link to another host without the
//! operator having named it (links are resolved against the listing URL; any host is allowed
//! only because the institute's CDN may serve files elsewhere — they are still verified), or
//! poll faster than configured.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use reqwest::StatusCode;
use reqwest::header::{
    AUTHORIZATION, CONTENT_DISPOSITION, ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::config::{HttpsSourceConfig, HttpsWhat};
use super::{Fetched, SeenPackage, SourceDir, SourceState, file_name_of, hand_over, plain_name};
use crate::events::UploadSender;
use crate::store::Store;

/// Sidecars are small; anything bigger is not one.
const MAX_SIDECAR: usize = 4096;
/// Listings are pages of links; refuse to read more than this.
const MAX_LISTING: usize = 8 << 20;

pub struct HttpsSource {
    cfg: HttpsSourceConfig,
    client: reqwest::Client,
    store: Store,
    dir: SourceDir,
    uploads: UploadSender,
}

/// What went wrong with one poll (one incident per outage, not per poll).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// The URL without query or credentials, for logs and incidents (tokens sometimes ride
/// in query strings).
fn shown(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

fn header_text(h: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `filename="x.zip"` (or `filename*=UTF-8''x.zip`) of a Content-Disposition.
fn disposition_name(h: &HeaderMap) -> Option<String> {
    let v = h.get(CONTENT_DISPOSITION)?.to_str().ok()?;
    for part in v.split(';').map(str::trim) {
        if let Some(rest) = part.strip_prefix("filename*=") {
            let name = rest.rsplit("''").next()?;
            let u = reqwest::Url::parse(&format!("http://x/{name}")).ok()?;
            return file_name_of(&u);
        }
    }
    for part in v.split(';').map(str::trim) {
        if let Some(rest) = part.strip_prefix("filename=") {
            let name = rest.trim_matches('"');
            return plain_name(name).then(|| name.to_owned());
        }
    }
    None
}

/// The links of a listing page: `href="…"` values, and for plain-text listings each line.
pub fn listing_links(base: &reqwest::Url, body: &str) -> Vec<reqwest::Url> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut found_href = false;
    while let Some(i) = rest.find("href=") {
        found_href = true;
        rest = &rest[i + 5..];
        let (quote, after) = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &rest[1..]),
            _ => (None, rest),
        };
        let end = match quote {
            Some(q) => after.find(q),
            None => after.find(|c: char| c.is_whitespace() || c == '>'),
        }
        .unwrap_or(after.len());
        let link = after[..end].replace("&amp;", "&");
        if let Ok(u) = base.join(&link) {
            out.push(u);
        }
        rest = &after[end..];
    }
    if !found_href {
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Ok(u) = base.join(line) {
                out.push(u);
            }
        }
    }
    out
}

impl HttpsSource {
    pub fn new(
        cfg: HttpsSourceConfig,
        store: &Store,
        uploads: UploadSender,
    ) -> Result<HttpsSource, String> {
        let mut b = reqwest::Client::builder()
            .user_agent(crate::notify::webhook::user_agent())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(std::time::Duration::from_secs(30)));
        if let Some(pem) = &cfg.ca_pem {
            for c in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| e.to_string())?;
        Ok(HttpsSource {
            dir: SourceDir::new(store, &cfg.name),
            cfg,
            client,
            store: store.clone(),
            uploads,
        })
    }

    fn request(&self, url: &reqwest::Url) -> reqwest::RequestBuilder {
        let r = self.client.get(url.clone());
        match &self.cfg.token {
            Some(t) => match HeaderValue::from_str(&format!("Bearer {}", t.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    r.header(AUTHORIZATION, v)
                }
                Err(_) => r,
            },
            None => r,
        }
    }

    /// Polls until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut state = self.dir.load();
        tracing::info!(source = %self.cfg.name, "polling for packages");
        loop {
            let r = self.poll(&mut state).await;
            match &r {
                Ok(()) => self.dir.health(&mut state, None),
                Err(e) => self.dir.health(&mut state, Some(&e.to_string())),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One poll: fetch what is new and hand it over, one package at a time.
    pub async fn poll(&self, state: &mut SourceState) -> Result<(), PollError> {
        match &self.cfg.what {
            HttpsWhat::Package(url) => self.poll_package(url, state).await,
            HttpsWhat::Listing { url, pattern } => {
                let Some(body) = self.conditional_get_text(url, state).await? else {
                    return Ok(());
                };
                let mut wanted: Vec<(String, reqwest::Url)> = listing_links(url, &body)
                    .into_iter()
                    .filter_map(|u| file_name_of(&u).map(|n| (n, u)))
                    .filter(|(n, _)| pattern.is_match(n) && !n.ends_with(".sha256"))
                    .filter(|(n, _)| !state.seen.contains_key(n))
                    .collect();
                wanted.sort();
                wanted.dedup_by(|a, b| a.0 == b.0);
                for (name, u) in wanted {
                    let fetched = self.download(&u, &name, None).await?;
                    if let Some((f, _)) = fetched {
                        self.finish(state, f, None).await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// A GET with the last poll's validators; None when nothing changed (304).
    async fn conditional_get_text(
        &self,
        url: &reqwest::Url,
        state: &mut SourceState,
    ) -> Result<Option<String>, PollError> {
        let mut req = self.request(url);
        if let Some(e) = &state.etag {
            req = req.header(IF_NONE_MATCH, e.as_str());
        }
        if let Some(m) = &state.last_modified {
            req = req.header(IF_MODIFIED_SINCE, m.as_str());
        }
        let resp = req.send().await.map_err(|source| PollError::Http {
            url: shown(url),
            source,
        })?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(PollError::Status {
                url: shown(url),
                status: resp.status(),
            });
        }
        let (etag, modified) = (
            header_text(resp.headers(), ETAG),
            header_text(resp.headers(), LAST_MODIFIED),
        );
        let body = read_limited(resp, MAX_LISTING, url).await?;
        // Validators are remembered only once the listing was read whole.
        state.etag = etag;
        state.last_modified = modified;
        self.dir.save(state);
        Ok(Some(String::from_utf8_lossy(&body).into_owned()))
    }

    async fn poll_package(
        &self,
        url: &reqwest::Url,
        state: &mut SourceState,
    ) -> Result<(), PollError> {
        let validators = (state.etag.clone(), state.last_modified.clone());
        let Some(f) = self.download(url, "", Some(&validators)).await? else {
            return Ok(());
        };
        self.finish(state, f.0, Some(f.1)).await
    }

    /// Hands a download over and remembers it.
    async fn finish(
        &self,
        state: &mut SourceState,
        f: Fetched,
        validators: Option<(Option<String>, Option<String>)>,
    ) -> Result<(), PollError> {
        let name = f.name.clone();
        let etag = validators.as_ref().and_then(|v| v.0.clone());
        let (sha, result, size) = hand_over(&self.store, &self.uploads, &self.cfg.name, f).await?;
        state.seen.insert(
            name,
            SeenPackage {
                sha256: sha,
                size,
                result,
                etag: etag.clone(),
            },
        );
        if let Some((etag, modified)) = validators {
            state.etag = etag;
            state.last_modified = modified;
        }
        self.dir.save(state);
        Ok(())
    }
}

/// Reads at most `limit` bytes of a body.
async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    url: &reqwest::Url,
) -> Result<Vec<u8>, PollError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| PollError::Http {
        url: shown(url),
        source,
    })? {
        if body.len() + chunk.len() > limit {
            return Err(PollError::Other(format!(
                "{}: more than {limit} bytes",
                shown(url)
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `.meta` beside a partial download: the validator it was fetched under.
fn meta_path(partial: &Path) -> PathBuf {
    let mut p = partial.as_os_str().to_owned();
    p.push(".meta");
    PathBuf::from(p)
}

impl HttpsSource {
    /// Downloads `url` into the partial dir (resuming a previous partial of the same
    /// validator). With `validators` (package mode) the request is conditional and the
    /// return carries the new validators; None when not modified.
    #[allow(clippy::type_complexity)]
    async fn download(
        &self,
        url: &reqwest::Url,
        listed_name: &str,
        validators: Option<&(Option<String>, Option<String>)>,
    ) -> Result<Option<(Fetched, (Option<String>, Option<String>))>, PollError> {
        let started = SystemTime::now();
        let partial_dir = self.dir.partial_dir();
        tokio::fs::create_dir_all(&partial_dir).await?;
        // One partial per source URL at a time: its name is stable across restarts.
        let key = if listed_name.is_empty() {
            "package".to_owned()
        } else {
            listed_name.to_owned()
        };
        let partial = partial_dir.join(&key);
        let meta = meta_path(&partial);
        let have = tokio::fs::metadata(&partial)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let resume_etag = tokio::fs::read_to_string(&meta).await.ok();
        let mut req = self.request(url);
        let resuming = have > 0 && resume_etag.as_deref().is_some_and(|e| !e.is_empty());
        if resuming {
            req = req
                .header(RANGE, format!("bytes={have}-"))
                .header(IF_RANGE, resume_etag.clone().unwrap_or_default());
        } else if let Some((etag, modified)) = validators {
            if let Some(e) = etag {
                req = req.header(IF_NONE_MATCH, e.as_str());
            }
            if let Some(m) = modified {
                req = req.header(IF_MODIFIED_SINCE, m.as_str());
            }
        }
        let resp = req.send().await.map_err(|source| PollError::Http {
            url: shown(url),
            source,
        })?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE && resuming {
            // The partial is already whole (or the file shrank): start over next poll.
            let _ = tokio::fs::remove_file(&partial).await;
            let _ = tokio::fs::remove_file(&meta).await;
            return Err(PollError::Other(format!(
                "{}: cannot resume (416); starting over",
                shown(url)
            )));
        }
        if !status.is_success() {
            return Err(PollError::Status {
                url: shown(url),
                status,
            });
        }
        let headers = resp.headers().clone();
        let etag = header_text(&headers, ETAG);
        let modified = header_text(&headers, LAST_MODIFIED);
        let name = if listed_name.is_empty() {
            disposition_name(&headers)
                .or_else(|| file_name_of(resp.url()))
                .or_else(|| file_name_of(url))
                .ok_or_else(|| {
                    PollError::Other(format!("{}: no package name in the URL", shown(url)))
                })?
        } else {
            listed_name.to_owned()
        };
        let append = status == StatusCode::PARTIAL_CONTENT && resuming;
        if append {
            tracing::info!(source = %self.cfg.name, package = %name, from = have, "resuming an interrupted download");
        }
        // The validator this download belongs to goes down first, so a resume after a crash
        // asks only for the same file's rest (If-Range).
        tokio::fs::write(&meta, etag.clone().unwrap_or_default()).await?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&partial)
            .await?;
        let remote = resp.remote_addr();
        let mut resp = resp;
        let mut received = 0u64;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(source) => {
                    let _ = file.flush().await;
                    return Err(PollError::Http {
                        url: shown(url),
                        source,
                    });
                }
            };
            file.write_all(&chunk).await?;
            received += chunk.len() as u64;
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let sidecar = self.sidecar(url).await;
        let done = partial_dir.join(format!("{key}.complete"));
        tokio::fs::rename(&partial, &done).await?;
        let _ = tokio::fs::remove_file(&meta).await;
        Ok(Some((
            Fetched {
                name,
                file: done,
                sidecar,
                remote,
                started,
                finished: SystemTime::now(),
                bytes_received: received,
                resumed: append,
            },
            (etag, modified),
        )))
    }

    /// `<url>.sha256`, when the source has one beside the package.
    async fn sidecar(&self, url: &reqwest::Url) -> Option<String> {
        let mut u = url.clone();
        u.set_path(&format!("{}.sha256", url.path()));
        let resp = self.request(&u).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = read_limited(resp, MAX_SIDECAR, &u).await.ok()?;
        String::from_utf8(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_of_listings() {
        let base = reqwest::Url::parse("https://prep.mx/paquetes/").unwrap();
        let html = r#"<a href="20240602_2015_PREP.zip">x</a> <a href='sub/b.zip'>b</a>
            <a href=/abs/c.zip>c</a> <a href="https://cdn.mx/d.zip?x=1&amp;y=2">d</a>"#;
        let links: Vec<String> = listing_links(&base, html)
            .into_iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            links,
            [
                "https://prep.mx/paquetes/20240602_2015_PREP.zip",
                "https://prep.mx/paquetes/sub/b.zip",
                "https://prep.mx/abs/c.zip",
                "https://cdn.mx/d.zip?x=1&y=2"
            ]
        );
        let text = "20240602_2015_PREP.zip\n20240602_2030_PREP.zip\n";
        assert_eq!(listing_links(&base, text).len(), 2);
    }

    #[test]
    fn disposition_names() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"20240602_2015_PREP.zip\""),
        );
        assert_eq!(
            disposition_name(&h).as_deref(),
            Some("20240602_2015_PREP.zip")
        );
        h.insert(
            CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"../../etc/passwd\""),
        );
        assert_eq!(disposition_name(&h), None);
    }
}
