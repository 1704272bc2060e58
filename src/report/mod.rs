//! The "memoria técnica": visitor statistics, cuts received, incidents and availability over
//! a window of time, as one [`Report`] rendered to JSON, CSV or a self-contained HTML page.
//!
//! Owns: reading the data directory for a window (access logs, manifests, incidents, health
//! samples), the statistics' definitions below, and the three renderings.
//!
//! Must never: modify the data directory (it only reads; [`Store::open`] may create missing
//! standard subfolders), load an access log whole (they are streamed line by line), write or
//! output a client address or an unhashed visitor key, or panic or fail on a malformed line
//! (it is skipped and counted in `data_quality`).
//!
//! # Definitions
//!
//! Times are bucketed by hour and day of the report's UTC offset (by default the institute's,
//! `ingest.name_utc_offset`). The window is half-open, `[from, to)`; a request belongs to it by
//! its logged time.
//! - **hits**: every request line in the window (humans and bots). **human hits** = hits −
//!   bot hits.
//! - **bots**: requests whose user agent is missing, blank, or contains (ignoring case) one
//!   of [`rules::BOT_PATTERNS`] (bot, crawl, spider, curl, wget, python-requests, …). Bots
//!   count in hits, bot hits and bot page views only — never in page views, visitors or visits.
//! - **page views**: human `GET` requests answered 200 or 304 whose path, without its
//!   `?query`, ends in `/`, `.html` or `.htm` (any case) or whose last segment has no `.`.
//! - **unique visitors** of a day: distinct `HMAC-SHA256(salt of the day, client address ||
//!   0x00 || user agent)` among human requests; the salt is 32 random bytes per day of the
//!   report's offset, made in memory for this run and never written. Per hour: the same keys,
//!   distinct within the hour. Over the window: the **sum of the daily uniques** (with a new
//!   salt every day, one person on two days is two daily visitors, by design).
//! - **visits**: per visitor (the same address and user agent, followed across midnight with
//!   a salt of this run kept in memory only), human requests in time order; a visit ends when
//!   the next request comes more than 30 minutes (1,800 s) after the previous one. A visit's
//!   **duration** (time on site) is its last request − its first (0 s for a one-request visit).
//!   A visit belongs to the hour and day it starts in. Mean and median are over visits; the
//!   median of an even count is the mean of the two middle values.
//! - **latency**: median and p95 of the logged `duration_ms` (arrival → response ready) of all
//!   hits; p95 is the nearest-rank value, rank ⌈0.95·n⌉. Durations are counted exactly below
//!   1.024 ms and floored to within 0.1 % above (a fixed-size histogram: memory does not grow
//!   with the night's traffic).
//! - **peaks**: the calendar minute and second (by logged time) with the most hits, and its
//!   bytes sent as Mbit/s (bytes × 8 / 60 / 10⁶); the hour with the most hits.
//! - **availability**: the time covered by `ok` health samples (a sample at `t` covers
//!   `[t, t + interval_secs)`) ÷ the window, up to the report's moment if the window ends in
//!   the future. Time with no sample at all (the difusor was down) is unavailable. No health
//!   file at all → availability unknown, not 100 %.
//! - **incidents**: conditions (cut-late, cuts-missed, disk-low, …) last from their incident
//!   to the first later incident of a kind that closes them (`store::manifest::closes`, same
//!   subject) inside the window; if none, they are "ongoing" up to the window's end. Other
//!   kinds are instants.
//! - **cuts received**: manifests with `received_at` in the window and `package-rejected`
//!   incidents; the largest gap is between consecutive `published_at` of published cuts.

pub mod csv;
pub mod cuts;
pub mod health;
pub mod html;
pub mod incidents;
pub mod rules;
mod svg;
pub mod traffic;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::{OffsetDateTime, UtcOffset};

use crate::store::Store;
pub use csv::to_csv;
pub use cuts::{CutGap, CutRow, CutsSummary};
pub use health::{Availability, DownInterval, Segment, State};
pub use html::to_html;
pub use incidents::IncidentRow;
pub use traffic::LogQuality;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the data directory {0} does not exist")]
    NoDataDir(PathBuf),
    #[error("empty window: --from ({from}) must be before --to ({to})")]
    EmptyWindow { from: String, to: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{value:?} is not a time: use RFC 3339 (2024-06-02T18:00:00-06:00), YYYY-MM-DD or YYYY-MM-DDTHH:MM"
    )]
    BadTime { value: String },
    #[error("{0:?} is not a UTC offset: use ±HH:MM, e.g. -06:00")]
    BadOffset(String),
    #[error("no random salt for the visitor keys: {0}")]
    Random(String),
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// How to make the report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Hours and days are those of this offset.
    pub utc_offset: UtcOffset,
    /// The report's moment: availability and ongoing incidents are measured up to
    /// `min(to, now)`.
    pub now: OffsetDateTime,
    /// Pages listed in the HTML before the full list (which is inside a `<details>`).
    pub top_pages: usize,
}

impl ReportOptions {
    pub fn new(utc_offset: UtcOffset) -> ReportOptions {
        ReportOptions {
            utc_offset,
            now: OffsetDateTime::now_utc(),
            top_pages: 20,
        }
    }
}

/// The window in milliseconds since the epoch, and the offset its hours and days are in.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
    /// `min(to, now)`: the end of what could be observed.
    pub observed_to_ms: i64,
    pub offset: UtcOffset,
    offset_ms: i64,
}

fn epoch_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

impl Window {
    fn new(
        from: OffsetDateTime,
        to: OffsetDateTime,
        opts: &ReportOptions,
    ) -> Result<Window, ReportError> {
        let (from_ms, to_ms) = (epoch_ms(from), epoch_ms(to));
        if from_ms >= to_ms {
            return Err(ReportError::EmptyWindow {
                from: rfc3339(from),
                to: rfc3339(to),
            });
        }
        Ok(Window {
            from_ms,
            to_ms,
            observed_to_ms: to_ms.min(epoch_ms(opts.now)).max(from_ms),
            offset: opts.utc_offset,
            offset_ms: i64::from(opts.utc_offset.whole_seconds()) * 1000,
        })
    }
    /// Hours since the epoch in the report's offset.
    pub fn hour_index(&self, ms: i64) -> i64 {
        (ms + self.offset_ms).div_euclid(3_600_000)
    }
    /// Days since the epoch in the report's offset.
    pub fn day_index(&self, ms: i64) -> i64 {
        (ms + self.offset_ms).div_euclid(86_400_000)
    }
    /// The instant (ms since the epoch) local period `index` of `unit_ms` starts at.
    pub fn local_index_start_ms(&self, index: i64, unit_ms: i64) -> i64 {
        index * unit_ms - self.offset_ms
    }
    /// `ms` as a time in the report's offset.
    pub fn datetime(&self, ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map(|t| t.to_offset(self.offset))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Requests by HTTP status class.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct StatusClasses {
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
    /// 1xx and anything outside 100..=599.
    pub other: u64,
}

impl StatusClasses {
    pub fn add(&mut self, status: u16) {
        match status {
            200..=299 => self.s2xx += 1,
            300..=399 => self.s3xx += 1,
            400..=499 => self.s4xx += 1,
            500..=599 => self.s5xx += 1,
            _ => self.other += 1,
        }
    }
    pub fn merge(&mut self, o: &StatusClasses) {
        self.s2xx += o.s2xx;
        self.s3xx += o.s3xx;
        self.s4xx += o.s4xx;
        self.s5xx += o.s5xx;
        self.other += o.other;
    }
}

/// The traffic of one period (an hour, a day, or the whole window for the summary).
#[derive(Debug, Clone, Serialize)]
pub struct PeriodStats {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    pub hits: u64,
    pub human_hits: u64,
    pub bot_hits: u64,
    pub page_views: u64,
    pub bot_page_views: u64,
    /// For the whole window: the sum of the daily uniques.
    pub unique_visitors: u64,
    /// Visits that started in the period.
    pub visits: u64,
    pub mean_visit_secs: Option<f64>,
    pub median_visit_secs: Option<f64>,
    pub bytes: u64,
    pub status: StatusClasses,
    pub median_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PageViews {
    pub path: String,
    pub views: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeakMinute {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub requests: u64,
    pub bytes: u64,
    pub mbit_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeakSecond {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeakHour {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub hits: u64,
    pub page_views: u64,
    pub bytes: u64,
}

/// The busiest moments (all hits; the earliest wins a tie). `None` without traffic.
#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    /// The minute with the most requests.
    pub minute: Option<PeakMinute>,
    /// The minute with the most bytes sent.
    pub bandwidth_minute: Option<PeakMinute>,
    pub second: Option<PeakSecond>,
    pub hour: Option<PeakHour>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataQuality {
    pub access_log: LogQuality,
    /// Lines of `state/incidents.jsonl` that are not an incident (skipped).
    pub incidents_unparsable_lines: u64,
    /// `history/*.json` files that are not a manifest (skipped).
    pub manifests_unreadable: u64,
}

/// A term of the report and what it means, for readers of the JSON and the HTML footnote.
#[derive(Debug, Clone, Serialize)]
pub struct Definition {
    pub term: &'static str,
    pub meaning: &'static str,
}

/// The definitions, as the HTML footnote and the JSON carry them (see the module doc).
pub const DEFINITIONS: &[(&str, &str)] = &[
    (
        "hits / solicitudes",
        "every request logged in the window, humans and bots; human hits = hits − bot hits.",
    ),
    (
        "bots",
        "requests whose user agent is missing, blank, or contains (ignoring case) one of: bot, crawl, spider, slurp, curl, wget, python-requests, python-urllib, aiohttp, httpx, go-http-client, java/, okhttp, headlesschrome, phantomjs, lighthouse, monitor, uptime, pingdom, statuscake, nagios, zabbix, prometheus, check_http, facebookexternalhit, whatsapp, preview, httpclient, libwww, scrapy, ahrefs, semrush, yandex, bingpreview, apache-httpclient, node-fetch, axios, reqwest, guzzle, httpie, feedfetcher, mediapartners. They are counted apart and excluded from page views, visitors and visits.",
    ),
    (
        "page views / páginas vistas",
        "human GET requests answered 200 or 304 whose path (without ?query) ends in /, .html or .htm, or whose last segment has no extension.",
    ),
    (
        "unique visitors / visitantes únicos",
        "per day: distinct HMAC-SHA256(salt of the day, address ‖ 0x00 ‖ user agent) among human requests; the salt is 32 random bytes per day, made in memory for this report and never stored; no address is kept. Per hour: distinct within the hour. Window total: the sum of the daily uniques.",
    ),
    (
        "visits / visitas",
        "a visitor's human requests in time order; a new visit starts after more than 30 minutes without requests. Time on site = last request − first request (0 s for a single request). A visit belongs to the hour and day it starts in; the median of an even count is the mean of the two middle values.",
    ),
    (
        "latency / latencia",
        "median and p95 (nearest rank ⌈0.95·n⌉) of the logged duration_ms of all hits: from the request's arrival to the response being ready. Exact below 1.024 ms; above, floored to within 0.1 %.",
    ),
    (
        "peak / pico",
        "the calendar minute and second with the most hits (Mbit/s = bytes × 8 / 60 / 10⁶), and the hour with the most hits.",
    ),
    (
        "availability / disponibilidad",
        "time covered by ok health samples (each covers [time, time + interval)) ÷ the window (up to the report's moment); time with no sample at all counts as down. Without a health file, availability is unknown.",
    ),
    (
        "incidents / incidentes",
        "conditions last from their incident to the first later incident that closes them (same subject) within the window, else they are ongoing at its end; other kinds are instants.",
    ),
    (
        "cuts received / cortes recibidos",
        "manifests whose received_at is in the window, and rejected packages; time to publish = end of upload → cut live; the largest gap is between consecutive publications.",
    ),
];

/// Everything the memoria técnica says about a window.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// `±HH:MM`: the offset of every time, hour and day in the report.
    pub utc_offset: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// The whole window (`unique_visitors` = the sum of the daily uniques).
    pub summary: PeriodStats,
    pub peak: Peak,
    pub availability: Availability,
    pub cuts_summary: CutsSummary,
    pub daily: Vec<PeriodStats>,
    pub hourly: Vec<PeriodStats>,
    /// Every page path with its human page views, most viewed first (ties by path).
    pub pages: Vec<PageViews>,
    pub cuts: Vec<CutRow>,
    pub incidents: Vec<IncidentRow>,
    pub data_quality: DataQuality,
    /// Things a reader must know to trust the figures (dropped lines, missing files …).
    pub notes: Vec<String>,
    pub definitions: Vec<Definition>,
    /// Pages shown in the HTML before the collapsed full list.
    #[serde(skip)]
    pub top_pages: usize,
}

/// `±HH:MM` of `o`.
pub fn format_offset(o: UtcOffset) -> String {
    let (h, m, _) = o.as_hms();
    let sign = if o.is_negative() { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
}

/// Parses `±HH:MM` (also `±HHMM`, `±HH`, `Z`, `UTC`).
pub fn parse_utc_offset(text: &str) -> Result<UtcOffset, ReportError> {
    let bad = || ReportError::BadOffset(text.to_owned());
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(UtcOffset::UTC);
    }
    let (sign, rest) = match (t.strip_prefix('+'), t.strip_prefix('-')) {
        (Some(rest), _) => (1i8, rest),
        (_, Some(rest)) => (-1i8, rest),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !(digits.len() == 2 || digits.len() == 4) {
        return Err(bad());
    }
    let h: i8 = digits
        .get(..2)
        .and_then(|d| d.parse().ok())
        .ok_or_else(bad)?;
    let m: i8 = match digits.get(2..4) {
        Some(d) => d.parse().map_err(|_| bad())?,
        None => 0,
    };
    if rest.contains(':') && rest.len() != 5 {
        return Err(bad());
    }
    // Real offsets run from -12:00 to +14:00.
    if h > 14 || m > 59 {
        return Err(bad());
    }
    UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|_| bad())
}

/// A `--from`/`--to` value: RFC 3339; `YYYY-MM-DD` (the start of that day in `offset`, or its
/// end — the next day's start — when `end_of_day`); or `YYYY-MM-DDTHH:MM[:SS]` in `offset`.
pub fn parse_time_arg(
    text: &str,
    offset: UtcOffset,
    end_of_day: bool,
) -> Result<OffsetDateTime, ReportError> {
    use time::macros::format_description;
    let t = text.trim();
    let bad = || ReportError::BadTime {
        value: text.to_owned(),
    };
    if let Ok(v) = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return Ok(v);
    }
    if let Ok(d) = time::Date::parse(t, format_description!("[year]-[month]-[day]")) {
        let d = if end_of_day {
            d.next_day().ok_or_else(bad)?
        } else {
            d
        };
        return Ok(d.midnight().assume_offset(offset));
    }
    let t = t.replacen(' ', "T", 1);
    for f in [
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
    ] {
        if let Ok(v) = time::PrimitiveDateTime::parse(&t, f) {
            return Ok(v.assume_offset(offset));
        }
    }
    Err(bad())
}

/// The earliest time anything was recorded in `data_dir` (a request, a package received, an
/// incident, a health sample): the default start of a report.
pub fn earliest_data(data_dir: &Path) -> Option<OffsetDateTime> {
    if !data_dir.is_dir() {
        return None;
    }
    let mut times: Vec<i64> = Vec::new();
    times.extend(traffic::earliest_request(&data_dir.join("logs")));
    if let Ok(store) = Store::open(data_dir) {
        times.extend(store.manifests().iter().map(|m| epoch_ms(m.received_at)));
        times.extend(store.incidents().iter().map(|i| epoch_ms(i.time)));
        if let Ok(f) = std::fs::File::open(store.state_dir().join("health.jsonl")) {
            #[derive(serde::Deserialize)]
            struct T {
                time: String,
            }
            times.extend(
                BufReader::new(f)
                    .split(b'\n')
                    .map_while(Result::ok)
                    .filter_map(|l| traffic::parse_ms(&serde_json::from_slice::<T>(&l).ok()?.time))
                    .take(1),
            );
        }
    }
    let ms = times.into_iter().min()?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Non-empty lines of a file (0 if it does not exist).
fn count_lines(path: &Path) -> u64 {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    BufReader::new(f)
        .split(b'\n')
        .map_while(Result::ok)
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64
}

/// Reads `data_dir` and computes the report for `[from, to)`.
pub fn build(
    data_dir: &Path,
    from: OffsetDateTime,
    to: OffsetDateTime,
    opts: &ReportOptions,
) -> Result<Report, ReportError> {
    if !data_dir.is_dir() {
        return Err(ReportError::NoDataDir(data_dir.to_owned()));
    }
    let w = Window::new(from, to, opts)?;
    let t = traffic::analyse(&data_dir.join("logs"), &w)?;
    let store = Store::open(data_dir).map_err(|e| ReportError::Read {
        path: data_dir.display().to_string(),
        source: e,
    })?;
    let manifests = store.manifests();
    let manifest_files = std::fs::read_dir(store.history_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
        })
        .count() as u64;
    let all_incidents = store.incidents();
    let incident_lines = count_lines(&store.incidents_path());
    let availability = health::availability(&store.state_dir(), &w)?;
    let incidents = incidents::incident_rows(&all_incidents, &w);
    let (cuts, cuts_summary) = cuts::cut_rows(&manifests, &all_incidents, &w);

    let quality = DataQuality {
        access_log: t.quality,
        incidents_unparsable_lines: incident_lines.saturating_sub(all_incidents.len() as u64),
        manifests_unreadable: manifest_files.saturating_sub(manifests.len() as u64),
    };
    let mut notes = vec![
        "Unique visitors over the window are the sum of the daily unique visitors: each day has its own random salt, so one person on two days counts on each day. / Los visitantes únicos de la ventana son la suma de los diarios.".to_owned(),
    ];
    let q = &quality.access_log;
    if q.files.is_empty() {
        notes.push("No access log for the window (logs/access-YYYY-MM-DD.log): no traffic figures. / Sin bitácoras de acceso.".into());
    }
    if q.dropped_lines > 0 {
        notes.push(format!(
            "{} requests were served but not logged (the log writer could not keep up): traffic figures are lower bounds. / {} solicitudes no se registraron.",
            q.dropped_lines, q.dropped_lines
        ));
    }
    if q.unparsable_lines > 0 {
        notes.push(format!(
            "{} unparsable access-log lines were skipped. / Se omitieron {} líneas ilegibles.",
            q.unparsable_lines, q.unparsable_lines
        ));
    }
    if q.out_of_order_lines > 0 {
        notes.push(format!(
            "{} requests were logged out of time order (visits are built in log order, tolerating that).",
            q.out_of_order_lines
        ));
    }
    notes.extend(q.problems.iter().cloned());
    if let Some(n) = &availability.note {
        notes.push(n.clone());
    }
    if availability.unparsable_lines > 0 {
        notes.push(format!(
            "{} unparsable health-sample lines were skipped.",
            availability.unparsable_lines
        ));
    }
    if quality.incidents_unparsable_lines > 0 {
        notes.push(format!(
            "{} unparsable incident lines were skipped.",
            quality.incidents_unparsable_lines
        ));
    }
    if quality.manifests_unreadable > 0 {
        notes.push(format!(
            "{} manifests in history/ could not be read and are not listed.",
            quality.manifests_unreadable
        ));
    }
    Ok(Report {
        generated_at: opts.now.to_offset(opts.utc_offset),
        utc_offset: format_offset(opts.utc_offset),
        from: w.datetime(w.from_ms),
        to: w.datetime(w.to_ms),
        summary: t.summary,
        peak: t.peak,
        availability,
        cuts_summary,
        daily: t.daily,
        hourly: t.hourly,
        pages: t.pages,
        cuts,
        incidents,
        data_quality: quality,
        notes,
        definitions: DEFINITIONS
            .iter()
            .map(|(term, meaning)| Definition { term, meaning })
            .collect(),
        top_pages: opts.top_pages,
    })
}

/// The report as pretty-printed JSON (every time in the report's offset, RFC 3339).
pub fn to_json(report: &Report) -> Result<String, ReportError> {
    let mut s = serde_json::to_string_pretty(report)?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    #[test]
    fn time_arguments() {
        let o = offset!(-06:00);
        assert_eq!(
            parse_time_arg("2024-06-02T18:00:00-06:00", o, false).unwrap(),
            datetime!(2024-06-03 00:00 UTC)
        );
        assert_eq!(
            parse_time_arg("2024-06-02", o, false).unwrap(),
            datetime!(2024-06-02 06:00 UTC)
        );
        assert_eq!(
            parse_time_arg("2024-06-02", o, true).unwrap(),
            datetime!(2024-06-03 06:00 UTC)
        );
        assert_eq!(
            parse_time_arg("2024-06-02T18:30", o, true).unwrap(),
            datetime!(2024-06-03 00:30 UTC)
        );
        assert!(parse_time_arg("yesterday", o, false).is_err());
        assert!(parse_time_arg("2024-13-01", o, false).is_err());
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_utc_offset("-06:00").unwrap(), offset!(-06:00));
        assert_eq!(parse_utc_offset("+0530").unwrap(), offset!(+05:30));
        assert_eq!(parse_utc_offset("Z").unwrap(), UtcOffset::UTC);
        for bad in ["06:00", "-6", "-06:0", "-25:00", "x", "-06:00:00"] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
        assert_eq!(format_offset(offset!(-06:00)), "-06:00");
        assert_eq!(format_offset(offset!(+05:30)), "+05:30");
    }
}
