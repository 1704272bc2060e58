//! Wiring: from a validated [`Config`] to running servers.
//!
//! Owns: start-up order (directories, first-start key material, host keys, users, the
//! virtual filesystem, the event channel, the listeners) and the shutdown signal.
//!
//! Must never: contain protocol or policy logic — each piece lives in its module; this only
//! connects them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, Role, UserConfig};
use crate::events::{self, UploadReceiver};
use crate::ingest::Pipeline;
use crate::keys::{self, ClientKeyType};
use crate::monitor::admin::{self, AdminContext};
use crate::monitor::metrics::Metrics;
use crate::monitor::watch::Monitor;
use crate::ssh::{self, auth::UserDb, defender::Defender, transfer::Transfers};
use crate::store::{Incident, Severity, Store};
use crate::vfs::Vfs;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("cannot open the data directory: {0}")]
    Vfs(std::io::Error),
    #[error("cannot recover the data directory after a crash: {0}")]
    Recover(std::io::Error),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error("cannot listen for ssh on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for the admin pages on {addr}: {source} (set admin.listen, or \"off\")")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mirror(#[from] crate::mirror::MirrorError),
}

/// A running difusor.
pub struct Running {
    pub ssh_addr: SocketAddr,
    /// The HTTPS server (and its optional plain-HTTP listener).
    pub web: crate::web::WebServer,
    /// The snapshot being served; swapped by `publish::follow` on each cut.
    pub site: crate::publish::LiveSite,
    /// Upload-completed events; whoever runs the app consumes them (the ingest pipeline).
    pub uploads: Option<UploadReceiver>,
    pub ssh: Arc<ssh::Shared>,
    pub pipeline: Arc<Pipeline>,
    /// The object-storage mirror (`[[mirror.s3]]`); None when no target is configured.
    pub mirror: Option<Arc<crate::mirror::Mirror>>,
    pub metrics: Arc<Metrics>,
    pub monitor: Arc<Monitor>,
    pub notifiers: crate::notify::Notifiers,
    /// The admin listener (metrics, status page); None when `admin.listen = "off"`.
    pub admin_addr: Option<SocketAddr>,
    /// Packages found in incoming at start (interrupted by a crash), taken before the SSH
    /// server accepted anything.
    backlog: Vec<crate::ingest::Job>,
    shutdown: watch::Sender<bool>,
}

impl Running {
    /// Hands the upload events to the ingest pipeline (packages left in incoming by a
    /// previous run are processed first). Without this, events stay in `uploads`.
    pub fn start_ingest(&mut self) {
        if let Some(rx) = self.uploads.take() {
            let backlog = std::mem::take(&mut self.backlog);
            tokio::spawn(Arc::clone(&self.pipeline).run(backlog, rx));
        }
    }

    /// Stops accepting and disconnects every session.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

fn mkdir(path: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(path).map_err(|source| StartError::Dir {
        path: path.to_owned(),
        source,
    })
}

/// The private key file `keygen` writes for `user`.
pub fn client_key_path(cfg: &Config, user: &str, kind: ClientKeyType) -> PathBuf {
    let suffix = match kind {
        ClientKeyType::Rsa => "rsa",
        ClientKeyType::Ed25519 => "ed25519",
    };
    cfg.keys_dir.join(format!("{user}_id_{suffix}"))
}

/// The `sftp` command that logs `user` in with `key` on this server.
pub fn sftp_command(cfg: &Config, user: &str, key: &Path) -> String {
    let addr = cfg.ssh.listen;
    let host = if addr.ip().is_unspecified() {
        "<this-server's-address>".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| key.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| key.to_path_buf());
    format!(
        "sftp -P {} -i {} {user}@{host}",
        addr.port(),
        shown.display()
    )
}

/// Makes a client key pair for `user` and authorizes it. Used by `keygen` and first start.
pub fn keygen(
    cfg: &Config,
    user: &UserConfig,
    kind: ClientKeyType,
    out: Option<&Path>,
) -> Result<keys::GeneratedKey, StartError> {
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| client_key_path(cfg, &user.name, kind));
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let generated = keys::generate_client_key(kind, &path, &format!("{}@difusor", user.name))?;
    keys::append_authorized_key(&user.authorized_keys, &generated.public_line)?;
    Ok(generated)
}

/// On a first start with the default users, the institute's key pair does not exist yet:
/// make it, so a newcomer can push a package at once.
fn first_start_keys(cfg: &Config) -> Result<(), StartError> {
    if !cfg.default_users {
        return Ok(());
    }
    for user in cfg.users.iter().filter(|u| u.role == Role::Publisher) {
        if user.authorized_keys.exists() {
            continue;
        }
        let g = keygen(cfg, user, ClientKeyType::Rsa, None)?;
        tracing::info!(
            user = %user.name,
            private_key = %g.private_path.display(),
            fingerprint = %g.fingerprint,
            "first start: made the publisher's key pair"
        );
        println!(
            "\nFirst start: a key pair for the publisher {:?} is in {}.\nPush a package with:\n\n    {}\n    sftp> put 20240602_2015_PREP.zip\n",
            user.name,
            g.private_path.display(),
            sftp_command(cfg, &user.name, &g.private_path)
        );
    }
    Ok(())
}

/// Starts everything `cfg` describes.
pub async fn start(cfg: &Config) -> Result<Running, StartError> {
    mkdir(&cfg.data_dir)?;
    mkdir(&cfg.keys_dir)?;
    // SECURITY: private keys live here; only difusor's user may list them.
    if let Err(e) = std::fs::set_permissions(
        &cfg.keys_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    ) {
        tracing::warn!(dir = %cfg.keys_dir.display(), error = %e, "cannot make the keys directory private");
    }
    first_start_keys(cfg)?;

    let host_keys = keys::load_or_generate_host_keys(&cfg.keys_dir)?;
    for hk in &host_keys {
        tracing::info!(
            path = %hk.path.display(),
            algorithm = %hk.key.algorithm(),
            fingerprint = %keys::fingerprint(hk.key.public_key()),
            generated = hk.generated,
            "ssh host key"
        );
    }
    let users = UserDb::load(&cfg.users)?;
    let store = Store::open(&cfg.data_dir).map_err(StartError::Vfs)?;
    let recovery = store.recover().map_err(StartError::Recover)?;
    // Recorded once the notifiers listen (below), so a webhook hears about it too.
    let recovered = (!recovery.removed_tmp.is_empty() || !recovery.completed.is_empty()).then(|| {
        Incident {
            time: time::OffsetDateTime::now_utc(),
            severity: Severity::Warning,
            kind: crate::store::manifest::kinds::CRASH_RECOVERY.to_owned(),
            package: None,
            uploader: None,
            reason: format!(
                "restart after an interruption: removed {} unfinished build(s); completed publication of {:?}",
                recovery.removed_tmp.len(),
                recovery.completed
            ),
            subject: None,
        }
    });
    let mut vfs = Vfs::open(&cfg.data_dir).map_err(StartError::Vfs)?;
    // Operators inspect cuts with a plain `sftp` listing; the publisher sees the status too.
    vfs.add_read_only("history", &store.history_dir(), "", false)
        .and_then(|_| vfs.add_read_only("quarantine", &store.quarantine_dir(), "", false))
        .and_then(|_| vfs.add_read_only("live", store.root(), "live", false))
        .map_err(StartError::Vfs)?;
    let status_store = store.clone();
    vfs.add_generated(
        "status.json",
        true,
        Arc::new(move || {
            let mut v = serde_json::to_vec_pretty(&crate::store::status::status(&status_store))
                .unwrap_or_default();
            v.push(b'\n');
            v
        }),
    );
    let vfs = Arc::new(vfs);
    let site = initial_site(cfg, &store).await;
    let metrics = Arc::new(Metrics::new());
    let pipeline = Arc::new(Pipeline::new(
        store.clone(),
        cfg.ingest.clone(),
        Arc::clone(&metrics),
    ));
    // Subscribed before ingest can publish anything: no cut is missed.
    tokio::spawn(crate::publish::follow(
        Arc::clone(&site),
        pipeline.subscribe(),
        cfg.web.cache_rules(),
    ));
    // Object-storage targets: own tasks; subscribed here, before ingest can publish.
    let mirror = crate::mirror::Mirror::start(
        &cfg.mirror,
        store.clone(),
        cfg.web.cache_rules(),
        pipeline.subscribe(),
    )?;
    // Webhooks, command hooks, CDN purge: own tasks and queues, never in the publish path.
    // With a mirror, the CDN is purged only once every target has the cut: purging before
    // the new files are in the bucket would re-cache the old ones.
    let (cdn, others): (Vec<_>, Vec<_>) = cfg
        .notify
        .iter()
        .cloned()
        .partition(|n| matches!(n.target, crate::notify::config::Target::Cloudflare(_)));
    let (notify_now, cdn_after_mirror) = match &mirror {
        Some(_) => (others, cdn),
        None => (cfg.notify.clone(), Vec::new()),
    };
    let notifiers = crate::notify::start(
        notify_now,
        pipeline.store().clone(),
        pipeline.subscribe(),
        pipeline.store().subscribe_incidents(),
    );
    let cdn_notifiers = match &mirror {
        Some(m) if !cdn_after_mirror.is_empty() => Some(crate::notify::start(
            cdn_after_mirror,
            pipeline.store().clone(),
            m.subscribe_mirrored(),
            pipeline.store().subscribe_incidents(),
        )),
        _ => None,
    };
    if let Some(i) = recovered {
        tracing::warn!(reason = %i.reason, "crash recovery");
        let _ = store.record_incident(&i);
    }
    let (tx, uploads) = events::upload_channel();
    let shared = Arc::new(ssh::Shared {
        cfg: cfg.ssh.clone(),
        users,
        defender: Defender::new(cfg.ssh.defender.clone()),
        vfs,
        transfers: Arc::new(Transfers::new(tx.clone())),
        verdict_timeout: cfg.ingest.close_timeout,
        metrics: Arc::clone(&metrics),
    });
    let backlog = pipeline.backlog();
    let (shutdown, shutdown_rx) = watch::channel(false);
    // Packages fetched from the institute go through the same door as SFTP uploads.
    crate::sources::start(&cfg.sources, pipeline.store(), tx, shutdown.subscribe());
    let server = ssh::SshServer::start(
        Arc::clone(&shared),
        host_keys.into_iter().map(|h| h.key).collect(),
        shutdown_rx,
    )
    .await
    .map_err(|source| StartError::Listen {
        addr: cfg.ssh.listen,
        source,
    })?;
    let web = crate::web::start(
        &cfg.web,
        &cfg.keys_dir,
        &cfg.data_dir.join("logs"),
        Arc::clone(&site),
        Arc::clone(&metrics),
        shutdown.subscribe(),
    )
    .await?;
    tracing::info!(
        address = %web.https_addr,
        certificate = %web.tls.fingerprint(),
        "https listening"
    );
    let tls = Arc::clone(&web.tls);
    let monitor = Monitor::new(
        cfg.monitor.clone(),
        store.clone(),
        Arc::clone(&site),
        Arc::clone(&metrics),
        Box::new(move || tls.not_after()),
    );
    web.set_health_probe(Some(monitor.health_probe()));
    tokio::spawn(Arc::clone(&monitor).run(shutdown.subscribe()));
    let admin_addr = match cfg.admin.listen {
        Some(addr) => {
            let ctx = AdminContext {
                store: store.clone(),
                monitor: Arc::clone(&monitor),
                metrics: Arc::clone(&metrics),
                web: web.gauges(),
                notifiers: Some({
                    let all: Vec<_> = std::iter::once(notifiers.clone())
                        .chain(cdn_notifiers.clone())
                        .collect();
                    Arc::new(move || all.iter().flat_map(|n| n.stats()).collect())
                }),
                mirror: mirror.clone(),
            };
            let a = admin::start(addr, ctx, shutdown.subscribe())
                .await
                .map_err(|source| StartError::Admin { addr, source })?;
            Some(a.addr)
        }
        None => None,
    };
    Ok(Running {
        ssh_addr: server.local_addr,
        mirror,
        metrics,
        monitor,
        notifiers,
        admin_addr,
        web,
        site,
        uploads: Some(uploads),
        ssh: shared,
        pipeline,
        backlog,
        shutdown,
    })
}

/// The snapshot to serve at start: the live cut if there is one, else the waiting page.
async fn initial_site(cfg: &Config, store: &Store) -> crate::publish::LiveSite {
    let rules = cfg.web.cache_rules();
    let Some(id) = store.live() else {
        return crate::publish::waiting_site(&rules);
    };
    let m = store.read_manifest(&id);
    let meta = crate::publish::CutMeta {
        cut_id: id.clone(),
        cut_time: m.as_ref().and_then(|m| m.cut_time),
        published_at: m.as_ref().and_then(|m| m.published_at),
        packages_in_history: store.manifests().len(),
    };
    let dir = store.cut_dir(&id);
    let r = rules.clone();
    match tokio::task::spawn_blocking(move || crate::publish::Snapshot::build(&dir, meta, &r)).await
    {
        Ok(Ok(snap)) => Arc::new(arc_swap::ArcSwap::from_pointee(snap)),
        Ok(Err(e)) => {
            tracing::error!(cut = %id, error = %e, "cannot load the live cut; serving the waiting page");
            crate::publish::waiting_site(&rules)
        }
        Err(e) => {
            tracing::error!(cut = %id, error = %e, "snapshot build failed; serving the waiting page");
            crate::publish::waiting_site(&rules)
        }
    }
}
