//! Incidents of the window with their durations.
//!
//! Owns: pairing each condition-opening incident with the incident that closes it
//! (`store::manifest::closes`, same subject).
//!
//! Must never: close a condition with an incident of another subject, or with one after the
//! window (the report describes the window: such a condition is "ongoing" at its end).

use serde::Serialize;
use time::OffsetDateTime;

use super::Window;
use crate::store::manifest::{Incident, Severity, closes, kinds};

/// One incident as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentRow {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub severity: Severity,
    pub kind: String,
    pub subject: Option<String>,
    pub package: Option<String>,
    pub uploader: Option<String>,
    pub reason: String,
    /// `resolved` (a later incident closed it), `ongoing` (still open at the window's end) or
    /// `instant` (a kind that opens no condition: rejections, recoveries, the closers).
    pub status: String,
    /// When it ended: the closing incident's time, or the measured end for `ongoing`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    /// The kind of the incident that closed it.
    pub closed_by: Option<String>,
    /// From `time` to `ends_at`; `null` for instant kinds.
    pub duration_secs: Option<f64>,
}

fn is_condition(kind: &str) -> bool {
    kinds::ALL.iter().any(|k| closes(k).contains(&kind))
}

/// The incidents overlapping the window: those recorded in it, and conditions opened before
/// it that were still open at its start.
pub(super) fn incident_rows(all: &[Incident], w: &Window) -> Vec<IncidentRow> {
    let mut sorted: Vec<&Incident> = all.iter().collect();
    sorted.sort_by_key(|i| i.time);
    let ms = |t: OffsetDateTime| {
        i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
    };
    let mut rows = Vec::new();
    for (n, i) in sorted.iter().enumerate() {
        let start = ms(i.time);
        if start >= w.to_ms {
            break;
        }
        let mut row = IncidentRow {
            time: i.time.to_offset(w.offset),
            severity: i.severity,
            kind: i.kind.clone(),
            subject: i.subject.clone(),
            package: i.package.clone(),
            uploader: i.uploader.clone(),
            reason: i.reason.clone(),
            status: "instant".into(),
            ends_at: None,
            closed_by: None,
            duration_secs: None,
        };
        if is_condition(&i.kind) {
            let closer = sorted.iter().skip(n + 1).find(|c| {
                ms(c.time) < w.to_ms
                    && c.subject == i.subject
                    && closes(&c.kind).contains(&i.kind.as_str())
            });
            let end = match closer {
                Some(c) => {
                    row.status = "resolved".into();
                    row.closed_by = Some(c.kind.clone());
                    ms(c.time)
                }
                None => {
                    row.status = "ongoing".into();
                    w.observed_to_ms.max(start)
                }
            };
            if start < w.from_ms && end < w.from_ms {
                continue;
            }
            row.ends_at = Some(w.datetime(end));
            row.duration_secs = Some((end - start) as f64 / 1000.0);
        } else if start < w.from_ms {
            continue;
        }
        rows.push(row);
    }
    rows
}
