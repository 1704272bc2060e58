//! The report's classification rules and order statistics, each one a small pure function so
//! the definitions in the module doc and the HTML footnote have exactly one implementation.
//!
//! Owns: what a bot is, what a page view is, the median and the p95.
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

#[cfg(test)]
mod tests {
    use super::*;

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
