//! `[[sources.https]]` in the config file: where difusor fetches packages instead of (or as
//! well as) receiving them over SFTP.
//!
//! Owns: the raw keys, their defaults and validation (URLs parse, a name pattern compiles,
//! files named for a CA or a token exist and are read once at start).
//!
//! Must never: accept a token written in the config text itself, or let one reach a log
//! (`Secret`'s `Debug` is redacted).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, invalid, secs};
use crate::notify::config::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSources {
    #[serde(default)]
    pub https: Vec<RawHttpsSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpsSource {
    pub name: Option<String>,
    /// One package URL, polled with `If-None-Match` / `If-Modified-Since`.
    pub url: Option<String>,
    /// Or a listing (HTML or text) whose links name packages…
    pub listing_url: Option<String>,
    /// … matching this glob on the file name (default `*.zip` and `*.tar.gz`/`*.tgz`).
    pub pattern: Option<String>,
    pub poll_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
    /// `Authorization: Bearer <file contents>`.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// Extra trusted CA certificates (PEM), e.g. the institute's own CA.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct SourcesConfig {
    pub https: Vec<HttpsSourceConfig>,
}

impl SourcesConfig {
    pub fn is_empty(&self) -> bool {
        self.https.is_empty()
    }
}

/// What an HTTPS source polls.
#[derive(Debug, Clone)]
pub enum HttpsWhat {
    Package(reqwest::Url),
    Listing {
        url: reqwest::Url,
        pattern: globset::GlobMatcher,
    },
}

#[derive(Debug, Clone)]
pub struct HttpsSourceConfig {
    /// Unique; uploader `source:<name>` in manifests; subject of its incidents.
    pub name: String,
    pub what: HttpsWhat,
    pub poll: Duration,
    /// Per request (a whole package download included).
    pub timeout: Duration,
    pub token: Option<Secret>,
    /// PEM bytes of extra trusted CAs.
    pub ca_pem: Option<Vec<u8>>,
}

fn url(key: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
    let u = reqwest::Url::parse(text)
        .map_err(|e| invalid(key, format!("{text:?} is not a URL: {e}")))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(invalid(key, format!("{text:?} is not an http(s) URL")));
    }
    Ok(u)
}

/// Names are used in file names (`state/sources/<name>.json`): keep them plain.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl RawSources {
    pub fn validate(self, base_dir: &Path) -> Result<SourcesConfig, ConfigError> {
        let mut https: Vec<HttpsSourceConfig> = Vec::new();
        for (i, r) in self.https.into_iter().enumerate() {
            let key = |k: &str| format!("sources.https[{i}].{k}");
            let name = r.name.unwrap_or_else(|| format!("https-{i}"));
            if !valid_name(&name) {
                return Err(invalid(
                    key("name"),
                    format!("{name:?}: use letters, digits, - and _ (at most 64)"),
                ));
            }
            if https.iter().any(|s| s.name == name) {
                return Err(invalid(key("name"), format!("{name:?} is used twice")));
            }
            let what = match (r.url, r.listing_url) {
                (Some(u), None) => {
                    if r.pattern.is_some() {
                        return Err(invalid(key("pattern"), "only goes with listing_url"));
                    }
                    HttpsWhat::Package(url(&key("url"), &u)?)
                }
                (None, Some(l)) => {
                    let text = r.pattern.unwrap_or_else(|| "*.{zip,tar.gz,tgz}".to_owned());
                    let pattern = globset::GlobBuilder::new(&text)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| invalid(key("pattern"), format!("{text:?}: {e}")))?
                        .compile_matcher();
                    HttpsWhat::Listing {
                        url: url(&key("listing_url"), &l)?,
                        pattern,
                    }
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(key("url"), "give url or listing_url, not both"));
                }
                (None, None) => {
                    return Err(invalid(key("url"), "is missing (or listing_url)"));
                }
            };
            let resolve = |p: PathBuf| if p.is_absolute() { p } else { base_dir.join(p) };
            let token = match (r.token_file, r.token_env) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        key("token_env"),
                        "give token_file or token_env, not both",
                    ));
                }
                (Some(f), None) => {
                    let f = resolve(f);
                    let t = std::fs::read_to_string(&f).map_err(|e| {
                        invalid(
                            key("token_file"),
                            format!("cannot read {}: {e}", f.display()),
                        )
                    })?;
                    Some(Secret::new(t.trim().to_owned()))
                }
                (None, Some(var)) => {
                    let t = std::env::var(&var).map_err(|_| {
                        invalid(key("token_env"), format!("the variable {var} is not set"))
                    })?;
                    Some(Secret::new(t.trim().to_owned()))
                }
                (None, None) => None,
            };
            let ca_pem = match r.ca_file {
                Some(f) => {
                    let f = resolve(f);
                    let pem = std::fs::read(&f).map_err(|e| {
                        invalid(key("ca_file"), format!("cannot read {}: {e}", f.display()))
                    })?;
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                        invalid(
                            key("ca_file"),
                            format!("{}: not PEM certificates: {e}", f.display()),
                        )
                    })?;
                    Some(pem)
                }
                None => None,
            };
            https.push(HttpsSourceConfig {
                name,
                what,
                poll: secs(&key("poll_secs"), r.poll_secs, 30, 1, 86_400)?,
                timeout: secs(&key("timeout_secs"), r.timeout_secs, 300, 1, 86_400)?,
                token,
                ca_pem,
            });
        }
        Ok(SourcesConfig { https })
    }
}
