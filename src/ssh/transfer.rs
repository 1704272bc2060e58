//! Finished transfers: the transfer log line and the upload-completed event.
//!
//! Owns: deciding when an upload is *complete* (rule 1 of the design): a clean close under a
//! real name, or a rename from a temporary name (`*.part`, `*.filepart`, `*.tmp`,
//! dot-prefixed) to a real one; and the structured log line per transfer (user, address, path,
//! bytes, seconds, MB/s) the institutes' contracts ask for.
//!
//! Must never: raise an event for an aborted upload or twice for one file, or block (events go
//! on an unbounded channel).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use crate::config::Role;
use crate::events::{UploadCompleted, UploadSender, Verdict, rate};
use crate::vfs::{UploadRecord, VPath};

/// The authenticated party of a session.
#[derive(Debug, Clone)]
pub struct Who {
    pub user: String,
    pub role: Role,
    pub peer: SocketAddr,
}

/// Is this the kind of name clients upload to before renaming into place?
pub fn is_temporary_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || [
            ".part",
            ".filepart",
            ".partial",
            ".tmp",
            ".temp",
            ".crdownload",
        ]
        .iter()
        .any(|s| lower.ends_with(s))
}

/// Uploads that finished under a temporary name, waiting for their rename.
struct Pending {
    record: UploadRecord,
    at: Instant,
}

/// Shared by every session: the event channel and the temp-name uploads awaiting a rename.
pub struct Transfers {
    events: UploadSender,
    pending: Mutex<HashMap<PathBuf, Pending>>,
}

/// Pending temp-name uploads older than this are forgotten (their rename will still raise an
/// event, just without the transfer timing).
const PENDING_TTL: Duration = Duration::from_secs(6 * 3600);

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    rate(bytes, d) / 1e6
}

impl Transfers {
    pub fn new(events: UploadSender) -> Transfers {
        Transfers {
            events,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// An upload was committed under `record.vpath`. Returns the channel on which the verdict
    /// for the uploader will arrive, if an event was raised.
    pub fn upload_committed(
        &self,
        who: &Who,
        record: UploadRecord,
    ) -> Option<oneshot::Receiver<Verdict>> {
        let secs = record
            .finished
            .duration_since(record.started)
            .unwrap_or_default();
        tracing::info!(
            target: "difusor::transfer",
            direction = "upload",
            user = %who.user,
            address = %who.peer,
            path = %record.vpath,
            bytes = record.bytes_received,
            size = record.size,
            seconds = secs.as_secs_f64(),
            mb_per_s = mb_per_s(record.bytes_received, secs),
            "transfer finished"
        );
        if record.vpath.file_name().is_some_and(is_temporary_name) {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.retain(|_, v| v.at.elapsed() < PENDING_TTL);
            p.insert(
                record.disk_path.clone(),
                Pending {
                    record,
                    at: Instant::now(),
                },
            );
            return None;
        }
        Some(self.emit(who, record))
    }

    /// A file was renamed from `from` to `to` (disk paths given). If that turns a temporary
    /// upload into a real name, the upload is complete now.
    pub fn renamed(
        &self,
        who: &Who,
        from: (&VPath, PathBuf),
        to: (&VPath, PathBuf),
    ) -> Option<oneshot::Receiver<Verdict>> {
        let from_temp = from.0.file_name().is_some_and(is_temporary_name);
        let to_temp = to.0.file_name().is_some_and(is_temporary_name);
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&from.1);
        if to_temp {
            // Still not final: keep waiting under the new name.
            if let Some(mut p) = pending {
                p.record.vpath = to.0.clone();
                p.record.disk_path = to.1.clone();
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(to.1, p);
            }
            return None;
        }
        if !from_temp {
            return None;
        }
        let size = std::fs::metadata(&to.1).map(|m| m.len()).unwrap_or(0);
        let now = SystemTime::now();
        let mut record = match pending {
            Some(p) => p.record,
            None => UploadRecord {
                vpath: to.0.clone(),
                disk_path: to.1.clone(),
                size,
                bytes_received: size,
                started: now,
                finished: now,
            },
        };
        record.vpath = to.0.clone();
        record.disk_path = to.1;
        record.size = size;
        Some(self.emit(who, record))
    }

    fn emit(&self, who: &Who, r: UploadRecord) -> oneshot::Receiver<Verdict> {
        let (tx, rx) = oneshot::channel();
        let ev = UploadCompleted {
            user: who.user.clone(),
            role: who.role,
            client: who.peer,
            vpath: r.vpath.to_string(),
            disk_path: r.disk_path,
            size: r.size,
            bytes_received: r.bytes_received,
            started: r.started,
            finished: r.finished,
            verdict: Some(tx),
        };
        if self.events.send(ev).is_err() {
            tracing::error!(path = %r.vpath, "upload-completed event dropped: nobody is listening");
        }
        rx
    }

    /// A download finished (or was abandoned) after `bytes` were sent.
    pub fn download_finished(&self, who: &Who, path: &VPath, bytes: u64, started: Instant) {
        let secs = started.elapsed();
        tracing::info!(
            target: "difusor::transfer",
            direction = "download",
            user = %who.user,
            address = %who.peer,
            path = %path,
            bytes,
            seconds = secs.as_secs_f64(),
            mb_per_s = mb_per_s(bytes, secs),
            "transfer finished"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised() {
        for n in [
            "a.zip.filepart",
            "a.zip.part",
            ".a.zip",
            "a.tmp",
            "A.ZIP.PART",
        ] {
            assert!(is_temporary_name(n), "{n}");
        }
        for n in ["a.zip", "a.tar.gz", "a.tgz", "a.zip.sha256", "partial.zip"] {
            assert!(!is_temporary_name(n), "{n}");
        }
    }
}
