//! The admin listener (default 127.0.0.1:9090, plain HTTP/1.1): `/metrics` for Prometheus,
//! `/` the status page for the operator, `/status.json` the same facts for scripts,
//! `/healthz` the same verdict as the public one.
//!
//! Owns: that listener, its routes, and refreshing the state gauges before each scrape.
//!
//! Must never: listen beyond loopback by default or serve the public site. SECURITY: it is
//! unauthenticated; exposing it on another address is the operator's explicit choice
//! (`admin.listen`), e.g. behind a VPN.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::monitor::metrics::{self, Metrics, MirrorGauges, StateGauges};
use crate::monitor::overview::{self, Overview, TrafficView};
use crate::monitor::watch::{Level, Monitor};
use crate::store::Store;
use crate::web::WebGauges;

/// Every notifier's counters now (set once the notifiers run): the status page's table and
/// the failure gauges.
pub type NotifierStatsFn = Arc<dyn Fn() -> Vec<crate::notify::NotifierStats> + Send + Sync>;

/// What the admin pages read.
#[derive(Clone)]
pub struct AdminContext {
    pub store: Store,
    pub monitor: Arc<Monitor>,
    pub metrics: Arc<Metrics>,
    pub web: WebGauges,
    pub notifiers: Option<NotifierStatsFn>,
    pub mirror: Option<Arc<crate::mirror::Mirror>>,
}

/// How often the status page reloads itself.
const REFRESH_SECS: u32 = 10;

impl AdminContext {
    /// The overview as a running server sees it (what it serves, the last disk check).
    pub fn overview(&self) -> Overview {
        let mut o = overview::gather(
            &self.store,
            self.monitor.config(),
            time::OffsetDateTime::now_utc(),
        );
        let (requests_total, bytes_total) = self.metrics.http_totals();
        o.mirror = self.mirror.as_ref().map(|m| m.lag()).unwrap_or_default();
        o.notifiers = self.notifiers.as_ref().map(|f| f()).unwrap_or_default();
        o.traffic = Some(TrafficView {
            now: self.monitor.traffic_now(),
            open_connections: self.web.open_connections() as u64,
            requests_total,
            bytes_total,
        });
        o
    }

    fn refresh_gauges(&self) {
        let o = self.overview();
        let unix = |t: Option<time::OffsetDateTime>| t.map(|t| t.unix_timestamp());
        let live = o.live.as_ref();
        self.metrics.set_state(&StateGauges {
            seconds_since_last_cut: live
                .and_then(|l| l.published_at)
                .map(|t| (o.now - t).as_seconds_f64().max(0.0)),
            live_cut_time_unix: unix(live.and_then(|l| l.cut_time)),
            live_cut_published_unix: unix(live.and_then(|l| l.published_at)),
            packages_in_history: o.packages_in_history as u64,
            history_bytes: o.disk.history_bytes,
            disk_free_bytes: o.disk.free_bytes.unwrap_or(0),
            disk_total_bytes: o.disk.total_bytes.unwrap_or(0),
            staleness_level: self.monitor.level() as i64,
            open_connections: self.web.open_connections() as u64,
            access_log_dropped: self.web.dropped_log_lines(),
            notifier_failures: o
                .notifiers
                .iter()
                .map(|n| (n.name.clone(), n.failures))
                .collect(),
            mirror: o
                .mirror
                .iter()
                .map(|l| MirrorGauges {
                    name: l.name.clone(),
                    cuts_behind: l.cuts_behind,
                    seconds_behind: l.seconds_behind,
                    healthy: l.healthy,
                })
                .collect(),
        });
    }
}

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

type Resp = Response<Full<Bytes>>;

/// Answers one admin request. Blocking reads (manifests, incidents) are short and run on a
/// blocking thread so a slow disk never stalls the listener.
async fn route(ctx: AdminContext, req: Request<hyper::body::Incoming>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET or HEAD only\n",
        );
    }
    let path = req.uri().path().to_owned();
    let answer = tokio::task::spawn_blocking(move || match path.as_str() {
        "/metrics" => {
            ctx.refresh_gauges();
            response(StatusCode::OK, metrics::CONTENT_TYPE, ctx.metrics.encode())
        }
        "/" | "/index.html" => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            crate::monitor::page::render(&ctx.overview(), REFRESH_SECS),
        ),
        "/status.json" => {
            let mut v = serde_json::to_vec_pretty(&ctx.overview()).unwrap_or_default();
            v.push(b'\n');
            response(StatusCode::OK, "application/json; charset=utf-8", v)
        }
        "/healthz" => match ctx.monitor.level() {
            Level::Critical => response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("unhealthy: {}\n", ctx.monitor.reason()),
            ),
            _ => response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        },
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    })
    .await;
    answer.unwrap_or_else(|_| {
        response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "internal error\n",
        )
    })
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    pub addr: SocketAddr,
}

/// Binds `addr` and serves until `shutdown` turns true.
pub async fn start(
    addr: SocketAddr,
    ctx: AdminContext,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<AdminServer> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "admin listening (/metrics, status page)");
    tokio::spawn(async move {
        // A few operators and one Prometheus: a small cap keeps a flood from costing much.
        let permits = Arc::new(tokio::sync::Semaphore::new(64));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let (sock, _) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                continue;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(route(ctx, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(sock), svc);
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
                drop(permit);
            });
        }
    });
    Ok(AdminServer { addr: local })
}
