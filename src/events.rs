//! In-process events between capabilities.
//!
//! Owns: [`UploadCompleted`] — raised once per upload that finished under its real name (a
//! clean close, or a rename from a temporary name), never for an aborted one — and the
//! [`Verdict`] a consumer (the ingest pipeline) may send back so the uploader's `close` can
//! report a rejection.
//!
//! Also [`CutPublished`]: a cut went live (the HTTPS snapshot, CDN purge and mirrors follow it).
//!
//! Must never: block the sender. The channel is unbounded on purpose: events are a few per
//! quarter hour, and an SFTP worker thread must never wait on the pipeline to free a slot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::config::Role;

/// The outcome of processing an upload, sent back to the session that delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Taken (e.g. the package is verified and live); the message is informational.
    Accepted(String),
    /// Refused; the reason is shown to the uploader.
    Rejected(String),
}

/// One finished upload.
#[derive(Debug)]
pub struct UploadCompleted {
    pub user: String,
    pub role: Role,
    pub client: SocketAddr,
    /// Path as the client sees it (e.g. `/incoming/20240602_2015_PREP.zip`).
    pub vpath: String,
    /// Where the file is on disk, under its real name.
    pub disk_path: PathBuf,
    pub size: u64,
    /// Bytes that crossed the wire (less than `size` for a resumed upload).
    pub bytes_received: u64,
    pub started: SystemTime,
    pub finished: SystemTime,
    /// Set by the session when the uploader is waiting on its `close`: answer it to have the
    /// verdict reach the client. Dropping it answers "OK" at once.
    pub verdict: Option<oneshot::Sender<Verdict>>,
}

impl UploadCompleted {
    pub fn duration(&self) -> Duration {
        self.finished
            .duration_since(self.started)
            .unwrap_or(Duration::ZERO)
    }

    /// Transfer rate in bytes per second (0 for an instant transfer).
    pub fn bytes_per_sec(&self) -> f64 {
        rate(self.bytes_received, self.duration())
    }
}

/// Bytes per second over `d`, 0 when `d` is zero.
pub fn rate(bytes: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { bytes as f64 / s } else { 0.0 }
}

pub type UploadSender = mpsc::UnboundedSender<UploadCompleted>;
pub type UploadReceiver = mpsc::UnboundedReceiver<UploadCompleted>;

pub fn upload_channel() -> (UploadSender, UploadReceiver) {
    mpsc::unbounded_channel()
}

/// A cut went live: `cut_dir` is complete, immutable, and `data/live` points at it.
#[derive(Debug, Clone)]
pub struct CutPublished {
    pub cut_id: String,
    pub cut_dir: PathBuf,
    pub manifest: crate::store::Manifest,
    /// The cut that was live just before this one (whatever the publish mode), so followers
    /// can tell what changed (`store::diff`). Its directory may be pruned (`keep_cuts`).
    pub previous_live: Option<String>,
    /// Packages in history now (including this one).
    pub packages_in_history: usize,
}
