//! Visitor statistics from the access logs: hits, bots, page views, unique visitors, visits,
//! bytes, status classes, latency, peaks — per hour and per day of the report's offset.
//!
//! Owns: streaming `logs/access-YYYY-MM-DD.log` (or `.log.gz`) line by line, the hashed
//! visitor keys and the visit state machine.
//!
//! Must never: load a log file whole, keep or output a client address or an unhashed visitor
//! key (only 128-bit prefixes of HMAC-SHA256 values with salts made in memory for this run),
//! or fail on a malformed line (it is skipped and counted).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::rules;
use super::{
    PageViews, Peak, PeakHour, PeakMinute, PeakSecond, PeriodStats, ReportError, StatusClasses,
    Window,
};

type HmacSha256 = Hmac<Sha256>;

/// A new visit starts after more than this much inactivity (30 minutes).
pub const VISIT_GAP_MS: i64 = 30 * 60 * 1000;

/// Distinct user agents whose bot verdict is remembered (they repeat a lot); cleared when full.
const BOT_CACHE_MAX: usize = 16 * 1024;

/// What the access logs say about the window.
pub(super) struct Traffic {
    pub hourly: Vec<PeriodStats>,
    pub daily: Vec<PeriodStats>,
    pub summary: PeriodStats,
    pub pages: Vec<PageViews>,
    pub peak: Peak,
    pub quality: LogQuality,
}

/// Data-quality counters of the access logs.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LogQuality {
    /// The log files read, by name.
    pub files: Vec<String>,
    /// Non-empty lines read from them.
    pub lines: u64,
    /// Requests whose time is inside the window.
    pub requests_in_window: u64,
    /// Requests read (from the neighbouring days' files) but outside the window.
    pub requests_outside_window: u64,
    /// Sum of the writer's `{"dropped_lines": n}` notes: requests served but never logged.
    pub dropped_lines: u64,
    /// Lines that are neither a request nor a dropped-lines note (skipped).
    pub unparsable_lines: u64,
    /// Requests of a visitor logged before that visitor's previous request (the writer sorts
    /// each 100 ms batch, so this should be 0 or tiny).
    pub out_of_order_lines: u64,
    /// Problems that stopped a file early (a truncated `.gz`), one sentence each.
    pub problems: Vec<String>,
}

/// One access-log line; every field optional so a partial line is counted, not an error.
#[derive(Deserialize)]
struct LogLine<'a> {
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    path: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    duration_ms: Option<f64>,
    #[serde(borrow, default)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(default)]
    dropped_lines: Option<u64>,
}

/// Counters of one hour of the report's offset.
#[derive(Default)]
struct Bucket {
    hits: u64,
    human_hits: u64,
    bot_hits: u64,
    page_views: u64,
    bot_page_views: u64,
    bytes: u64,
    status: StatusClasses,
    /// The requests' `duration_ms`, in whole microseconds (the log's resolution).
    durations: rules::Durations,
    /// Visitor keys of the hour (salted with the hour's day).
    visitors: HashSet<u128>,
    /// Durations of the visits that started in this hour.
    visits_ms: Vec<u64>,
}

/// The visit a visitor is in.
struct OpenVisit {
    start_ms: i64,
    last_ms: i64,
}

struct Analyser<'w> {
    window: &'w Window,
    /// Hour index (hours since the epoch, in the report's offset) of `hours[0]`.
    first_hour: i64,
    hours: Vec<Bucket>,
    /// One keyed HMAC per day of the report's offset, each with its own random salt.
    day_macs: HashMap<i64, HmacSha256>,
    /// Links one visitor's requests across midnight for visits only (never output).
    visit_mac: HmacSha256,
    visits: HashMap<u128, OpenVisit>,
    pages: HashMap<String, u64>,
    /// Minute (since the epoch) → (requests, bytes).
    minutes: HashMap<i64, (u64, u64)>,
    seconds: HashMap<i64, u64>,
    bot_cache: HashMap<String, bool>,
    quality: LogQuality,
}

fn random_mac() -> Result<HmacSha256, ReportError> {
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| ReportError::Random(e.to_string()))?;
    HmacSha256::new_from_slice(&salt).map_err(|e| ReportError::Random(e.to_string()))
}

/// The first 128 bits of HMAC(`mac`'s salt, client || 0x00 || user agent).
fn visitor_key(mac: &HmacSha256, client: &str, user_agent: &str) -> u128 {
    let mut m = mac.clone();
    m.update(client.as_bytes());
    m.update(&[0]);
    m.update(user_agent.as_bytes());
    let out = m.finalize().into_bytes();
    let mut first = [0u8; 16];
    first.copy_from_slice(out.get(..16).unwrap_or(&[0; 16]));
    u128::from_be_bytes(first)
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub(super) fn parse_ms(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

impl<'w> Analyser<'w> {
    fn new(window: &'w Window) -> Result<Self, ReportError> {
        let first_hour = window.hour_index(window.from_ms);
        let last_hour = window.hour_index(window.to_ms - 1);
        let n = usize::try_from(last_hour - first_hour + 1).unwrap_or(0);
        Ok(Analyser {
            window,
            first_hour,
            hours: (0..n).map(|_| Bucket::default()).collect(),
            day_macs: HashMap::new(),
            visit_mac: random_mac()?,
            visits: HashMap::new(),
            pages: HashMap::new(),
            minutes: HashMap::new(),
            seconds: HashMap::new(),
            bot_cache: HashMap::new(),
            quality: LogQuality::default(),
        })
    }

    fn bucket(&mut self, ms: i64) -> Option<&mut Bucket> {
        let i = usize::try_from(self.window.hour_index(ms) - self.first_hour).ok()?;
        self.hours.get_mut(i)
    }

    fn is_bot(&mut self, user_agent: Option<&str>) -> bool {
        let Some(ua) = user_agent else { return true };
        if let Some(b) = self.bot_cache.get(ua) {
            return *b;
        }
        let b = rules::is_bot(Some(ua));
        if self.bot_cache.len() >= BOT_CACHE_MAX {
            self.bot_cache.clear();
        }
        self.bot_cache.insert(ua.to_owned(), b);
        b
    }

    /// One line of a log file (without its newline).
    fn line(&mut self, bytes: &[u8]) -> Result<(), ReportError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.quality.lines += 1;
        let Ok(line) = serde_json::from_slice::<LogLine>(bytes) else {
            self.quality.unparsable_lines += 1;
            return Ok(());
        };
        if let Some(n) = line.dropped_lines {
            self.quality.dropped_lines = self.quality.dropped_lines.saturating_add(n);
            return Ok(());
        }
        let (Some(time), Some(client), Some(method), Some(path), Some(status)) = (
            line.time.as_deref(),
            line.client.as_deref(),
            line.method.as_deref(),
            line.path.as_deref(),
            line.status,
        ) else {
            self.quality.unparsable_lines += 1;
            return Ok(());
        };
        let Some(ms) = parse_ms(time) else {
            self.quality.unparsable_lines += 1;
            return Ok(());
        };
        if ms < self.window.from_ms || ms >= self.window.to_ms {
            self.quality.requests_outside_window += 1;
            return Ok(());
        }
        self.quality.requests_in_window += 1;
        let ua = line.user_agent.as_deref();
        let bot = self.is_bot(ua);
        let page = rules::is_page_view(method, status, path);
        let bytes = line.bytes.unwrap_or(0);
        let duration_us = line
            .duration_ms
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map(|d| (d * 1000.0).round().min(f64::from(u32::MAX)) as u32);

        let minute = self.minutes.entry(ms.div_euclid(60_000)).or_default();
        minute.0 += 1;
        minute.1 = minute.1.saturating_add(bytes);
        *self.seconds.entry(ms.div_euclid(1000)).or_default() += 1;

        let day = self.window.day_index(ms);
        let visitor = match (bot, ua) {
            (false, Some(ua)) => {
                let mac = match self.day_macs.get(&day) {
                    Some(m) => m,
                    None => {
                        let m = random_mac()?;
                        self.day_macs.entry(day).or_insert(m)
                    }
                };
                Some((
                    visitor_key(mac, client, ua),
                    visitor_key(&self.visit_mac, client, ua),
                ))
            }
            _ => None,
        };
        if let Some(b) = self.bucket(ms) {
            b.hits += 1;
            b.bytes = b.bytes.saturating_add(bytes);
            b.status.add(status);
            if let Some(us) = duration_us {
                b.durations.add(us);
            }
            match visitor {
                None => {
                    b.bot_hits += 1;
                    b.bot_page_views += u64::from(page);
                }
                Some((day_key, _)) => {
                    b.human_hits += 1;
                    b.page_views += u64::from(page);
                    b.visitors.insert(day_key);
                }
            }
        }
        if let Some((_, visit_key)) = visitor {
            if page {
                let p = rules::strip_query(path);
                match self.pages.get_mut(p) {
                    Some(n) => *n += 1,
                    None => {
                        self.pages.insert(p.to_owned(), 1);
                    }
                }
            }
            self.visit(visit_key, ms);
        }
        Ok(())
    }

    /// Advances the visitor's visit state with a request at `ms`.
    fn visit(&mut self, key: u128, ms: i64) {
        let mut closed = None;
        match self.visits.get_mut(&key) {
            None => {
                self.visits.insert(
                    key,
                    OpenVisit {
                        start_ms: ms,
                        last_ms: ms,
                    },
                );
            }
            Some(v) => {
                if ms < v.last_ms {
                    self.quality.out_of_order_lines += 1;
                }
                if ms - v.last_ms > VISIT_GAP_MS {
                    closed = Some((v.start_ms, v.last_ms));
                    *v = OpenVisit {
                        start_ms: ms,
                        last_ms: ms,
                    };
                } else if ms >= v.start_ms {
                    v.last_ms = v.last_ms.max(ms);
                } else if v.start_ms - ms <= VISIT_GAP_MS {
                    // Logged late but close to the visit: it is the visit's real start.
                    v.start_ms = ms;
                } else {
                    // Far earlier than the visit it was logged in: a visit of its own.
                    closed = Some((ms, ms));
                }
            }
        }
        if let Some((start, last)) = closed {
            self.close_visit(start, last);
        }
    }

    fn close_visit(&mut self, start_ms: i64, last_ms: i64) {
        if let Some(b) = self.bucket(start_ms) {
            b.visits_ms
                .push(u64::try_from(last_ms - start_ms).unwrap_or(0));
        }
    }

    fn read(&mut self, name: &str, reader: impl Read, gz: bool) -> Result<(), ReportError> {
        let mut reader = BufReader::with_capacity(256 << 10, reader);
        let mut buf = Vec::with_capacity(1024);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    self.line(line)?;
                }
                // A compressed log cut short (still being compressed, or damaged): keep what
                // was read and say so; a plain file that cannot be read is an error.
                Err(e) if gz => {
                    self.quality
                        .problems
                        .push(format!("{name}: stopped reading: {e}"));
                    return Ok(());
                }
                Err(e) => {
                    return Err(ReportError::Read {
                        path: name.into(),
                        source: e,
                    });
                }
            }
        }
    }

    fn finish(mut self) -> Traffic {
        let open: Vec<(i64, i64)> = self
            .visits
            .drain()
            .map(|(_, v)| (v.start_ms, v.last_ms))
            .collect();
        for (start, last) in open {
            self.close_visit(start, last);
        }
        let w = self.window;
        let hour_ms = 3_600_000;
        let hourly: Vec<PeriodStats> = self
            .hours
            .iter_mut()
            .enumerate()
            .map(|(i, b)| {
                let start = w.local_index_start_ms(self.first_hour + i as i64, hour_ms);
                b.visits_ms.sort_unstable();
                let uniques = b.visitors.len() as u64;
                period(
                    b,
                    start,
                    start + hour_ms,
                    uniques,
                    &b.durations,
                    &b.visits_ms,
                    w,
                )
            })
            .collect();

        // Days: the union of their hours (the hours of one day share that day's salt).
        let day_ms = 86_400_000;
        let mut daily = Vec::new();
        let mut all_durations = rules::Durations::default();
        let mut all_visits = Vec::new();
        let mut total = Bucket::default();
        let mut unique_sum = 0u64;
        let mut i = 0;
        while i < self.hours.len() {
            let day = (self.first_hour + i as i64).div_euclid(24);
            let mut day_bucket = Bucket::default();
            let mut visitors: HashSet<u128> = HashSet::new();
            let mut durations = rules::Durations::default();
            let mut visits = Vec::new();
            while i < self.hours.len() && (self.first_hour + i as i64).div_euclid(24) == day {
                if let Some(b) = self.hours.get_mut(i) {
                    add_counts(&mut day_bucket, b);
                    visitors.extend(b.visitors.drain());
                    durations.merge(&b.durations);
                    visits.append(&mut b.visits_ms);
                }
                i += 1;
            }
            let start = w.local_index_start_ms(day, day_ms);
            add_counts(&mut total, &day_bucket);
            unique_sum += visitors.len() as u64;
            visits.sort_unstable();
            let uniques = visitors.len() as u64;
            let end = start + day_ms;
            daily.push(period(
                &day_bucket,
                start,
                end,
                uniques,
                &durations,
                &visits,
                w,
            ));
            all_durations.merge(&durations);
            all_visits.append(&mut visits);
        }
        all_visits.sort_unstable();
        let (from, to) = (w.from_ms, w.to_ms);
        let summary = period(&total, from, to, unique_sum, &all_durations, &all_visits, w);

        let mut pages: Vec<PageViews> = self
            .pages
            .into_iter()
            .map(|(path, views)| PageViews { path, views })
            .collect();
        pages.sort_by(|a, b| b.views.cmp(&a.views).then_with(|| a.path.cmp(&b.path)));

        let minute = self
            .minutes
            .iter()
            .max_by_key(|(m, (n, _))| (*n, std::cmp::Reverse(**m)));
        let bandwidth = self
            .minutes
            .iter()
            .max_by_key(|(m, (_, b))| (*b, std::cmp::Reverse(**m)));
        let to_peak_minute = |(m, (n, b)): (&i64, &(u64, u64))| PeakMinute {
            start: w.datetime(m * 60_000),
            requests: *n,
            bytes: *b,
            mbit_per_s: *b as f64 * 8.0 / 60.0 / 1e6,
        };
        let second = self
            .seconds
            .iter()
            .max_by_key(|(s, n)| (**n, std::cmp::Reverse(**s)))
            .map(|(s, n)| PeakSecond {
                start: w.datetime(s * 1000),
                requests: *n,
            });
        let hour = hourly
            .iter()
            .filter(|h| h.hits > 0)
            .max_by_key(|h| (h.hits, std::cmp::Reverse(h.start)))
            .map(|h| PeakHour {
                start: h.start,
                hits: h.hits,
                page_views: h.page_views,
                bytes: h.bytes,
            });
        Traffic {
            hourly,
            daily,
            summary,
            pages,
            peak: Peak {
                minute: minute.map(to_peak_minute),
                bandwidth_minute: bandwidth.map(to_peak_minute),
                second,
                hour,
            },
            quality: self.quality,
        }
    }
}

fn add_counts(into: &mut Bucket, b: &Bucket) {
    into.hits += b.hits;
    into.human_hits += b.human_hits;
    into.bot_hits += b.bot_hits;
    into.page_views += b.page_views;
    into.bot_page_views += b.bot_page_views;
    into.bytes = into.bytes.saturating_add(b.bytes);
    into.status.merge(&b.status);
}

/// The statistics of one period; `visits_ms` sorted ascending.
fn period(
    b: &Bucket,
    start_ms: i64,
    end_ms: i64,
    unique_visitors: u64,
    durations: &rules::Durations,
    visits_ms: &[u64],
    w: &Window,
) -> PeriodStats {
    let visits: Vec<f64> = visits_ms.iter().map(|ms| *ms as f64 / 1000.0).collect();
    PeriodStats {
        start: w.datetime(start_ms),
        end: w.datetime(end_ms),
        hits: b.hits,
        human_hits: b.human_hits,
        bot_hits: b.bot_hits,
        page_views: b.page_views,
        bot_page_views: b.bot_page_views,
        unique_visitors,
        visits: visits.len() as u64,
        mean_visit_secs: rules::mean(&visits),
        median_visit_secs: rules::median(&visits),
        bytes: b.bytes,
        status: b.status,
        median_ms: durations.median_ms(),
        p95_ms: durations.percentile_ms(95.0),
    }
}

/// Reads the log files that can hold requests of the window: one per UTC day from the day
/// before the window's first to the day after its last (a line's file is its UTC day, but
/// the writer sorts only within each 100 ms batch), then filters each line by its time.
pub(super) fn analyse(logs_dir: &Path, window: &Window) -> Result<Traffic, ReportError> {
    let mut a = Analyser::new(window)?;
    let utc_date = |ms: i64| window.datetime(ms).to_offset(time::UtcOffset::UTC).date();
    let (first, last) = (utc_date(window.from_ms), utc_date(window.to_ms - 1));
    let mut day = first.previous_day().unwrap_or(first);
    let end = last.next_day().unwrap_or(last);
    loop {
        let name = format!(
            "access-{:04}-{:02}-{:02}.log",
            day.year(),
            u8::from(day.month()),
            day.day()
        );
        let plain = logs_dir.join(&name);
        let gz_name = format!("{name}.gz");
        let gz = logs_dir.join(&gz_name);
        let open = |p: &Path, n: &str| {
            File::open(p).map_err(|e| ReportError::Read {
                path: n.into(),
                source: e,
            })
        };
        if plain.is_file() {
            let f = open(&plain, &name)?;
            a.quality.files.push(name.clone());
            a.read(&name, f, false)?;
        } else if gz.is_file() {
            let f = open(&gz, &gz_name)?;
            a.quality.files.push(gz_name.clone());
            a.read(&gz_name, flate2::read::MultiGzDecoder::new(f), true)?;
        }
        if day >= end {
            break;
        }
        match day.next_day() {
            Some(d) => day = d,
            None => break,
        }
    }
    Ok(a.finish())
}

/// The time of the first request in the earliest log file that has one.
pub(super) fn earliest_request(logs_dir: &Path) -> Option<i64> {
    let mut names: Vec<String> = std::fs::read_dir(logs_dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("access-") && (n.ends_with(".log") || n.ends_with(".log.gz")))
        .collect();
    names.sort();
    for name in names {
        let Ok(f) = File::open(logs_dir.join(&name)) else {
            continue;
        };
        let reader: Box<dyn Read> = if name.ends_with(".gz") {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else {
            Box::new(f)
        };
        // The first few parseable lines: the writer sorts per batch, so take their minimum.
        let times: Vec<i64> = BufReader::new(reader)
            .split(b'\n')
            .map_while(Result::ok)
            .filter_map(|l| {
                let line: LogLine = serde_json::from_slice(&l).ok()?;
                parse_ms(line.time.as_deref()?)
            })
            .take(64)
            .collect();
        if let Some(t) = times.into_iter().min() {
            return Some(t);
        }
    }
    None
}
