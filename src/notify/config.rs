//! `[[notify]]` in the config file: the raw, serde-shaped list and its validation.
//!
//! Owns: the keys of each notifier type, their defaults and ranges, resolving paths against
//! the config file's directory, and reading the webhook secret / Cloudflare token (from a
//! file or an environment variable) once, at start, so a missing secret stops the server
//! with an error naming its key.
//!
//! Must never: accept a key that does not belong to the notifier's type, accept a token
//! written in the config text itself, or let a secret reach a log line (`Secret`'s `Debug`
//! prints `<redacted>`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::config::Secret;
use crate::config::{ConfigError, count, invalid, read_secret, secs};
use crate::store::Severity;

/// One `[[notify]]` table as written. Every key is optional here so that validation, not
/// serde, says which one is missing or misplaced (naming it `notify[i].key`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifier {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub events: Option<Vec<EventKind>>,
    pub min_severity: Option<Severity>,
    pub timeout_secs: Option<u64>,
    pub retries: Option<u64>,
    pub retry_backoff_ms: Option<u64>,
    // webhook
    pub url: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    // command
    pub command: Option<Vec<String>>,
    // cloudflare
    pub zone_id: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub base_urls: Option<Vec<String>>,
    pub purge_everything: Option<bool>,
    pub api_base: Option<String>,
    pub batch_size: Option<u64>,
    pub purge_everything_above: Option<u64>,
}

/// What a notifier may be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    CutPublished,
    Incident,
}

/// A validated notifier.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Unique; in logs, incidents (`subject`) and stats. Default `<type>-<index>`.
    pub name: String,
    /// Whether it is told about published cuts.
    pub cuts: bool,
    /// Whether it is told about incidents (those at or above `min_severity`).
    pub incidents: bool,
    pub min_severity: Severity,
    /// Per attempt: one HTTP request, or one run of the command.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// The first back-off; doubles after each attempt, capped at 30 s.
    pub retry_backoff: Duration,
    pub target: Target,
}

/// Where a notifier delivers.
#[derive(Debug, Clone)]
pub enum Target {
    Webhook(WebhookTarget),
    Command(CommandTarget),
    Cloudflare(CloudflareTarget),
}

impl Target {
    /// The `type` as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            Target::Webhook(_) => "webhook",
            Target::Command(_) => "command",
            Target::Cloudflare(_) => "cloudflare",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub url: reqwest::Url,
    /// HMAC-SHA256 key for `X-Difusor-Signature`.
    pub secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct CommandTarget {
    /// Absolute, or resolved against the config directory; a bare name is looked up in PATH.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment variables that hold other notifiers' secrets: removed from the child's
    /// environment so a hook never sees a token it was not given.
    pub scrub_env: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CloudflareTarget {
    pub zone_id: String,
    pub token: Secret,
    /// Public sites whose URLs are purged, without a trailing `/`.
    pub base_urls: Vec<String>,
    pub purge_everything: bool,
    /// Without a trailing `/`; `{api_base}/client/v4/zones/{zone_id}/purge_cache`.
    pub api_base: String,
    /// URLs per purge call, 1..=30 (Cloudflare's limit).
    pub batch_size: usize,
    /// A cut that changed more URLs than this purges everything instead (one call rather
    /// than hundreds: a first cut, or one after its predecessor was pruned). 0 = never.
    pub purge_everything_above: usize,
}

const TYPES: &str = "webhook, command, cloudflare";

/// Validates the whole `[[notify]]` list; `base_dir` resolves relative paths.
pub fn validate(
    raw: Vec<RawNotifier>,
    base_dir: &Path,
) -> Result<Vec<NotifierConfig>, ConfigError> {
    let mut out: Vec<NotifierConfig> = Vec::with_capacity(raw.len());
    let mut secret_envs: Vec<String> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let n = validate_one(i, r, base_dir, &mut secret_envs)?;
        if out.iter().any(|o| o.name == n.name) {
            return Err(invalid(
                format!("notify[{i}].name"),
                format!("{:?} is used by another notifier", n.name),
            ));
        }
        out.push(n);
    }
    for n in &mut out {
        if let Target::Command(c) = &mut n.target {
            c.scrub_env = secret_envs.clone();
        }
    }
    Ok(out)
}

fn validate_one(
    i: usize,
    r: RawNotifier,
    base_dir: &Path,
    secret_envs: &mut Vec<String>,
) -> Result<NotifierConfig, ConfigError> {
    let key = |k: &str| format!("notify[{i}].{k}");
    let Some(kind) = r.kind.as_deref() else {
        return Err(invalid(key("type"), format!("is missing (one of {TYPES})")));
    };
    // Which type-specific keys each type takes, so a misplaced one is an error, not ignored
    // (name, timeout_secs, retries and retry_backoff_ms belong to every type).
    let present: [(&str, bool); 14] = [
        ("events", r.events.is_some()),
        ("min_severity", r.min_severity.is_some()),
        ("url", r.url.is_some()),
        ("secret_file", r.secret_file.is_some()),
        ("secret_env", r.secret_env.is_some()),
        ("command", r.command.is_some()),
        ("zone_id", r.zone_id.is_some()),
        ("token_file", r.token_file.is_some()),
        ("token_env", r.token_env.is_some()),
        ("base_urls", r.base_urls.is_some()),
        ("purge_everything", r.purge_everything.is_some()),
        ("api_base", r.api_base.is_some()),
        ("batch_size", r.batch_size.is_some()),
        ("purge_everything_above", r.purge_everything_above.is_some()),
    ];
    let allowed: &[&str] = match kind {
        "webhook" => &["events", "min_severity", "url", "secret_file", "secret_env"],
        "command" => &["events", "min_severity", "command"],
        "cloudflare" => &[
            "zone_id",
            "token_file",
            "token_env",
            "base_urls",
            "purge_everything",
            "api_base",
            "batch_size",
            "purge_everything_above",
        ],
        other => {
            return Err(invalid(
                key("type"),
                format!("{other:?} is not a notifier type (one of {TYPES})"),
            ));
        }
    };
    for (k, set) in present {
        if set && !allowed.contains(&k) {
            return Err(invalid(
                key(k),
                format!("is not a key of a {kind:?} notifier"),
            ));
        }
    }

    let name = match r.name {
        Some(name) => {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(invalid(
                    key("name"),
                    format!("{name:?} is not a name (letters, digits, '-', '_', '.'; at most 64)"),
                ));
            }
            name
        }
        None => format!("{kind}-{i}"),
    };

    let (cuts, incidents) = match &r.events {
        None => (true, kind != "cloudflare"),
        Some(list) if list.is_empty() => {
            return Err(invalid(
                key("events"),
                "is empty: the notifier would never run",
            ));
        }
        Some(list) => (
            list.contains(&EventKind::CutPublished),
            list.contains(&EventKind::Incident),
        ),
    };
    let default_timeout = if kind == "command" { 30 } else { 10 };
    let default_retries = if kind == "command" { 2 } else { 5 };
    let timeout = secs(
        &key("timeout_secs"),
        r.timeout_secs,
        default_timeout,
        1,
        3600,
    )?;
    let retries = count(&key("retries"), r.retries, default_retries, 0, 100)? as u32;
    let retry_backoff = Duration::from_millis(count(
        &key("retry_backoff_ms"),
        r.retry_backoff_ms,
        1000,
        1,
        30_000,
    )?);

    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base_dir.join(p)
        }
    };
    let target = match kind {
        "webhook" => {
            let Some(url) = r.url.as_deref() else {
                return Err(invalid(key("url"), "is missing"));
            };
            let url = http_url(&key("url"), url)?;
            let secret = read_secret(
                &key("secret_file"),
                r.secret_file.as_deref().map(resolve),
                &key("secret_env"),
                r.secret_env,
                false,
                secret_envs,
            )?;
            Target::Webhook(WebhookTarget { url, secret })
        }
        "command" => {
            let argv = r.command.unwrap_or_default();
            let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
                return Err(invalid(
                    key("command"),
                    "is missing or empty (an argv list such as [\"/usr/local/bin/on-cut\"])",
                ));
            };
            let program = find_program(&key("command"), program, base_dir)?;
            Target::Command(CommandTarget {
                program,
                args: argv[1..].to_vec(),
                scrub_env: Vec::new(),
            })
        }
        _ => {
            let zone_id = r.zone_id.unwrap_or_default();
            if zone_id.is_empty()
                || zone_id.len() > 64
                || !zone_id.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(invalid(
                    key("zone_id"),
                    format!("{zone_id:?} is not a Cloudflare zone id (32 hex digits)"),
                ));
            }
            let token = read_secret(
                &key("token_file"),
                r.token_file.as_deref().map(resolve),
                &key("token_env"),
                r.token_env,
                true,
                secret_envs,
            )?
            .ok_or_else(|| invalid(key("token_file"), "is missing (or token_env)"))?;
            let purge_everything = r.purge_everything.unwrap_or(false);
            let mut base_urls = Vec::new();
            for (j, u) in r.base_urls.unwrap_or_default().iter().enumerate() {
                let k = format!("notify[{i}].base_urls[{j}]");
                let url = http_url(&k, u)?;
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(invalid(k, format!("{u:?} has a query or fragment")));
                }
                base_urls.push(url.as_str().trim_end_matches('/').to_owned());
            }
            if base_urls.is_empty() && !purge_everything {
                return Err(invalid(
                    key("base_urls"),
                    "is missing or empty (the public site URLs to purge), and purge_everything is false",
                ));
            }
            let api_text = r
                .api_base
                .unwrap_or_else(|| "https://api.cloudflare.com".to_owned());
            let api_base = http_url(&key("api_base"), &api_text)?
                .as_str()
                .trim_end_matches('/')
                .to_owned();
            let batch_size = count(&key("batch_size"), r.batch_size, 30, 1, 30)? as usize;
            let purge_everything_above = count(
                &key("purge_everything_above"),
                r.purge_everything_above,
                600,
                0,
                1_000_000,
            )? as usize;
            Target::Cloudflare(CloudflareTarget {
                zone_id,
                token,
                base_urls,
                purge_everything,
                api_base,
                batch_size,
                purge_everything_above,
            })
        }
    };
    if !cuts && !incidents {
        return Err(invalid(key("events"), "selects nothing"));
    }
    Ok(NotifierConfig {
        name,
        cuts,
        incidents,
        min_severity: r.min_severity.unwrap_or(Severity::Warning),
        timeout,
        retries,
        retry_backoff,
        target,
    })
}

/// An absolute `http://` or `https://` URL with a host.
fn http_url(key: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| invalid(key, format!("{text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            key,
            format!("{text:?} is not an http:// or https:// URL with a host"),
        ));
    }
    Ok(url)
}

/// The program of a command hook: a path (containing `/`) is resolved against the config
/// directory and must be an executable file; a bare name must be found in PATH.
fn find_program(key: &str, program: &str, base_dir: &Path) -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = Path::new(program);
        let p = if p.is_absolute() {
            p.to_owned()
        } else {
            base_dir.join(p)
        };
        if !executable(&p) {
            return Err(invalid(
                key,
                format!("{} is not an executable file", p.display()),
            ));
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| executable(&d.join(program))) {
        // Looked up again by the OS at each run, as a shell would.
        return Ok(PathBuf::from(program));
    }
    Err(invalid(
        key,
        format!("{program:?} is not found in PATH (give a path, relative to the config file)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, dir: &Path) -> Result<Vec<NotifierConfig>, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            notify: Vec<RawNotifier>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))?;
        validate(doc.notify, dir)
    }

    #[test]
    fn defaults_per_type() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("token"), "  tok-123\n").unwrap();
        let n = parse(
            r#"
            [[notify]]
            type = "webhook"
            url = "https://hooks.example.mx/difusor"
            [[notify]]
            type = "command"
            command = ["sh", "-c", "true"]
            [[notify]]
            type = "cloudflare"
            zone_id = "023e105f4ecef8ad9ca31a8372d0c353"
            token_file = "token"
            base_urls = ["https://prep.example.mx/"]
            "#,
            t.path(),
        )
        .unwrap();
        assert_eq!(n[0].name, "webhook-0");
        assert!(n[0].cuts && n[0].incidents);
        assert_eq!(n[0].min_severity, Severity::Warning);
        assert_eq!((n[0].timeout.as_secs(), n[0].retries), (10, 5));
        assert_eq!(n[0].retry_backoff, Duration::from_millis(1000));
        assert_eq!(n[1].name, "command-1");
        assert_eq!((n[1].timeout.as_secs(), n[1].retries), (30, 2));
        assert_eq!(n[2].name, "cloudflare-2");
        assert!(n[2].cuts && !n[2].incidents);
        let Target::Cloudflare(cf) = &n[2].target else {
            panic!()
        };
        assert_eq!(cf.token.expose(), "tok-123");
        assert_eq!(cf.base_urls, ["https://prep.example.mx"]);
        assert_eq!(cf.api_base, "https://api.cloudflare.com");
        assert_eq!(cf.batch_size, 30);
        assert!(!format!("{n:?}").contains("tok-123"));
        assert!(format!("{:?}", cf.token).contains("<redacted>"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("token"), "x").unwrap();
        let cf = "type = \"cloudflare\"\nzone_id = \"abc\"\ntoken_file = \"token\"\nbase_urls = [\"https://s.mx\"]\n";
        let cases = [
            ("type = \"email\"", "notify[0].type"),
            ("name = \"x\"", "notify[0].type"),
            ("type = \"webhook\"", "notify[0].url"),
            ("type = \"webhook\"\nurl = \"ftp://x\"", "notify[0].url"),
            (
                "type = \"webhook\"\nurl = \"https://x\"\nzone_id = \"a\"",
                "notify[0].zone_id",
            ),
            (
                "type = \"webhook\"\nurl = \"https://x\"\nsecret_file = \"nope\"",
                "notify[0].secret_file",
            ),
            (
                "type = \"webhook\"\nurl = \"https://x\"\nsecret_env = \"DIFUSOR_TEST_UNSET_VAR\"",
                "notify[0].secret_env",
            ),
            (
                "type = \"webhook\"\nurl = \"https://x\"\nevents = []",
                "notify[0].events",
            ),
            (
                "type = \"webhook\"\nurl = \"https://x\"\nretry_backoff_ms = 0",
                "notify[0].retry_backoff_ms",
            ),
            ("type = \"command\"", "notify[0].command"),
            (
                "type = \"command\"\ncommand = [\"hooks/missing.sh\"]",
                "notify[0].command",
            ),
            (
                "type = \"command\"\ncommand = [\"true\"]\ntimeout_secs = 0",
                "notify[0].timeout_secs",
            ),
            (
                "type = \"cloudflare\"\nzone_id = \"a/b\"",
                "notify[0].zone_id",
            ),
            (
                "type = \"cloudflare\"\nzone_id = \"ab\"\nbase_urls = [\"https://s.mx\"]",
                "notify[0].token_file",
            ),
            (
                "type = \"cloudflare\"\nzone_id = \"ab\"\ntoken_file = \"token\"",
                "notify[0].base_urls",
            ),
            (&format!("{cf}batch_size = 31"), "notify[0].batch_size"),
            (&format!("{cf}events = [\"incident\"]"), "notify[0].events"),
            (
                "type = \"cloudflare\"\nzone_id = \"ab\"\ntoken_file = \"token\"\nbase_urls = [\"https://s.mx/?a=1\"]",
                "notify[0].base_urls[0]",
            ),
        ];
        for (body, key) in cases {
            let text = format!("[[notify]]\n{body}\n");
            let m = parse(&text, t.path()).unwrap_err().to_string();
            assert!(m.contains(&format!("`{key}`")), "{body:?} gave {m}");
        }
        let twice = "[[notify]]\ntype = \"webhook\"\nname = \"a\"\nurl = \"https://x\"\n[[notify]]\ntype = \"webhook\"\nname = \"a\"\nurl = \"https://y\"\n";
        let m = parse(twice, t.path()).unwrap_err().to_string();
        assert!(m.contains("`notify[1].name`"), "{m}");
    }

    #[test]
    fn relative_programs_resolve_against_the_config_dir() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("hooks")).unwrap();
        let hook = t.path().join("hooks/on-cut.sh");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let n = parse(
            "[[notify]]\ntype = \"command\"\ncommand = [\"hooks/on-cut.sh\", \"--flag\"]\n",
            t.path(),
        )
        .unwrap();
        let Target::Command(c) = &n[0].target else {
            panic!()
        };
        assert_eq!(c.program, hook);
        assert_eq!(c.args, ["--flag"]);
    }
}
