//! The packages received in the window: published manifests and rejections.
//!
//! Owns: the list of packages received (manifests by `received_at`, `package-rejected`
//! incidents) and its summary (time to publish, transfer speed, the largest gap).
//!
//! Must never: count a package twice or call a package published without a `published_at`.

use serde::Serialize;
use time::OffsetDateTime;

use super::{Window, rules};
use crate::store::manifest::{Incident, Manifest, kinds};

/// One package received in the window.
#[derive(Debug, Clone, Serialize)]
pub struct CutRow {
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// `None` for a rejected package (it never became a cut).
    pub cut_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cut_time: Option<OffsetDateTime>,
    pub original_name: String,
    pub uploader: Option<String>,
    pub size: Option<u64>,
    pub transfer_mb_per_s: Option<f64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub published_at: Option<OffsetDateTime>,
    pub publish_seconds: Option<f64>,
    /// `published`, `not published` (archived, publication not recorded) or `rejected`.
    pub result: String,
    /// Why it was rejected.
    pub reason: Option<String>,
}

/// The longest time between two consecutive published cuts.
#[derive(Debug, Clone, Serialize)]
pub struct CutGap {
    pub after_cut: String,
    pub before_cut: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CutsSummary {
    /// Packages received (published, not published and rejected).
    pub received: u64,
    pub published: u64,
    pub rejected: u64,
    pub median_publish_secs: Option<f64>,
    pub max_publish_secs: Option<f64>,
    pub mean_transfer_mb_per_s: Option<f64>,
    pub largest_gap: Option<CutGap>,
}

pub(super) fn cut_rows(
    manifests: &[Manifest],
    incidents: &[Incident],
    w: &Window,
) -> (Vec<CutRow>, CutsSummary) {
    let in_window = |t: OffsetDateTime| {
        let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
        ms >= i128::from(w.from_ms) && ms < i128::from(w.to_ms)
    };
    let local = |t: OffsetDateTime| t.to_offset(w.offset);
    let mut rows: Vec<CutRow> = manifests
        .iter()
        .filter(|m| in_window(m.received_at))
        .map(|m| CutRow {
            received_at: local(m.received_at),
            cut_id: Some(m.cut_id.clone()),
            cut_time: m.cut_time.map(local),
            original_name: m.original_name.clone(),
            uploader: Some(m.uploader.clone()),
            size: Some(m.size),
            transfer_mb_per_s: Some(m.transfer_mb_per_s),
            published_at: m.published_at.map(local),
            publish_seconds: m.publish_seconds,
            result: if m.published_at.is_some() {
                "published"
            } else {
                "not published"
            }
            .into(),
            reason: None,
        })
        .collect();
    rows.extend(
        incidents
            .iter()
            .filter(|i| i.kind == kinds::PACKAGE_REJECTED && in_window(i.time))
            .map(|i| CutRow {
                received_at: local(i.time),
                cut_id: None,
                cut_time: None,
                original_name: i.package.clone().unwrap_or_default(),
                uploader: i.uploader.clone(),
                size: None,
                transfer_mb_per_s: None,
                published_at: None,
                publish_seconds: None,
                result: "rejected".into(),
                reason: Some(i.reason.clone()),
            }),
    );
    rows.sort_by_key(|r| r.received_at);

    let published: Vec<&CutRow> = rows.iter().filter(|r| r.result == "published").collect();
    let mut publish: Vec<f64> = published.iter().filter_map(|r| r.publish_seconds).collect();
    publish.sort_by(f64::total_cmp);
    let mbps: Vec<f64> = published
        .iter()
        .filter_map(|r| r.transfer_mb_per_s)
        .collect();
    let mut by_time: Vec<(&CutRow, OffsetDateTime)> = published
        .iter()
        .filter_map(|r| Some((*r, r.published_at?)))
        .collect();
    by_time.sort_by_key(|(_, t)| *t);
    let largest_gap = by_time
        .windows(2)
        .filter_map(|p| match p {
            [(a, ta), (b, tb)] => Some(CutGap {
                after_cut: a.cut_id.clone().unwrap_or_default(),
                before_cut: b.cut_id.clone().unwrap_or_default(),
                from: *ta,
                to: *tb,
                seconds: (*tb - *ta).as_seconds_f64(),
            }),
            _ => None,
        })
        .max_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let summary = CutsSummary {
        received: rows.len() as u64,
        published: published.len() as u64,
        rejected: rows.iter().filter(|r| r.result == "rejected").count() as u64,
        median_publish_secs: rules::median(&publish),
        max_publish_secs: publish.last().copied(),
        mean_transfer_mb_per_s: rules::mean(&mbps),
        largest_gap,
    };
    (rows, summary)
}
