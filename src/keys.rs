//! SSH key files: the server's host keys, the keys each user may log in with, and client key pairs
//! that difusor hands out to institutes.
//!
//! This module owns reading and writing key *files*:
//! - host keys (`ssh_host_ed25519_key`, `ssh_host_rsa_key`), loaded or generated on first start;
//! - a user's `authorized_keys` setting, which institutes fill with whatever they have at hand: an
//!   OpenSSH `authorized_keys` file or `.pub` line, an RFC 4716 public key, or even a private key
//!   (PKCS#1, PKCS#8, SEC1, OpenSSH or PuTTY `.ppk`), from which the public key is derived;
//! - the `from="…"` and `expiry-time="…"` restrictions of an authorized key;
//! - generating client key pairs and appending their public line to an `authorized_keys` file.
//!
//! It must never: overwrite a key file it did not create in the same call; leave a half-written
//! key under a key file's name (keys are written to a temporary name and linked into place); skip
//! a line it cannot parse (a skipped line is a key that silently does not work, or a restriction
//! that silently does not apply); resolve DNS for `from=`; compare keys by anything but their key
//! data; log or return private key material other than the host keys the caller asked for; or
//! decide who may log in (the SSH layer does that with what is returned here).

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use ipnet::{IpNet, Ipv4Net};
use russh::keys::key::safe_rng;
use russh::keys::{decode_secret_key, parse_public_key_base64};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

/// RSA modulus size for keys difusor generates (host and client): OpenSSH's current default.
const RSA_BITS: usize = 3072;

/// Comment stored in generated host keys, so an admin can tell them from hand-made ones.
const HOST_KEY_COMMENT: &str = "difusor host key";

const RFC4716_BEGIN: &str = "---- BEGIN SSH2 PUBLIC KEY ----";
const RFC4716_END: &str = "---- END SSH2 PUBLIC KEY ----";
const PPK_MAGIC: &str = "PuTTY-User-Key-File-";

/// Everything that can go wrong with a key file. Messages name the file (and line where there is one).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, writing or creating a key file or its directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line of a key file is not what its format requires (`line` is 1-based).
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A private key is protected by a passphrase; difusor has no way to ask for one.
    #[error(
        "{}:{line}: the private key is encrypted with a passphrase; give difusor an unencrypted copy or its public key",
        path.display()
    )]
    Encrypted { path: PathBuf, line: usize },
    /// The file holds no key at all (empty, or only blank and comment lines).
    #[error("{}: no keys found (the file is empty or holds only comments)", path.display())]
    NoKeys { path: PathBuf },
    /// A file that would be created already exists; key files are never overwritten.
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    Exists { path: PathBuf },
    /// The file is not in `authorized_keys` format, so a line cannot be appended to it.
    #[error("{}: cannot append an authorized_keys line: {reason}", path.display())]
    NotAppendable { path: PathBuf, reason: String },
    /// The line given to `append_authorized_key` is not one valid `authorized_keys` line.
    #[error("invalid authorized_keys line: {reason}")]
    InvalidLine { reason: String },
    /// A host key file holds a key of another algorithm than its name promises.
    #[error("{}: expected an {expected} key, found {found}", path.display())]
    WrongAlgorithm {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    /// Generating or encoding a new key failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

fn io_error(path: &Path, source: io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `SHA256:<base64 without padding>`, the same string `ssh-keygen -l -E sha256` prints.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

// ------------------------------------------------------------------------------------------------
// Host keys

/// A host key the server presents, with the file it came from.
#[derive(Clone, Debug)]
pub struct HostKey {
    pub path: PathBuf,
    pub key: PrivateKey,
    /// True when the file did not exist and was generated by this call.
    pub generated: bool,
}

#[derive(Clone, Copy)]
enum HostKeyKind {
    Ed25519,
    Rsa,
}

impl HostKeyKind {
    fn file_name(self) -> &'static str {
        match self {
            HostKeyKind::Ed25519 => "ssh_host_ed25519_key",
            HostKeyKind::Rsa => "ssh_host_rsa_key",
        }
    }

    fn name(self) -> &'static str {
        match self {
            HostKeyKind::Ed25519 => "ed25519",
            HostKeyKind::Rsa => "rsa",
        }
    }

    fn accepts(self, algorithm: &Algorithm) -> bool {
        match self {
            HostKeyKind::Ed25519 => matches!(algorithm, Algorithm::Ed25519),
            HostKeyKind::Rsa => matches!(algorithm, Algorithm::Rsa { .. }),
        }
    }
}

/// Loads `dir/ssh_host_ed25519_key` and `dir/ssh_host_rsa_key` (OpenSSH private key format; any
/// unencrypted format [`load_authorized_keys`] understands is accepted too), generating any that is
/// missing (ed25519; RSA 3072 bits) with mode 0600 and a `.pub` beside it (0644). Creates `dir`
/// (0700) if needed. A key file readable by group or others is used but logged as a warning.
/// Returns the ed25519 key first, then the RSA key.
pub fn load_or_generate_host_keys(dir: &Path) -> Result<Vec<HostKey>, KeyError> {
    create_dir_with_mode(dir, 0o700)?;
    let mut keys = Vec::with_capacity(2);
    for kind in [HostKeyKind::Ed25519, HostKeyKind::Rsa] {
        let path = dir.join(kind.file_name());
        let host_key = match fs::metadata(&path) {
            Ok(_) => HostKey {
                key: load_host_key(&path, kind)?,
                path,
                generated: false,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => generate_host_key(path, kind)?,
            Err(e) => return Err(io_error(&path, e)),
        };
        keys.push(host_key);
    }
    Ok(keys)
}

fn load_host_key(path: &Path, kind: HostKeyKind) -> Result<PrivateKey, KeyError> {
    let (text, mode) = read_text_file(path)?;
    if mode & 0o077 != 0 {
        // OpenSSH's sshd refuses such a key; we only warn, because refusing would take the whole
        // service down over a chmod, and the admin sees the warning at start-up.
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "host key file is readable by group or others; it should be mode 0600"
        );
    }
    let source = path.display().to_string();
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut blocks = match detect_format(text) {
        Detected::Pem => parse_pem_blocks(text, &source)?,
        Detected::Ppk => vec![parse_ppk(text, &source)?],
        Detected::AuthorizedKeys | Detected::Rfc4716 => {
            return Err(KeyError::Parse {
                path: path.to_path_buf(),
                line: first_significant_line(text),
                reason: "expected an OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`)"
                    .to_string(),
            });
        }
    };
    if blocks.len() != 1 {
        return Err(KeyError::Parse {
            path: path.to_path_buf(),
            line: blocks.get(1).map_or(1, |b| b.line),
            reason: format!(
                "a host key file must hold exactly one private key, found {}",
                blocks.len()
            ),
        });
    }
    let block = blocks.remove(0);
    let algorithm = block.key.algorithm();
    if !kind.accepts(&algorithm) {
        return Err(KeyError::WrongAlgorithm {
            path: path.to_path_buf(),
            expected: kind.name(),
            found: algorithm.as_str().to_string(),
        });
    }
    Ok(block.key)
}

fn generate_host_key(path: PathBuf, kind: HostKeyKind) -> Result<HostKey, KeyError> {
    let key = match kind {
        HostKeyKind::Ed25519 => random_ed25519(HOST_KEY_COMMENT)?,
        HostKeyKind::Rsa => private_key_from_rsa(&random_rsa()?, HOST_KEY_COMMENT)?,
    };
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError::Generate(format!("{}: {e}", path.display())))?;
    match write_file_atomically(&path, pem.as_bytes(), 0o600, Placement::NoClobber) {
        Ok(()) => {}
        // Another difusor process started at the same moment and won the race: use its key,
        // so both serve the same host key.
        Err(KeyError::Exists { .. }) => {
            return Ok(HostKey {
                key: load_host_key(&path, kind)?,
                path,
                generated: false,
            });
        }
        Err(e) => return Err(e),
    }
    let public_line = openssh_line(key.public_key())?;
    // A stale .pub from an earlier key would mislead whoever publishes the fingerprint: replace it.
    write_file_atomically(
        &public_path_for(&path),
        format!("{public_line}\n").as_bytes(),
        0o644,
        Placement::Replace,
    )?;
    tracing::info!(
        path = %path.display(),
        fingerprint = %fingerprint(key.public_key()),
        "generated a new {} host key",
        kind.name()
    );
    Ok(HostKey {
        path,
        key,
        generated: true,
    })
}

// ------------------------------------------------------------------------------------------------
// Authorized keys

/// One key a user may log in with, plus the authorized_keys options that restrict it.
#[derive(Clone, Debug)]
pub struct AuthorizedKey {
    pub key: PublicKey,
    /// `from="…"`: the client addresses the key may be used from; `None` means any.
    pub from: Option<FromPatterns>,
    /// `expiry-time="…"`: the key is refused after this instant; `None` means never.
    pub expiry: Option<SystemTime>,
    /// Where the key was read, `path:line`, for log messages.
    pub source: String,
}

impl AuthorizedKey {
    /// Whether `offered` is this key. Compares key data only: comments differ between a `.pub`,
    /// an RFC 4716 file and a private key, and `PublicKey ==` would compare them too.
    pub fn matches(&self, offered: &PublicKey) -> bool {
        self.key.key_data() == offered.key_data()
    }

    /// Whether a client at `addr` may use this key (`from=` honoured; true when there is none).
    pub fn permits_address(&self, addr: IpAddr) -> bool {
        self.from.as_ref().is_none_or(|from| from.matches(addr))
    }

    /// Whether the key's `expiry-time` has passed at `now`. The time in the file is read as UTC,
    /// with or without a trailing `Z` (OpenSSH reads it as the server's local time unless it ends
    /// in `Z`; one fixed reading does not change meaning with the server's time zone).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expiry.is_some_and(|expiry| now > expiry)
    }
}

/// OpenSSH `from="pattern-list"` semantics against the client IP only (no DNS): comma-separated
/// patterns; `*` and `?` wildcards on the textual address; CIDR `10.0.0.0/8` and `2001:db8::/32`;
/// negation `!pattern` — a negated match refuses even if another pattern matches, and a list with no
/// positive match refuses; IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are matched as IPv4.
///
/// Stricter than OpenSSH where OpenSSH would silently never match: an invalid CIDR, a CIDR with
/// host bits set, an empty pattern and a host name (which would need DNS) are parse errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromPatterns {
    patterns: Vec<FromPattern>,
    text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FromPattern {
    negated: bool,
    matcher: Matcher,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Matcher {
    /// A CIDR block or a single address (as a /32 or /128).
    Net(IpNet),
    /// A wildcard pattern on the address text, lowercased.
    Glob(String),
}

impl FromPatterns {
    /// Parses the value of a `from="…"` option (without the quotes).
    pub fn parse(list: &str) -> Result<Self, String> {
        if list.trim().is_empty() {
            return Err("from= needs at least one address pattern".to_string());
        }
        let mut patterns = Vec::new();
        for raw in list.split(',') {
            let pattern = raw.trim();
            let (negated, body) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, pattern),
            };
            if body.is_empty() {
                return Err(format!("empty pattern in from=\"{list}\""));
            }
            let matcher = if body.contains('/') {
                let net: IpNet = body.parse().map_err(|_| {
                    format!(
                        "invalid CIDR `{body}` in from= (expected e.g. 10.0.0.0/8 or 2001:db8::/32)"
                    )
                })?;
                if net.trunc() != net {
                    return Err(format!(
                        "CIDR `{body}` in from= has bits set beyond its /{} prefix (did you mean `{}`?)",
                        net.prefix_len(),
                        net.trunc()
                    ));
                }
                Matcher::Net(canonical_net(net))
            } else if body.contains(['*', '?']) {
                // Only characters an address can contain: a host-name wildcard would need DNS, and
                // a negated one that can never match would silently let everybody through.
                if !body
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '*' | '?'))
                {
                    return Err(format!(
                        "`{body}` in from= looks like a host name; difusor does not resolve DNS, use addresses, CIDR or wildcards on addresses"
                    ));
                }
                Matcher::Glob(body.to_ascii_lowercase())
            } else {
                let addr: IpAddr = body.parse().map_err(|_| {
                    format!(
                        "`{body}` in from= is not an IP address, CIDR or address wildcard (difusor does not resolve host names)"
                    )
                })?;
                Matcher::Net(IpNet::from(addr.to_canonical()))
            };
            patterns.push(FromPattern { negated, matcher });
        }
        Ok(Self {
            patterns,
            text: list.to_string(),
        })
    }

    /// Whether `addr` is allowed by the list.
    pub fn matches(&self, addr: IpAddr) -> bool {
        let canonical = addr.to_canonical();
        // Wildcards see both spellings of a mapped address, so `10.0.*` and `::ffff:*` both work.
        let texts = [canonical.to_string(), addr.to_string()];
        let hit = |pattern: &FromPattern| match &pattern.matcher {
            Matcher::Net(net) => net.contains(&canonical) || net.contains(&addr),
            Matcher::Glob(glob) => texts
                .iter()
                .any(|text| glob_match(glob.as_bytes(), text.as_bytes())),
        };
        if self.patterns.iter().any(|p| p.negated && hit(p)) {
            return false;
        }
        self.patterns.iter().any(|p| !p.negated && hit(p))
    }
}

impl fmt::Display for FromPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) is the IPv4 block it maps, because client
/// addresses are compared in their canonical (IPv4) form.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

/// OpenSSH `match_pattern`: `*` is any run of characters, `?` exactly one.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen and the text position it is currently standing for.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `expiry-time="YYYYMMDD[HHMM[SS]]"`, optionally ending in `Z`; always read as UTC.
fn parse_expiry_time(value: &str) -> Result<SystemTime, String> {
    let digits = value.strip_suffix(['Z', 'z']).unwrap_or(value);
    let bad = || format!("expiry-time=\"{value}\" is not YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let field = |from: usize, to: usize| -> Result<u32, String> {
        match digits.get(from..to) {
            Some(s) => s.parse().map_err(|_| bad()),
            None => Ok(0),
        }
    };
    let year = i32::try_from(field(0, 4)?).map_err(|_| bad())?;
    let month = u8::try_from(field(4, 6)?)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let narrow = |v: u32| u8::try_from(v).map_err(|_| bad());
    let date = time::Date::from_calendar_date(year, month, narrow(field(6, 8)?)?)
        .map_err(|e| format!("{}: {e}", bad()))?;
    let clock = time::Time::from_hms(
        narrow(field(8, 10)?)?,
        narrow(field(10, 12)?)?,
        narrow(field(12, 14)?)?,
    )
    .map_err(|e| format!("{}: {e}", bad()))?;
    Ok(SystemTime::from(
        time::PrimitiveDateTime::new(date, clock).assume_utc(),
    ))
}

/// What a user's authorized keys setting turned out to hold.
#[derive(Clone, Debug)]
pub struct LoadedKeys {
    pub keys: Vec<AuthorizedKey>,
    /// True when the keys came from a private key file (the caller logs a warning that a private
    /// key sits on the server).
    pub from_private_key: bool,
    pub format: KeyFileFormat,
}

/// The format a key file was recognised as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFileFormat {
    /// OpenSSH `authorized_keys` lines (a single `.pub` line included).
    AuthorizedKeys,
    /// `---- BEGIN SSH2 PUBLIC KEY ----` blocks (`ssh-keygen -e`, PuTTYgen's public key export).
    Rfc4716,
    /// `-----BEGIN RSA PRIVATE KEY-----`.
    PrivatePkcs1,
    /// `-----BEGIN PRIVATE KEY-----`.
    PrivatePkcs8,
    /// `-----BEGIN EC PRIVATE KEY-----`.
    PrivateSec1,
    /// `-----BEGIN OPENSSH PRIVATE KEY-----`.
    PrivateOpenSsh,
    /// PuTTY `.ppk` (versions 2 and 3).
    PrivatePpk,
}

impl KeyFileFormat {
    /// Whether the file holds a private key.
    pub fn is_private(self) -> bool {
        !matches!(self, KeyFileFormat::AuthorizedKeys | KeyFileFormat::Rfc4716)
    }
}

impl fmt::Display for KeyFileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFileFormat::AuthorizedKeys => "OpenSSH authorized_keys",
            KeyFileFormat::Rfc4716 => "RFC 4716 public key",
            KeyFileFormat::PrivatePkcs1 => "PKCS#1 RSA private key",
            KeyFileFormat::PrivatePkcs8 => "PKCS#8 private key",
            KeyFileFormat::PrivateSec1 => "SEC1 EC private key",
            KeyFileFormat::PrivateOpenSsh => "OpenSSH private key",
            KeyFileFormat::PrivatePpk => "PuTTY private key",
        })
    }
}

/// Reads a user's `authorized_keys` setting, which may be any of: an OpenSSH authorized_keys file
/// (one key per line, options such as `from="…"`, `no-pty`, `restrict`, `command="…"` accepted —
/// unknown options are ignored except `from=` and `expiry-time=` which are honoured, and
/// `cert-authority`, which is refused because certificates are not supported; comments and blank
/// lines skipped; a single OpenSSH public key line is just a 1-line authorized_keys file), RFC 4716
/// public keys (`---- BEGIN SSH2 PUBLIC KEY ----`, possibly several in one file), or an unencrypted
/// PRIVATE key as institutes sometimes hand over: PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), PKCS#8
/// (`BEGIN PRIVATE KEY`), SEC1 (`BEGIN EC PRIVATE KEY`), OpenSSH (`BEGIN OPENSSH PRIVATE KEY`) or
/// PuTTY `.ppk`. An encrypted private key is [`KeyError::Encrypted`]. The public key is derived from
/// the private key. CRLF line endings, a UTF-8 BOM and indented lines are accepted. An empty file
/// (no keys) is [`KeyError::NoKeys`]; a line that does not parse is [`KeyError::Parse`] naming
/// `path:line` and why.
pub fn load_authorized_keys(path: &Path) -> Result<LoadedKeys, KeyError> {
    let (text, _mode) = read_text_file(path)?;
    parse_authorized_keys(&text, &path.display().to_string())
}

/// [`load_authorized_keys`] on text already read; `source` names it in errors and in
/// [`AuthorizedKey::source`].
pub fn parse_authorized_keys(text: &str, source: &str) -> Result<LoadedKeys, KeyError> {
    let loaded = parse_key_text(text, source)?;
    if loaded.keys.is_empty() {
        return Err(KeyError::NoKeys {
            path: PathBuf::from(source),
        });
    }
    Ok(loaded)
}

/// Like [`parse_authorized_keys`] but a file without keys is not an error (appending needs that).
fn parse_key_text(text: &str, source: &str) -> Result<LoadedKeys, KeyError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (keys, format) = match detect_format(text) {
        Detected::AuthorizedKeys => (
            parse_authorized_lines(text, source)?,
            KeyFileFormat::AuthorizedKeys,
        ),
        Detected::Rfc4716 => (parse_rfc4716(text, source)?, KeyFileFormat::Rfc4716),
        Detected::Pem => public_keys_of(parse_pem_blocks(text, source)?, source),
        Detected::Ppk => public_keys_of(vec![parse_ppk(text, source)?], source),
    };
    Ok(LoadedKeys {
        keys,
        from_private_key: format.is_private(),
        format,
    })
}

/// The public halves of decoded private keys, and the format of the first (they agree in practice).
fn public_keys_of(blocks: Vec<PrivateBlock>, source: &str) -> (Vec<AuthorizedKey>, KeyFileFormat) {
    let format = blocks
        .first()
        .map_or(KeyFileFormat::PrivateOpenSsh, |b| b.format);
    let keys = blocks
        .into_iter()
        .map(|block| AuthorizedKey {
            key: block.key.public_key().clone(),
            from: None,
            expiry: None,
            source: format!("{source}:{}", block.line),
        })
        .collect();
    (keys, format)
}

enum Detected {
    AuthorizedKeys,
    Rfc4716,
    Pem,
    Ppk,
}

/// Decides the format from the first line that is not blank or a `#` comment.
fn detect_format(text: &str) -> Detected {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    if first.starts_with("---- BEGIN SSH2 PUBLIC KEY") {
        Detected::Rfc4716
    } else if first.starts_with("-----BEGIN ") {
        Detected::Pem
    } else if first.starts_with(PPK_MAGIC) {
        Detected::Ppk
    } else {
        Detected::AuthorizedKeys
    }
}

fn first_significant_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .map_or(1, |i| i + 1)
}

fn parse_error(source: &str, line: usize, reason: impl Into<String>) -> KeyError {
    KeyError::Parse {
        path: PathBuf::from(source),
        line,
        reason: reason.into(),
    }
}

fn parse_authorized_lines(text: &str, source: &str) -> Result<Vec<AuthorizedKey>, KeyError> {
    let mut keys = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = index + 1;
        let parsed = parse_authorized_line(line).map_err(|r| parse_error(source, number, r))?;
        keys.push(AuthorizedKey {
            key: parsed.key,
            from: parsed.from,
            expiry: parsed.expiry,
            source: format!("{source}:{number}"),
        });
    }
    Ok(keys)
}

struct ParsedLine {
    key: PublicKey,
    from: Option<FromPatterns>,
    expiry: Option<SystemTime>,
}

/// One non-blank, non-comment `authorized_keys` line, already trimmed:
/// `[options] <key-type> <base64> [comment]`.
fn parse_authorized_line(line: &str) -> Result<ParsedLine, String> {
    if line.starts_with("-----BEGIN ") || line.starts_with("---- BEGIN ") {
        return Err(
            "a key block inside an authorized_keys file; a PEM or RFC 4716 key must be alone in its file"
                .to_string(),
        );
    }
    let first = line.split([' ', '\t']).next().unwrap_or("");
    if looks_like_key_type(first) {
        return Ok(ParsedLine {
            key: parse_public_key_fields(line)?,
            from: None,
            expiry: None,
        });
    }
    let (options, rest) = parse_options(line)?;
    let mut from = None;
    let mut expiry: Option<SystemTime> = None;
    for (name, value) in options {
        match name.as_str() {
            "from" => {
                if from.is_some() {
                    return Err("more than one from= option".to_string());
                }
                let value = value.ok_or("from needs a value: from=\"pattern,…\"")?;
                from = Some(FromPatterns::parse(&value)?);
            }
            "expiry-time" => {
                let value = value.ok_or("expiry-time needs a value: expiry-time=\"YYYYMMDD\"")?;
                let time = parse_expiry_time(&value)?;
                // Like OpenSSH, the earliest of several expiry times wins.
                expiry = Some(expiry.map_or(time, |t| t.min(time)));
            }
            // A cert-authority line lists a CA that signs user certificates; accepting its key as a
            // plain login key would grant something the line never granted.
            "cert-authority" => {
                return Err(
                    "cert-authority is not supported (difusor does not accept certificates)"
                        .to_string(),
                );
            }
            // restrict, no-pty, command=, permitopen=, … only limit what a session may do; difusor
            // offers SFTP/SCP only, so ignoring them never grants more than the line allows.
            _ => {}
        }
    }
    Ok(ParsedLine {
        key: parse_public_key_fields(rest)?,
        from,
        expiry,
    })
}

fn looks_like_key_type(token: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"]
        .iter()
        .any(|prefix| token.starts_with(prefix))
}

/// `<key-type> <base64> [comment]`; the comment may contain spaces.
fn parse_public_key_fields(text: &str) -> Result<PublicKey, String> {
    let text = text.trim_start();
    let (key_type, rest) = text.split_once([' ', '\t']).unwrap_or((text, ""));
    if key_type.is_empty() {
        return Err("options are not followed by a key".to_string());
    }
    if !looks_like_key_type(key_type) {
        return Err(format!(
            "`{key_type}` is not a key type; expected `[options] <key-type> <base64> [comment]`"
        ));
    }
    if key_type.contains("-cert-v01@") {
        return Err(format!(
            "`{key_type}` is a certificate; difusor accepts plain public keys only"
        ));
    }
    let rest = rest.trim_start();
    let (base64, comment) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    if base64.is_empty() {
        return Err(format!("`{key_type}` is not followed by the base64 key"));
    }
    let mut key = parse_public_key_base64(base64)
        .map_err(|e| format!("invalid `{key_type}` key data: {e}"))?;
    let actual = key.algorithm();
    if actual.as_str() != key_type {
        return Err(format!(
            "the line says `{key_type}` but the key data is `{}`",
            actual.as_str()
        ));
    }
    key.set_comment(comment.trim());
    Ok(key)
}

/// An authorized_keys option: lowercased name and, for `name="value"`, the unquoted value.
type KeyOption = (String, Option<String>);

/// Splits the leading options of an authorized_keys line (`name` or `name="value"`, comma
/// separated, `\"` escaping a quote) from the rest. Names are lowercased (OpenSSH matches them
/// case-insensitively). Values must be quoted, as OpenSSH requires: an unquoted
/// `from=10.0.0.1,10.0.0.2` would otherwise be half-read.
fn parse_options(line: &str) -> Result<(Vec<KeyOption>, &str), String> {
    let mut options = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        let start = chars.peek().map_or(line.len(), |&(i, _)| i);
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                end = i + c.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let name = &line[start..end];
        if name.is_empty() {
            let found = line[start..]
                .chars()
                .next()
                .map_or("end of line".to_string(), |c| format!("`{c}`"));
            return Err(format!(
                "expected `[options] <key-type> <base64> [comment]`, found {found} where an option or key type should be"
            ));
        }
        let value = if chars.peek().is_some_and(|&(_, c)| c == '=') {
            chars.next();
            if chars.next().is_none_or(|(_, c)| c != '"') {
                return Err(format!(
                    "the value of option `{name}` must be in double quotes"
                ));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' if chars.peek().is_some_and(|&(_, n)| n == '"') => {
                        value.push('"');
                        chars.next();
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    _ => value.push(c),
                }
            }
            if !closed {
                return Err(format!("the value of option `{name}` has no closing quote"));
            }
            Some(value)
        } else {
            None
        };
        options.push((name.to_ascii_lowercase(), value));
        match chars.next() {
            Some((_, ',')) => continue,
            Some((i, c)) if c == ' ' || c == '\t' => return Ok((options, &line[i..])),
            Some((_, c)) => {
                return Err(format!(
                    "unexpected `{c}` after option `{name}` (options are separated by commas)"
                ));
            }
            None => return Err(format!("option `{name}` is not followed by a key")),
        }
    }
}

/// One or more `---- BEGIN SSH2 PUBLIC KEY ----` blocks, with `Header: value` lines (continued by
/// a trailing `\`) before the base64 body. The `Comment:` header becomes the key comment.
fn parse_rfc4716(text: &str, source: &str) -> Result<Vec<AuthorizedKey>, KeyError> {
    struct Block {
        begin: usize,
        body: String,
        comment: Option<String>,
        in_body: bool,
        continuation: bool,
        continuing_comment: bool,
    }
    let mut keys = Vec::new();
    let mut block: Option<Block> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        let Some(current) = block.as_mut() else {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line != RFC4716_BEGIN {
                return Err(parse_error(
                    source,
                    number,
                    format!("expected `{RFC4716_BEGIN}` (only RFC 4716 key blocks may follow one)"),
                ));
            }
            block = Some(Block {
                begin: number,
                body: String::new(),
                comment: None,
                in_body: false,
                continuation: false,
                continuing_comment: false,
            });
            continue;
        };
        if current.continuation {
            current.continuation = line.ends_with('\\');
            if current.continuing_comment
                && let Some(comment) = current.comment.as_mut()
            {
                comment.push_str(line.trim_end_matches('\\'));
            }
            continue;
        }
        if line == RFC4716_END {
            let key = parse_public_key_base64(&current.body).map_err(|e| {
                parse_error(
                    source,
                    current.begin,
                    format!("invalid RFC 4716 key data: {e}"),
                )
            })?;
            let mut key = key;
            if let Some(comment) = &current.comment {
                let comment = comment.trim();
                let comment = comment
                    .strip_prefix('"')
                    .and_then(|c| c.strip_suffix('"'))
                    .unwrap_or(comment);
                key.set_comment(comment);
            }
            keys.push(AuthorizedKey {
                key,
                from: None,
                expiry: None,
                source: format!("{source}:{}", current.begin),
            });
            block = None;
            continue;
        }
        if line.starts_with("----") {
            return Err(parse_error(
                source,
                number,
                format!("expected `{RFC4716_END}` before another marker"),
            ));
        }
        if line.is_empty() {
            continue;
        }
        if !current.in_body
            && let Some((tag, value)) = line.split_once(':')
        {
            current.continuation = line.ends_with('\\');
            current.continuing_comment = tag.trim().eq_ignore_ascii_case("comment");
            if current.continuing_comment {
                current.comment = Some(value.trim_end_matches('\\').to_string());
            }
            continue;
        }
        if !line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(parse_error(
                source,
                number,
                "not base64 inside an RFC 4716 key block",
            ));
        }
        current.in_body = true;
        current.body.push_str(line);
    }
    if let Some(open) = block {
        return Err(parse_error(
            source,
            open.begin,
            format!("key block has no `{RFC4716_END}` line"),
        ));
    }
    Ok(keys)
}

/// A private key decoded from a file, with the line its block starts on.
struct PrivateBlock {
    key: PrivateKey,
    line: usize,
    format: KeyFileFormat,
}

/// One or more PEM private key blocks. Lines are trimmed before decoding: russh matches the
/// `-----BEGIN` line exactly, so an indented or CRLF file would otherwise fail.
fn parse_pem_blocks(text: &str, source: &str) -> Result<Vec<PrivateBlock>, KeyError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            return Err(parse_error(
                source,
                number,
                "unexpected text outside the key block",
            ));
        };
        let end_line = format!("-----END {label}-----");
        let mut normalized = format!("{line}\n");
        let mut encrypted_header = false;
        let mut closed = false;
        for (_, raw) in lines.by_ref() {
            let inner = raw.trim();
            if inner.is_empty() {
                continue;
            }
            if inner.starts_with("Proc-Type:") && inner.contains("ENCRYPTED") {
                encrypted_header = true;
            }
            normalized.push_str(inner);
            normalized.push('\n');
            if inner == end_line {
                closed = true;
                break;
            }
        }
        if !closed {
            return Err(parse_error(
                source,
                number,
                format!("key block has no `{end_line}` line"),
            ));
        }
        let format = match label {
            "OPENSSH PRIVATE KEY" => KeyFileFormat::PrivateOpenSsh,
            "RSA PRIVATE KEY" => KeyFileFormat::PrivatePkcs1,
            "PRIVATE KEY" => KeyFileFormat::PrivatePkcs8,
            "EC PRIVATE KEY" => KeyFileFormat::PrivateSec1,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(KeyError::Encrypted {
                    path: PathBuf::from(source),
                    line: number,
                });
            }
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                return Err(parse_error(
                    source,
                    number,
                    format!(
                        "a PEM `{label}` is not supported; convert it with `ssh-keygen -i -m {} -f <file>`",
                        if label == "PUBLIC KEY" {
                            "PKCS8"
                        } else {
                            "PEM"
                        }
                    ),
                ));
            }
            "DSA PRIVATE KEY" => {
                return Err(parse_error(source, number, "DSA keys are not supported"));
            }
            other => {
                return Err(parse_error(
                    source,
                    number,
                    format!("`{other}` is not a private key difusor can read"),
                ));
            }
        };
        if encrypted_header {
            return Err(KeyError::Encrypted {
                path: PathBuf::from(source),
                line: number,
            });
        }
        let key = decode_private(&normalized, source, number, label)?;
        blocks.push(PrivateBlock {
            key,
            line: number,
            format,
        });
    }
    Ok(blocks)
}

fn decode_private(
    text: &str,
    source: &str,
    line: usize,
    what: &str,
) -> Result<PrivateKey, KeyError> {
    match decode_secret_key(text, None) {
        Ok(key) if key.is_encrypted() => Err(KeyError::Encrypted {
            path: PathBuf::from(source),
            line,
        }),
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(KeyError::Encrypted {
            path: PathBuf::from(source),
            line,
        }),
        Err(e) => Err(parse_error(
            source,
            line,
            format!("cannot decode the {what}: {e}"),
        )),
    }
}

/// A PuTTY `.ppk` file (one key per file). Encryption is read from its header so an encrypted
/// key is reported as such rather than as a MAC failure.
fn parse_ppk(text: &str, source: &str) -> Result<PrivateBlock, KeyError> {
    let start = first_significant_line(text);
    let mut normalized = String::new();
    for (index, raw) in text.lines().enumerate().skip(start - 1) {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(value) = line.strip_prefix("Encryption:")
            && value.trim() != "none"
        {
            return Err(KeyError::Encrypted {
                path: PathBuf::from(source),
                line: index + 1,
            });
        }
        normalized.push_str(line);
        normalized.push('\n');
    }
    Ok(PrivateBlock {
        key: decode_private(&normalized, source, start, "PuTTY private key")?,
        line: start,
        format: KeyFileFormat::PrivatePpk,
    })
}

/// Reads a file as UTF-8, returning its permission bits too. Invalid UTF-8 is a parse error on
/// the line where it occurs rather than an opaque I/O error.
fn read_text_file(path: &Path) -> Result<(String, u32), KeyError> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mode = file.metadata().map_err(|e| io_error(path, e))?.mode();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    Ok((utf8_or_parse_error(bytes, path)?, mode))
}

fn utf8_or_parse_error(bytes: Vec<u8>, path: &Path) -> Result<String, KeyError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        KeyError::Parse {
            path: path.to_path_buf(),
            line,
            reason: "not valid UTF-8 text (is this a binary key file?)".to_string(),
        }
    })
}

// ------------------------------------------------------------------------------------------------
// Client keys

/// The kinds of client key pair difusor generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKeyType {
    Rsa,
    Ed25519,
}

impl FromStr for ClientKeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("rsa") {
            Ok(ClientKeyType::Rsa)
        } else if s.eq_ignore_ascii_case("ed25519") {
            Ok(ClientKeyType::Ed25519)
        } else {
            Err(format!(
                "unknown key type `{s}`: expected `rsa` or `ed25519`"
            ))
        }
    }
}

impl fmt::Display for ClientKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientKeyType::Rsa => "rsa",
            ClientKeyType::Ed25519 => "ed25519",
        })
    }
}

/// What [`generate_client_key`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedKey {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    /// The OpenSSH one-line public key with its comment, as written to `public_path` (no newline).
    pub public_line: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

/// Makes a client key pair: RSA-3072 written as PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`,
/// what institutes' tooling asks for and what OpenSSH `sftp -i` accepts) or ed25519 in OpenSSH
/// format. The private file is mode 0600 from creation and written atomically (temporary file in
/// the same directory, fsync, then linked into place without clobbering), so a crash never leaves a
/// half key; an existing private or public file is [`KeyError::Exists`] and left untouched. The
/// public key goes in OpenSSH one-line format with `comment` to `<private_path>.pub` (0644).
/// Missing parent directories are created (0700).
pub fn generate_client_key(
    kind: ClientKeyType,
    private_path: &Path,
    comment: &str,
) -> Result<GeneratedKey, KeyError> {
    if comment.contains(['\n', '\r']) {
        return Err(KeyError::Generate(
            "the key comment must be a single line".to_string(),
        ));
    }
    let public_path = public_path_for(private_path);
    // Checked up front so nobody waits for an RSA key that could never be written; the atomic
    // no-clobber link below is what actually guarantees nothing is overwritten.
    for path in [private_path, public_path.as_path()] {
        match fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(KeyError::Exists {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(path, e)),
        }
    }
    if let Some(parent) = private_path.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dir_with_mode(parent, 0o700)?;
    }

    let generate_error =
        |e: &dyn fmt::Display| KeyError::Generate(format!("{}: {e}", private_path.display()));
    let (private_text, key) = match kind {
        ClientKeyType::Rsa => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let rsa_key = random_rsa()?;
            let pem = rsa_key
                .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                .map_err(|e| generate_error(&e))?;
            (pem, private_key_from_rsa(&rsa_key, comment)?)
        }
        ClientKeyType::Ed25519 => {
            let key = random_ed25519(comment)?;
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| generate_error(&e))?;
            (pem, key)
        }
    };
    let public_line = openssh_line(key.public_key())?;

    write_file_atomically(
        private_path,
        private_text.as_bytes(),
        0o600,
        Placement::NoClobber,
    )?;
    if let Err(e) = write_file_atomically(
        &public_path,
        format!("{public_line}\n").as_bytes(),
        0o644,
        Placement::NoClobber,
    ) {
        // The private file was created by this call a moment ago; without its .pub it is only an
        // obstacle to the retry (which would refuse to overwrite it).
        let _ = fs::remove_file(private_path);
        return Err(e);
    }
    Ok(GeneratedKey {
        private_path: private_path.to_path_buf(),
        public_path,
        public_line,
        fingerprint: fingerprint(key.public_key()),
    })
}

fn random_rsa() -> Result<rsa::RsaPrivateKey, KeyError> {
    rsa::RsaPrivateKey::new(&mut safe_rng(), RSA_BITS)
        .map_err(|e| KeyError::Generate(format!("rsa-{RSA_BITS}: {e}")))
}

fn private_key_from_rsa(key: &rsa::RsaPrivateKey, comment: &str) -> Result<PrivateKey, KeyError> {
    let keypair = RsaKeypair::try_from(key).map_err(|e| KeyError::Generate(format!("rsa: {e}")))?;
    PrivateKey::new(KeypairData::Rsa(keypair), comment)
        .map_err(|e| KeyError::Generate(format!("rsa: {e}")))
}

fn random_ed25519(comment: &str) -> Result<PrivateKey, KeyError> {
    let mut key = PrivateKey::random(&mut safe_rng(), Algorithm::Ed25519)
        .map_err(|e| KeyError::Generate(format!("ed25519: {e}")))?;
    key.set_comment(comment);
    Ok(key)
}

fn openssh_line(key: &PublicKey) -> Result<String, KeyError> {
    key.to_openssh()
        .map_err(|e| KeyError::Generate(format!("encoding the public key: {e}")))
}

/// `<path>.pub`, appended to the whole file name (`id_rsa` → `id_rsa.pub`, `k.pem` → `k.pem.pub`).
fn public_path_for(private_path: &Path) -> PathBuf {
    let mut name = private_path.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// Appends one public key line to an authorized_keys file (creating it 0644, and its parent
/// directory), adding a newline before it if the file does not end in one and keeping the file's
/// CRLF line endings if it uses them. If the existing file is not in authorized_keys format (RFC
/// 4716 or a private key) it is [`KeyError::NotAppendable`]; if it has a line that does not parse
/// it is that [`KeyError::Parse`]. A key already present (same key data, whatever its comment or
/// options) is not added again: returns `Ok(false)` then, `Ok(true)` when appended. The file is
/// locked while it is read and appended to, so concurrent appends neither interleave nor duplicate.
pub fn append_authorized_key(path: &Path, public_line: &str) -> Result<bool, KeyError> {
    let line = public_line.trim();
    if line.contains(['\n', '\r']) {
        return Err(KeyError::InvalidLine {
            reason: "more than one line given".to_string(),
        });
    }
    if line.is_empty() || line.starts_with('#') {
        return Err(KeyError::InvalidLine {
            reason: "no public key given".to_string(),
        });
    }
    let new_key = parse_authorized_line(line)
        .map_err(|reason| KeyError::InvalidLine { reason })?
        .key;

    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dir_with_mode(parent, 0o755)?;
    }
    let existed = fs::symlink_metadata(path).is_ok();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.lock().map_err(|e| io_error(path, e))?;
    if !existed {
        // The umask may have narrowed the mode; sshd-style readers need 0644 exactly.
        file.set_permissions(Permissions::from_mode(0o644))
            .map_err(|e| io_error(path, e))?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    let text = utf8_or_parse_error(bytes, path)?;
    let text_without_bom = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // Decided before parsing: the file's own key (private or RFC 4716) must not be decoded, let
    // alone passphrase-checked, just to learn that it cannot take a line.
    let not_appendable = match detect_format(text_without_bom) {
        Detected::AuthorizedKeys => None,
        Detected::Rfc4716 => Some("it holds an RFC 4716 public key".to_string()),
        Detected::Ppk => Some("it holds a PuTTY private key".to_string()),
        Detected::Pem => {
            let first = text_without_bom
                .lines()
                .nth(first_significant_line(text_without_bom) - 1)
                .unwrap_or("")
                .trim();
            Some(if first.contains("PRIVATE KEY") {
                format!("it holds a private key (`{first}`)")
            } else {
                format!("it holds a PEM block (`{first}`)")
            })
        }
    };
    if let Some(reason) = not_appendable {
        return Err(KeyError::NotAppendable {
            path: path.to_path_buf(),
            reason: format!("{reason}, not authorized_keys lines"),
        });
    }
    let existing = parse_authorized_lines(text_without_bom, &path.display().to_string())?;
    if existing.iter().any(|k| k.matches(&new_key)) {
        return Ok(false);
    }
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(line.len() + 4);
    if !text.is_empty() && !text.ends_with('\n') {
        out.push_str(eol);
    }
    out.push_str(line);
    out.push_str(eol);
    // One write on an O_APPEND descriptor: the line lands whole at the end.
    file.write_all(out.as_bytes())
        .map_err(|e| io_error(path, e))?;
    file.sync_all().map_err(|e| io_error(path, e))?;
    Ok(true)
}

// ------------------------------------------------------------------------------------------------
// File helpers

/// Creates `dir` and missing parents with `mode`; an existing directory is left as it is.
fn create_dir_with_mode(dir: &Path, mode: u32) -> Result<(), KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| io_error(dir, e))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Fail with [`KeyError::Exists`] if the destination exists (hard link: atomic and no-clobber).
    NoClobber,
    /// Atomically replace whatever is there (rename).
    Replace,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `contents` to a temporary file beside `path` (created with `mode`, so a private key is
/// never readable by others, not even briefly), fsyncs it, puts it in place, and fsyncs the
/// directory, so after a crash `path` is either absent or complete.
fn write_file_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
    placement: Placement,
) -> Result<(), KeyError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io_error(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; the promised mode is exact.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        // Best effort: the temporary name is ours and worthless now; the write error matters more.
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp, e));
    }
    let placed = match placement {
        Placement::NoClobber => {
            let linked = fs::hard_link(&tmp, path);
            // Whether or not the link worked, the temporary name must go; failing to remove it
            // leaves a stray dot-file but no broken key, so it is not worth failing the call.
            let _ = fs::remove_file(&tmp);
            linked
        }
        Placement::Replace => fs::rename(&tmp, path).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        }),
    };
    match placed {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_error(path, e)),
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::Command;
    use std::time::Duration;

    fn run(program: &str, args: &[&str]) -> String {
        let output = Command::new(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `ssh-keygen -q -N '' -f <dir>/<name> <args>`; returns the private key path.
    fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let path = dir.join(name);
        let path_str = path.to_str().unwrap();
        let mut all = vec!["-q", "-N", "", "-C", "test@example", "-f", path_str];
        all.extend_from_slice(args);
        run("ssh-keygen", &all);
        path
    }

    fn keygen_fingerprint(path: &Path) -> String {
        let out = run(
            "ssh-keygen",
            &["-l", "-E", "sha256", "-f", path.to_str().unwrap()],
        );
        out.split_whitespace().nth(1).unwrap().to_string()
    }

    fn pub_of(private: &Path) -> PublicKey {
        let text = fs::read_to_string(public_path_for(private)).unwrap();
        PublicKey::from_openssh(text.trim()).unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    fn only_key(loaded: &LoadedKeys) -> &AuthorizedKey {
        assert_eq!(loaded.keys.len(), 1, "{loaded:?}");
        &loaded.keys[0]
    }

    fn assert_private_yields_pub(private: &Path, format: KeyFileFormat) {
        let loaded = load_authorized_keys(private).unwrap();
        assert_eq!(loaded.format, format);
        assert!(loaded.from_private_key);
        let key = only_key(&loaded);
        let expected = pub_of(private);
        assert_eq!(key.key.key_data(), expected.key_data());
        assert!(key.matches(&expected));
        assert_eq!(
            fingerprint(&key.key),
            keygen_fingerprint(&public_path_for(private))
        );
        assert_eq!(key.source, format!("{}:1", private.display()));
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key_line(dir: &Path, name: &str) -> (PathBuf, String) {
        let path = keygen(dir, name, &["-t", "ed25519"]);
        let line = fs::read_to_string(public_path_for(&path))
            .unwrap()
            .trim()
            .to_string();
        (path, line)
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name)
    }

    #[test]
    fn openssh_public_key_line_is_a_one_line_authorized_keys_file() {
        let dir = tempfile::tempdir().unwrap();
        let private = keygen(dir.path(), "id", &["-t", "ed25519"]);
        let loaded = load_authorized_keys(&public_path_for(&private)).unwrap();
        assert_eq!(loaded.format, KeyFileFormat::AuthorizedKeys);
        assert!(!loaded.from_private_key);
        let key = only_key(&loaded);
        assert_eq!(key.key.key_data(), pub_of(&private).key_data());
        assert_eq!(key.key.comment().as_str_lossy(), "test@example");
        assert!(key.from.is_none() && key.expiry.is_none());
        assert!(key.permits_address(addr("192.0.2.1")));
        assert!(!key.is_expired(SystemTime::now()));
    }

    #[test]
    fn fingerprints_equal_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            ("ed", &["-t", "ed25519"][..]),
            ("rsa", &["-t", "rsa", "-b", "2048"][..]),
            ("ec", &["-t", "ecdsa"][..]),
        ] {
            let private = keygen(dir.path(), name, args);
            assert_eq!(
                fingerprint(&pub_of(&private)),
                keygen_fingerprint(&public_path_for(&private)),
                "{name}"
            );
        }
    }

    #[test]
    fn pkcs1_pem_private_key_yields_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let private = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
        assert!(
            fs::read_to_string(&private)
                .unwrap()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----")
        );
        assert_private_yields_pub(&private, KeyFileFormat::PrivatePkcs1);
    }

    #[test]
    fn pkcs8_private_key_yields_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let private = keygen(
            dir.path(),
            "rsa",
            &["-t", "rsa", "-b", "2048", "-m", "PKCS8"],
        );
        assert!(
            fs::read_to_string(&private)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert_private_yields_pub(&private, KeyFileFormat::PrivatePkcs8);
    }

    #[test]
    fn openssl_pkcs8_ed25519_private_key_yields_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ed.pem");
        let pem_str = pem.to_str().unwrap();
        run(
            "openssl",
            &["genpkey", "-algorithm", "ed25519", "-out", pem_str],
        );
        // The raw public key is the last 32 bytes of the SubjectPublicKeyInfo DER.
        let der = Command::new("openssl")
            .args(["pkey", "-in", pem_str, "-pubout", "-outform", "DER"])
            .output()
            .unwrap()
            .stdout;
        let loaded = load_authorized_keys(&pem).unwrap();
        assert_eq!(loaded.format, KeyFileFormat::PrivatePkcs8);
        let key = only_key(&loaded);
        let ed = key.key.key_data().ed25519().unwrap();
        assert_eq!(ed.as_ref(), &der[der.len() - 32..]);
    }

    #[test]
    fn sec1_ec_private_key_yields_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let private = keygen(dir.path(), "ec", &["-t", "ecdsa", "-m", "PEM"]);
        assert!(
            fs::read_to_string(&private)
                .unwrap()
                .starts_with("-----BEGIN EC PRIVATE KEY-----")
        );
        assert_private_yields_pub(&private, KeyFileFormat::PrivateSec1);
    }

    #[test]
    fn openssh_private_keys_yield_their_public_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ed = keygen(dir.path(), "ed", &["-t", "ed25519"]);
        assert_private_yields_pub(&ed, KeyFileFormat::PrivateOpenSsh);
        let rsa = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]);
        assert_private_yields_pub(&rsa, KeyFileFormat::PrivateOpenSsh);
        let loaded = load_authorized_keys(&ed).unwrap();
        assert_eq!(
            only_key(&loaded).key.comment().as_str_lossy(),
            "test@example"
        );
    }

    #[test]
    fn putty_ppk_private_keys_yield_their_public_keys() {
        for (ppk, public) in [
            ("id_ed25519.ppk", "id_ed25519.pub"),
            ("id_rsa_3072.ppk", "id_rsa_3072.pub"),
            ("id_rsa_3072.ppk2", "id_rsa_3072.pub"),
        ] {
            let loaded = load_authorized_keys(&fixture(ppk)).unwrap();
            assert_eq!(loaded.format, KeyFileFormat::PrivatePpk, "{ppk}");
            assert!(loaded.from_private_key);
            let expected = load_authorized_keys(&fixture(public)).unwrap();
            assert!(only_key(&loaded).matches(&only_key(&expected).key), "{ppk}");
        }
    }

    #[test]
    fn encrypted_putty_ppk_is_a_clear_error() {
        let err = load_authorized_keys(&fixture("id_ed25519_enc.ppk")).unwrap_err();
        assert!(
            matches!(err, KeyError::Encrypted { line: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("encrypted"), "{err}");
    }

    #[test]
    fn rfc4716_public_keys_parse_including_several_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]);
        let ed = keygen(dir.path(), "ed", &["-t", "ed25519"]);
        let export = |p: &Path| {
            run(
                "ssh-keygen",
                &["-e", "-f", public_path_for(p).to_str().unwrap()],
            )
        };
        let rsa_export = export(&rsa);
        assert!(rsa_export.starts_with(RFC4716_BEGIN));
        let one = dir.path().join("one.rfc");
        fs::write(&one, &rsa_export).unwrap();
        let loaded = load_authorized_keys(&one).unwrap();
        assert_eq!(loaded.format, KeyFileFormat::Rfc4716);
        assert!(!loaded.from_private_key);
        assert_eq!(only_key(&loaded).key.key_data(), pub_of(&rsa).key_data());
        assert_eq!(
            fingerprint(&only_key(&loaded).key),
            keygen_fingerprint(&public_path_for(&rsa))
        );

        let both = dir.path().join("both.rfc");
        fs::write(&both, format!("{rsa_export}\n{}", export(&ed))).unwrap();
        let loaded = load_authorized_keys(&both).unwrap();
        assert_eq!(loaded.keys.len(), 2);
        assert!(loaded.keys[0].matches(&pub_of(&rsa)));
        assert!(loaded.keys[1].matches(&pub_of(&ed)));
        let second_begin = rsa_export.lines().count() + 2;
        assert_eq!(
            loaded.keys[1].source,
            format!("{}:{second_begin}", both.display())
        );
    }

    #[test]
    fn rfc4716_headers_with_continuation_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ed = keygen(dir.path(), "ed", &["-t", "ed25519"]);
        let public = pub_of(&ed);
        let blob = public
            .to_openssh()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .to_string();
        let (a, b) = blob.split_at(30);
        let text = format!(
            "{RFC4716_BEGIN}\nSubject: institute\nComment: \"a very long \\\ncomment: with colon\"\nx-private: one\\\n  two\\\nthree\n{a}\n{b}\n{RFC4716_END}\n"
        );
        let loaded = parse_authorized_keys(&text, "k.rfc").unwrap();
        let key = only_key(&loaded);
        assert!(key.matches(&public));
        assert_eq!(
            key.key.comment().as_str_lossy(),
            "a very long comment: with colon"
        );
    }

    #[test]
    fn rfc4716_without_end_line_errors_at_its_begin_line() {
        let err = parse_authorized_keys(
            &format!("\n{RFC4716_BEGIN}\nAAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti\n"),
            "x.rfc",
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::Parse { line: 2, .. }), "{err:?}");
        assert!(err.to_string().starts_with("x.rfc:2: "), "{err}");
    }

    #[test]
    fn crlf_bom_and_leading_whitespace_are_accepted_in_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
        let ed = keygen(dir.path(), "ed", &["-t", "ed25519"]);
        let expected_rsa = pub_of(&rsa);
        let mangle = |text: &str| {
            let body: String = text.lines().map(|l| format!("  {l}\t\r\n")).collect();
            format!("\u{feff}{body}")
        };
        let rfc = run(
            "ssh-keygen",
            &["-e", "-f", public_path_for(&rsa).to_str().unwrap()],
        );
        let pub_line = fs::read_to_string(public_path_for(&rsa)).unwrap();
        for (name, text, format) in [
            (
                "pkcs1",
                fs::read_to_string(&rsa).unwrap(),
                KeyFileFormat::PrivatePkcs1,
            ),
            ("rfc", rfc, KeyFileFormat::Rfc4716),
            (
                "authorized",
                format!("# keys\n\n{pub_line}"),
                KeyFileFormat::AuthorizedKeys,
            ),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, mangle(&text)).unwrap();
            let loaded = load_authorized_keys(&path).unwrap();
            assert_eq!(loaded.format, format, "{name}");
            assert!(only_key(&loaded).matches(&expected_rsa), "{name}");
        }
        let path = dir.path().join("openssh");
        fs::write(&path, mangle(&fs::read_to_string(&ed).unwrap())).unwrap();
        assert!(only_key(&load_authorized_keys(&path).unwrap()).matches(&pub_of(&ed)));
    }

    #[test]
    fn authorized_keys_options_are_accepted_and_unknown_ones_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = key_line(dir.path(), "a");
        let (_, b) = key_line(dir.path(), "b");
        let (_, c) = key_line(dir.path(), "c");
        let c = c.rsplit_once(' ').unwrap().0; // drop ssh-keygen's comment
        let text = format!(
            "# institute keys\n\
             restrict,command=\"internal-sftp -d /x, \\\"quoted\\\" #not a comment\",no-pty {a}\n\
             \n\
             NO-PTY,from=\"10.0.0.0/8\",Expiry-Time=\"20300101\",some-future-option=\"x\",no-x11-forwarding\t{b}\n\
             {c} comment with   spaces\n"
        );
        let loaded = parse_authorized_keys(&text, "ak").unwrap();
        assert_eq!(loaded.keys.len(), 3);
        assert_eq!(loaded.keys[0].source, "ak:2");
        assert!(loaded.keys[0].from.is_none());
        assert_eq!(loaded.keys[1].source, "ak:4");
        assert!(loaded.keys[1].permits_address(addr("10.1.2.3")));
        assert!(!loaded.keys[1].permits_address(addr("192.0.2.1")));
        assert!(loaded.keys[1].expiry.is_some());
        assert_eq!(
            loaded.keys[2].key.comment().as_str_lossy(),
            "comment with   spaces"
        );
    }

    #[test]
    fn from_option_honours_cidr_wildcards_negation_ipv6_and_mapped_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let (_, line) = key_line(dir.path(), "k");
        let text = format!(
            "from=\"!10.9.0.0/16,10.0.0.0/8,192.168.1.?,172.16.*,2001:db8::/32,!2001:db8:bad::1\" {line}\n"
        );
        let loaded = parse_authorized_keys(&text, "ak").unwrap();
        let key = only_key(&loaded);
        for (ip, expected) in [
            ("10.1.2.3", true),
            ("10.9.1.1", false), // negated CIDR wins over 10/8
            ("11.0.0.1", false),
            ("192.168.1.7", true), // `?` is one character
            ("192.168.1.70", false),
            ("172.16.200.3", true),
            ("172.17.0.1", false),
            ("2001:db8::5", true),
            ("2001:db8:bad::1", false), // negated address
            ("2001:db9::1", false),
            ("::ffff:10.1.2.3", true), // IPv4-mapped is matched as IPv4
            ("::ffff:10.9.0.1", false),
            ("::ffff:172.16.0.1", true),
        ] {
            assert_eq!(key.permits_address(addr(ip)), expected, "{ip}");
        }
    }

    #[test]
    fn from_patterns_parse_edge_cases() {
        let p = FromPatterns::parse("::ffff:10.0.0.0/104, 192.0.2.1").unwrap();
        assert!(p.matches(addr("10.2.3.4")));
        assert!(p.matches(addr("::ffff:10.2.3.4")));
        assert!(p.matches(addr("192.0.2.1")));
        assert!(p.matches(addr("::ffff:192.0.2.1")));
        assert!(!p.matches(addr("192.0.2.2")));
        assert_eq!(p.to_string(), "::ffff:10.0.0.0/104, 192.0.2.1");

        let mapped = FromPatterns::parse("::ffff:*").unwrap();
        assert!(mapped.matches(IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped())));
        assert!(!mapped.matches(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))));

        let star = FromPatterns::parse("*").unwrap();
        assert!(star.matches(IpAddr::V6(Ipv6Addr::LOCALHOST)));

        let only_negated = FromPatterns::parse("!10.0.0.1").unwrap();
        assert!(
            !only_negated.matches(addr("10.0.0.2")),
            "no positive match refuses"
        );

        for (bad, needle) in [
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("10.0.0.1/8", "10.0.0.1/8"),
            ("2001:db8::/200", "2001:db8::/200"),
            ("host.example.com", "host.example.com"),
            ("!*.example.com", "*.example.com"),
            ("10.0.0.1,,10.0.0.2", "empty pattern"),
            ("!", "empty pattern"),
            ("", "at least one"),
        ] {
            let err = FromPatterns::parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn invalid_cidr_in_from_is_a_parse_error_naming_line_and_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let (_, line) = key_line(dir.path(), "k");
        let err = parse_authorized_keys(&format!("{line}\nfrom=\"10.0.0.0/40\" {line}\n"), "ak")
            .unwrap_err();
        assert!(matches!(err, KeyError::Parse { line: 2, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("ak:2: ") && msg.contains("10.0.0.0/40"),
            "{msg}"
        );
    }

    #[test]
    fn expiry_time_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let (_, line) = key_line(dir.path(), "k");
        let text = format!("expiry-time=\"202001021530\",expiry-time=\"20300101\" {line}\n");
        let key = only_key(&parse_authorized_keys(&text, "ak").unwrap()).clone();
        let expiry = key.expiry.unwrap();
        // 2020-01-02T15:30:00Z; the earlier of the two expiry times wins.
        assert_eq!(
            expiry.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_secs(1_577_979_000)
        );
        assert!(!key.is_expired(expiry));
        assert!(key.is_expired(expiry + Duration::from_secs(1)));
        assert!(key.is_expired(SystemTime::now()));
        assert!(!key.is_expired(expiry - Duration::from_secs(3600)));
    }

    #[test]
    fn expiry_time_formats() {
        let secs = |s: &str| {
            parse_expiry_time(s)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(secs("19700102"), 86_400);
        assert_eq!(secs("197001020001"), 86_460);
        assert_eq!(secs("19700102000102"), 86_462);
        assert_eq!(secs("19700102000102Z"), 86_462);
        for bad in [
            "2020",
            "2020010",
            "20201301",
            "20200230",
            "202001012460",
            "2020-01-01",
            "",
        ] {
            assert!(parse_expiry_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_line_errors_with_its_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let (_, line) = key_line(dir.path(), "k");
        let path = dir.path().join("authorized_keys");
        fs::write(&path, format!("# ok\n{line}\nthis is not a key\n{line}\n")).unwrap();
        let err = load_authorized_keys(&path).unwrap_err();
        assert!(matches!(err, KeyError::Parse { line: 3, .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3: ", path.display())),
            "{err}"
        );

        for (bad, needle) in [
            ("ssh-ed25519 not*base64", "invalid"),
            ("ssh-ed25519", "not followed by the base64 key"),
            ("no-pty", "not followed by a key"),
            ("from=10.0.0.1 ssh-ed25519 AAAA", "double quotes"),
            ("command=\"unterminated ssh-ed25519 AAAA", "closing quote"),
            ("cert-authority ssh-ed25519 AAAA", "cert-authority"),
        ] {
            let err = parse_authorized_keys(&format!("{line}\n{bad}\n"), "ak").unwrap_err();
            assert!(
                matches!(err, KeyError::Parse { line: 2, .. }),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
        // The key type on the line must be the key's.
        let rsa = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]);
        let rsa_line = fs::read_to_string(public_path_for(&rsa)).unwrap();
        let lying = rsa_line.replacen("ssh-rsa", "ssh-ed25519", 1);
        let err = parse_authorized_keys(&lying, "ak").unwrap_err();
        assert!(err.to_string().contains("ssh-rsa"), "{err}");
        let dup = format!("from=\"10.0.0.1\",from=\"10.0.0.2\" {line}");
        assert!(
            parse_authorized_keys(&dup, "ak")
                .unwrap_err()
                .to_string()
                .contains("more than one")
        );
    }

    #[test]
    fn non_utf8_file_errors_with_its_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        fs::write(&path, b"# one\n# two\n\xff\xfe\n").unwrap();
        let err = load_authorized_keys(&path).unwrap_err();
        assert!(matches!(err, KeyError::Parse { line: 3, .. }), "{err:?}");
    }

    #[test]
    fn empty_or_comment_only_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("empty", ""), ("comments", "# nothing here\n\n   \r\n")] {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            let err = load_authorized_keys(&path).unwrap_err();
            assert!(matches!(err, KeyError::NoKeys { .. }), "{name}: {err:?}");
            assert!(err.to_string().contains(name), "{err}");
        }
        let missing = load_authorized_keys(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, KeyError::Io { .. }), "{missing:?}");
        assert!(missing.to_string().contains("missing"), "{missing}");
    }

    #[test]
    fn encrypted_private_keys_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            ("openssh", &["-t", "ed25519"][..]),
            ("pkcs1", &["-t", "rsa", "-b", "2048", "-m", "PEM"][..]),
            ("pkcs8", &["-t", "rsa", "-b", "2048", "-m", "PKCS8"][..]),
            ("sec1", &["-t", "ecdsa", "-m", "PEM"][..]),
        ] {
            let path = dir.path().join(name);
            let mut all = vec!["-q", "-N", "secret-pass", "-f", path.to_str().unwrap()];
            all.extend_from_slice(args);
            run("ssh-keygen", &all);
            let err = load_authorized_keys(&path).unwrap_err();
            assert!(
                matches!(err, KeyError::Encrypted { line: 1, .. }),
                "{name}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains("encrypted") && msg.contains(name), "{msg}");
        }
    }

    #[test]
    fn unsupported_pem_blocks_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let private = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
        let pem_pub = run(
            "ssh-keygen",
            &[
                "-e",
                "-m",
                "PKCS8",
                "-f",
                public_path_for(&private).to_str().unwrap(),
            ],
        );
        let err = parse_authorized_keys(&pem_pub, "spki.pem").unwrap_err();
        assert!(err.to_string().contains("ssh-keygen -i -m PKCS8"), "{err}");
        let text = fs::read_to_string(&private).unwrap();
        let err = parse_authorized_keys(&format!("{text}trailing junk\n"), "k").unwrap_err();
        let junk_line = text.lines().count() + 1;
        assert!(
            matches!(err, KeyError::Parse { line, .. } if line == junk_line),
            "{err:?}"
        );
        let truncated: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        let err = parse_authorized_keys(&truncated, "k").unwrap_err();
        assert!(
            err.to_string().contains("-----END RSA PRIVATE KEY-----"),
            "{err}"
        );
    }

    #[test]
    fn generated_rsa_client_key_is_pkcs1_pem_that_openssh_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("clients/ine/id_rsa");
        let generated =
            generate_client_key(ClientKeyType::Rsa, &private, "ine-prep@difusor").unwrap();
        assert_eq!(generated.private_path, private);
        assert_eq!(
            generated.public_path,
            dir.path().join("clients/ine/id_rsa.pub")
        );
        let text = fs::read_to_string(&private).unwrap();
        assert!(
            text.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{text}"
        );
        assert_eq!(mode_of(&private), 0o600);
        assert_eq!(mode_of(&generated.public_path), 0o644);
        assert_eq!(mode_of(&dir.path().join("clients/ine")), 0o700);

        let public_file = fs::read_to_string(&generated.public_path).unwrap();
        assert_eq!(public_file, format!("{}\n", generated.public_line));
        assert!(generated.public_line.starts_with("ssh-rsa "));
        assert!(generated.public_line.ends_with(" ine-prep@difusor"));
        let public = PublicKey::from_openssh(&generated.public_line).unwrap();
        assert_eq!(public.key_data().rsa().unwrap().key_size(), 3072);

        // What OpenSSH derives from the private file is the key in the .pub.
        let derived = run("ssh-keygen", &["-y", "-f", private.to_str().unwrap()]);
        let derived = PublicKey::from_openssh(derived.trim()).unwrap();
        assert_eq!(derived.key_data(), public.key_data());
        assert_eq!(
            generated.fingerprint,
            keygen_fingerprint(&generated.public_path)
        );

        // And difusor reads its own output back.
        assert!(only_key(&load_authorized_keys(&private).unwrap()).matches(&public));
        let leftovers: Vec<_> = fs::read_dir(private.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            2,
            "temporary files left behind: {leftovers:?}"
        );
    }

    #[test]
    fn generated_ed25519_client_key_is_openssh_format_that_openssh_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("id_ed25519");
        let generated = generate_client_key(ClientKeyType::Ed25519, &private, "iecm").unwrap();
        let text = fs::read_to_string(&private).unwrap();
        assert!(
            text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"),
            "{text}"
        );
        assert_eq!(mode_of(&private), 0o600);
        assert_eq!(mode_of(&generated.public_path), 0o644);
        assert!(generated.public_line.starts_with("ssh-ed25519 "));
        assert!(generated.public_line.ends_with(" iecm"));
        let public = PublicKey::from_openssh(&generated.public_line).unwrap();
        let derived = run("ssh-keygen", &["-y", "-f", private.to_str().unwrap()]);
        let derived = PublicKey::from_openssh(derived.trim()).unwrap();
        assert_eq!(derived.key_data(), public.key_data());
        assert_eq!(
            generated.fingerprint,
            keygen_fingerprint(&generated.public_path)
        );
    }

    #[test]
    fn generate_refuses_to_overwrite_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("id");
        fs::write(&private, "precious").unwrap();
        let err = generate_client_key(ClientKeyType::Ed25519, &private, "x").unwrap_err();
        assert!(
            matches!(&err, KeyError::Exists { path } if path == &private),
            "{err:?}"
        );
        assert_eq!(fs::read_to_string(&private).unwrap(), "precious");
        assert!(!public_path_for(&private).exists());

        let other = dir.path().join("other");
        fs::write(public_path_for(&other), "precious pub").unwrap();
        let err = generate_client_key(ClientKeyType::Ed25519, &other, "x").unwrap_err();
        assert!(matches!(&err, KeyError::Exists { path } if path == &public_path_for(&other)));
        assert!(!other.exists());
        assert_eq!(
            fs::read_to_string(public_path_for(&other)).unwrap(),
            "precious pub"
        );

        // The atomic placement itself refuses too (the race the up-front check cannot close).
        let err = write_file_atomically(&private, b"new", 0o600, Placement::NoClobber).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read_to_string(&private).unwrap(), "precious");
        // Only `id` and `other.pub` remain: no temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);

        let err =
            generate_client_key(ClientKeyType::Ed25519, &dir.path().join("c"), "a\nb").unwrap_err();
        assert!(matches!(err, KeyError::Generate(_)), "{err:?}");
    }

    #[test]
    fn client_key_type_parses_from_str() {
        assert_eq!("rsa".parse::<ClientKeyType>(), Ok(ClientKeyType::Rsa));
        assert_eq!(
            "ED25519".parse::<ClientKeyType>(),
            Ok(ClientKeyType::Ed25519)
        );
        assert!("dsa".parse::<ClientKeyType>().unwrap_err().contains("dsa"));
        assert_eq!(ClientKeyType::Ed25519.to_string(), "ed25519");
    }

    #[test]
    fn append_adds_once_and_skips_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = key_line(dir.path(), "a");
        let (_, b) = key_line(dir.path(), "b");
        let path = dir.path().join("users/ine/authorized_keys");
        assert!(append_authorized_key(&path, &format!("{a}\n")).unwrap());
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{a}\n"));
        // Same key data with another comment or options is still a duplicate.
        let recommented = format!("{} other comment", a.rsplit_once(' ').unwrap().0);
        assert!(!append_authorized_key(&path, &recommented).unwrap());
        assert!(!append_authorized_key(&path, &format!("no-pty {a}")).unwrap());
        assert!(append_authorized_key(&path, &b).unwrap());
        assert!(!append_authorized_key(&path, &b).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{a}\n{b}\n"));
        let loaded = load_authorized_keys(&path).unwrap();
        assert_eq!(loaded.keys.len(), 2);

        let err = append_authorized_key(&path, "garbage").unwrap_err();
        assert!(matches!(err, KeyError::InvalidLine { .. }), "{err:?}");
        let err = append_authorized_key(&path, &format!("{a}\n{b}")).unwrap_err();
        assert!(matches!(err, KeyError::InvalidLine { .. }), "{err:?}");
    }

    #[test]
    fn append_adds_a_missing_final_newline_and_keeps_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = key_line(dir.path(), "a");
        let (_, b) = key_line(dir.path(), "b");
        let path = dir.path().join("ak");
        fs::write(&path, &a).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert!(append_authorized_key(&path, &b).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{a}\n{b}\n"));
        assert_eq!(mode_of(&path), 0o600, "an existing file keeps its mode");

        let crlf = dir.path().join("crlf");
        fs::write(&crlf, format!("# keys\r\n{a}")).unwrap();
        assert!(append_authorized_key(&crlf, &b).unwrap());
        assert_eq!(
            fs::read_to_string(&crlf).unwrap(),
            format!("# keys\r\n{a}\r\n{b}\r\n")
        );

        let comments = dir.path().join("comments");
        fs::write(&comments, "# no keys yet\n").unwrap();
        assert!(append_authorized_key(&comments, &a).unwrap());
    }

    #[test]
    fn append_refuses_rfc4716_and_private_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let (private, a) = key_line(dir.path(), "a");
        let rfc = dir.path().join("rfc");
        let export = run(
            "ssh-keygen",
            &["-e", "-f", public_path_for(&private).to_str().unwrap()],
        );
        fs::write(&rfc, &export).unwrap();
        let (_, b) = key_line(dir.path(), "b");
        let err = append_authorized_key(&rfc, &b).unwrap_err();
        assert!(matches!(err, KeyError::NotAppendable { .. }), "{err:?}");
        assert!(err.to_string().contains("RFC 4716"), "{err}");
        assert_eq!(fs::read_to_string(&rfc).unwrap(), export);

        let before = fs::read_to_string(&private).unwrap();
        let err = append_authorized_key(&private, &a).unwrap_err();
        assert!(matches!(err, KeyError::NotAppendable { .. }), "{err:?}");
        assert!(err.to_string().contains("private key"), "{err}");
        assert_eq!(fs::read_to_string(&private).unwrap(), before);

        let broken = dir.path().join("broken");
        fs::write(&broken, format!("{a}\nnonsense\n")).unwrap();
        let err = append_authorized_key(&broken, &b).unwrap_err();
        assert!(matches!(err, KeyError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn host_keys_are_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let host_dir = dir.path().join("etc/difusor/host");
        let first = load_or_generate_host_keys(&host_dir).unwrap();
        assert_eq!(mode_of(&host_dir), 0o700);
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|k| k.generated));
        assert_eq!(first[0].path, host_dir.join("ssh_host_ed25519_key"));
        assert_eq!(first[0].key.algorithm(), Algorithm::Ed25519);
        assert_eq!(first[1].path, host_dir.join("ssh_host_rsa_key"));
        assert_eq!(first[1].key.key_data().rsa().unwrap().key_size(), 3072);
        for key in &first {
            assert_eq!(mode_of(&key.path), 0o600);
            let public_path = public_path_for(&key.path);
            assert_eq!(mode_of(&public_path), 0o644);
            // OpenSSH reads the key, and the .pub beside it is the same key.
            let derived = run("ssh-keygen", &["-y", "-f", key.path.to_str().unwrap()]);
            let derived = PublicKey::from_openssh(derived.trim()).unwrap();
            assert_eq!(derived.key_data(), key.key.public_key().key_data());
            assert_eq!(
                fingerprint(key.key.public_key()),
                keygen_fingerprint(&public_path)
            );
        }

        let second = load_or_generate_host_keys(&host_dir).unwrap();
        assert!(second.iter().all(|k| !k.generated));
        let prints = |keys: &[HostKey]| -> Vec<String> {
            keys.iter()
                .map(|k| fingerprint(k.key.public_key()))
                .collect()
        };
        assert_eq!(prints(&first), prints(&second));

        // A group-readable key is still used (only warned about).
        fs::set_permissions(&first[0].path, Permissions::from_mode(0o640)).unwrap();
        let third = load_or_generate_host_keys(&host_dir).unwrap();
        assert_eq!(prints(&first), prints(&third));
    }

    #[test]
    fn missing_host_key_is_generated_beside_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let existing = keygen(dir.path(), "ssh_host_rsa_key", &["-t", "rsa", "-b", "2048"]);
        let keys = load_or_generate_host_keys(dir.path()).unwrap();
        assert!(keys[0].generated);
        assert!(!keys[1].generated);
        assert_eq!(
            keys[1].key.public_key().key_data(),
            pub_of(&existing).key_data()
        );
    }

    #[test]
    fn host_key_of_the_wrong_type_or_encrypted_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        let rsa = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]);
        fs::copy(&rsa, &path).unwrap();
        let err = load_or_generate_host_keys(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::WrongAlgorithm { .. }), "{err:?}");
        assert!(err.to_string().contains("ssh_host_ed25519_key"), "{err}");

        fs::remove_file(&path).unwrap();
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "secret-pass",
                "-f",
                path.to_str().unwrap(),
            ],
        );
        let err = load_or_generate_host_keys(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::Encrypted { .. }), "{err:?}");
    }

    #[test]
    fn glob_matching_follows_openssh() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"10.*.1", b"10.200.3.1"));
        assert!(!glob_match(b"10.*.1", b"10.200.3.12"));
        assert!(glob_match(b"1?.0.0.1", b"10.0.0.1"));
        assert!(!glob_match(b"1?.0.0.1", b"1.0.0.1"));
        assert!(glob_match(b"*:*:*", b"2001:db8::1"));
        assert!(glob_match(b"**a", b"aaa"));
    }
}
