//! Prometheus metrics: what every part of difusor counts, and their exposition.
//!
//! Owns: the one [`Metrics`] value (created by `app`, handed to the SSH server, the pipeline
//! and the HTTPS server) and its encoding in the text exposition format by `prometheus-client`
//! (OpenMetrics text, which Prometheus scrapes natively). Gauges that describe a state (the
//! live cut's age, disk free, open connections) are set by the admin listener just before each
//! scrape, so they are never stale.
//!
//! PERF: the HTTPS hot path touches only pre-created counters (an array indexed by status
//! and cache class, no label lookup or lock) and [`AtomicHistogram`] (one atomic per bucket;
//! `prometheus-client`'s own histogram takes a lock per observation — measured 4–8 % of
//! small-file throughput with it).
//!
//! Must never: block or allocate on a request's path, or hold a lock while serving.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// Status codes counted under their own label; the rest are "other".
const STATUS_CODES: [u16; 18] = [
    200, 204, 206, 301, 302, 304, 400, 403, 404, 405, 408, 413, 414, 416, 429, 431, 500, 503,
];
const STATUS_SLOTS: usize = STATUS_CODES.len() + 1;

/// How a response may be cached, from its `Cache-Control` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheClass {
    /// `no-store` (e.g. `json/main.json`).
    NoStore,
    /// `no-cache` or `max-age=0`: revalidated every time.
    Revalidate,
    /// Cacheable for a while.
    MaxAge,
    /// No Cache-Control header.
    None,
}

impl CacheClass {
    const ALL: [CacheClass; 4] = [
        CacheClass::NoStore,
        CacheClass::Revalidate,
        CacheClass::MaxAge,
        CacheClass::None,
    ];

    fn label(self) -> &'static str {
        match self {
            CacheClass::NoStore => "no-store",
            CacheClass::Revalidate => "revalidate",
            CacheClass::MaxAge => "max-age",
            CacheClass::None => "none",
        }
    }

    /// Classifies a `Cache-Control` value (a few dozen bytes; no allocation).
    pub fn of(value: Option<&[u8]>) -> CacheClass {
        let Some(v) = value else {
            return CacheClass::None;
        };
        let has = |needle: &[u8]| {
            v.windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
        };
        if has(b"no-store") {
            CacheClass::NoStore
        } else if has(b"no-cache") || has(b"max-age=0") {
            CacheClass::Revalidate
        } else {
            CacheClass::MaxAge
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    code: String,
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PackageLabels {
    result: &'static str,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

/// Every metric difusor exports. Cheap to share (`Arc<Metrics>`); all methods take `&self`.
pub struct Metrics {
    registry: Registry,
    // SSH front door.
    ssh_connections: Counter,
    ssh_auth_failures: Counter,
    ssh_bans: Counter,
    upload_bytes: Counter,
    upload_rate: Histogram,
    upload_size: Histogram,
    // Ingest.
    packages: Family<PackageLabels, Counter>,
    steps: Family<StepLabels, Histogram>,
    // State, set before each scrape.
    seconds_since_last_cut: Gauge<f64, AtomicU64>,
    live_cut_time: Gauge,
    live_cut_published: Gauge,
    packages_in_history: Gauge,
    history_bytes: Gauge,
    disk_free: Gauge,
    disk_total: Gauge,
    staleness_level: Gauge,
    open_connections: Gauge,
    access_log_dropped: Gauge,
    notifier_failures: Family<NameLabels, Gauge>,
    mirror_cuts_behind: Family<NameLabels, Gauge>,
    mirror_seconds_behind: Family<NameLabels, Gauge<f64, AtomicU64>>,
    mirror_up: Family<NameLabels, Gauge>,
    // HTTPS.
    http_requests: [[Counter; CacheClass::ALL.len()]; STATUS_SLOTS],
    http_duration: std::sync::Arc<AtomicHistogram>,
    http_bytes: Counter,
    tls_handshakes: Family<ResultLabels, Counter>,
    http_rate_limited: Counter,
    /// Serialises encoders (the registry itself is immutable after `new`).
    encode_lock: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn status_slot(code: u16) -> usize {
    STATUS_CODES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(STATUS_CODES.len())
}

/// The state gauges, as the admin listener reads them before a scrape.
#[derive(Debug, Clone, Default)]
pub struct StateGauges {
    pub seconds_since_last_cut: Option<f64>,
    pub live_cut_time_unix: Option<i64>,
    pub live_cut_published_unix: Option<i64>,
    pub packages_in_history: u64,
    pub history_bytes: u64,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    /// 0 ok, 1 warning (late), 2 critical (missed).
    pub staleness_level: i64,
    pub open_connections: u64,
    pub access_log_dropped: u64,
    /// Per notifier: failures so far.
    pub notifier_failures: Vec<(String, u64)>,
    pub mirror: Vec<MirrorGauges>,
}

/// One object-storage target's lag.
#[derive(Debug, Clone, Default)]
pub struct MirrorGauges {
    pub name: String,
    pub cuts_behind: u64,
    pub seconds_behind: f64,
    pub healthy: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("difusor");
        let ssh_connections = Counter::default();
        r.register(
            "ssh_connections",
            "SSH connections accepted",
            ssh_connections.clone(),
        );
        let ssh_auth_failures = Counter::default();
        r.register(
            "ssh_auth_failures",
            "SSH authentication attempts refused",
            ssh_auth_failures.clone(),
        );
        let ssh_bans = Counter::default();
        r.register(
            "ssh_bans",
            "Addresses banned by the defender after repeated failures",
            ssh_bans.clone(),
        );
        let upload_bytes = Counter::default();
        r.register_with_unit(
            "upload",
            "Bytes received in completed uploads",
            Unit::Bytes,
            upload_bytes.clone(),
        );
        let upload_rate = Histogram::new([
            1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0, 200.0, 300.0, 500.0,
        ]);
        r.register(
            "upload_throughput_mb_per_second",
            "Transfer rate of each completed upload, MB/s",
            upload_rate.clone(),
        );
        let upload_size =
            Histogram::new([1e5, 1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 4e9]);
        r.register_with_unit(
            "upload_size",
            "Size of each completed upload",
            Unit::Bytes,
            upload_size.clone(),
        );
        let packages = Family::<PackageLabels, Counter>::default();
        r.register(
            "packages",
            "Packages processed, by result and rejection reason",
            packages.clone(),
        );
        let steps = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0,
            ])
        });
        r.register_with_unit(
            "pipeline_step",
            "Duration of each ingest step",
            Unit::Seconds,
            steps.clone(),
        );
        let seconds_since_last_cut = Gauge::<f64, AtomicU64>::default();
        r.register_with_unit(
            "since_last_cut",
            "Time since the live cut was published (NaN before the first cut)",
            Unit::Seconds,
            seconds_since_last_cut.clone(),
        );
        let live_cut_time = Gauge::default();
        r.register_with_unit(
            "live_cut_time",
            "The live cut's time (from its package name), Unix time; 0 if unknown",
            Unit::Seconds,
            live_cut_time.clone(),
        );
        let live_cut_published = Gauge::default();
        r.register_with_unit(
            "live_cut_published",
            "When the live cut went live, Unix time; 0 before the first cut",
            Unit::Seconds,
            live_cut_published.clone(),
        );
        let packages_in_history = Gauge::default();
        r.register(
            "packages_in_history",
            "Accepted packages kept in history",
            packages_in_history.clone(),
        );
        let history_bytes = Gauge::default();
        r.register_with_unit(
            "history",
            "Disk used by the packages in history",
            Unit::Bytes,
            history_bytes.clone(),
        );
        let disk_free = Gauge::default();
        r.register_with_unit(
            "disk_free",
            "Free space available on the data directory's filesystem",
            Unit::Bytes,
            disk_free.clone(),
        );
        let disk_total = Gauge::default();
        r.register_with_unit(
            "disk_total",
            "Size of the data directory's filesystem",
            Unit::Bytes,
            disk_total.clone(),
        );
        let staleness_level = Gauge::default();
        r.register(
            "staleness_level",
            "0 cuts on time, 1 a cut is late (warning), 2 cuts missed (critical)",
            staleness_level.clone(),
        );
        let open_connections = Gauge::default();
        r.register(
            "http_open_connections",
            "HTTPS/HTTP connections open now",
            open_connections.clone(),
        );
        let access_log_dropped = Gauge::default();
        r.register(
            "access_log_dropped_lines",
            "Access log lines dropped because the writer could not keep up",
            access_log_dropped.clone(),
        );
        let notifier_failures = Family::<NameLabels, Gauge>::default();
        r.register(
            "notifier_failures",
            "Notifications (webhook, command, CDN purge) that failed after their retries",
            notifier_failures.clone(),
        );
        let mirror_cuts_behind = Family::<NameLabels, Gauge>::default();
        r.register(
            "mirror_cuts_behind",
            "Cuts published that the object-storage target does not show yet",
            mirror_cuts_behind.clone(),
        );
        let mirror_seconds_behind = Family::<NameLabels, Gauge<f64, AtomicU64>>::default();
        r.register_with_unit(
            "mirror_behind",
            "Since the oldest cut the target does not show yet went live (0 when up to date)",
            Unit::Seconds,
            mirror_seconds_behind.clone(),
        );
        let mirror_up = Family::<NameLabels, Gauge>::default();
        r.register(
            "mirror_up",
            "1 while the target accepts the mirror's requests, 0 while mirror-failed is open",
            mirror_up.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        r.register(
            "http_requests",
            "HTTP requests answered, by status code and cache class",
            http.clone(),
        );
        let http_requests = std::array::from_fn(|slot| {
            let code = STATUS_CODES
                .get(slot)
                .map_or_else(|| "other".to_owned(), u16::to_string);
            std::array::from_fn(|c| {
                http.get_or_create_owned(&HttpLabels {
                    code: code.clone(),
                    cache: CacheClass::ALL[c].label(),
                })
            })
        });
        let http_duration = std::sync::Arc::new(AtomicHistogram::new(
            "http_response",
            "Time from a request's arrival to its response being ready",
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ],
        ));
        r.register_collector(Box::new(std::sync::Arc::clone(&http_duration)));
        let http_bytes = Counter::default();
        r.register_with_unit(
            "http_sent",
            "Response body bytes sent",
            Unit::Bytes,
            http_bytes.clone(),
        );
        let tls_handshakes = Family::<ResultLabels, Counter>::default();
        r.register(
            "tls_handshakes",
            "TLS handshakes, by result (ok, failed, timeout)",
            tls_handshakes.clone(),
        );
        let http_rate_limited = Counter::default();
        r.register(
            "http_rate_limited",
            "Requests answered 429 by the per-address rate limit",
            http_rate_limited.clone(),
        );
        Metrics {
            registry: r,
            ssh_connections,
            ssh_auth_failures,
            ssh_bans,
            upload_bytes,
            upload_rate,
            upload_size,
            packages,
            steps,
            seconds_since_last_cut,
            live_cut_time,
            live_cut_published,
            packages_in_history,
            history_bytes,
            disk_free,
            disk_total,
            staleness_level,
            open_connections,
            access_log_dropped,
            notifier_failures,
            mirror_cuts_behind,
            mirror_seconds_behind,
            mirror_up,
            http_requests,
            http_duration,
            http_bytes,
            tls_handshakes,
            http_rate_limited,
            encode_lock: Mutex::new(()),
        }
    }

    pub fn ssh_connection(&self) {
        self.ssh_connections.inc();
    }

    pub fn ssh_auth_failure(&self) {
        self.ssh_auth_failures.inc();
    }

    pub fn ssh_ban(&self) {
        self.ssh_bans.inc();
    }

    /// A completed upload of `size` bytes, `received` of them over the wire in `took`.
    pub fn upload(&self, size: u64, received: u64, took: Duration) {
        self.upload_bytes.inc_by(received);
        self.upload_size.observe(size as f64);
        let rate = crate::events::rate(received, took) / 1e6;
        if rate > 0.0 {
            self.upload_rate.observe(rate);
        }
    }

    /// A package accepted (live) or rejected for `reason` (a closed kind label).
    pub fn package(&self, accepted: bool, reason: &str) {
        let labels = PackageLabels {
            result: if accepted { "accepted" } else { "rejected" },
            reason: reason.to_owned(),
        };
        self.packages.get_or_create(&labels).inc();
    }

    /// One pipeline step took `d`.
    pub fn step(&self, step: &'static str, d: Duration) {
        self.steps
            .get_or_create(&StepLabels { step })
            .observe(d.as_secs_f64());
    }

    /// One HTTP response: status, its Cache-Control, body bytes, time to answer.
    #[inline]
    pub fn http_response(&self, status: u16, cache: CacheClass, bytes: u64, took: Duration) {
        let c = CacheClass::ALL
            .iter()
            .position(|x| *x == cache)
            .unwrap_or(0);
        if let Some(row) = self.http_requests.get(status_slot(status))
            && let Some(counter) = row.get(c)
        {
            counter.inc();
        }
        if bytes > 0 {
            self.http_bytes.inc_by(bytes);
        }
        self.http_duration.observe(took);
    }

    pub fn http_rate_limited(&self) {
        self.http_rate_limited.inc();
    }

    /// A TLS handshake ended: `ok`, `failed` or `timeout`.
    pub fn tls_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Sets the state gauges (the admin listener, just before encoding).
    pub fn set_state(&self, s: &StateGauges) {
        self.seconds_since_last_cut
            .set(s.seconds_since_last_cut.unwrap_or(f64::NAN));
        self.live_cut_time.set(s.live_cut_time_unix.unwrap_or(0));
        self.live_cut_published
            .set(s.live_cut_published_unix.unwrap_or(0));
        self.packages_in_history
            .set(i64::try_from(s.packages_in_history).unwrap_or(i64::MAX));
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.history_bytes.set(g(s.history_bytes));
        self.disk_free.set(g(s.disk_free_bytes));
        self.disk_total.set(g(s.disk_total_bytes));
        self.staleness_level.set(s.staleness_level);
        self.open_connections.set(g(s.open_connections));
        self.access_log_dropped.set(g(s.access_log_dropped));
        for (name, failures) in &s.notifier_failures {
            self.notifier_failures
                .get_or_create(&NameLabels { name: name.clone() })
                .set(g(*failures));
        }
        for m in &s.mirror {
            let l = NameLabels {
                name: m.name.clone(),
            };
            self.mirror_cuts_behind
                .get_or_create(&l)
                .set(g(m.cuts_behind));
            self.mirror_seconds_behind
                .get_or_create(&l)
                .set(m.seconds_behind);
            self.mirror_up.get_or_create(&l).set(i64::from(m.healthy));
        }
    }

    /// Totals the status page shows: (requests, body bytes) so far.
    pub fn http_totals(&self) -> (u64, u64) {
        let requests = self
            .http_requests
            .iter()
            .flat_map(|row| row.iter())
            .map(Counter::get)
            .sum();
        (requests, self.http_bytes.get())
    }

    /// The exposition text (OpenMetrics text format, ending in `# EOF`).
    pub fn encode(&self) -> String {
        let _one_at_a_time = self.encode_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(16 << 10);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// A histogram of durations in seconds without a lock: one counter per bucket and the sum
/// in nanoseconds, encoded by `prometheus-client` at scrape time.
#[derive(Debug)]
pub struct AtomicHistogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    /// One per bound, then +Inf.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            name,
            help,
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    #[inline]
    fn observe(&self, d: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }
}

impl Collector for AtomicHistogram {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            // The last bucket is +Inf.
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, c.load(Relaxed)));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let mut metric = encoder.encode_descriptor(
            self.name,
            self.help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_classes() {
        assert_eq!(
            CacheClass::of(Some(b"no-cache, no-store, must-revalidate")),
            CacheClass::NoStore
        );
        assert_eq!(
            CacheClass::of(Some(b"public, max-age=0")),
            CacheClass::Revalidate
        );
        assert_eq!(CacheClass::of(Some(b"No-Cache")), CacheClass::Revalidate);
        assert_eq!(
            CacheClass::of(Some(b"public, max-age=60")),
            CacheClass::MaxAge
        );
        assert_eq!(CacheClass::of(None), CacheClass::None);
    }

    #[test]
    fn encodes_what_was_counted() {
        let m = Metrics::new();
        m.http_response(200, CacheClass::NoStore, 10, Duration::from_millis(1));
        m.http_response(799, CacheClass::None, 0, Duration::from_millis(1));
        m.package(false, "bad-zip");
        m.step("extract", Duration::from_millis(300));
        let text = m.encode();
        assert!(
            text.contains("difusor_http_requests_total{code=\"200\",cache=\"no-store\"} 1"),
            "{text}"
        );
        assert!(text.contains("difusor_http_requests_total{code=\"other\",cache=\"none\"} 1"));
        assert!(text.contains("difusor_packages_total{result=\"rejected\",reason=\"bad-zip\"} 1"));
        assert!(text.contains("difusor_pipeline_step_seconds_count{step=\"extract\"} 1"));
        assert!(text.contains("difusor_http_sent_bytes_total 10"));
        assert!(
            text.contains("# TYPE difusor_http_response_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("difusor_http_response_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("difusor_http_response_seconds_bucket{le=\"0.001\"} 2"),
            "{text}"
        );
        assert!(text.contains("difusor_http_response_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.trim_end().ends_with("# EOF"));
        assert_eq!(m.http_totals(), (2, 10));
    }
}
