//! `[[sources.https]]` and `[[sources.s3]]` in the config file: where difusor fetches packages instead of (or as
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

use crate::config::{ConfigError, Secret, invalid, read_secret, secs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSources {
    #[serde(default)]
    pub https: Vec<RawHttpsSource>,
    #[serde(default)]
    pub s3: Vec<RawS3Source>,
}

/// `[[sources.s3]]`: the institute's bucket, listed every `poll_secs`. The connection and
/// credential keys are the mirror's (`[[mirror.s3]]`), read the same way.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3Source {
    pub name: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub path_style: Option<bool>,
    pub allow_http: Option<bool>,
    pub access_key_env: Option<String>,
    pub secret_key_env: Option<String>,
    pub session_token_env: Option<String>,
    pub credentials_file: Option<PathBuf>,
    pub request_timeout_secs: Option<u64>,
    /// Glob on the object's file name (default `*.zip`, `*.tar.gz`, `*.tgz`).
    pub pattern: Option<String>,
    pub poll_secs: Option<u64>,
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
    pub s3: Vec<S3SourceConfig>,
}

impl SourcesConfig {
    pub fn is_empty(&self) -> bool {
        self.https.is_empty() && self.s3.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct S3SourceConfig {
    pub name: String,
    /// Endpoint, bucket, prefix, credentials: validated like a mirror target.
    pub bucket: crate::mirror::config::S3Target,
    pub pattern: globset::GlobMatcher,
    pub poll: Duration,
}

fn package_pattern(key: &str, text: Option<String>) -> Result<globset::GlobMatcher, ConfigError> {
    let text = text.unwrap_or_else(|| "*.{zip,tar.gz,tgz}".to_owned());
    Ok(globset::GlobBuilder::new(&text)
        .literal_separator(true)
        .build()
        .map_err(|e| invalid(key, format!("{text:?}: {e}")))?
        .compile_matcher())
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
                    let pattern = package_pattern(&key("pattern"), r.pattern)?;
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
            let token = read_secret(
                &key("token_file"),
                r.token_file.map(resolve),
                &key("token_env"),
                r.token_env,
                false,
                &mut Vec::new(),
            )?;
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
        let mut s3: Vec<S3SourceConfig> = Vec::new();
        for (i, r) in self.s3.into_iter().enumerate() {
            let key = |k: &str| format!("sources.s3[{i}].{k}");
            let name = r.name.clone().unwrap_or_else(|| format!("s3-{i}"));
            if !valid_name(&name) {
                return Err(invalid(
                    key("name"),
                    format!("{name:?}: use letters, digits, - and _ (at most 64)"),
                ));
            }
            if https.iter().any(|s| s.name == name) || s3.iter().any(|s| s.name == name) {
                return Err(invalid(key("name"), format!("{name:?} is used twice")));
            }
            let pattern = package_pattern(&key("pattern"), r.pattern)?;
            let poll = secs(&key("poll_secs"), r.poll_secs, 30, 1, 86_400)?;
            let bucket = crate::mirror::config::RawS3Target {
                name: Some(name.clone()),
                endpoint: r.endpoint,
                region: r.region,
                bucket: r.bucket,
                prefix: r.prefix,
                path_style: r.path_style,
                allow_http: r.allow_http,
                access_key_env: r.access_key_env,
                secret_key_env: r.secret_key_env,
                session_token_env: r.session_token_env,
                credentials_file: r.credentials_file,
                request_timeout_secs: r.request_timeout_secs,
                ..Default::default()
            }
            .validate_as(&format!("sources.s3[{i}]"), base_dir)?;
            s3.push(S3SourceConfig {
                name,
                bucket,
                pattern,
                poll,
            });
        }
        Ok(SourcesConfig { https, s3 })
    }
}
