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
    /// Closed set: `package-rejected`, `crash-recovery`, …
    pub kind: String,
    pub package: Option<String>,
    pub uploader: Option<String>,
    pub reason: String,
}
