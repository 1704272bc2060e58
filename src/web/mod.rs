//! The HTTPS front door: hyper 1 + rustls serving the live snapshot to the public.
//!
//! Owns: binding the HTTPS (and optional plain-HTTP) listeners on the shared accept loop
//! (`crate::listener`) — by default one current-thread runtime per core, each with its own
//! `SO_REUSEPORT` socket (`web.workers`) — admission (connection caps in total and per address,
//! one [`Admission`] for every thread and both doors), the per-connection
//! task — TLS handshake under a timeout, HTTP/1.1 or HTTP/2 by ALPN, header-read and idle
//! timeouts, a bounded drain on shutdown — and the background tasks: certificate reload,
//! access-log writer, rate-limit pruning.
//!
//! One file per HTTP concern, joined by `handler` (which reads top to bottom):
//! `config` (the `[web]` section), `tls` (certificates and rustls), `path` (request path →
//! snapshot key), `client_addr` (trusted proxies), `rate_limit`, `conditional` (ETag, 304),
//! `range` (206/416), `compression` (br, gzip), `cache_control` (rules baked into snapshots),
//! `content_type`, `security_headers`, `health` (`/healthz`, status), `access_log`, `body`.
//!
//! Must never: do a TLS handshake in the accept loop, keep a connection that sends nothing
//! (slowloris: header-read timeout; idle: idle timeout), let one address take every connection,
//! or stop serving because a certificate reload or a snapshot build failed.

pub mod access_log;
pub mod body;
pub mod cache_control;
pub mod client_addr;
pub mod compression;
pub mod conditional;
pub mod config;
pub mod content_type;
pub mod handler;
pub mod health;
pub mod path;
pub mod range;
pub mod rate_limit;
pub mod security_headers;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use crate::listener::{self, Admission, Permit};
use crate::publish::LiveSite;
use crate::web::access_log::AccessLog;
use crate::web::config::{HttpMode, WebConfig};
use crate::web::handler::{ConnInfo, ConnKind, State};
use crate::web::health::Probe;
use crate::web::rate_limit::RateLimiter;
use crate::web::tls::{Tls, TlsError};

/// How long connections get to finish their requests once shutdown (or idle close) begins;
/// clients do not always close promptly after a GOAWAY / `Connection: close`.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the web server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The certificate could not be loaded or generated.
    #[error("https certificate: {0}")]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The access-log directory could not be created or its writer started.
    #[error("access log in {}: {source}", path.display())]
    AccessLog {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running web server. It stops when the `shutdown` given to [`start`] turns true.
pub struct WebServer {
    pub https_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    /// The certificate in use (fingerprint, paths, reload).
    pub tls: Arc<Tls>,
    state: Arc<State>,
    admission: Arc<Admission>,
}

impl WebServer {
    /// SHA-256 fingerprint of the certificate being served now.
    pub fn cert_fingerprint(&self) -> String {
        self.tls.fingerprint()
    }

    /// Reloads the certificate files now (what SIGHUP and the poll do).
    pub fn reload_certificate(&self) -> Result<String, TlsError> {
        self.tls.reload()
    }

    /// Installs the check `/healthz` runs (e.g. staleness of the live cut); None removes it.
    pub fn set_health_probe(&self, probe: Option<Box<Probe>>) {
        self.state.health.set_probe(probe);
    }

    /// Access-log lines dropped because the writer was behind.
    pub fn dropped_log_lines(&self) -> u64 {
        self.state.log.dropped()
    }

    /// Open HTTP(S) connections now.
    pub fn open_connections(&self) -> usize {
        self.admission.open_connections()
    }

    /// A handle the admin listener keeps to read the server's gauges.
    pub fn gauges(&self) -> WebGauges {
        WebGauges {
            state: Arc::clone(&self.state),
            admission: Arc::clone(&self.admission),
        }
    }
}

/// What the admin listener reads of a running web server (cheap to clone).
#[derive(Clone)]
pub struct WebGauges {
    state: Arc<State>,
    admission: Arc<Admission>,
}

impl WebGauges {
    pub fn open_connections(&self) -> usize {
        self.admission.open_connections()
    }

    pub fn dropped_log_lines(&self) -> u64 {
        self.state.log.dropped()
    }
}

/// Starts the HTTPS (and optional plain-HTTP) listeners serving `live`. The certificate is
/// loaded (or generated into `keys_dir`) before this returns; access logs go to `logs_dir`.
pub async fn start(
    cfg: &config::WebConfig,
    keys_dir: &Path,
    logs_dir: &Path,
    live: LiveSite,
    metrics: Arc<crate::monitor::metrics::Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<WebServer, WebError> {
    let tls = {
        let (c, k) = (cfg.clone(), keys_dir.to_owned());
        // Key generation and file reads: keep them off the runtime threads.
        tokio::task::spawn_blocking(move || Tls::start(&c, &k))
            .await
            .map_err(|e| TlsError::Config(format!("certificate loader panicked: {e}")))??
    };
    tls.spawn_watcher(cfg.cert_poll, cfg.reload_on_sighup, shutdown.clone());
    let log =
        AccessLog::start(logs_dir, &cfg.access_log).map_err(|source| WebError::AccessLog {
            path: logs_dir.to_owned(),
            source,
        })?;

    // PERF: by default one current-thread runtime per core, each accepting on its own
    // SO_REUSEPORT socket (the kernel spreads connections): no work-stealing, no cross-core
    // wake-ups on the request path. `web.workers = 0` serves on the caller's runtime instead.
    let sockets = cfg.workers.max(1);
    let https = bind(cfg.listen, sockets, "https")?;
    let https_addr = https
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or(cfg.listen);
    let http = match cfg.http_listen {
        Some(a) => bind(a, sockets, "http")?,
        None => Vec::new(),
    };
    let http_addr = http.first().and_then(|s| s.local_addr().ok());

    let limiter = cfg
        .rate_limit
        .enabled
        .then(|| RateLimiter::new(&cfg.rate_limit));
    let state = Arc::new(State {
        live,
        trusted_proxies: cfg.trusted_proxies.clone(),
        limiter,
        log,
        health: Default::default(),
        public_host: cfg.public_host.clone(),
        https_port: https_addr.port(),
        metrics,
    });
    if state.limiter.is_some() {
        let st = Arc::clone(&state);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(rate_limit::PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => if let Some(l) = &st.limiter { l.prune(Instant::now()) },
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }
    let proto = Arc::new(Protocols::new(cfg));
    // One cap for both listeners: it protects the process's file descriptors.
    let admission = Admission::new(cfg.max_connections, cfg.max_connections_per_address);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));

    let plain = match cfg.http_mode {
        HttpMode::Redirect => ConnKind::PlainRedirect,
        HttpMode::Serve => ConnKind::PlainServe,
    };
    let mut http = http.into_iter();
    let mut groups = Vec::with_capacity(sockets);
    for sock in https {
        let mut doors = vec![(
            sock,
            "https",
            Door {
                kind: ConnKind::Https,
                tls: Some(acceptor.clone()),
            },
        )];
        if let Some(p) = http.next() {
            doors.push((
                p,
                "http",
                Door {
                    kind: plain,
                    tls: None,
                },
            ));
        }
        groups.push(doors);
    }
    for (i, doors) in groups.into_iter().enumerate() {
        let serving = serve_on(
            doors,
            Arc::clone(&state),
            Arc::clone(&proto),
            Arc::clone(&admission),
            shutdown.clone(),
        );
        if cfg.workers == 0 {
            tokio::spawn(serving);
            continue;
        }
        let thread_err = |source| WebError::Listen {
            what: "https",
            addr: https_addr,
            source,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("difusor-web-{i}"))
            .build()
            .map_err(thread_err)?;
        std::thread::Builder::new()
            .name(format!("difusor-web-{i}"))
            .spawn(move || rt.block_on(serving))
            .map_err(thread_err)?;
    }
    tracing::info!(https = %https_addr, http = ?http_addr, "web listening");
    Ok(WebServer {
        https_addr,
        http_addr,
        tls,
        state,
        admission,
    })
}

/// The HTTP protocol settings, built once and shared by every connection.
struct Protocols {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    tls_handshake_timeout: Duration,
    idle_timeout: Duration,
}

impl Protocols {
    fn new(cfg: &WebConfig) -> Protocols {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // SECURITY: without a timer hyper silently drops the header-read timeout (slowloris).
        h1.timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .keep_alive(true)
            .max_headers(cfg.max_headers)
            .max_header_size(cfg.max_header_bytes)
            // PERF: flatten headers and small bodies into one buffer: one TLS record and one
            // write per response instead of a record per slice (measured a few % more req/s on
            // 2 KB responses). A body is copied once into hyper's buffer: a memcpy, small next
            // to encrypting it.
            .writev(false);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(cfg.h2_max_concurrent_streams)
            .max_header_list_size(cfg.max_header_bytes as u32)
            // Dead peers are found by pings; idle live ones by the idle timeout.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        // SECURITY: `max_pending_accept_reset_streams` keeps h2's default (20): the rapid-reset
        // (CVE-2023-44487) guard. `max_local_error_reset_streams` keeps hyper's 1024.
        Protocols {
            h1,
            h2,
            tls_handshake_timeout: cfg.tls_handshake_timeout,
            idle_timeout: cfg.idle_timeout,
        }
    }
}

#[derive(Clone)]
struct Door {
    kind: ConnKind,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds `count` sockets to `addr` (SO_REUSEPORT when more than one; all on the port the
/// first one got, so port 0 works).
fn bind(
    addr: SocketAddr,
    count: usize,
    what: &'static str,
) -> Result<Vec<std::net::TcpListener>, WebError> {
    let err = |source| WebError::Listen { what, addr, source };
    let socket = |target: SocketAddr, reuse_port: bool| -> std::io::Result<socket2::Socket> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(target),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_reuse_address(true)?;
        if reuse_port {
            sock.set_reuse_port(true)?;
        }
        sock.set_nonblocking(true)?;
        sock.bind(&target.into())?;
        Ok(sock)
    };
    let mut target = addr;
    if count > 1 {
        // SECURITY: SO_REUSEPORT would let a second difusor (same user) share the port
        // silently and split the traffic between two sites. A plain bind first fails with
        // "address in use" if anything listens there; it also picks the port for port 0.
        let probe = socket(addr, false).map_err(err)?;
        if let Some(a) = probe.local_addr().ok().and_then(|a| a.as_socket()) {
            target = a;
        }
    }
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    for _ in 0..count {
        let sock = socket(target, count > 1).map_err(err)?;
        sock.listen(1024).map_err(err)?;
        out.push(sock.into());
    }
    Ok(out)
}

/// Serves `doors` until shutdown, then waits for their connections to drain (each holds a
/// clone of `done`; when the last is dropped, `recv` returns None — mini-redis' trick).
async fn serve_on(
    doors: Vec<(std::net::TcpListener, &'static str, Door)>,
    state: Arc<State>,
    proto: Arc<Protocols>,
    admission: Arc<Admission>,
    shutdown: watch::Receiver<bool>,
) {
    let (done, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut loops = Vec::with_capacity(doors.len());
    for (sock, name, door) in doors {
        let listener = match TcpListener::from_std(sock) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(door = name, error = %e, "cannot register listener");
                continue;
            }
        };
        let (state, proto, admission, done) = (
            Arc::clone(&state),
            Arc::clone(&proto),
            Arc::clone(&admission),
            done.clone(),
        );
        let conn_shutdown = shutdown.clone();
        let accept_shutdown = shutdown.clone();
        loops.push(tokio::spawn(async move {
            let mut next_id: u64 = 0;
            listener::accept_loop(listener, name, accept_shutdown, move |sock, peer| {
                next_id += 1;
                let ip = listener::canonical_ip(peer);
                let permit = match admission.try_admit(ip) {
                    Ok(p) => p,
                    Err(why) => {
                        // Debug, not warn: under a flood this would be one line per connection.
                        tracing::debug!(door = name, %peer, reason = %why, "connection refused");
                        return;
                    }
                };
                let span = tracing::debug_span!("web", door = name, conn = next_id, %peer);
                let info = ConnInfo {
                    peer: ip,
                    kind: door.kind,
                };
                let done = done.clone();
                let task = connection(
                    Arc::clone(&state),
                    Arc::clone(&proto),
                    door.tls.clone(),
                    sock,
                    info,
                    permit,
                    conn_shutdown.clone(),
                );
                tokio::spawn(
                    async move {
                        task.await;
                        drop(done);
                    }
                    .instrument(span),
                );
            })
            .await;
        }));
    }
    drop(done);
    for l in loops {
        let _ = l.await;
    }
    let _ = all_done.recv().await;
}

/// One connection, start to end. Holds its admission permit for its whole life.
async fn connection(
    state: Arc<State>,
    proto: Arc<Protocols>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    sock: TcpStream,
    info: ConnInfo,
    _permit: Permit,
    shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(AtomicU64::new(0));
    let svc = {
        let state = Arc::clone(&state);
        service_fn(move |req| {
            std::future::ready(Ok::<_, Infallible>(handler::handle(&state, &info, req)))
        })
    };
    match tls {
        Some(acceptor) => {
            let stream = match tokio::time::timeout(
                proto.tls_handshake_timeout,
                acceptor.accept(sock),
            )
            .await
            {
                Ok(Ok(s)) => {
                    state.metrics.tls_handshake("ok");
                    s
                }
                Ok(Err(e)) => {
                    state.metrics.tls_handshake("failed");
                    tracing::debug!(error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    state.metrics.tls_handshake("timeout");
                    tracing::debug!("tls handshake timed out");
                    return;
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(Tracked {
                inner: stream,
                activity: Arc::clone(&activity),
            });
            if h2 {
                let conn = proto.h2.serve_connection(io, svc);
                drive(conn, &activity, proto.idle_timeout, shutdown).await;
            } else {
                let conn = proto.h1.serve_connection(io, svc);
                drive(conn, &activity, proto.idle_timeout, shutdown).await;
            }
        }
        None => {
            let io = TokioIo::new(Tracked {
                inner: sock,
                activity: Arc::clone(&activity),
            });
            let conn = proto.h1.serve_connection(io, svc);
            drive(conn, &activity, proto.idle_timeout, shutdown).await;
        }
    }
}

/// A hyper connection that can be asked to finish what it is doing and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn begin_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs `conn` to completion, closing it gracefully on shutdown or after `idle` without a
/// byte moving, and dropping it if it does not finish within [`DRAIN_TIMEOUT`] after that.
async fn drive<C: Graceful>(
    conn: C,
    activity: &AtomicU64,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conn = pin!(conn);
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(250)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = activity.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    let why = loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tick.tick() => {
                let now = activity.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= idle {
                    break "idle";
                }
            }
            _ = shutdown.wait_for(|s| *s) => break "shutdown",
        }
    };
    tracing::debug!(reason = why, "closing connection");
    conn.as_mut().begin_shutdown();
    if tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut())
        .await
        .is_err()
    {
        tracing::debug!("connection did not drain in time; dropped");
    }
}

/// A stream that counts its reads and writes, so the idle watchdog can tell activity apart
/// from silence without timestamps on the hot path.
struct Tracked<T> {
    inner: T,
    activity: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    // PERF: must be forwarded, or hyper falls back to flattening every response.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
