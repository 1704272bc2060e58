//! `Cache-Control` by path: a list of glob rules, first match wins, then a default.
//!
//! Owns: [`CacheRules`], the per-server decisions that are baked into every snapshot when it
//! is built — the Cache-Control rules, whether dotfiles are served, which files stay in memory,
//! and the security headers (see `security_headers`) — so that a request only clones headers.
//!
//! Globs match the path inside the cut without its leading `/` (`json/main.json`); `*` does not
//! cross `/` (`*.html` is top level only, `**/*.html` is any depth), `**` does.
//!
//! Must never: be consulted per request on the hot path (only for 404s); a new rule set takes
//! effect with the next snapshot.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use http::HeaderValue;

/// A glob or header value that would not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rule {index}: {reason}")]
pub struct RuleError {
    /// Position of the bad rule in the list.
    pub index: usize,
    pub reason: String,
}

/// How a cut is turned into a snapshot. Cheap to clone (a compiled glob set and a few values).
#[derive(Debug, Clone)]
pub struct CacheRules {
    /// The `(glob, value)` rules and the default as configured, so a snapshot can tell that
    /// the rules it was built with are the ones in force (a glob set cannot be compared).
    source: std::sync::Arc<(Vec<(String, String)>, String)>,
    set: GlobSet,
    values: Vec<HeaderValue>,
    default: HeaderValue,
    /// Serve files and directories whose name starts with `.` (off: they are not even loaded).
    pub serve_dotfiles: bool,
    /// Files above this many bytes are served from an open handle instead of memory.
    pub in_memory_max: u64,
    /// `Strict-Transport-Security` max-age; `Some` only with a real certificate.
    pub hsts_max_age: Option<u64>,
    /// Precompute brotli variants too (gzip always). Off: cuts go live faster.
    pub brotli: bool,
}

impl CacheRules {
    /// Compiles `(glob, Cache-Control)` rules.
    pub fn new(
        rules: &[(String, String)],
        default: &str,
        serve_dotfiles: bool,
        in_memory_max: u64,
        hsts_max_age: Option<u64>,
    ) -> Result<CacheRules, RuleError> {
        let mut b = GlobSetBuilder::new();
        let mut values = Vec::with_capacity(rules.len());
        for (index, (glob, value)) in rules.iter().enumerate() {
            let pattern = glob.trim_start_matches('/');
            let g = GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| RuleError {
                    index,
                    reason: format!("{glob:?} is not a valid glob: {}", e.kind()),
                })?;
            b.add(g);
            values.push(HeaderValue::from_str(value).map_err(|_| RuleError {
                index,
                reason: format!("{value:?} is not a valid header value"),
            })?);
        }
        let set = b.build().map_err(|e| RuleError {
            index: 0,
            reason: e.to_string(),
        })?;
        let default_value = HeaderValue::from_str(default).map_err(|_| RuleError {
            index: rules.len(),
            reason: format!("{default:?} is not a valid header value"),
        })?;
        Ok(CacheRules {
            source: std::sync::Arc::new((rules.to_vec(), default.to_owned())),
            set,
            values,
            default: default_value,
            serve_dotfiles,
            in_memory_max,
            hsts_max_age,
            brotli: true,
        })
    }

    /// The built-in rules: `json/**` never cached, everything else `public, max-age=60`,
    /// no dotfiles, 2 MiB in-memory limit, no HSTS.
    pub fn defaults() -> CacheRules {
        let rules = [(
            "json/**".to_owned(),
            crate::web::config::NO_CACHE.to_owned(),
        )];
        match CacheRules::new(
            &rules,
            crate::web::config::DEFAULT_CACHE_CONTROL,
            false,
            2 << 20,
            None,
        ) {
            Ok(r) => r,
            Err(e) => unreachable!("built-in cache rules are invalid: {e}"),
        }
    }

    /// Whether `self` and `other` give every path the same headers and the same in-memory or
    /// on-disk body (the same rules and the same settings).
    pub fn same_as(&self, other: &CacheRules) -> bool {
        (std::sync::Arc::ptr_eq(&self.source, &other.source) || self.source == other.source)
            && self.serve_dotfiles == other.serve_dotfiles
            && self.in_memory_max == other.in_memory_max
            && self.hsts_max_age == other.hsts_max_age
            && self.brotli == other.brotli
    }

    /// The `Cache-Control` value for `path` (no leading `/`): the first matching rule's.
    pub fn for_path(&self, path: &str) -> HeaderValue {
        // `matches` returns indices in ascending order: the first is the first rule listed.
        match self.set.matches(path).first() {
            Some(&i) => self
                .values
                .get(i)
                .cloned()
                .unwrap_or_else(|| self.default.clone()),
            None => self.default.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_never_cached_and_the_rest_briefly() {
        let r = CacheRules::defaults();
        assert_eq!(r.for_path("json/main.json"), crate::web::config::NO_CACHE);
        assert_eq!(r.for_path("json/a/b/c.json"), crate::web::config::NO_CACHE);
        assert_eq!(r.for_path("index.html"), "public, max-age=60");
        assert_eq!(r.for_path("jsonx/a.json"), "public, max-age=60");
    }

    #[test]
    fn first_match_wins_and_star_stays_in_one_directory() {
        let rules = [
            ("/assets/**".to_owned(), "public, max-age=3600".to_owned()),
            ("*.html".to_owned(), "no-cache".to_owned()),
            ("**".to_owned(), "public, max-age=5".to_owned()),
        ];
        let r = CacheRules::new(&rules, "x", false, 0, None).unwrap();
        assert_eq!(r.for_path("assets/a.html"), "public, max-age=3600");
        assert_eq!(r.for_path("index.html"), "no-cache");
        assert_eq!(r.for_path("sub/index.html"), "public, max-age=5");
    }
}
