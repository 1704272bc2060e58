//! Pull sources: packages difusor fetches from the institute (`[[sources.https]]`,
//! `[[sources.s3]]`) instead of
//! receiving a push — INE 2021 has difusores fetch each package from a service it provides.
//!
//! Owns: each source's polling task, its durable state (`state/sources/<name>.json`: what was
//! already fetched, the validators of the last poll), interrupted downloads kept under
//! `state/sources/<name>/partial/` and resumed with `Range`, and the hand-over to the ingest
//! pipeline: the package (and its `.sha256` beside it, when the source has one) is moved into
//! `incoming/` and announced as an [`UploadCompleted`] from uploader `source:<name>` — the
//! same verification, history, quarantine, incidents and manifests as an SFTP upload.
//! A package whose SHA-256 is already in history is never handed over again. A failing
//! source records one `source-failed` incident (and `source-recovered` when it works again),
//! not one per poll.
//!
//! Must never: write into `incoming/` anything but a complete download (it is renamed in),
//! hand over two packages at once (it waits for each verdict, so arrival order is kept), or
//! let a source's failure touch the others or the site.

pub mod config;
pub mod https;
pub mod s3;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::config::Role;
use crate::events::{UploadCompleted, UploadSender, Verdict};
use crate::store::manifest::kinds;
use crate::store::{Incident, Severity, Store, write_atomic};

pub use config::SourcesConfig;

/// What one source remembers between polls and restarts.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SourceState {
    /// Packages already fetched (by file name): what became of them.
    #[serde(default)]
    pub seen: BTreeMap<String, SeenPackage>,
    /// Validators of the last answer for the polled URL (package or listing).
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    /// Whether the last poll failed (so a restart does not raise the incident again).
    #[serde(default)]
    pub failing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeenPackage {
    pub sha256: String,
    pub size: u64,
    /// `published`, `rejected: …`, `already in history`.
    pub result: String,
    /// The validator it was fetched under (a new one for the same name is a new package).
    pub etag: Option<String>,
}

/// A source's place in the data directory.
#[derive(Debug, Clone)]
pub struct SourceDir {
    name: String,
    store: Store,
}

impl SourceDir {
    pub fn new(store: &Store, name: &str) -> SourceDir {
        SourceDir {
            name: name.to_owned(),
            store: store.clone(),
        }
    }

    fn state_path(&self) -> PathBuf {
        self.store
            .state_dir()
            .join("sources")
            .join(format!("{}.json", self.name))
    }

    /// Where interrupted downloads wait to be resumed.
    pub fn partial_dir(&self) -> PathBuf {
        self.store
            .state_dir()
            .join("sources")
            .join(&self.name)
            .join("partial")
    }

    pub fn load(&self) -> SourceState {
        std::fs::read(self.state_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, s: &SourceState) {
        let path = self.state_path();
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| write_atomic(&path, &serde_json::to_vec_pretty(s).unwrap_or_default()));
        if let Err(e) = written {
            tracing::error!(source = %self.name, error = %e, "cannot save the source's state");
        }
    }

    /// Records the source failing (once) or recovering.
    pub fn health(&self, state: &mut SourceState, failure: Option<&str>) {
        let (kind, severity, reason) = match (failure, state.failing) {
            (Some(why), false) => (kinds::SOURCE_FAILED, Severity::Warning, why.to_owned()),
            (None, true) => (
                kinds::SOURCE_RECOVERED,
                Severity::Info,
                "the source answers again".to_owned(),
            ),
            (Some(why), true) => {
                tracing::debug!(source = %self.name, reason = why, "source still failing");
                return;
            }
            (None, false) => return,
        };
        state.failing = failure.is_some();
        self.save(state);
        match failure {
            Some(_) => tracing::warn!(source = %self.name, %reason, "source failing"),
            None => tracing::info!(source = %self.name, "source recovered"),
        }
        let _ = self.store.record_incident(&Incident {
            time: time::OffsetDateTime::now_utc(),
            severity,
            kind: kind.to_owned(),
            package: None,
            uploader: None,
            reason,
            subject: Some(self.name.clone()),
        });
    }
}

/// A complete download, ready for the pipeline.
#[derive(Debug)]
pub struct Fetched {
    /// The package's file name (becomes `incoming/<name>`).
    pub name: String,
    /// The complete file (in the source's partial dir, same filesystem as `incoming/`).
    pub file: PathBuf,
    /// The `.sha256` found beside the package, if any.
    pub sidecar: Option<String>,
    /// Who answered (for the manifest's client address).
    pub remote: Option<SocketAddr>,
    pub started: SystemTime,
    pub finished: SystemTime,
    /// Bytes fetched in this run (less than the size after a resume).
    pub bytes_received: u64,
    /// Whether this run appended to bytes an earlier run fetched.
    pub resumed: bool,
}

/// Hands a complete download to the pipeline and waits for its verdict. Returns the result
/// to remember (`published`, `rejected: …`, `already in history`).
pub async fn hand_over(
    store: &Store,
    uploads: &UploadSender,
    source: &str,
    f: Fetched,
) -> std::io::Result<(String, String, u64)> {
    let path = f.file.clone();
    let sha = tokio::task::spawn_blocking(move || crate::ingest::checksum::sha256_file(&path))
        .await
        .map_err(std::io::Error::other)??;
    let size = std::fs::metadata(&f.file)?.len();
    // A resumed download that disagrees with its `.sha256` may hold bytes of an older run
    // that went bad: fetch it again whole rather than hand the institute's package to the
    // pipeline as corrupt (which would quarantine it for good).
    let sidecar_sha = f
        .sidecar
        .as_deref()
        .and_then(|s| crate::ingest::checksum::parse_sidecar(s).ok());
    if f.resumed && sidecar_sha.as_deref().is_some_and(|want| want != sha) {
        let _ = std::fs::remove_file(&f.file);
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: the resumed download does not match its .sha256; it is fetched again from the start",
                f.name
            ),
        ));
    }
    if store.manifests().iter().any(|m| m.sha256 == sha) {
        tracing::info!(source, package = %f.name, %sha, "already in history; not processed again");
        let _ = std::fs::remove_file(&f.file);
        return Ok((sha, "already in history".to_owned(), size));
    }
    let incoming = store.incoming_dir();
    let dest = incoming.join(&f.name);
    if let Some(sc) = &f.sidecar {
        write_atomic(&crate::ingest::checksum::sidecar_path(&dest), sc.as_bytes())?;
    }
    std::fs::rename(&f.file, &dest)?;
    let (tx, rx) = oneshot::channel();
    let ev = UploadCompleted {
        user: format!("source:{source}"),
        role: Role::Publisher,
        client: f
            .remote
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        vpath: format!("/incoming/{}", f.name),
        disk_path: dest,
        size,
        bytes_received: f.bytes_received,
        started: f.started,
        finished: f.finished,
        verdict: Some(tx),
    };
    if uploads.send(ev).is_err() {
        return Err(std::io::Error::other("the ingest pipeline is not running"));
    }
    let result = match rx.await {
        Ok(Verdict::Accepted(_)) => "published".to_owned(),
        Ok(Verdict::Rejected(why)) => format!("rejected: {why}"),
        Err(_) => "handed over".to_owned(),
    };
    tracing::info!(source, package = %f.name, %result, "fetched package processed");
    Ok((sha, result, size))
}

/// The running sources (their tasks stop with the shutdown signal).
#[derive(Debug, Default)]
pub struct Sources {
    pub names: Vec<String>,
}

/// Starts one polling task per source.
pub fn start(
    cfg: &SourcesConfig,
    store: &Store,
    uploads: UploadSender,
    shutdown: watch::Receiver<bool>,
) -> Sources {
    let mut names = Vec::new();
    let cannot_start = |name: &str, e: String| {
        tracing::error!(source = %name, error = %e, "cannot start the source");
        let dir = SourceDir::new(store, name);
        let mut st = dir.load();
        dir.health(&mut st, Some(&format!("cannot start: {e}")));
    };
    for s in &cfg.https {
        names.push(s.name.clone());
        match https::HttpsSource::new(s.clone(), store, uploads.clone()) {
            Ok(src) => {
                tokio::spawn(src.run(shutdown.clone()));
            }
            Err(e) => cannot_start(&s.name, e),
        }
    }
    for s in &cfg.s3 {
        names.push(s.name.clone());
        match s3::S3Source::new(s.clone(), store, uploads.clone()) {
            Ok(src) => {
                tokio::spawn(src.run(shutdown.clone()));
            }
            Err(e) => cannot_start(&s.name, e),
        }
    }
    Sources { names }
}

/// A file name from a URL path's last segment (percent-decoded), if it is a plain name.
pub fn file_name_of(url: &reqwest::Url) -> Option<String> {
    let seg = url.path_segments()?.next_back()?;
    let decoded = percent_decode(seg)?;
    plain_name(&decoded).then_some(decoded)
}

/// Whether `n` can be a file in `incoming/`: no separators, not hidden, not empty.
pub fn plain_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && !n.starts_with('.')
        && !n.contains(['/', '\\', '\0'])
        && !n.chars().any(char::is_control)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_urls() {
        let u = reqwest::Url::parse("https://x.mx/p/20240602_2015_PREP%20X.zip?a=1").unwrap();
        assert_eq!(
            file_name_of(&u).as_deref(),
            Some("20240602_2015_PREP X.zip")
        );
        let u = reqwest::Url::parse("https://x.mx/p/..%2Fetc.zip").unwrap();
        assert_eq!(file_name_of(&u), None);
        let u = reqwest::Url::parse("https://x.mx/p/").unwrap();
        assert_eq!(file_name_of(&u), None);
        assert!(!plain_name(".hidden.zip"));
    }
}
