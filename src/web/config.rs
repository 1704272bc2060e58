//! The `[web]` section of the config file: raw (serde) and validated.
//!
//! Owns: every HTTPS setting, its documented default, and its check. Errors name the key
//! (`web.listen`, `web.cache[2].glob`, …) and say what would be accepted.
//!
//! Must never: read certificate files (that is `tls`), bind sockets, or accept a value it
//! cannot honour (no warn-and-continue, no silent reset to a default).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{ConfigError, count, invalid, secs};
use crate::web::cache_control::CacheRules;

/// HTTPS port when nothing is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// `Cache-Control` for the JSON the results page polls: never reuse a stale copy.
pub const NO_CACHE: &str = "no-cache, no-store, must-revalidate";
/// `Cache-Control` for everything no rule matches.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=60";

/// `[web]` as written: every field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    pub listen: Option<String>,
    pub http_listen: Option<String>,
    pub http_mode: Option<HttpMode>,
    pub public_host: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub self_signed_names: Option<Vec<String>>,
    pub cert_poll_secs: Option<u64>,
    pub reload_on_sighup: Option<bool>,
    pub hsts_max_age_secs: Option<u64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_connections: Option<u64>,
    pub max_connections_per_address: Option<u64>,
    pub tls_handshake_timeout_secs: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_headers: Option<u64>,
    pub h2_max_concurrent_streams: Option<u64>,
    pub tls_session_cache: Option<u64>,
    pub workers: Option<u64>,
    pub serve_dotfiles: Option<bool>,
    pub brotli: Option<bool>,
    pub in_memory_max_bytes: Option<u64>,
    pub default_cache_control: Option<String>,
    pub cache: Option<Vec<RawCacheRule>>,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    #[serde(default)]
    pub access_log: RawAccessLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheRule {
    pub glob: String,
    pub cache_control: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub enabled: Option<bool>,
    pub requests_per_sec: Option<f64>,
    pub burst: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub enabled: Option<bool>,
    pub queue: Option<u64>,
}

/// What the optional plain-HTTP listener does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// `308` to the same path on HTTPS (health and status endpoints are answered directly,
    /// for load balancers).
    Redirect,
    /// Serve the site over plain HTTP too: for a CDN or TLS-terminating proxy in front.
    Serve,
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// A PEM chain and key given by the operator; watched and reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated on first start into `keys_dir` (ECDSA P-256) for these names.
    SelfSigned { names: Vec<String> },
}

/// Per-client-address token bucket.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Tokens added per second (sustained requests per second).
    pub requests_per_sec: f64,
    /// Bucket size (requests allowed at once after a quiet period).
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// Lines waiting for the writer; beyond this, lines are dropped and counted.
    pub queue: usize,
}

/// The validated `[web]` section.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub http_mode: HttpMode,
    /// Host name used in HTTP→HTTPS redirects; None: the request's `Host` (validated).
    pub public_host: Option<String>,
    pub cert: CertSource,
    /// How often the certificate files are checked for changes.
    pub cert_poll: Duration,
    /// Also reload the certificate on SIGHUP (a process-wide handler).
    pub reload_on_sighup: bool,
    /// `Strict-Transport-Security` max-age, sent only with a configured certificate (0: never).
    pub hsts_max_age: u64,
    /// Peers whose `CF-Connecting-IP` / `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub tls_handshake_timeout: Duration,
    /// Slowloris guard: a request's headers must arrive within this (HTTP/1; also bounds the
    /// wait for the next request on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving either way for this long is closed (HTTP/1 and 2).
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub h2_max_concurrent_streams: u32,
    /// Server-side TLS session cache entries (TLS 1.2 session ids; tickets are stateless).
    pub tls_session_cache: usize,
    /// Serving threads, each a current-thread runtime with its own SO_REUSEPORT socket;
    /// 0 serves on the caller's (multi-thread) runtime.
    pub workers: usize,
    pub serve_dotfiles: bool,
    /// Precompute `br` variants besides `gzip` (costs build time on each changed file).
    pub brotli: bool,
    /// Files larger than this are served from an open file handle instead of memory.
    pub in_memory_max_bytes: u64,
    pub default_cache_control: String,
    /// `(glob, Cache-Control)`, first match wins.
    pub cache: Vec<(String, String)>,
    pub rate_limit: RateLimitConfig,
    pub access_log: AccessLogConfig,
}

fn addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not an address:port such as \"0.0.0.0:443\""),
        )
    })
}

fn header_value(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || http::HeaderValue::from_str(v).is_err() {
        return Err(invalid(key, format!("{v:?} is not a valid header value")));
    }
    Ok(())
}

/// A host name (or IP literal) safe to put in a `Location` header.
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
}

impl WebConfig {
    /// Stage two for `[web]`: resolve paths against `base_dir` and check every value.
    pub fn from_raw(raw: RawWeb, base_dir: &Path) -> Result<WebConfig, ConfigError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base_dir.join(p) };
        let listen = addr(
            "web.listen",
            raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        )?;
        let http_listen = match raw.http_listen.as_deref() {
            Some(t) => Some(addr("web.http_listen", t)?),
            None => None,
        };
        if let Some(h) = http_listen
            && h.port() != 0
            && h == listen
        {
            return Err(invalid(
                "web.http_listen",
                "is the same address as web.listen",
            ));
        }
        if let Some(h) = &raw.public_host
            && !valid_host(h)
        {
            return Err(invalid(
                "web.public_host",
                format!("{h:?} is not a host name such as \"resultados.example.mx\""),
            ));
        }
        let cert = match (raw.cert, raw.key) {
            (Some(c), Some(k)) => CertSource::Files {
                cert: resolve(c),
                key: resolve(k),
            },
            (None, None) => {
                let names = raw
                    .self_signed_names
                    .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]);
                if names.is_empty() {
                    return Err(invalid("web.self_signed_names", "is empty"));
                }
                for n in &names {
                    if !valid_host(n) {
                        return Err(invalid(
                            "web.self_signed_names",
                            format!("{n:?} is not a host name or IP address"),
                        ));
                    }
                }
                CertSource::SelfSigned { names }
            }
            (Some(_), None) => {
                return Err(invalid(
                    "web.key",
                    "web.cert is set but web.key is not: give both",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "web.cert",
                    "web.key is set but web.cert is not: give both",
                ));
            }
        };
        let mut trusted_proxies = Vec::new();
        for (i, p) in raw.trusted_proxies.unwrap_or_default().iter().enumerate() {
            let net = p
                .parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        format!("web.trusted_proxies[{i}]"),
                        format!("{p:?} is not an address or CIDR such as \"10.0.0.0/8\""),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let max_connections = count(
            "web.max_connections",
            raw.max_connections,
            10_000,
            1,
            1_000_000,
        )? as usize;
        let max_connections_per_address = count(
            "web.max_connections_per_address",
            raw.max_connections_per_address,
            256,
            1,
            1_000_000,
        )? as usize;
        if max_connections_per_address > max_connections {
            return Err(invalid(
                "web.max_connections_per_address",
                format!(
                    "{max_connections_per_address} is larger than web.max_connections ({max_connections})"
                ),
            ));
        }
        let default_cache_control = raw
            .default_cache_control
            .unwrap_or_else(|| DEFAULT_CACHE_CONTROL.to_owned());
        header_value("web.default_cache_control", &default_cache_control)?;
        let cache = match raw.cache {
            Some(rules) => {
                let mut out = Vec::with_capacity(rules.len());
                for (i, r) in rules.into_iter().enumerate() {
                    header_value(&format!("web.cache[{i}].cache_control"), &r.cache_control)?;
                    out.push((r.glob, r.cache_control));
                }
                out
            }
            None => vec![("json/**".to_owned(), NO_CACHE.to_owned())],
        };
        // Compile once here so a bad glob is a config error, not a start-up surprise.
        CacheRules::new(&cache, &default_cache_control, false, 0, None)
            .map_err(|e| invalid(format!("web.cache[{}].glob", e.index), e.reason))?;
        let rl = &raw.rate_limit;
        let requests_per_sec = rl.requests_per_sec.unwrap_or(200.0);
        if !(requests_per_sec.is_finite() && (0.01..=1_000_000.0).contains(&requests_per_sec)) {
            return Err(invalid(
                "web.rate_limit.requests_per_sec",
                format!("{requests_per_sec} is out of range 0.01..=1000000"),
            ));
        }
        let rate_limit = RateLimitConfig {
            enabled: rl.enabled.unwrap_or(true),
            requests_per_sec,
            burst: count("web.rate_limit.burst", rl.burst, 1000, 1, 10_000_000)? as u32,
        };
        let access_log = AccessLogConfig {
            enabled: raw.access_log.enabled.unwrap_or(true),
            queue: count(
                "web.access_log.queue",
                raw.access_log.queue,
                65_536,
                16,
                16 << 20,
            )? as usize,
        };
        Ok(WebConfig {
            listen,
            http_listen,
            http_mode: raw.http_mode.unwrap_or(HttpMode::Redirect),
            public_host: raw.public_host,
            cert,
            cert_poll: secs("web.cert_poll_secs", raw.cert_poll_secs, 5, 1, 86_400)?,
            reload_on_sighup: raw.reload_on_sighup.unwrap_or(true),
            hsts_max_age: count(
                "web.hsts_max_age_secs",
                raw.hsts_max_age_secs,
                31_536_000,
                0,
                2 * 31_536_000,
            )?,
            trusted_proxies,
            max_connections,
            max_connections_per_address,
            tls_handshake_timeout: secs(
                "web.tls_handshake_timeout_secs",
                raw.tls_handshake_timeout_secs,
                10,
                1,
                300,
            )?,
            header_read_timeout: secs(
                "web.header_read_timeout_secs",
                raw.header_read_timeout_secs,
                10,
                1,
                300,
            )?,
            idle_timeout: secs("web.idle_timeout_secs", raw.idle_timeout_secs, 60, 1, 3600)?,
            max_header_bytes: count(
                "web.max_header_bytes",
                raw.max_header_bytes,
                16 << 10,
                8 << 10,
                1 << 20,
            )? as usize,
            max_headers: count("web.max_headers", raw.max_headers, 64, 8, 1000)? as usize,
            h2_max_concurrent_streams: count(
                "web.h2_max_concurrent_streams",
                raw.h2_max_concurrent_streams,
                128,
                1,
                10_000,
            )? as u32,
            tls_session_cache: count(
                "web.tls_session_cache",
                raw.tls_session_cache,
                20_000,
                0,
                10_000_000,
            )? as usize,
            workers: count(
                "web.workers",
                raw.workers,
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(64) as u64,
                0,
                256,
            )? as usize,
            serve_dotfiles: raw.serve_dotfiles.unwrap_or(false),
            brotli: raw.brotli.unwrap_or(true),
            in_memory_max_bytes: count(
                "web.in_memory_max_bytes",
                raw.in_memory_max_bytes,
                2 << 20,
                0,
                1 << 30,
            )?,
            default_cache_control,
            cache,
            rate_limit,
            access_log,
        })
    }

    /// The embedded defaults (what runs with no `[web]` section).
    pub fn defaults(base_dir: &Path) -> WebConfig {
        match WebConfig::from_raw(RawWeb::default(), base_dir) {
            Ok(c) => c,
            Err(e) => unreachable!("embedded web defaults are invalid: {e}"),
        }
    }

    /// True when the operator gave a real certificate (HSTS is only sent then).
    pub fn has_real_certificate(&self) -> bool {
        matches!(self.cert, CertSource::Files { .. })
    }

    /// How snapshots are built for this server: Cache-Control rules, dotfile policy, the
    /// in-memory limit and the security headers every file response carries. Pass this to
    /// [`crate::publish::follow`] and [`crate::publish::Snapshot::build`].
    pub fn cache_rules(&self) -> CacheRules {
        let hsts =
            (self.has_real_certificate() && self.hsts_max_age > 0).then_some(self.hsts_max_age);
        match CacheRules::new(
            &self.cache,
            &self.default_cache_control,
            self.serve_dotfiles,
            self.in_memory_max_bytes,
            hsts,
        ) {
            Ok(mut r) => {
                r.brotli = self.brotli;
                r
            }
            // Checked in `from_raw`.
            Err(e) => unreachable!("validated cache rules failed to compile: {}", e.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, ConfigError> {
        let raw: RawWeb = toml::from_str(text).unwrap();
        WebConfig::from_raw(raw, Path::new("/etc/difusor"))
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.http_listen.is_none());
        assert!(matches!(c.cert, CertSource::SelfSigned { .. }));
        assert_eq!(c.cache, vec![("json/**".to_owned(), NO_CACHE.to_owned())]);
        assert_eq!(c.default_cache_control, DEFAULT_CACHE_CONTROL);
        assert!(c.rate_limit.enabled);
        assert_eq!(c.in_memory_max_bytes, 2 << 20);
    }

    #[test]
    fn cert_paths_resolve_against_the_config_directory() {
        let c = parse("cert = \"tls/chain.pem\"\nkey = \"/k.pem\"").unwrap();
        assert_eq!(
            c.cert,
            CertSource::Files {
                cert: PathBuf::from("/etc/difusor/tls/chain.pem"),
                key: PathBuf::from("/k.pem"),
            }
        );
        assert!(c.has_real_certificate());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("listen = \"8443\"", "web.listen"),
            ("http_listen = \"x\"", "web.http_listen"),
            ("cert = \"a.pem\"", "web.key"),
            ("key = \"a.pem\"", "web.cert"),
            (
                "trusted_proxies = [\"10.0.0.0/33\"]",
                "web.trusted_proxies[0]",
            ),
            ("max_connections = 0", "web.max_connections"),
            (
                "max_connections = 4\nmax_connections_per_address = 5",
                "web.max_connections_per_address",
            ),
            (
                "[[cache]]\nglob = \"a/**\"\ncache_control = \"x\"\n[[cache]]\nglob = \"[\"\ncache_control = \"y\"",
                "web.cache[1].glob",
            ),
            (
                "[[cache]]\nglob = \"a\"\ncache_control = \"bad\\nvalue\"",
                "web.cache[0].cache_control",
            ),
            (
                "[rate_limit]\nrequests_per_sec = 0.0",
                "web.rate_limit.requests_per_sec",
            ),
            ("public_host = \"a b\"", "web.public_host"),
            ("max_header_bytes = 10", "web.max_header_bytes"),
        ];
        for (text, key) in cases {
            let m = parse(text).unwrap_err().to_string();
            assert!(m.contains(&format!("`{key}`")), "{text:?} gave {m}");
        }
    }

    #[test]
    fn trusted_proxies_accept_plain_addresses_and_cidrs() {
        let c = parse("trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\"]").unwrap();
        assert_eq!(c.trusted_proxies.len(), 3);
        assert!(c.trusted_proxies[1].contains(&"192.0.2.7".parse::<IpAddr>().unwrap()));
    }
}
