//! The operator's overview: the facts a tired operator needs at 3 a.m., gathered once and
//! shown three ways — the admin status page, the admin `/status.json`, and `difusor status`
//! at a terminal (which works from the data directory alone, with the server stopped).
//!
//! Owns: which facts, how they are computed from the store (live cut and its age, staleness,
//! the last packages with their result, incidents of the last 24 h and the conditions still
//! open, disk use against the history the institutes require) and the terminal rendering.
//!
//! Must never: change anything, or read more than the manifests, the incident log and one
//! directory listing (it runs on every page refresh).

use serde::Serialize;
use time::OffsetDateTime;

use crate::monitor::config::MonitorConfig;
use crate::monitor::watch::{Level, TrafficNow, staleness};
use crate::store::manifest::{kinds, open_conditions};
use crate::store::status::disk_use;
use crate::store::{Incident, Severity, Store};

/// How many packages the overview lists.
pub const LAST_PACKAGES: usize = 12;

#[derive(Debug, Clone, Serialize)]
pub struct LiveCut {
    pub cut_id: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cut_time: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub published_at: Option<OffsetDateTime>,
    /// Seconds since it went live.
    pub age_secs: Option<i64>,
    pub package: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StalenessView {
    pub level: Level,
    pub missed: u64,
    pub watching: bool,
    pub period_secs: u64,
    /// When the next cut is due (last cut + period), while watching.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_due: Option<OffsetDateTime>,
}

/// One package received: published or rejected.
#[derive(Debug, Clone, Serialize)]
pub struct PackageRow {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub name: String,
    pub cut_id: Option<String>,
    pub size: Option<u64>,
    pub transfer_mb_per_s: Option<f64>,
    pub publish_seconds: Option<f64>,
    /// `published`, `archived` (not live yet) or `rejected`.
    pub result: &'static str,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskView {
    pub history_bytes: u64,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    pub keep_history_bytes: u64,
    /// Whether history could grow to `keep_history_bytes` in the space left.
    pub required_history_fits: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    pub live: Option<LiveCut>,
    pub staleness: StalenessView,
    pub packages_in_history: usize,
    pub last_packages: Vec<PackageRow>,
    /// Newest first.
    pub incidents_24h: Vec<Incident>,
    pub open_conditions: Vec<Incident>,
    pub disk: DiskView,
    /// Only from a running server.
    pub traffic: Option<TrafficView>,
    /// Object-storage targets and how far behind they are (a running server with a mirror).
    pub mirror: Vec<crate::mirror::TargetLag>,
    /// Webhooks, command hooks and CDN purges, with their counters (a running server).
    pub notifiers: Vec<crate::notify::NotifierStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrafficView {
    #[serde(flatten)]
    pub now: TrafficNow,
    pub open_connections: u64,
    pub requests_total: u64,
    pub bytes_total: u64,
}

/// Gathers the overview from the data directory.
pub fn gather(store: &Store, cfg: &MonitorConfig, now: OffsetDateTime) -> Overview {
    let mut manifests = store.manifests();
    manifests.sort_by_key(|m| m.received_at);
    let live_id = store.live();
    let live_m = live_id
        .as_deref()
        .and_then(|id| manifests.iter().find(|m| m.cut_id == id));
    let live = live_id.as_ref().map(|id| LiveCut {
        cut_id: id.clone(),
        cut_time: live_m.and_then(|m| m.cut_time),
        published_at: live_m.and_then(|m| m.published_at),
        age_secs: live_m
            .and_then(|m| m.published_at)
            .map(|t| (now - t).whole_seconds()),
        package: live_m.map(|m| m.original_name.clone()),
    });
    let last_cut = live.as_ref().and_then(|l| l.published_at);
    let s = staleness(cfg, now, last_cut);
    let staleness = StalenessView {
        level: s.level,
        missed: s.missed,
        watching: s.watching,
        period_secs: cfg.cut_period.as_secs(),
        next_due: s
            .since
            .filter(|_| s.watching)
            .map(|t| t + time::Duration::try_from(cfg.cut_period).unwrap_or_default()),
    };
    let incidents = store.incidents();
    let mut rows: Vec<PackageRow> = manifests
        .iter()
        .map(|m| PackageRow {
            time: m.received_at,
            name: m.original_name.clone(),
            cut_id: Some(m.cut_id.clone()),
            size: Some(m.size),
            transfer_mb_per_s: Some(m.transfer_mb_per_s),
            publish_seconds: m.publish_seconds,
            result: if m.published_at.is_some() {
                "published"
            } else {
                "archived"
            },
            reason: None,
        })
        .collect();
    rows.extend(
        incidents
            .iter()
            .filter(|i| i.kind == kinds::PACKAGE_REJECTED)
            .map(|i| PackageRow {
                time: i.time,
                name: i.package.clone().unwrap_or_default(),
                cut_id: None,
                size: None,
                transfer_mb_per_s: None,
                publish_seconds: None,
                result: "rejected",
                reason: Some(i.reason.clone()),
            }),
    );
    rows.sort_by_key(|r| std::cmp::Reverse(r.time));
    rows.truncate(LAST_PACKAGES);
    let day_ago = now - time::Duration::days(1);
    let mut incidents_24h: Vec<Incident> = incidents
        .iter()
        .filter(|i| i.time >= day_ago)
        .cloned()
        .collect();
    incidents_24h.reverse();
    let open: Vec<Incident> = open_conditions(&incidents).into_iter().cloned().collect();
    let d = disk_use(store);
    let fits = cfg.keep_history_bytes == 0
        || d.free_bytes
            .is_none_or(|f| d.history_bytes.saturating_add(f) >= cfg.keep_history_bytes);
    Overview {
        now,
        live,
        staleness,
        packages_in_history: manifests.len(),
        last_packages: rows,
        incidents_24h,
        open_conditions: open,
        disk: DiskView {
            history_bytes: d.history_bytes,
            free_bytes: d.free_bytes,
            total_bytes: d.total_bytes,
            keep_history_bytes: cfg.keep_history_bytes,
            required_history_fits: fits,
        },
        traffic: None,
        mirror: Vec::new(),
        notifiers: Vec::new(),
    }
}

/// `1.2 GB`, `340 MB`, `12 kB`.
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

/// `3 h 12 min`, `14 min`, `40 s`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// A time for people: `2024-06-02 20:15:03Z`.
pub fn human_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "WARNING",
        Severity::Critical => "CRITICAL",
    }
}

impl Overview {
    /// The terminal rendering of `difusor status`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        match &self.live {
            Some(l) => {
                let _ = writeln!(o, "live cut:   {}", l.cut_id);
                if let Some(t) = l.cut_time {
                    let _ = writeln!(o, "cut time:   {}", human_time(t));
                }
                if let (Some(t), Some(age)) = (l.published_at, l.age_secs) {
                    let _ = writeln!(
                        o,
                        "published:  {} ({} ago)",
                        human_time(t),
                        human_duration(age)
                    );
                }
            }
            None => {
                let _ = writeln!(o, "live cut:   none yet (waiting for the first package)");
            }
        }
        let st = &self.staleness;
        let verdict = match (st.watching, st.level) {
            (false, _) => "not watching (outside the publication window, or no cut yet)".to_owned(),
            (true, Level::Ok) => "on time".to_owned(),
            (true, Level::Warning) => format!("WARNING: {} expected cut(s) missed", st.missed),
            (true, Level::Critical) => format!(
                "CRITICAL: {} expected cuts missed (contracts disconnect at 3)",
                st.missed
            ),
        };
        let _ = writeln!(
            o,
            "cadence:    one cut every {} — {verdict}",
            human_duration(st.period_secs as i64)
        );
        if let Some(due) = st.next_due {
            let _ = writeln!(o, "next due:   {}", human_time(due));
        }
        let _ = writeln!(o, "history:    {} package(s)", self.packages_in_history);
        match self.last_packages.first() {
            Some(p) => {
                let _ = writeln!(
                    o,
                    "last package: {} at {} — {}{}",
                    p.name,
                    human_time(p.time),
                    p.result,
                    p.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(o, "last package: none received");
            }
        }
        let d = &self.disk;
        let _ = writeln!(
            o,
            "disk:       history uses {}, {} free{}",
            human_bytes(d.history_bytes),
            d.free_bytes.map_or("?".to_owned(), human_bytes),
            d.total_bytes
                .map(|t| format!(" of {}", human_bytes(t)))
                .unwrap_or_default()
        );
        if !d.required_history_fits {
            let _ = writeln!(
                o,
                "WARNING:    the {} of history the institutes require would not fit",
                human_bytes(d.keep_history_bytes)
            );
        }
        if !self.open_conditions.is_empty() {
            let _ = writeln!(o, "open conditions:");
            for i in &self.open_conditions {
                let _ = writeln!(o, "  {}", incident_line(i));
            }
        }
        let _ = writeln!(
            o,
            "incidents in the last 24 h: {}",
            self.incidents_24h.len()
        );
        for i in self.incidents_24h.iter().take(20) {
            let _ = writeln!(o, "  {}", incident_line(i));
        }
        if self.incidents_24h.len() > 20 {
            let _ = writeln!(
                o,
                "  … {} more (difusor incidents)",
                self.incidents_24h.len() - 20
            );
        }
        o
    }
}

/// `--since` for `difusor incidents`: a span back from `now` (`90s`, `30m`, `6h`, `2d`), an
/// RFC 3339 time, or a date `YYYY-MM-DD` (its start, UTC).
pub fn parse_since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let t = text.trim();
    if let Some((n, unit)) = t
        .find(|c: char| !c.is_ascii_digit())
        .filter(|i| *i > 0)
        .map(|i| t.split_at(i))
        && let Ok(n) = n.parse::<i64>()
    {
        let secs = match unit {
            "s" => Some(1),
            "m" | "min" => Some(60),
            "h" => Some(3600),
            "d" => Some(86_400),
            _ => None,
        };
        if let Some(unit_secs) = secs {
            return Ok(now - time::Duration::seconds(n.saturating_mul(unit_secs)));
        }
    }
    if let Ok(at) = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(t, &date_format) {
        return Ok(d.midnight().assume_utc());
    }
    Err(format!(
        "{t:?} is not a time: use e.g. 6h, 30m, 2d, 2024-06-02 or 2024-06-02T20:00:00-06:00"
    ))
}

/// One incident as a line for a terminal.
pub fn incident_line(i: &Incident) -> String {
    format!(
        "{} {:<8} {:<20} {}{}",
        human_time(i.time),
        severity_label(i.severity),
        i.kind,
        i.package
            .as_deref()
            .or(i.subject.as_deref())
            .map(|p| format!("[{p}] "))
            .unwrap_or_default(),
        i.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn since_forms() {
        let now = datetime!(2024-06-03 12:00 UTC);
        assert_eq!(parse_since("6h", now), Ok(datetime!(2024-06-03 06:00 UTC)));
        assert_eq!(parse_since("30m", now), Ok(datetime!(2024-06-03 11:30 UTC)));
        assert_eq!(parse_since("2d", now), Ok(datetime!(2024-06-01 12:00 UTC)));
        assert_eq!(
            parse_since("2024-06-02T20:00:00-06:00", now),
            Ok(datetime!(2024-06-03 02:00 UTC))
        );
        assert_eq!(
            parse_since("2024-06-02", now),
            Ok(datetime!(2024-06-02 00:00 UTC))
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("5x", now).is_err());
    }
}
