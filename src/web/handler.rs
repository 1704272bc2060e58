//! One request, top to bottom: load the live snapshot once, then rate limit → method →
//! health/status → (plain-HTTP redirect) → path → lookup → conditional → range → encoding
//! (br, gzip or identity, all precomputed),
//! and hand the access log its record.
//!
//! Owns: the order of the checks and the status codes:
//! - 429 rate limited (`Retry-After`), 405 anything but GET/HEAD (`Allow: GET, HEAD`),
//!   400 a hostile path (see `path`), 404 unknown (the cut's `404.html` when it has one),
//!   301 a directory asked without its trailing slash (so its relative links work),
//!   308 plain HTTP in redirect mode, 304/206/416 from validators and ranges.
//! - `/` and `dir/` serve `index.html`; there are no directory listings.
//!
//! Must never: load the live snapshot twice for one request (one request = one cut), await
//! (the whole answer is computed synchronously from the snapshot; only large-file bodies read
//! later, from a handle the body owns), or panic on client input.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HOST,
    LAST_MODIFIED, LOCATION, REFERER, RETRY_AFTER, USER_AGENT,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use ipnet::IpNet;

use crate::monitor::metrics::{CacheClass, Metrics};
use crate::publish::{Content, Entry, LiveSite, Snapshot, X_DIFUSOR_CUT};
use crate::web::access_log::{AccessLog, Record};
use crate::web::body::ServedBody;
use crate::web::compression::{self, Coding};
use crate::web::config::valid_host;
use crate::web::health::{self, Health};
use crate::web::range::{self, Ranged};
use crate::web::rate_limit::RateLimiter;
use crate::web::{client_addr, conditional, path, security_headers};

/// Everything requests share, for the life of the server.
#[derive(Debug)]
pub struct State {
    /// The snapshot being served; swapped by `publish::follow`.
    pub live: LiveSite,
    /// Peers whose forwarding headers are believed (`client_addr`).
    pub trusted_proxies: Vec<IpNet>,
    /// None when `web.rate_limit.enabled = false`.
    pub limiter: Option<RateLimiter>,
    pub log: AccessLog,
    pub health: Health,
    /// Where plain-HTTP redirects point: `web.public_host`, else the request's host.
    pub public_host: Option<String>,
    /// The HTTPS listener's port, for redirects built from a request's host.
    pub https_port: u16,
    pub metrics: Arc<Metrics>,
}

/// What the connection a request came in on is.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: IpAddr,
    pub kind: ConnKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    Https,
    /// Plain HTTP serving the site (behind a TLS-terminating proxy or CDN).
    PlainServe,
    /// Plain HTTP answering with a redirect to HTTPS.
    PlainRedirect,
}

type Resp = Response<ServedBody>;

/// Answers `req`. Never fails: every problem is a status code.
pub fn handle<B>(state: &State, conn: &ConnInfo, req: Request<B>) -> Resp {
    let started = Instant::now();
    // One load per request: everything below answers from this snapshot.
    let snap = state.live.load();
    let client = client_addr::resolve(conn.peer, req.headers(), &state.trusted_proxies);
    let resp = respond(state, conn, &snap, &req, client, started);
    let bytes = if req.method() == Method::HEAD {
        0
    } else {
        http_body::Body::size_hint(resp.body()).exact().unwrap_or(0)
    };
    state.metrics.http_response(
        resp.status().as_u16(),
        CacheClass::of(resp.headers().get(CACHE_CONTROL).map(HeaderValue::as_bytes)),
        bytes,
        started.elapsed(),
    );
    if state.log.enabled() {
        let h = req.headers();
        state.log.log(Record::new(
            SystemTime::now(),
            client,
            req.method(),
            req.version(),
            resp.status().as_u16(),
            bytes,
            started.elapsed(),
            req.uri().path(),
            h.get(USER_AGENT),
            h.get(REFERER),
            snap.cut_id().unwrap_or("none"),
        ));
    }
    resp
}

fn respond<B>(
    state: &State,
    conn: &ConnInfo,
    snap: &Snapshot,
    req: &Request<B>,
    client: IpAddr,
    now: Instant,
) -> Resp {
    // 1. Rate limit, before any work is spent on the request.
    if let Some(limiter) = &state.limiter
        && let Err(wait) = limiter.check(client, now)
    {
        state.metrics.http_rate_limited();
        let mut r = simple(snap, StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    // 2. Read-only site.
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = simple(snap, StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let raw_path = req.uri().path();
    // 3. Health and status: answered on every listener, before the site.
    if raw_path == health::HEALTH_PATH {
        return match state.health.check(snap) {
            Ok(()) => with_body(
                simple_headers(snap, "text/plain; charset=utf-8"),
                StatusCode::OK,
                Bytes::from_static(b"ok\n"),
                head,
            ),
            Err(reason) => with_body(
                simple_headers(snap, "text/plain; charset=utf-8"),
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(format!("unhealthy: {reason}\n")),
                head,
            ),
        };
    }
    if raw_path == health::STATUS_PATH {
        return with_body(
            simple_headers(snap, "application/json; charset=utf-8"),
            StatusCode::OK,
            health::status_json(snap),
            head,
        );
    }
    // 4. Plain HTTP in redirect mode sends everyone to HTTPS.
    if conn.kind == ConnKind::PlainRedirect {
        return redirect_to_https(state, snap, req);
    }
    // 5. Path → key, refusing anything hostile.
    let key = match path::decode(raw_path) {
        Ok(k) => k,
        Err(why) => {
            tracing::debug!(path = raw_path, reason = %why, "bad request path");
            return simple(snap, StatusCode::BAD_REQUEST, "bad request path\n");
        }
    };
    if !snap.rules().serve_dotfiles && path::has_dot_segment(&key) {
        return not_found(snap, req, &key, head);
    }
    // 6. Lookup: file, directory index, or directory without its slash.
    let entry = if key.is_empty() {
        snap.get("index.html")
    } else if key.ends_with('/') {
        snap.get(&format!("{key}index.html"))
    } else {
        snap.get(&key)
    };
    let Some(entry) = entry else {
        if !key.is_empty()
            && !key.ends_with('/')
            && snap.get(&format!("{key}/index.html")).is_some()
        {
            return add_slash(snap, req);
        }
        return not_found(snap, req, &key, head);
    };
    serve(snap, req, entry, StatusCode::OK, head)
}

/// 7-9. Conditional, range, encoding; then headers and body from the precomputed entry.
fn serve<B>(
    snap: &Snapshot,
    req: &Request<B>,
    entry: &Entry,
    status: StatusCode,
    head: bool,
) -> Resp {
    let d = &entry.data;
    let h = req.headers();
    let variant = match compression::negotiate(h, d.gzip.is_some(), d.brotli.is_some()) {
        Coding::Brotli => entry.brotlied.as_ref().zip(d.brotli.as_ref()),
        Coding::Gzip => entry.gzipped.as_ref().zip(d.gzip.as_ref()),
        Coding::Identity => None,
    };
    if status == StatusCode::OK {
        let tags = [&d.etag, &d.gzip_etag, &d.brotli_etag];
        if conditional::is_not_modified(h, &tags, d.last_modified) {
            let mut headers = with_cut(snap, variant.map_or(&entry.identity, |(m, _)| m));
            headers.remove(CONTENT_LENGTH);
            headers.remove(ACCEPT_RANGES);
            return build(StatusCode::NOT_MODIFIED, headers, ServedBody::empty());
        }
        if h.contains_key(http::header::RANGE)
            && conditional::if_range_allows(h, &d.etag, d.last_modified)
        {
            match range::evaluate(h, d.len) {
                Ranged::Full => {}
                Ranged::Partial { start, end } => {
                    let mut headers = with_cut(snap, &entry.identity);
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("bytes {}-{}/{}", start, end - 1, d.len))
                    {
                        headers.insert(CONTENT_RANGE, v);
                    }
                    let body = if head {
                        ServedBody::empty()
                    } else {
                        slice(&d.content, start, end)
                    };
                    return build(StatusCode::PARTIAL_CONTENT, headers, body);
                }
                Ranged::Unsatisfiable => {
                    let mut r = simple(snap, StatusCode::RANGE_NOT_SATISFIABLE, "");
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", d.len)) {
                        r.headers_mut().insert(CONTENT_RANGE, v);
                    }
                    return r;
                }
            }
        }
    }
    // PERF: the hot path — one HeaderMap clone and an Arc bump of the body.
    let (headers, body) = match variant {
        Some((map, bytes)) => (with_cut(snap, map), ServedBody::bytes(bytes.clone())),
        None => (with_cut(snap, &entry.identity), slice(&d.content, 0, d.len)),
    };
    let body = if head { ServedBody::empty() } else { body };
    build(status, headers, body)
}

/// An entry's precomputed headers with the answering cut's `X-Difusor-Cut` in its slot
/// (entries are shared between cuts, so the cut id is not among them).
fn with_cut(snap: &Snapshot, headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    h.insert(X_DIFUSOR_CUT.clone(), snap.cut_header().clone());
    h
}

fn slice(content: &Content, start: u64, end: u64) -> ServedBody {
    match content {
        Content::Memory(b) => {
            ServedBody::bytes(b.slice(start as usize..(end as usize).min(b.len())))
        }
        Content::File(f) => ServedBody::file(std::sync::Arc::clone(f), start, end),
    }
}

fn build(status: StatusCode, headers: HeaderMap, body: ServedBody) -> Resp {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Headers of a response difusor writes itself (errors, endpoints).
fn simple_headers(snap: &Snapshot, content_type: &'static str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(8);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_DIFUSOR_CUT.clone(), snap.cut_header().clone());
    security_headers::apply(&mut h, snap.rules().hsts_max_age);
    h
}

fn with_body(mut h: HeaderMap, status: StatusCode, body: Bytes, head: bool) -> Resp {
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    let body = if head || body.is_empty() {
        ServedBody::empty()
    } else {
        ServedBody::bytes(body)
    };
    build(status, h, body)
}

/// A short plain-text answer.
fn simple(snap: &Snapshot, status: StatusCode, text: &'static str) -> Resp {
    with_body(
        simple_headers(snap, "text/plain; charset=utf-8"),
        status,
        Bytes::from_static(text.as_bytes()),
        false,
    )
}

/// 404: the cut's own `404.html` if it has one. Cache-Control follows the rules for the path
/// asked (a JSON that does not exist *yet* must not be cached as missing).
fn not_found<B>(snap: &Snapshot, req: &Request<B>, key: &str, head: bool) -> Resp {
    let cc = snap.rules().for_path(key);
    let mut r = match snap.not_found_page() {
        Some(page) => {
            let mut r = serve(snap, req, page, StatusCode::NOT_FOUND, head);
            let h = r.headers_mut();
            h.remove(ETAG);
            h.remove(LAST_MODIFIED);
            h.remove(ACCEPT_RANGES);
            r
        }
        None => {
            let mut r = simple(snap, StatusCode::NOT_FOUND, "not found\n");
            if head {
                *r.body_mut() = ServedBody::empty();
            }
            r
        }
    };
    r.headers_mut().insert(CACHE_CONTROL, cc);
    r
}

/// 301 `dir` → `dir/` (same query).
fn add_slash<B>(snap: &Snapshot, req: &Request<B>) -> Resp {
    let uri = req.uri();
    let target = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut r = simple(snap, StatusCode::MOVED_PERMANENTLY, "moved\n");
    match HeaderValue::from_str(&target) {
        Ok(v) => {
            r.headers_mut().insert(LOCATION, v);
            r
        }
        Err(_) => simple(snap, StatusCode::BAD_REQUEST, "bad request path\n"),
    }
}

/// 308 to the same path and query on HTTPS.
fn redirect_to_https<B>(state: &State, snap: &Snapshot, req: &Request<B>) -> Resp {
    let authority = match &state.public_host {
        Some(h) => h.clone(),
        None => {
            let host = req
                .headers()
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| req.uri().host())
                .unwrap_or("");
            // Strip a port (keeping IPv6 literals whole).
            let name = match host.rfind(':') {
                Some(i) if !host.ends_with(']') => host.get(..i).unwrap_or(""),
                _ => host,
            };
            // SECURITY: only a plain host name goes into Location (no header injection, no
            // userinfo tricks); anything else is a 400.
            if !valid_host(name) || name.contains('/') {
                return simple(
                    snap,
                    StatusCode::BAD_REQUEST,
                    "missing or bad Host header\n",
                );
            }
            if state.https_port == 443 {
                name.to_owned()
            } else {
                format!("{name}:{}", state.https_port)
            }
        }
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut r = simple(snap, StatusCode::PERMANENT_REDIRECT, "use https\n");
    match HeaderValue::from_str(&format!("https://{authority}{pq}")) {
        Ok(v) => {
            r.headers_mut().insert(LOCATION, v);
            r
        }
        Err(_) => simple(snap, StatusCode::BAD_REQUEST, "bad request\n"),
    }
}
