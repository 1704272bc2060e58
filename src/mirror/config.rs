//! The `[mirror]` section: one `[[mirror.s3]]` table per object-storage target.
//!
//! Owns: the raw (serde) shape, the defaults, validation (naming the key), and where each
//! target's credentials come from. Must never: hold a credential — the config names an
//! environment variable or a file, and the secret is read only when the mirror starts
//! ([`crate::mirror::client::Credentials::load`]); read the disk or the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, count, invalid, secs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    #[serde(default)]
    pub s3: Vec<RawS3Target>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3Target {
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
    pub concurrency: Option<u64>,
    pub multipart_threshold_bytes: Option<u64>,
    pub part_size_bytes: Option<u64>,
    pub max_retries: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub max_backoff_secs: Option<u64>,
    pub delete_grace_secs: Option<u64>,
}

/// Every configured target (empty: nothing is mirrored).
#[derive(Debug, Clone, Default)]
pub struct MirrorConfig {
    pub targets: Vec<S3Target>,
}

/// Where a target's access key and secret are read from when the mirror starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Environment variables, by name (defaults `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    Env {
        access_key: String,
        secret_key: String,
        /// Optional temporary-credential token (`AWS_SESSION_TOKEN` when set).
        session_token: String,
    },
    /// A file of `key = value` lines (see `client::Credentials::parse`).
    File(PathBuf),
}

/// One S3-compatible bucket (AWS S3, Cloudflare R2, Garage, MinIO…) every cut is mirrored to.
#[derive(Debug, Clone)]
pub struct S3Target {
    /// Names the target in logs, incidents, metrics and `difusor mirror --target`.
    pub name: String,
    /// `https://…` (or `http://` with `allow_http`); None = AWS (`s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket: empty, or ends with `/` (`site/`).
    pub prefix: String,
    /// `https://host/bucket/key` (true) or `https://bucket.host/key` (false).
    pub path_style: bool,
    pub allow_http: bool,
    pub credentials: CredentialSource,
    /// Uploads in flight at once.
    pub concurrency: usize,
    /// Files at least this large go up as multipart uploads of `part_size` parts.
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Retries of one request (with exponential back-off) before the attempt counts as failed.
    pub max_retries: usize,
    pub request_timeout: Duration,
    /// Cap of the back-off between attempts while the target is failing.
    pub max_backoff: Duration,
    /// Files a cut removed stay in the bucket this long after `json/main.json` moved.
    pub delete_grace: Duration,
}

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const DEFAULT_SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
pub const DEFAULT_SESSION_TOKEN_ENV: &str = "AWS_SESSION_TOKEN";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !name.starts_with('.')
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `site` / `/site/` / `a/b` → `site/`, `a/b/`; "" stays "". Refuses `..`, empty segments.
fn normalise_prefix(key: &str, raw: &str) -> Result<String, ConfigError> {
    let p = raw.trim_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    for seg in p.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(invalid(
                key,
                format!("{raw:?} has an empty, \".\" or \"..\" segment"),
            ));
        }
        if seg.chars().any(|c| c.is_control() || c == '\\') {
            return Err(invalid(
                key,
                format!("{raw:?} has a control character or a backslash"),
            ));
        }
    }
    Ok(format!("{p}/"))
}

impl RawMirror {
    pub fn validate(self, base_dir: &Path) -> Result<MirrorConfig, ConfigError> {
        let mut targets: Vec<S3Target> = Vec::with_capacity(self.s3.len());
        for (i, t) in self.s3.into_iter().enumerate() {
            let k = |field: &str| format!("mirror.s3[{i}].{field}");
            let target = t.validate_as(&format!("mirror.s3[{i}]"), base_dir)?;
            if targets.iter().any(|o| o.name == target.name) {
                return Err(invalid(
                    k("name"),
                    format!("target {:?} is defined twice", target.name),
                ));
            }
            if let Some(o) = targets.iter().find(|o| {
                o.endpoint == target.endpoint
                    && o.bucket == target.bucket
                    && (o.prefix.starts_with(&target.prefix)
                        || target.prefix.starts_with(&o.prefix))
            }) {
                return Err(invalid(
                    k("prefix"),
                    format!(
                        "overlaps target {:?} (same endpoint and bucket): two mirrors would delete each other's files",
                        o.name
                    ),
                ));
            }
            targets.push(target);
        }
        Ok(MirrorConfig { targets })
    }
}

impl RawS3Target {
    /// Validates one target's keys; errors name them under `key` (`mirror.s3[0]`,
    /// `sources.s3[1]`: pull sources read buckets with the same settings).
    pub fn validate_as(self, key: &str, base_dir: &Path) -> Result<S3Target, ConfigError> {
        let k = |field: &str| format!("{key}.{field}");
        let t = self;
        let name = t.name.unwrap_or_default();
        if !valid_name(&name) {
            return Err(invalid(
                k("name"),
                format!(
                    "{name:?} is not a valid target name (letters, digits, '.', '_', '-'; at most 64)"
                ),
            ));
        }
        let allow_http = t.allow_http.unwrap_or(false);
        let endpoint = match t.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => {
                let e = e.trim_end_matches('/');
                let rest = if let Some(r) = e.strip_prefix("https://") {
                    r
                } else if let Some(r) = e.strip_prefix("http://") {
                    if !allow_http {
                        return Err(invalid(
                            k("endpoint"),
                            format!("{e:?} is plain HTTP: set allow_http = true to use it"),
                        ));
                    }
                    r
                } else {
                    return Err(invalid(
                        k("endpoint"),
                        format!(
                            "{e:?} is not a URL such as \"https://<account>.r2.cloudflarestorage.com\""
                        ),
                    ));
                };
                if rest.is_empty() || rest.contains('/') || rest.contains('@') {
                    return Err(invalid(
                        k("endpoint"),
                        format!("{e:?} must be scheme://host[:port], without a path or user"),
                    ));
                }
                Some(e.to_owned())
            }
        };
        let bucket = t.bucket.unwrap_or_default();
        if bucket.is_empty()
            || bucket.len() > 255
            || bucket.contains('/')
            || bucket.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(
                k("bucket"),
                format!("{bucket:?} is not a bucket name"),
            ));
        }
        let region = t
            .region
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        if region.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(k("region"), format!("{region:?} is not a region")));
        }
        let prefix = normalise_prefix(&k("prefix"), t.prefix.as_deref().unwrap_or(""))?;
        let credentials = match t.credentials_file {
            Some(f) => {
                if t.access_key_env.is_some()
                    || t.secret_key_env.is_some()
                    || t.session_token_env.is_some()
                {
                    return Err(invalid(
                        k("credentials_file"),
                        "give either credentials_file or access_key_env/secret_key_env, not both",
                    ));
                }
                if f.as_os_str().is_empty() {
                    return Err(invalid(k("credentials_file"), "is empty"));
                }
                CredentialSource::File(if f.is_absolute() { f } else { base_dir.join(f) })
            }
            None => {
                let env = |field: &str, v: Option<String>, default: &str| {
                    let v = v.unwrap_or_else(|| default.to_owned());
                    if valid_env_name(&v) {
                        Ok(v)
                    } else {
                        Err(invalid(
                            k(field),
                            format!(
                                "{v:?} is not an environment variable name (the secret itself never goes in the config)"
                            ),
                        ))
                    }
                };
                CredentialSource::Env {
                    access_key: env("access_key_env", t.access_key_env, DEFAULT_ACCESS_KEY_ENV)?,
                    secret_key: env("secret_key_env", t.secret_key_env, DEFAULT_SECRET_KEY_ENV)?,
                    session_token: env(
                        "session_token_env",
                        t.session_token_env,
                        DEFAULT_SESSION_TOKEN_ENV,
                    )?,
                }
            }
        };
        let part_size = count(
            &k("part_size_bytes"),
            t.part_size_bytes,
            8 << 20,
            5 << 20,
            5 << 30,
        )?;
        let multipart_threshold = count(
            &k("multipart_threshold_bytes"),
            t.multipart_threshold_bytes,
            16 << 20,
            5 << 20,
            5 << 30,
        )?;
        let target = S3Target {
            // The default: AWS has deprecated path-style addressing; other providers
            // (R2, Garage, MinIO) are addressed by path.
            path_style: t.path_style.unwrap_or(endpoint.is_some()),
            name,
            endpoint,
            region,
            bucket,
            prefix,
            allow_http,
            credentials,
            concurrency: count(&k("concurrency"), t.concurrency, 16, 1, 256)? as usize,
            multipart_threshold,
            part_size,
            max_retries: count(&k("max_retries"), t.max_retries, 3, 0, 20)? as usize,
            request_timeout: secs(
                &k("request_timeout_secs"),
                t.request_timeout_secs,
                120,
                1,
                3600,
            )?,
            max_backoff: secs(&k("max_backoff_secs"), t.max_backoff_secs, 60, 1, 3600)?,
            delete_grace: secs(
                &k("delete_grace_secs"),
                t.delete_grace_secs,
                60,
                0,
                7 * 86_400,
            )?,
        };
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MirrorConfig, ConfigError> {
        #[derive(Deserialize)]
        struct W {
            mirror: RawMirror,
        }
        let w: W = toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))?;
        w.mirror.validate(Path::new("/etc/difusor"))
    }

    #[test]
    fn defaults_of_a_minimal_target() {
        let c = parse("[[mirror.s3]]\nname = \"aws\"\nbucket = \"prep\"\n").unwrap();
        let t = &c.targets[0];
        assert_eq!(t.endpoint, None);
        assert!(!t.path_style, "AWS is virtual-hosted by default");
        assert_eq!(t.region, "us-east-1");
        assert_eq!(t.prefix, "");
        assert_eq!(t.concurrency, 16);
        assert_eq!(t.delete_grace, Duration::from_secs(60));
        assert_eq!(
            t.credentials,
            CredentialSource::Env {
                access_key: "AWS_ACCESS_KEY_ID".into(),
                secret_key: "AWS_SECRET_ACCESS_KEY".into(),
                session_token: "AWS_SESSION_TOKEN".into(),
            }
        );
    }

    #[test]
    fn endpoint_prefix_and_file_credentials() {
        let c = parse(
            "[[mirror.s3]]\nname = \"r2\"\nendpoint = \"https://acct.r2.cloudflarestorage.com/\"\nbucket = \"b\"\nprefix = \"/site\"\ncredentials_file = \"secrets/r2\"\n",
        )
        .unwrap();
        let t = &c.targets[0];
        assert_eq!(
            t.endpoint.as_deref(),
            Some("https://acct.r2.cloudflarestorage.com")
        );
        assert!(t.path_style);
        assert_eq!(t.prefix, "site/");
        assert_eq!(
            t.credentials,
            CredentialSource::File(PathBuf::from("/etc/difusor/secrets/r2"))
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[[mirror.s3]]\nbucket = \"b\"", "mirror.s3[0].name"),
            ("[[mirror.s3]]\nname = \"a\"", "mirror.s3[0].bucket"),
            (
                "[[mirror.s3]]\nname = \"a\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:3900\"",
                "mirror.s3[0].endpoint",
            ),
            (
                "[[mirror.s3]]\nname = \"a\"\nbucket = \"b\"\nendpoint = \"s3.example.com\"",
                "mirror.s3[0].endpoint",
            ),
            (
                "[[mirror.s3]]\nname = \"a\"\nbucket = \"b\"\nprefix = \"a/../b\"",
                "mirror.s3[0].prefix",
            ),
            (
                "[[mirror.s3]]\nname = \"a\"\nbucket = \"b\"\nsecret_key_env = \"abc def+/secret\"",
                "mirror.s3[0].secret_key_env",
            ),
            (
                "[[mirror.s3]]\nname = \"a\"\nbucket = \"b\"\nconcurrency = 0",
                "mirror.s3[0].concurrency",
            ),
            (
                "[[mirror.s3]]\nname = \"a\"\nbucket = \"b\"\ncredentials_file = \"f\"\naccess_key_env = \"K\"",
                "mirror.s3[0].credentials_file",
            ),
            (
                "[[mirror.s3]]\nname = \"a\"\nbucket = \"b\"\n[[mirror.s3]]\nname = \"a\"\nbucket = \"c\"",
                "mirror.s3[1].name",
            ),
            (
                "[[mirror.s3]]\nname = \"a\"\nbucket = \"b\"\nprefix = \"x\"\n[[mirror.s3]]\nname = \"c\"\nbucket = \"b\"\nprefix = \"x/y\"",
                "mirror.s3[1].prefix",
            ),
        ];
        for (text, key) in cases {
            let m = parse(text).unwrap_err().to_string();
            assert!(m.contains(&format!("`{key}`")), "{text:?} gave {m}");
        }
    }
}
