//! The TOML configuration: its embedded defaults, parsing and validation.
//!
//! Owns: turning an optional config file into a validated [`Config`] in two stages — a raw,
//! serde-shaped [`RawConfig`] (unknown keys are errors) and one [`RawConfig::validate`] that
//! resolves paths against the config file's directory and checks every value, naming the key
//! in its error. Every setting has a default, so difusor runs with no file at all.
//!
//! Also [`Secret`] and [`read_secret`]: tokens and keys the config *names* (a file or an
//! environment variable, never the text itself) are read here, at start, so a missing one is
//! an error naming its key.
//!
//! Must never: warn and continue on a bad value, silently reset a value to its default, read
//! SSH key material (that is `keys`), hold a secret written in the config text, or touch the
//! network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration could not be used. The server does not start on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key / wrong type (toml names the key and line).
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key has a value that parses but is not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// A `ConfigError::Invalid` for `key` (shared by every section's validation).
pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A secret read at start (a token, an HMAC key, an access key): `Debug` and `Display` show
/// `<redacted>`, so it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself: only for signing or an `Authorization` header, never for a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The secret from `file` (contents, trimmed) or the environment variable `env`: at most
/// one of them; `required` makes none an error. Variables used are added to `secret_envs`
/// (command hooks must not inherit them).
pub(crate) fn read_secret(
    file_key: &str,
    file: Option<PathBuf>,
    env_key: &str,
    env: Option<String>,
    required: bool,
    secret_envs: &mut Vec<String>,
) -> Result<Option<Secret>, ConfigError> {
    let value = match (file, env) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                env_key,
                format!("and {file_key} are both set: use one"),
            ));
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(file_key, format!("cannot read {}: {e}", path.display())))?;
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(invalid(file_key, format!("{} is empty", path.display())));
            }
            text
        }
        (None, Some(var)) => {
            let text = std::env::var(&var).map_err(|_| {
                invalid(env_key, format!("environment variable {var:?} is not set"))
            })?;
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(invalid(
                    env_key,
                    format!("environment variable {var:?} is empty"),
                ));
            }
            if !secret_envs.contains(&var) {
                secret_envs.push(var);
            }
            text
        }
        (None, None) if required => {
            return Err(invalid(file_key, "is missing (or the *_env variant)"));
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(Secret::new(value)))
}

/// What a user may do. Closed set: permissions are decided by matching on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The institute: may write under `/incoming`, read what it sees.
    Publisher,
    /// The difusor's staff: read-only everywhere.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Operator => "operator",
        }
    }
}

/// The file as written by a person: every field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub ingest: RawIngest,
    #[serde(default)]
    pub web: crate::web::config::RawWeb,
    /// `[[notify]]`: webhooks, command hooks, CDN purges (see `notify::config`).
    #[serde(default)]
    pub notify: Vec<crate::notify::RawNotifier>,
    #[serde(default)]
    pub monitor: crate::monitor::config::RawMonitor,
    #[serde(default)]
    pub sources: crate::sources::config::RawSources,
    #[serde(default)]
    pub admin: crate::monitor::config::RawAdmin,
    /// `[[mirror.s3]]`: object-storage targets every cut is mirrored to (see `mirror::config`).
    #[serde(default)]
    pub mirror: crate::mirror::RawMirror,
    pub users: Option<Vec<RawUser>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    pub mode: Option<PublishMode>,
    pub require_checksum: Option<bool>,
    pub close_timeout_secs: Option<u64>,
    pub allow_links: Option<bool>,
    pub max_total_bytes: Option<u64>,
    pub max_entries: Option<u64>,
    pub max_ratio: Option<u64>,
    pub name_utc_offset: Option<String>,
    pub keep_cuts: Option<u64>,
}

/// How a package becomes a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// The new cut starts as the previous one (hard links) and the package overwrites it.
    Increment,
    /// Each package is the whole site.
    Replace,
}

impl PublishMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Increment => "increment",
            PublishMode::Replace => "replace",
        }
    }
}

/// What the ingest pipeline does with each package.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub mode: PublishMode,
    /// Refuse packages that arrive without a `<package>.sha256` sidecar.
    pub require_checksum: bool,
    /// How long the uploader's `close` waits for the verdict before answering OK anyway.
    pub close_timeout: Duration,
    /// Allow symbolic links that stay inside the cut.
    pub allow_links: bool,
    pub max_total_bytes: u64,
    pub max_entries: u64,
    pub max_ratio: u64,
    /// The institute's UTC offset, for cut times in package names (local time).
    pub name_utc_offset: time::UtcOffset,
    /// Extracted cuts to keep besides the live one (0 = keep all). Packages are never pruned.
    pub keep_cuts: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub listen: Option<String>,
    pub max_connections: Option<u64>,
    pub max_connections_per_address: Option<u64>,
    pub login_grace_secs: Option<u64>,
    pub keepalive_secs: Option<u64>,
    pub window_size: Option<u64>,
    pub max_packet_size: Option<u64>,
    pub max_open_handles: Option<u64>,
    #[serde(default)]
    pub defender: RawDefender,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefender {
    pub enabled: Option<bool>,
    pub max_failures: Option<u64>,
    pub window_secs: Option<u64>,
    pub ban_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    pub role: Role,
    pub authorized_keys: PathBuf,
}

/// The validated configuration every module reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from (None: embedded defaults).
    pub source: Option<PathBuf>,
    /// Relative paths are resolved against this: the config file's directory, or the working
    /// directory when there is no file.
    pub base_dir: PathBuf,
    /// Root of everything difusor stores (incoming, history, cuts, state).
    pub data_dir: PathBuf,
    /// Host keys and generated client keys.
    pub keys_dir: PathBuf,
    pub ssh: SshConfig,
    pub ingest: IngestConfig,
    pub web: crate::web::config::WebConfig,
    /// Told about each published cut and incident (empty: nobody is).
    pub notify: Vec<crate::notify::NotifierConfig>,
    pub monitor: crate::monitor::config::MonitorConfig,
    /// `[[sources.https]]`: packages fetched instead of pushed.
    pub sources: crate::sources::SourcesConfig,
    pub admin: crate::monitor::config::AdminConfig,
    /// Object-storage targets (empty: nothing is mirrored).
    pub mirror: crate::mirror::MirrorConfig,
    pub users: Vec<UserConfig>,
    /// True when `users` came from the defaults, not the file: the first start then makes the
    /// default publisher's key pair so a newcomer can push right away.
    pub default_users: bool,
}

#[derive(Debug, Clone)]
pub struct SshConfig {
    pub listen: SocketAddr,
    /// Cap on simultaneous SSH connections from everyone.
    pub max_connections: usize,
    /// Cap on simultaneous SSH connections from one client address.
    pub max_connections_per_address: usize,
    /// A connection that has not authenticated after this long is dropped.
    pub login_grace: Duration,
    /// Keepalive probe interval for idle sessions (dead peers are dropped after 3 unanswered).
    pub keepalive: Duration,
    /// SSH channel window we advertise (bytes).
    pub window_size: u32,
    /// Largest SSH packet the client may send us (bytes).
    pub max_packet_size: u32,
    /// Open SFTP handles allowed per session (advertised in limits@openssh.com).
    pub max_open_handles: usize,
    pub defender: DefenderConfig,
}

/// Brute-force defence: `max_failures` failed logins from one address within `window` ban the
/// address for `ban`.
#[derive(Debug, Clone)]
pub struct DefenderConfig {
    pub enabled: bool,
    pub max_failures: u32,
    pub window: Duration,
    pub ban: Duration,
}

#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    pub role: Role,
    /// Where this user's keys are: an authorized_keys file or a single key file (see `keys`).
    pub authorized_keys: PathBuf,
}

/// The SSH port when nothing is configured.
pub const DEFAULT_SSH_LISTEN: &str = "127.0.0.1:2222";
/// The default publisher's name (the institute).
pub const DEFAULT_PUBLISHER: &str = "institute";

impl Config {
    /// The embedded defaults, with relative paths resolved against `base_dir`.
    pub fn defaults(base_dir: &Path) -> Config {
        // Validation of an empty raw config cannot fail: the defaults are valid by construction,
        // and a test keeps them so.
        match RawConfig::default().validate(base_dir, None) {
            Ok(c) => c,
            Err(e) => unreachable!("embedded defaults are invalid: {e}"),
        }
    }

    /// Reads and validates `path`; relative paths inside it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Self::parse(&text, &base, Some(path))
    }

    /// Parses config text as if it were a file in `base_dir`.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        source: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: source
                .map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from("<config>")),
            message: e.to_string(),
        })?;
        raw.validate(base_dir, source)
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// A duration in whole seconds within `min..=max`, or an error naming `key`.
pub(crate) fn secs(
    key: &str,
    v: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(
            key,
            format!("{v} is out of range {min}..={max} seconds"),
        ));
    }
    Ok(Duration::from_secs(v))
}

/// A number within `min..=max`, or an error naming `key`.
pub(crate) fn count(
    key: &str,
    v: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = v.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(key, format!("{v} is out of range {min}..={max}")));
    }
    Ok(v)
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !name.starts_with('-')
        && !name.starts_with('.')
}

impl RawConfig {
    /// Stage two: resolve and check everything, failing on the first bad key.
    pub fn validate(self, base_dir: &Path, source: Option<&Path>) -> Result<Config, ConfigError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base_dir.join(p) };
        let data_dir = resolve(self.data_dir.unwrap_or_else(|| PathBuf::from("data")));
        let keys_dir = resolve(self.keys_dir.unwrap_or_else(|| PathBuf::from("keys")));

        let listen_text = self.ssh.listen.as_deref().unwrap_or(DEFAULT_SSH_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "ssh.listen",
                format!("{listen_text:?} is not an address:port such as \"0.0.0.0:22\""),
            )
        })?;
        let s = &self.ssh;
        let d = &s.defender;
        let ssh = SshConfig {
            listen,
            max_connections: count("ssh.max_connections", s.max_connections, 128, 1, 100_000)?
                as usize,
            max_connections_per_address: count(
                "ssh.max_connections_per_address",
                s.max_connections_per_address,
                16,
                1,
                100_000,
            )? as usize,
            login_grace: secs("ssh.login_grace_secs", s.login_grace_secs, 60, 1, 3600)?,
            keepalive: secs("ssh.keepalive_secs", s.keepalive_secs, 30, 1, 3600)?,
            window_size: count(
                "ssh.window_size",
                s.window_size,
                16 << 20,
                32 << 10,
                u32::MAX as u64,
            )? as u32,
            // Above 65535 russh complains and some clients break (russh#549).
            max_packet_size: count(
                "ssh.max_packet_size",
                s.max_packet_size,
                65535,
                32768,
                65535,
            )? as u32,
            max_open_handles: count("ssh.max_open_handles", s.max_open_handles, 256, 4, 10_000)?
                as usize,
            defender: DefenderConfig {
                enabled: d.enabled.unwrap_or(true),
                max_failures: count("ssh.defender.max_failures", d.max_failures, 10, 1, 10_000)?
                    as u32,
                window: secs("ssh.defender.window_secs", d.window_secs, 300, 1, 86_400)?,
                ban: secs("ssh.defender.ban_secs", d.ban_secs, 900, 1, 30 * 86_400)?,
            },
        };
        if ssh.max_connections_per_address > ssh.max_connections {
            return Err(invalid(
                "ssh.max_connections_per_address",
                format!(
                    "{} is larger than ssh.max_connections ({})",
                    ssh.max_connections_per_address, ssh.max_connections
                ),
            ));
        }

        let g = &self.ingest;
        let offset_text = g.name_utc_offset.as_deref().unwrap_or("-06:00");
        let name_utc_offset = time::UtcOffset::parse(
            offset_text,
            time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]"),
        )
        .map_err(|_| {
            invalid(
                "ingest.name_utc_offset",
                format!("{offset_text:?} is not an offset such as \"-06:00\""),
            )
        })?;
        let ingest = IngestConfig {
            mode: g.mode.unwrap_or(PublishMode::Increment),
            require_checksum: g.require_checksum.unwrap_or(false),
            close_timeout: secs(
                "ingest.close_timeout_secs",
                g.close_timeout_secs,
                60,
                1,
                3600,
            )?,
            allow_links: g.allow_links.unwrap_or(false),
            max_total_bytes: count(
                "ingest.max_total_bytes",
                g.max_total_bytes,
                4 << 30,
                1 << 20,
                1 << 40,
            )?,
            max_entries: count("ingest.max_entries", g.max_entries, 200_000, 1, 10_000_000)?,
            max_ratio: count("ingest.max_ratio", g.max_ratio, 200, 2, 100_000)?,
            name_utc_offset,
            keep_cuts: count("ingest.keep_cuts", g.keep_cuts, 0, 0, 1_000_000)?,
        };

        let web = crate::web::config::WebConfig::from_raw(self.web, base_dir)?;

        let default_users = self.users.is_none();
        let raw_users = self.users.unwrap_or_else(|| {
            vec![RawUser {
                name: DEFAULT_PUBLISHER.to_owned(),
                role: Role::Publisher,
                authorized_keys: keys_dir.join(format!("{DEFAULT_PUBLISHER}.authorized_keys")),
            }]
        });
        let mut users: Vec<UserConfig> = Vec::with_capacity(raw_users.len());
        for (i, u) in raw_users.into_iter().enumerate() {
            let key = format!("users[{i}].name");
            if !valid_user_name(&u.name) {
                return Err(invalid(
                    key,
                    format!(
                        "{:?} is not a valid user name (letters, digits, '.', '_', '-'; at most 64)",
                        u.name
                    ),
                ));
            }
            if users.iter().any(|o| o.name == u.name) {
                return Err(invalid(key, format!("user {:?} is defined twice", u.name)));
            }
            if u.authorized_keys.as_os_str().is_empty() {
                return Err(invalid(format!("users[{i}].authorized_keys"), "is empty"));
            }
            users.push(UserConfig {
                name: u.name,
                role: u.role,
                authorized_keys: resolve(u.authorized_keys),
            });
        }
        if users.is_empty() {
            return Err(invalid(
                "users",
                "no users are defined: nobody could log in",
            ));
        }

        Ok(Config {
            source: source.map(Path::to_owned),
            base_dir: base_dir.to_owned(),
            data_dir,
            keys_dir,
            ssh,
            ingest,
            web,
            notify: crate::notify::config::validate(self.notify, base_dir)?,
            monitor: self.monitor.validate()?,
            sources: self.sources.validate(base_dir)?,
            admin: self.admin.validate()?,
            mirror: self.mirror.validate(base_dir)?,
            users,
            default_users,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/difusor"), None)
    }

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.ssh.listen.to_string(), DEFAULT_SSH_LISTEN);
        assert_eq!(c.data_dir, Path::new("/etc/difusor/data"));
        assert_eq!(c.keys_dir, Path::new("/etc/difusor/keys"));
        assert!(c.default_users);
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].role, Role::Publisher);
        assert_eq!(c.ssh.defender.max_failures, 10);
        assert_eq!(c.ssh.defender.window, Duration::from_secs(300));
        assert_eq!(c.ssh.defender.ban, Duration::from_secs(900));
        let d = Config::defaults(Path::new("/x"));
        assert_eq!(d.data_dir, Path::new("/x/data"));
    }

    #[test]
    fn paths_are_relative_to_the_config_directory() {
        let c = parse(
            r#"
            data_dir = "/srv/data"
            [[users]]
            name = "ops"
            role = "operator"
            authorized_keys = "keys/ops.pub"
            "#,
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/srv/data"));
        assert_eq!(
            c.users[0].authorized_keys,
            Path::new("/etc/difusor/keys/ops.pub")
        );
        assert!(!c.default_users);
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = parse("[ssh]\nlisten = \"127.0.0.1:22\"\nlisen = 3\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("lisen"), "{m}");
        assert!(m.contains("line 3"), "{m}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[ssh]\nlisten = \"localhost\"", "ssh.listen"),
            ("[ssh]\nmax_connections = 0", "ssh.max_connections"),
            (
                "[ssh.defender]\nmax_failures = 0",
                "ssh.defender.max_failures",
            ),
            ("[ssh]\nmax_packet_size = 1000000", "ssh.max_packet_size"),
            (
                "[ssh]\nmax_connections = 4\nmax_connections_per_address = 5",
                "ssh.max_connections_per_address",
            ),
            (
                "[[users]]\nname = \"a b\"\nrole = \"publisher\"\nauthorized_keys = \"k\"",
                "users[0].name",
            ),
            (
                "[[users]]\nname = \"a\"\nrole = \"publisher\"\nauthorized_keys = \"k\"\n[[users]]\nname = \"a\"\nrole = \"operator\"\nauthorized_keys = \"k\"",
                "users[1].name",
            ),
            ("users = []", "users"),
            (
                "[ingest]\nname_utc_offset = \"CST\"",
                "ingest.name_utc_offset",
            ),
            ("[ingest]\nmax_ratio = 1", "ingest.max_ratio"),
        ];
        for (text, key) in cases {
            let m = parse(text).unwrap_err().to_string();
            assert!(m.contains(&format!("`{key}`")), "{text:?} gave {m}");
        }
    }

    #[test]
    fn bad_role_is_an_error() {
        let m = parse("[[users]]\nname = \"a\"\nrole = \"admin\"\nauthorized_keys = \"k\"")
            .unwrap_err()
            .to_string();
        assert!(m.contains("admin") && m.contains("publisher"), "{m}");
    }
}
