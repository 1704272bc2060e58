//! The operator's one-glance summary of the store (`/status.json` over SFTP).
//!
//! Owns: which facts it shows — live cut and its time, the last package and the last
//! incident, disk use of history and free space. Must never: change anything.

use serde_json::{Value, json};

use super::Store;

/// Space on the data directory: what history uses and what the filesystem has left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUse {
    pub history_bytes: u64,
    /// Available to difusor (not root-reserved blocks); None if the filesystem cannot say.
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
}

pub fn disk_use(store: &Store) -> DiskUse {
    let vfs = rustix::fs::statvfs(store.root()).ok();
    DiskUse {
        history_bytes: dir_bytes(&store.history_dir()),
        free_bytes: vfs.as_ref().map(|s| s.f_bavail.saturating_mul(s.f_frsize)),
        total_bytes: vfs.map(|s| s.f_blocks.saturating_mul(s.f_frsize)),
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn rfc3339(t: Option<time::OffsetDateTime>) -> Value {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .map(Value::String)
    .unwrap_or(Value::Null)
}

/// The status document.
pub fn status(store: &Store) -> Value {
    let manifests = store.manifests();
    let live = store.live();
    let live_m = live
        .as_deref()
        .and_then(|id| manifests.iter().find(|m| m.cut_id == id));
    let last = manifests.iter().max_by_key(|m| m.received_at);
    let last_incident = store.incidents().pop();
    let disk = disk_use(store);
    json!({
        "live_cut": live,
        "live_cut_time": rfc3339(live_m.and_then(|m| m.cut_time)),
        "live_published_at": rfc3339(live_m.and_then(|m| m.published_at)),
        "packages_in_history": manifests.len(),
        "last_package": last.map(|m| json!({
            "name": m.original_name,
            "cut_id": m.cut_id,
            "size": m.size,
            "received_at": rfc3339(Some(m.received_at)),
            "published": m.published_at.is_some(),
            "transfer_mb_per_s": m.transfer_mb_per_s,
        })),
        "last_incident": last_incident.map(|i| json!({
            "time": rfc3339(Some(i.time)),
            "kind": i.kind,
            "package": i.package,
            "reason": i.reason,
        })),
        "disk": {
            "history_bytes": disk.history_bytes,
            "free_bytes": disk.free_bytes,
        },
    })
}
