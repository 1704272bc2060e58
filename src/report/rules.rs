//! The report's classification rules and order statistics, each one a small pure function so
//! the definitions in the module doc and the HTML footnote have exactly one implementation.
//!
//! Owns: what a bot is, what a page view is, the median and the p95, and [`Durations`], the
//! fixed-size histogram the request latencies are counted in.
//! Must never: look at anything but the one request (or the one list) it is given.

/// Case-insensitive substrings of a user agent that make the request a bot's. A missing or
/// empty user agent is a bot too (browsers always send one).
pub const BOT_PATTERNS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "slurp",
    "curl",
    "wget",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "httpx",
    "go-http-client",
    "java/",
    "okhttp",
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "monitor",
    "uptime",
    "pingdom",
    "statuscake",
    "nagios",
    "zabbix",
    "prometheus",
    "check_http",
    "facebookexternalhit",
    "whatsapp",
    "preview",
    "httpclient",
    "libwww",
    "scrapy",
    "ahrefs",
    "semrush",
    "yandex",
    "bingpreview",
    "apache-httpclient",
    "node-fetch",
    "axios",
    "reqwest",
    "guzzle",
    "httpie",
    "feedfetcher",
    "mediapartners",
];

/// True when `user_agent` is missing, blank, or contains one of [`BOT_PATTERNS`].
pub fn is_bot(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent else { return true };
    let ua = ua.trim();
    if ua.is_empty() {
        return true;
    }
    let lower = ua.to_ascii_lowercase();
    BOT_PATTERNS.iter().any(|p| lower.contains(p))
}

/// `path` without its `?query` (and `#fragment`, which clients should not send but may).
pub fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// True when `path` (query already stripped) names an HTML document: it ends in `/`, `.html`
/// or `.htm` (any case), or its last segment has no `.` at all (`/presidencia`).
pub fn is_page_path(path: &str) -> bool {
    if path.ends_with('/') {
        return true;
    }
    let last = path.rsplit('/').next().unwrap_or(path);
    let lower = last.to_ascii_lowercase();
    lower.ends_with(".html") || lower.ends_with(".htm") || !last.contains('.')
}

/// A page view: a `GET` answered 200 or 304 for an HTML document ([`is_page_path`]).
pub fn is_page_view(method: &str, status: u16, path: &str) -> bool {
    method == "GET" && matches!(status, 200 | 304) && is_page_path(strip_query(path))
}

/// The median of `sorted` (ascending): the middle value, or the mean of the two middle values
/// for an even count. `None` when empty.
pub fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    if n % 2 == 1 {
        sorted.get(n / 2).copied()
    } else {
        Some((sorted.get(n / 2 - 1)? + sorted.get(n / 2)?) / 2.0)
    }
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted` (ascending): the value at
/// 1-based rank ⌈p/100 · n⌉. `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as usize;
    sorted.get(rank - 1).copied()
}

/// The arithmetic mean, `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Sub-buckets per power of two above [`EXACT_BELOW_US`]: 1,024, so a bucket is < 0.1 % wide.
const SUB_BITS: u32 = 10;
/// Durations under this many µs are counted exactly.
pub const EXACT_BELOW_US: u32 = 1 << SUB_BITS;
const BUCKETS: usize = (EXACT_BELOW_US as usize) * (1 + (32 - SUB_BITS as usize));

/// Request durations in µs, counted in log-linear buckets: exact below 1,024 µs, floored to
/// within 0.1 % above. PERF: memory is fixed (~190 KB once a request is counted) however
/// many requests a night had — a national night logs hundreds of millions, which a list of
/// every duration could not hold.
#[derive(Debug, Default, Clone)]
pub struct Durations {
    counts: Vec<u64>,
    n: u64,
}

impl Durations {
    fn index(us: u32) -> usize {
        if us < EXACT_BELOW_US {
            return us as usize;
        }
        let octave = 31 - us.leading_zeros(); // ≥ SUB_BITS
        let shift = octave - SUB_BITS;
        let sub = ((us >> shift) - EXACT_BELOW_US) as usize;
        EXACT_BELOW_US as usize * (1 + shift as usize) + sub
    }

    /// The smallest duration (µs) counted in bucket `i`.
    fn lower_us(i: usize) -> u64 {
        let sub_count = EXACT_BELOW_US as usize;
        if i < sub_count {
            return i as u64;
        }
        let shift = (i / sub_count - 1) as u32;
        ((sub_count + i % sub_count) as u64) << shift
    }

    pub fn add(&mut self, us: u32) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        if let Some(c) = self.counts.get_mut(Self::index(us)) {
            *c += 1;
            self.n += 1;
        }
    }

    pub fn merge(&mut self, other: &Durations) {
        if other.n == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
    }

    /// The duration at 1-based `rank` of the ascending order, in ms.
    fn at_rank_ms(&self, rank: u64) -> Option<f64> {
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank && *c > 0 {
                return Some(Self::lower_us(i) as f64 / 1000.0);
            }
        }
        None
    }

    /// As [`median`] of the sorted durations, in ms.
    pub fn median_ms(&self) -> Option<f64> {
        let n = self.n;
        if n == 0 {
            return None;
        }
        if n % 2 == 1 {
            self.at_rank_ms(n / 2 + 1)
        } else {
            Some((self.at_rank_ms(n / 2)? + self.at_rank_ms(n / 2 + 1)?) / 2.0)
        }
    }

    /// As [`percentile`] (nearest rank) of the sorted durations, in ms.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.n;
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as u64;
        self.at_rank_ms(rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_exact_below_a_millisecond_and_within_a_thousandth_above() {
        for us in [
            0u32,
            1,
            999,
            1023,
            1024,
            1025,
            5000,
            9000,
            65_537,
            10_000_000,
            u32::MAX,
        ] {
            let i = Durations::index(us);
            let lo = Durations::lower_us(i);
            assert!(lo <= u64::from(us), "{us}: {lo}");
            assert!(
                (u64::from(us) - lo) as f64 <= f64::from(us) / 1000.0,
                "{us}: bucket starts at {lo}"
            );
            if us < EXACT_BELOW_US {
                assert_eq!(lo, u64::from(us));
            }
            assert!(i < BUCKETS, "{us}");
            // Buckets are in ascending order of the durations they hold.
            if us > 0 {
                assert!(Durations::index(us - 1) <= i);
            }
        }
        // The same order statistics as the sorted list, for values it holds exactly.
        let values = [800u32, 1000, 600, 5000, 3000, 9000, 700, 750];
        let mut d = Durations::default();
        for v in values {
            d.add(v);
        }
        let mut sorted: Vec<f64> = values.iter().map(|v| f64::from(*v) / 1000.0).collect();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(d.median_ms(), median(&sorted));
        assert_eq!(d.percentile_ms(95.0), percentile(&sorted, 95.0));
        let mut merged = Durations::default();
        merged.merge(&d);
        merged.merge(&Durations::default());
        merged.add(100);
        assert_eq!(merged.n, 9);
        assert_eq!(merged.median_ms(), Some(0.8));
        assert_eq!(Durations::default().median_ms(), None);
    }

    #[test]
    fn bots_are_missing_empty_or_listed_user_agents() {
        assert!(is_bot(None));
        assert!(is_bot(Some("  ")));
        assert!(is_bot(Some("Mozilla/5.0 (compatible; Googlebot/2.1)")));
        assert!(is_bot(Some("curl/8.5.0")));
        assert!(is_bot(Some("Python-Requests/2.31")));
        assert!(is_bot(Some("Mozilla/5.0 (X11) HeadlessChrome/126.0")));
        assert!(!is_bot(Some(
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0"
        )));
        assert!(!is_bot(Some(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Mobile/15E148 Safari/604.1"
        )));
    }

    #[test]
    fn page_views_are_successful_gets_of_html_documents() {
        for p in [
            "/",
            "/index.html",
            "/a/b.HTM",
            "/presidencia",
            "/resultados/",
            "/x.html?y=1.js",
        ] {
            assert!(is_page_view("GET", 200, p), "{p}");
        }
        assert!(is_page_view("GET", 304, "/"));
        assert!(!is_page_view("HEAD", 200, "/"));
        assert!(!is_page_view("GET", 404, "/"));
        assert!(!is_page_view("GET", 206, "/"));
        for p in [
            "/css/site.css",
            "/json/main.json",
            "/a.b/c.png",
            "/x.js?v=/",
        ] {
            assert!(!is_page_view("GET", 200, p), "{p}");
        }
    }

    #[test]
    fn median_and_nearest_rank_percentile() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), Some(3.0));
        assert_eq!(median(&[1.0, 2.0, 4.0]), Some(2.0));
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&v[..8], 95.0), Some(8.0));
        assert_eq!(percentile(&[5.0], 95.0), Some(5.0));
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
    }
}
