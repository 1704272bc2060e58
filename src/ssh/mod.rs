//! The SSH front door: the institute pushes packages here with stock `sftp`/`scp`.
//!
//! Owns: the russh server configuration (algorithms, window, keepalive), the accept loop and
//! per-connection admission (connection caps, defender bans, login grace time), and handing
//! each connection to [`handler::Connection`].
//!
//! Must never: do the SSH handshake inside the accept loop, stop accepting on an error, or
//! keep an unauthenticated connection past the login grace time.

pub mod auth;
pub mod defender;
pub mod exec;
pub mod handler;
pub mod scp;
pub mod sftp;
pub mod transfer;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::{MethodKind, MethodSet, Preferred, cipher, compression, kex, mac};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::SshConfig;
use crate::listener::{self, Admission};
use crate::vfs::Vfs;

/// State every SSH connection shares.
pub struct Shared {
    pub cfg: SshConfig,
    pub users: auth::UserDb,
    pub defender: defender::Defender,
    pub vfs: Arc<Vfs>,
    pub transfers: Arc<transfer::Transfers>,
    /// How long an upload's CLOSE waits for the pipeline's verdict.
    pub verdict_timeout: Duration,
    pub metrics: Arc<crate::monitor::metrics::Metrics>,
}

/// A running SSH server.
pub struct SshServer {
    pub local_addr: SocketAddr,
    pub shared: Arc<Shared>,
}

/// The russh configuration: public keys only, modern algorithms plus the CTR/HMAC ones that
/// older institute tooling (paramiko 2.x, libssh2 1.10) needs, and the settings that decide
/// throughput (no 1 s penalty on the `none` probe, a large window).
pub fn russh_config(cfg: &SshConfig, host_keys: Vec<PrivateKey>) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-difusor")),
        keys: host_keys,
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        // PERF: OpenSSH probes with `none` first; penalising it costs every login a second.
        auth_rejection_time_initial: Some(Duration::ZERO),
        window_size: cfg.window_size,
        maximum_packet_size: cfg.max_packet_size,
        // Enough queued messages to fill the window with small packets before backpressure.
        channel_buffer_size: ((cfg.window_size / 16384) as usize).clamp(128, 4096),
        nodelay: true,
        inactivity_timeout: None,
        keepalive_interval: Some(cfg.keepalive),
        keepalive_max: 3,
        max_auth_attempts: 10,
        preferred: Preferred {
            kex: Cow::Borrowed(&[
                kex::MLKEM768X25519_SHA256,
                kex::CURVE25519,
                kex::CURVE25519_PRE_RFC_8731,
                kex::ECDH_SHA2_NISTP256,
                kex::ECDH_SHA2_NISTP384,
                kex::ECDH_SHA2_NISTP521,
                kex::DH_G16_SHA512,
                kex::DH_G14_SHA256,
                kex::EXTENSION_SUPPORT_AS_SERVER,
                kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
            ]),
            // SECURITY: no `ssh-rsa` (SHA-1) host key signatures.
            key: Cow::Owned(vec![
                Algorithm::Ed25519,
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]),
            cipher: Cow::Borrowed(&[
                cipher::CHACHA20_POLY1305,
                cipher::AES_128_GCM,
                cipher::AES_256_GCM,
                cipher::AES_128_CTR,
                cipher::AES_192_CTR,
                cipher::AES_256_CTR,
            ]),
            mac: Cow::Borrowed(&[
                mac::HMAC_SHA256_ETM,
                mac::HMAC_SHA512_ETM,
                mac::HMAC_SHA256,
                mac::HMAC_SHA512,
            ]),
            // Delayed zlib has desynchronised russh sessions (bssh#215); bandwidth is not the
            // constraint here, CPU is.
            compression: Cow::Borrowed(&[compression::NONE]),
            ..Preferred::default()
        },
        ..Default::default()
    }
}

impl SshServer {
    /// Binds `shared.cfg.listen` and serves until `shutdown` turns true.
    pub async fn start(
        shared: Arc<Shared>,
        host_keys: Vec<PrivateKey>,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<SshServer> {
        let listener = TcpListener::bind(shared.cfg.listen).await?;
        let local_addr = listener.local_addr()?;
        let config = Arc::new(russh_config(&shared.cfg, host_keys));
        let admission = Admission::new(
            shared.cfg.max_connections,
            shared.cfg.max_connections_per_address,
        );
        let sh = Arc::clone(&shared);
        let conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut next_id: u64 = 0;
            listener::accept_loop(listener, "ssh", shutdown, move |sock, peer| {
                next_id += 1;
                let ip = listener::canonical_ip(peer);
                if let Some(left) = sh.defender.banned_for(ip) {
                    tracing::info!(%peer, ban_left_secs = left.as_secs(), "connection from a banned address refused");
                    return;
                }
                let permit = match admission.try_admit(ip) {
                    Ok(p) => p,
                    Err(why) => {
                        tracing::warn!(%peer, reason = %why, "ssh connection refused");
                        return;
                    }
                };
                sh.metrics.ssh_connection();
                let span = tracing::info_span!("ssh", conn = next_id, %peer);
                let task = connection(Arc::clone(&sh), Arc::clone(&config), sock, peer, conn_shutdown.clone());
                tokio::spawn(
                    async move {
                        task.await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            })
            .await;
        });
        tracing::info!(address = %local_addr, "ssh/sftp listening");
        Ok(SshServer { local_addr, shared })
    }
}

async fn connection(
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let grace = shared.cfg.login_grace;
    let state = Arc::new(handler::ConnState::default());
    let handler = handler::Connection::new(Arc::clone(&shared), peer, Arc::clone(&state));
    tracing::debug!("connected");
    // run_stream exchanges identification strings before returning: bound it by the grace.
    let session =
        match tokio::time::timeout(grace, russh::server::run_stream(config, sock, handler)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "ssh handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!("no ssh identification within the login grace time");
                return;
            }
        };
    let handle = session.handle();
    let st = Arc::clone(&state);
    let watchdog = tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if !st.authenticated.load(Ordering::Relaxed) {
            tracing::info!(
                grace_secs = grace.as_secs(),
                "login grace time exceeded; disconnecting"
            );
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "login grace time exceeded".to_owned(),
                    "en".to_owned(),
                )
                .await;
            return true;
        }
        false
    });
    let handle = session.handle();
    let stopping = tokio::select! {
        r = session => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "session ended with an error");
            }
            false
        }
        _ = shutdown.wait_for(|s| *s) => true,
    };
    if stopping {
        let _ = handle
            .disconnect(
                russh::Disconnect::ByApplication,
                "server shutting down".to_owned(),
                "en".to_owned(),
            )
            .await;
    }
    watchdog.abort();
    let timed_out = watchdog.await.unwrap_or(false);
    let authenticated = state.authenticated.load(Ordering::Relaxed);
    if !authenticated && (state.attempted.load(Ordering::Relaxed) || timed_out) {
        shared.metrics.ssh_auth_failure();
        if shared.defender.record_failure(listener::canonical_ip(peer)) {
            shared.metrics.ssh_ban();
        }
    }
    tracing::debug!(authenticated, "disconnected");
}
