//! The records the store keeps: a package's manifest and an incident line.
//!
//! Owns their JSON shape (stable: operators and the memoria técnica read them).
//! Must never: hold anything that cannot be recomputed from the package but its provenance.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `history/<cut-id>.json`: everything known about one accepted package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub cut_id: String,
    pub sha256: String,
    pub size: u64,
    /// File name as uploaded.
    pub original_name: String,
    /// `zip` or `tar.gz` (the extension of the archived copy).
    pub extension: String,
    pub uploader: String,
    pub client_address: String,
    #[serde(with = "time::serde::rfc3339")]
    pub upload_started: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub upload_finished: OffsetDateTime,
    pub transfer_mb_per_s: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub verified_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub published_at: Option<OffsetDateTime>,
    /// Files and directories in the package.
    pub entries: u64,
    pub files: u64,
    pub uncompressed_bytes: u64,
    /// The cut time parsed from the name (`YYYYMMDD_HHMM_PREP…`, institute's local time).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub cut_time: Option<OffsetDateTime>,
    /// `increment` or `replace`.
    pub mode: String,
    /// The cut this one was built on (increment mode).
    pub previous_cut: Option<String>,
    /// Seconds from the end of the upload to the cut being live.
    pub publish_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One line of `state/incidents.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub severity: Severity,
    /// One of [`kinds`]'s constants.
    pub kind: String,
    pub package: Option<String>,
    pub uploader: Option<String>,
    pub reason: String,
    /// What the incident is about when it is not a package: a notifier's, mirror target's or
    /// source's name. A closing incident ([`closes`]) ends only the conditions of its subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// The closed set of incident kinds. Some open a condition that a later incident closes
/// ([`closes`]); the memoria técnica reports those with a duration.
pub mod kinds {
    /// A package was refused (quarantined); instant.
    pub const PACKAGE_REJECTED: &str = "package-rejected";
    /// A restart found an interrupted publication and finished or undid it; instant.
    pub const CRASH_RECOVERY: &str = "crash-recovery";
    /// No cut for one expected period (warning); closed by [`CUTS_RESUMED`].
    pub const CUT_LATE: &str = "cut-late";
    /// No cut for the critical number of periods (critical: the contracts disconnect a
    /// difusor after three); closed by [`CUTS_RESUMED`].
    pub const CUTS_MISSED: &str = "cuts-missed";
    /// A cut went live after a late/missed period.
    pub const CUTS_RESUMED: &str = "cuts-resumed";
    /// Free space on the data directory is below what must be kept; closed by [`DISK_OK`].
    pub const DISK_LOW: &str = "disk-low";
    pub const DISK_OK: &str = "disk-ok";
    /// The HTTPS certificate expires soon (or has expired); closed by [`CERTIFICATE_OK`].
    pub const CERTIFICATE_EXPIRING: &str = "certificate-expiring";
    pub const CERTIFICATE_OK: &str = "certificate-ok";
    /// A notifier (webhook, command, CDN purge) gave up after its retries; closed by
    /// [`NOTIFY_RECOVERED`] (the same notifier succeeded again).
    pub const NOTIFY_FAILED: &str = "notify-failed";
    pub const NOTIFY_RECOVERED: &str = "notify-recovered";
    /// An object-storage mirror target is unreachable or failing; closed by [`MIRROR_RECOVERED`].
    pub const MIRROR_FAILED: &str = "mirror-failed";
    pub const MIRROR_RECOVERED: &str = "mirror-recovered";
    /// A pull source (S3 / HTTPS) fails; closed by [`SOURCE_RECOVERED`].
    pub const SOURCE_FAILED: &str = "source-failed";
    pub const SOURCE_RECOVERED: &str = "source-recovered";

    pub const ALL: &[&str] = &[
        PACKAGE_REJECTED,
        CRASH_RECOVERY,
        CUT_LATE,
        CUTS_MISSED,
        CUTS_RESUMED,
        DISK_LOW,
        DISK_OK,
        CERTIFICATE_EXPIRING,
        CERTIFICATE_OK,
        NOTIFY_FAILED,
        NOTIFY_RECOVERED,
        MIRROR_FAILED,
        MIRROR_RECOVERED,
        SOURCE_FAILED,
        SOURCE_RECOVERED,
    ];
}

/// The kinds of open condition an incident of `kind` ends (empty for most kinds), for the
/// same `subject`: `notify-recovered` for "cdn" does not close the "webhook" notifier's failure.
pub fn closes(kind: &str) -> &'static [&'static str] {
    match kind {
        kinds::CUTS_RESUMED => &[kinds::CUT_LATE, kinds::CUTS_MISSED],
        kinds::DISK_OK => &[kinds::DISK_LOW],
        kinds::CERTIFICATE_OK => &[kinds::CERTIFICATE_EXPIRING],
        kinds::NOTIFY_RECOVERED => &[kinds::NOTIFY_FAILED],
        kinds::MIRROR_RECOVERED => &[kinds::MIRROR_FAILED],
        kinds::SOURCE_RECOVERED => &[kinds::SOURCE_FAILED],
        _ => &[],
    }
}

/// The conditions still open at the end of `incidents` (in recording order): opening
/// incidents no later incident of a closing kind, for the same subject, has ended.
pub fn open_conditions(incidents: &[Incident]) -> Vec<&Incident> {
    let mut open: Vec<&Incident> = Vec::new();
    for i in incidents {
        let ends = closes(&i.kind);
        if !ends.is_empty() {
            open.retain(|o| !(ends.contains(&o.kind.as_str()) && o.subject == i.subject));
        } else if ALL_CLOSABLE.contains(&i.kind.as_str()) {
            // A repeat of an open condition (e.g. cut-late after a restart) keeps the first.
            if !open
                .iter()
                .any(|o| o.kind == i.kind && o.subject == i.subject)
            {
                open.push(i);
            }
        }
    }
    open
}

/// Kinds that open a condition (some kind [`closes`] them).
const ALL_CLOSABLE: &[&str] = &[
    kinds::CUT_LATE,
    kinds::CUTS_MISSED,
    kinds::DISK_LOW,
    kinds::CERTIFICATE_EXPIRING,
    kinds::NOTIFY_FAILED,
    kinds::MIRROR_FAILED,
    kinds::SOURCE_FAILED,
];
