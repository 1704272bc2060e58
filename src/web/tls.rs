//! TLS: the certificate (configured PEM files, or a self-signed one generated on first start),
//! its reload without a restart, and the rustls server configuration.
//!
//! Owns:
//! - loading a PEM chain + private key (PKCS#8, PKCS#1 or SEC1) and checking they match;
//! - generating an ECDSA P-256 self-signed certificate into `keys_dir` on first start (P-256:
//!   the cheapest full handshake rustls offers), logged with its path and SHA-256 fingerprint;
//! - reloading: the files are polled (size, mtime, inode) every `web.cert_poll_secs` and, when
//!   configured, on SIGHUP. A reload swaps the key behind a resolver, so the `ServerConfig`
//!   (session cache, ticket keys) and every open connection are untouched;
//! - rustls: TLS 1.2 and 1.3 only, ALPN `h2` + `http/1.1`, stateless session tickets (rotating
//!   keys) and a server-side session cache sized for thousands of clients.
//!
//! Must never: replace a working certificate by one that fails to load (a half-written
//! renewal keeps the old one until the pair is whole), log key material, or use a crypto
//! provider picked at run time (`builder_with_provider` + aws-lc-rs, the one russh links).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::web::config::{CertSource, WebConfig};

/// File names of the generated certificate in `keys_dir`.
pub const SELF_SIGNED_CERT: &str = "https_selfsigned_cert.pem";
pub const SELF_SIGNED_KEY: &str = "https_selfsigned_key.pem";

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not PEM of the expected kind, or holds none.
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    /// rustls refused the key, or the key does not belong to the certificate.
    #[error("{}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    /// Generating the self-signed certificate failed.
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(String),
    /// The rustls configuration could not be built.
    #[error("tls configuration: {0}")]
    Config(String),
}

/// The certificate currently served, swapped on reload.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Identity of the files on disk, to notice a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    mtime: i64,
    mtime_ns: i64,
    ino: u64,
}

fn stamp(p: &Path) -> Option<FileStamp> {
    let m = fs::metadata(p).ok()?;
    Some(FileStamp {
        len: m.len(),
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec(),
        ino: m.ino(),
    })
}

/// The served certificate and the rustls configuration built around it.
#[derive(Debug)]
pub struct Tls {
    resolver: Arc<Resolver>,
    pub config: Arc<ServerConfig>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// SHA-256 of the leaf certificate, `AB:CD:…` (as `openssl x509 -fingerprint -sha256`).
    fingerprint: ArcSwap<String>,
    provider: Arc<CryptoProvider>,
    last_seen: std::sync::Mutex<(Option<FileStamp>, Option<FileStamp>)>,
}

/// `AB:CD:…` SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn load_pair(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertifiedKey, String), TlsError> {
    let cert_pem = fs::read(cert_path).map_err(io_err(cert_path))?;
    let key_pem = fs::read(key_path).map_err(io_err(key_path))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_owned(),
            reason: format!("not a PEM certificate chain: {e}"),
        })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::Pem {
            path: cert_path.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    };
    let fp = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key_path.to_owned(),
        reason: format!("no usable PRIVATE KEY block: {e}"),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: key_path.to_owned(),
            reason: format!("unsupported private key: {e}"),
        })?;
    let ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::Key {
                path: key_path.to_owned(),
                reason: format!("the key does not belong to {}: {e}", cert_path.display()),
            });
        }
    }
    Ok((ck, fp))
}

/// Writes `data` to `path` via a temporary name, with `mode`.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Makes an ECDSA P-256 self-signed certificate for `names` (unless the files exist).
/// Returns true when it generated one.
pub fn ensure_self_signed(keys_dir: &Path, names: &[String]) -> Result<bool, TlsError> {
    let cert_path = keys_dir.join(SELF_SIGNED_CERT);
    let key_path = keys_dir.join(SELF_SIGNED_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok(false);
    }
    fs::create_dir_all(keys_dir).map_err(io_err(keys_dir))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "difusor (self-signed)");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    // SECURITY: the key is written 0600 before the certificate names it.
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(true)
}

impl Tls {
    /// Loads (or first generates) the certificate `cfg` names and builds the rustls config.
    pub fn start(cfg: &WebConfig, keys_dir: &Path) -> Result<Arc<Tls>, TlsError> {
        let (cert_path, key_path, generated) = match &cfg.cert {
            CertSource::Files { cert, key } => (cert.clone(), key.clone(), false),
            CertSource::SelfSigned { names } => {
                let generated = ensure_self_signed(keys_dir, names)?;
                (
                    keys_dir.join(SELF_SIGNED_CERT),
                    keys_dir.join(SELF_SIGNED_KEY),
                    generated,
                )
            }
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamps = (stamp(&cert_path), stamp(&key_path));
        let (ck, fp) = load_pair(&provider, &cert_path, &key_path)?;
        tracing::info!(
            cert = %cert_path.display(),
            fingerprint_sha256 = %fp,
            self_signed = !cfg.has_real_certificate(),
            generated,
            "https certificate"
        );
        if generated {
            println!(
                "\nFirst start: a self-signed HTTPS certificate is in {}\n  SHA-256 fingerprint {}\n",
                cert_path.display(),
                fp
            );
        }
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(ck),
        });
        let mut sc = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // PERF: resumption skips the expensive part of the handshake for returning browsers.
        // Tickets are stateless (keys rotate every 6 h); the cache covers TLS 1.2 session ids
        // and clients that ignore tickets. ~20k entries ≈ a few MiB.
        sc.session_storage = ServerSessionMemoryCache::new(cfg.tls_session_cache.max(1));
        sc.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        sc.send_tls13_tickets = 2;
        // SECURITY: no 0-RTT (replayable); rustls' default is already 0.
        sc.max_early_data_size = 0;
        Ok(Arc::new(Tls {
            resolver,
            config: Arc::new(sc),
            cert_path,
            key_path,
            fingerprint: ArcSwap::from_pointee(fp),
            provider,
            last_seen: std::sync::Mutex::new(stamps),
        }))
    }

    /// When the certificate being served expires (None if it cannot be parsed).
    pub fn not_after(&self) -> Option<time::OffsetDateTime> {
        let ck = self.resolver.current.load();
        let der = ck.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        Some(cert.validity().not_after.to_datetime())
    }

    /// SHA-256 fingerprint of the certificate being served.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.load().as_ref().clone()
    }

    /// Loads the files again and swaps them in if they load; on failure the old pair stays.
    pub fn reload(&self) -> Result<String, TlsError> {
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        let (ck, fp) = load_pair(&self.provider, &self.cert_path, &self.key_path)?;
        self.resolver.current.store(Arc::new(ck));
        let old = self.fingerprint.swap(Arc::new(fp.clone()));
        *self.last_seen.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        if *old != fp {
            tracing::info!(cert = %self.cert_path.display(), fingerprint_sha256 = %fp, "https certificate reloaded");
        }
        Ok(fp)
    }

    /// Reloads when either file changed since the last (successful or failed) look.
    fn reload_if_changed(&self) {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        {
            let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return;
            }
            *seen = now;
        }
        if let Err(e) = self.reload() {
            // Probably mid-renewal (certificate written, key not yet): the next change retries.
            tracing::warn!(error = %e, "changed https certificate does not load; keeping the current one");
        }
    }

    /// Polls the files every `every` (and reloads on SIGHUP if asked) until shutdown.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        every: Duration,
        sighup: bool,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let tls = Arc::clone(self);
        let mut hup = if sighup {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate reload by polling only");
                    None
                }
            }
        } else {
            None
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let on_hup = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => tls.reload_if_changed(),
                    Some(()) = on_hup => {
                        tracing::info!("SIGHUP: reloading the https certificate");
                        if let Err(e) = tls.reload() {
                            tracing::warn!(error = %e, "https certificate reload failed; keeping the current one");
                        }
                    }
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
    }
}

/// When a certificate file was last modified (for diagnostics).
pub fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_loads() {
        let d = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned()];
        assert!(ensure_self_signed(d.path(), &names).unwrap());
        assert!(!ensure_self_signed(d.path(), &names).unwrap());
        let p = rustls::crypto::aws_lc_rs::default_provider();
        let (_, fp) = load_pair(
            &p,
            &d.path().join(SELF_SIGNED_CERT),
            &d.path().join(SELF_SIGNED_KEY),
        )
        .unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
        let mode = fs::metadata(d.path().join(SELF_SIGNED_KEY)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned()];
        ensure_self_signed(a.path(), &names).unwrap();
        ensure_self_signed(b.path(), &names).unwrap();
        let p = rustls::crypto::aws_lc_rs::default_provider();
        let e = load_pair(
            &p,
            &a.path().join(SELF_SIGNED_CERT),
            &b.path().join(SELF_SIGNED_KEY),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
    }
}
