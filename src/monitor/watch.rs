//! The watch: is the live cut on time, is there disk, is the certificate good — and the
//! incidents and health samples that say so.
//!
//! Owns: the staleness rule ([`staleness`]: a cut is expected every `cut_period`; more than
//! `grace` past a period with no new cut is one missed period; `warn_after_periods` missed →
//! `cut-late` (warning), `critical_after_periods` → `cuts-missed` (critical, `/healthz` 503),
//! a new cut → `cuts-resumed`), quiet outside the publication window; disk (`disk-low` /
//! `disk-ok`) and certificate expiry (`certificate-expiring` / `certificate-ok`) checks; one
//! health sample per `health_sample` into `state/health.jsonl`; and the traffic-now figures
//! of the status page (request counters sampled each tick).
//!
//! Must never: change what is served or block anything: it only reads and records.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use crate::monitor::config::MonitorConfig;
use crate::monitor::metrics::Metrics;
use crate::publish::LiveSite;
use crate::store::manifest::kinds;
use crate::store::status::disk_use;
use crate::store::{Incident, Severity, Store};

/// How late the live cut is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// On time, or nothing is expected (outside the window, before the first cut).
    Ok = 0,
    /// At least `warn_after_periods` expected cuts missed.
    Warning = 1,
    /// At least `critical_after_periods` missed: the contracts disconnect a difusor here.
    Critical = 2,
}

impl Level {
    fn from_u8(v: u8) -> Level {
        match v {
            2 => Level::Critical,
            1 => Level::Warning,
            _ => Level::Ok,
        }
    }
}

/// The staleness verdict at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staleness {
    pub level: Level,
    /// Expected cuts that did not come.
    pub missed: u64,
    /// Counted from here: the last cut's publication (or the window's start, if later).
    pub since: Option<OffsetDateTime>,
    /// False outside the publication window (or before anything is expected).
    pub watching: bool,
}

/// Whether `now` is inside the publication window (no bounds = always).
pub fn in_window(cfg: &MonitorConfig, now: OffsetDateTime) -> bool {
    cfg.window_start.is_none_or(|s| now >= s) && cfg.window_end.is_none_or(|e| now < e)
}

/// The staleness rule. `last_cut`: when the live cut went live (None: no cut yet).
pub fn staleness(
    cfg: &MonitorConfig,
    now: OffsetDateTime,
    last_cut: Option<OffsetDateTime>,
) -> Staleness {
    let quiet = Staleness {
        level: Level::Ok,
        missed: 0,
        since: None,
        watching: false,
    };
    if !in_window(cfg, now) {
        return quiet;
    }
    // Before the first cut ever, only a configured window makes a cut expected.
    let since = match (last_cut, cfg.window_start) {
        (Some(c), Some(s)) => c.max(s),
        (Some(c), None) => c,
        (None, Some(s)) => s,
        (None, None) => return quiet,
    };
    let elapsed = (now - since).whole_milliseconds().max(0) as u128;
    let grace = cfg.grace.as_millis();
    let period = cfg.cut_period.as_millis().max(1);
    let missed = u64::try_from(elapsed.saturating_sub(grace) / period).unwrap_or(u64::MAX);
    let level = if missed >= cfg.critical_after_periods {
        Level::Critical
    } else if missed >= cfg.warn_after_periods {
        Level::Warning
    } else {
        Level::Ok
    };
    Staleness {
        level,
        missed,
        since: Some(since),
        watching: true,
    }
}

/// Minutes, for people.
fn minutes(d: time::Duration) -> String {
    let m = d.whole_seconds().max(0) as f64 / 60.0;
    if m < 10.0 {
        format!("{m:.1} min")
    } else {
        format!("{m:.0} min")
    }
}

/// What the status page shows of the last minute's traffic.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TrafficNow {
    pub requests_per_second: f64,
    pub bytes_per_second: f64,
}

/// The watch's shared state: read by `/healthz`, the admin page and the metrics.
pub struct Monitor {
    cfg: MonitorConfig,
    store: Store,
    site: LiveSite,
    metrics: Arc<Metrics>,
    level: AtomicU8,
    reason: Mutex<String>,
    /// (when, requests so far, bytes so far), one per tick, the last minute's worth.
    traffic: Mutex<VecDeque<(Instant, u64, u64)>>,
    /// Whether the last disk check found the disk low (incidents on changes only).
    disk_low: Mutex<bool>,
    cert_expiry: Box<dyn Fn() -> Option<OffsetDateTime> + Send + Sync>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("level", &self.level())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Monitor {
    /// `cert_expiry` tells the HTTPS certificate's `notAfter` (None: unknown).
    pub fn new(
        cfg: MonitorConfig,
        store: Store,
        site: LiveSite,
        metrics: Arc<Metrics>,
        cert_expiry: Box<dyn Fn() -> Option<OffsetDateTime> + Send + Sync>,
    ) -> Arc<Monitor> {
        Arc::new(Monitor {
            cfg,
            store,
            site,
            metrics,
            level: AtomicU8::new(Level::Ok as u8),
            reason: Mutex::new(String::new()),
            traffic: Mutex::new(VecDeque::new()),
            disk_low: Mutex::new(false),
            cert_expiry,
        })
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.cfg
    }

    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// Why the level is what it is (empty when on time).
    pub fn reason(&self) -> String {
        lock(&self.reason).clone()
    }

    /// The staleness right now (computed, not the last tick's).
    pub fn staleness_now(&self) -> Staleness {
        staleness(&self.cfg, OffsetDateTime::now_utc(), self.last_cut())
    }

    /// The `/healthz` check: unhealthy while cuts are missed (critical).
    pub fn health_probe(self: &Arc<Self>) -> Box<crate::web::health::Probe> {
        let me = Arc::clone(self);
        Box::new(move |_snap| {
            if me.level() == Level::Critical {
                Err(me.reason())
            } else {
                Ok(())
            }
        })
    }

    /// Requests and bytes per second over the last minute (or since start, if sooner):
    /// from the oldest sample kept to the counters right now.
    pub fn traffic_now(&self) -> TrafficNow {
        let (requests, bytes) = self.metrics.http_totals();
        let now = Instant::now();
        let t = lock(&self.traffic);
        match t.front() {
            Some(a) if now > a.0 => {
                let s = (now - a.0).as_secs_f64().max(1.0);
                TrafficNow {
                    requests_per_second: requests.saturating_sub(a.1) as f64 / s,
                    bytes_per_second: bytes.saturating_sub(a.2) as f64 / s,
                }
            }
            _ => TrafficNow::default(),
        }
    }

    /// When the live cut went live (None before the first cut).
    pub fn last_cut(&self) -> Option<OffsetDateTime> {
        self.site.load().meta().and_then(|m| m.published_at)
    }

    fn record(&self, severity: Severity, kind: &str, reason: String) {
        match severity {
            Severity::Info => tracing::info!(kind, %reason, "incident"),
            Severity::Warning => tracing::warn!(kind, %reason, "incident"),
            Severity::Critical => tracing::error!(kind, %reason, "incident"),
        }
        let i = Incident {
            time: OffsetDateTime::now_utc(),
            severity,
            kind: kind.to_owned(),
            package: None,
            uploader: None,
            reason,
            subject: None,
        };
        if let Err(e) = self.store.record_incident(&i) {
            tracing::error!(error = %e, "could not record the incident");
        }
    }

    /// One evaluation of the staleness rule, recording incidents on transitions.
    fn check_staleness(&self, now: OffsetDateTime, last_cut_seen: &mut Option<OffsetDateTime>) {
        let last_cut = self.last_cut();
        let s = staleness(&self.cfg, now, last_cut);
        let before = self.level();
        let period = minutes(time::Duration::try_from(self.cfg.cut_period).unwrap_or_default());
        let new_cut = last_cut != *last_cut_seen;
        *last_cut_seen = last_cut;
        let since_text = |since: Option<OffsetDateTime>| match (since, self.live_cut_id()) {
            (Some(t), Some(id)) if last_cut == Some(t) => {
                format!("the live cut {id} went live {} ago", minutes(now - t))
            }
            (Some(t), _) => format!("no cut since the window opened {} ago", minutes(now - t)),
            (None, _) => String::new(),
        };
        let reason = match s.level {
            Level::Ok => String::new(),
            _ => format!(
                "{} expected cut(s) missed (one every {period}): {}",
                s.missed,
                since_text(s.since)
            ),
        };
        if s.level > before {
            let (severity, kind) = match s.level {
                Level::Critical => (Severity::Critical, kinds::CUTS_MISSED),
                _ => (Severity::Warning, kinds::CUT_LATE),
            };
            self.record(severity, kind, reason.clone());
        } else if s.level < before && s.level == Level::Ok {
            let why = if !s.watching {
                "no cut is expected now (outside the publication window)".to_owned()
            } else if new_cut {
                match self.live_cut_id() {
                    Some(id) => format!("cut {id} went live; cuts are on time again"),
                    None => "cuts are on time again".to_owned(),
                }
            } else {
                "cuts are on time again".to_owned()
            };
            self.record(Severity::Info, kinds::CUTS_RESUMED, why);
        }
        // Critical → warning can only follow a new cut that is itself already late
        // (a zero-grace, tiny period): that is a resumption followed by a new lateness.
        if before == Level::Critical && s.level == Level::Warning {
            self.record(
                Severity::Info,
                kinds::CUTS_RESUMED,
                "a cut went live".to_owned(),
            );
            self.record(Severity::Warning, kinds::CUT_LATE, reason.clone());
        }
        self.level.store(s.level as u8, Ordering::Relaxed);
        *lock(&self.reason) = reason;
    }

    fn live_cut_id(&self) -> Option<String> {
        self.site.load().cut_id().map(str::to_owned)
    }

    fn check_disk(&self) {
        let store = self.store.clone();
        let d = disk_use(&store);
        let free = d.free_bytes.unwrap_or(u64::MAX);
        let gb = |b: u64| b as f64 / 1e9;
        let low_reason = if free < self.cfg.min_free_bytes {
            Some(format!(
                "only {:.1} GB free on the data directory (minimum {:.1} GB)",
                gb(free),
                gb(self.cfg.min_free_bytes)
            ))
        } else if self.cfg.keep_history_bytes > 0
            && d.history_bytes.saturating_add(free) < self.cfg.keep_history_bytes
        {
            Some(format!(
                "history uses {:.1} GB and {:.1} GB are free: the {:.0} GB of history the institute requires would not fit",
                gb(d.history_bytes),
                gb(free),
                gb(self.cfg.keep_history_bytes)
            ))
        } else {
            None
        };
        let was_low = *lock(&self.disk_low);
        match (&low_reason, was_low) {
            (Some(r), false) => self.record(Severity::Warning, kinds::DISK_LOW, r.clone()),
            (None, true) => self.record(
                Severity::Info,
                kinds::DISK_OK,
                format!("{:.1} GB free on the data directory", gb(free)),
            ),
            _ => {}
        }
        *lock(&self.disk_low) = low_reason.is_some();
    }

    fn check_certificate(&self, now: OffsetDateTime, expiring: &mut bool) {
        let Some(not_after) = (self.cert_expiry)() else {
            return;
        };
        let left = not_after - now;
        let warn = time::Duration::days(i64::try_from(self.cfg.cert_warn_days).unwrap_or(0));
        let is_expiring = left < warn;
        if is_expiring && !*expiring {
            let (severity, reason) = if left.is_negative() {
                (
                    Severity::Critical,
                    format!("the HTTPS certificate expired on {not_after}"),
                )
            } else {
                (
                    Severity::Warning,
                    format!(
                        "the HTTPS certificate expires on {not_after} ({} days left)",
                        left.whole_days()
                    ),
                )
            };
            self.record(severity, kinds::CERTIFICATE_EXPIRING, reason);
        } else if !is_expiring && *expiring {
            self.record(
                Severity::Info,
                kinds::CERTIFICATE_OK,
                format!("the HTTPS certificate is valid until {not_after}"),
            );
        }
        *expiring = is_expiring;
    }

    fn sample_health(&self, now: OffsetDateTime) {
        let level = self.level();
        let last = self.last_cut();
        let sample = serde_json::json!({
            "time": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "interval_secs": self.cfg.health_sample.as_secs(),
            "ok": level != Level::Critical,
            "level": level,
            "reason": (level != Level::Ok).then(|| self.reason()),
            "live_cut": self.live_cut_id(),
            "cut_age_secs": last.map(|t| (now - t).whole_seconds().max(0)),
        });
        if let Err(e) = self.store.record_health(&sample) {
            tracing::warn!(error = %e, "cannot record a health sample");
        }
    }

    fn sample_traffic(&self) {
        let (requests, bytes) = self.metrics.http_totals();
        let now = Instant::now();
        let mut t = lock(&self.traffic);
        t.push_back((now, requests, bytes));
        while t
            .front()
            .is_some_and(|f| now.duration_since(f.0) > Duration::from_secs(60))
        {
            t.pop_front();
        }
    }

    /// How often the watch looks: often enough that a short test period is observed
    /// promptly, rarely enough to cost nothing.
    fn tick(&self) -> Duration {
        (self.cfg.cut_period / 20).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Takes over the conditions a previous run left open (a restart must not forget that
    /// cuts were missed, nor leave them open forever once they cleared while it was down):
    /// the first checks then record the closing incident, or nothing if still true.
    fn resume_open_conditions(&self) -> bool {
        let incidents = self.store.incidents();
        let open = crate::store::manifest::open_conditions(&incidents);
        let has = |k: &str| open.iter().any(|i| i.kind == k && i.subject.is_none());
        let level = if has(kinds::CUTS_MISSED) {
            Level::Critical
        } else if has(kinds::CUT_LATE) {
            Level::Warning
        } else {
            Level::Ok
        };
        self.level.store(level as u8, Ordering::Relaxed);
        *lock(&self.disk_low) = has(kinds::DISK_LOW);
        has(kinds::CERTIFICATE_EXPIRING)
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut last_cut_seen = self.last_cut();
        let mut cert_expiring = self.resume_open_conditions();
        let (mut next_disk, mut next_health, mut next_cert) =
            (Instant::now(), Instant::now(), Instant::now());
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let now = OffsetDateTime::now_utc();
            let at = Instant::now();
            self.check_staleness(now, &mut last_cut_seen);
            self.sample_traffic();
            if at >= next_disk {
                next_disk = at + self.cfg.disk_check;
                let me = Arc::clone(&self);
                // statvfs and a history listing: blocking I/O, off the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || me.check_disk()).await;
            }
            if at >= next_cert {
                next_cert = at + Duration::from_secs(3600);
                self.check_certificate(now, &mut cert_expiring);
            }
            if at >= next_health {
                next_health = at + self.cfg.health_sample;
                let me = Arc::clone(&self);
                let _ = tokio::task::spawn_blocking(move || me.sample_health(now)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn cfg() -> MonitorConfig {
        crate::monitor::config::RawMonitor::default()
            .validate()
            .expect("defaults are valid")
    }

    #[test]
    fn levels_by_missed_periods() {
        let c = cfg(); // 15 min, 2 min grace, warn 1, critical 3.
        let last = datetime!(2024-06-02 20:00 UTC);
        let at = |m: i64| staleness(&c, last + time::Duration::minutes(m), Some(last));
        assert_eq!(at(10).level, Level::Ok);
        assert_eq!(at(16).level, Level::Ok, "within the grace");
        assert_eq!(at(18).level, Level::Warning);
        assert_eq!(at(18).missed, 1);
        assert_eq!(at(46).level, Level::Warning);
        assert_eq!(at(48).level, Level::Critical);
        assert_eq!(at(48).missed, 3);
    }

    #[test]
    fn quiet_before_the_first_cut_and_outside_the_window() {
        let mut c = cfg();
        let now = datetime!(2024-06-02 20:00 UTC);
        assert!(!staleness(&c, now, None).watching);
        c.window_start = Some(datetime!(2024-06-02 19:00 UTC));
        c.window_end = Some(datetime!(2024-06-03 19:00 UTC));
        let s = staleness(&c, now, None);
        assert_eq!((s.level, s.missed), (Level::Critical, 3));
        // A cut from before the window: counted from the window's start.
        let s = staleness(&c, now, Some(datetime!(2024-06-01 10:00 UTC)));
        assert_eq!(s.since, c.window_start);
        // After the window: quiet whatever the age.
        let s = staleness(&c, datetime!(2024-06-03 20:00 UTC), Some(now));
        assert_eq!((s.level, s.watching), (Level::Ok, false));
        // Before it too.
        let s = staleness(&c, datetime!(2024-06-02 18:00 UTC), Some(now));
        assert!(!s.watching);
    }
}
