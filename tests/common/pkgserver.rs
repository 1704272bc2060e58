//! An institute's package service for the pull-source tests: HTTPS on 127.0.0.1:0 with a
//! self-signed certificate (its PEM is handed to difusor as `ca_file`), serving files the
//! test adds while it runs, with what real servers do: `ETag` and `Last-Modified`,
//! `If-None-Match`/`If-Modified-Since` → 304, `Range` (+ `If-Range`) → 206, a listing page
//! at `/list/` linking every file, and on demand a download cut off half-way (the
//! connection drops) to exercise resumption. Records each request's method, path and
//! headers. Dropping it stops it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::{Request, Response};

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Files {
    /// path (without leading /) → (bytes, etag)
    files: BTreeMap<String, (Vec<u8>, String)>,
    /// Paths whose next full download is cut after this many bytes.
    cut_off: BTreeMap<String, usize>,
    /// Answer everything with this status (an outage), when set.
    outage: Option<u16>,
    seen: Vec<Seen>,
}

pub struct PkgServer {
    pub addr: SocketAddr,
    /// The certificate to trust (PEM).
    pub ca_pem: String,
    state: Arc<Mutex<Files>>,
    stop: tokio::sync::watch::Sender<bool>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .unwrap()
}

const LAST_MODIFIED: &str = "Sun, 02 Jun 2024 20:00:00 GMT";

fn answer(state: &Mutex<Files>, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut st = state.lock().unwrap();
    st.seen.push(Seen {
        path: req.uri().path().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
    });
    if let Some(code) = st.outage {
        return full(code, &[], b"down".to_vec());
    }
    if path == "list/" || path == "list" {
        let mut html = String::from("<html><body><h1>paquetes</h1><ul>\n");
        for name in st.files.keys() {
            html.push_str(&format!("<li><a href=\"/{name}\">{name}</a></li>\n"));
        }
        html.push_str("</ul></body></html>\n");
        let etag = format!("\"list-{}\"", st.files.len());
        if header("if-none-match").as_deref() == Some(etag.as_str()) {
            return full(304, &[("etag", etag)], Vec::new());
        }
        return full(
            200,
            &[("etag", etag), ("content-type", "text/html".into())],
            html.into_bytes(),
        );
    }
    let Some((bytes, etag)) = st.files.get(&path).cloned() else {
        return full(404, &[], b"not found".to_vec());
    };
    let validators = [
        ("etag", etag.clone()),
        ("last-modified", LAST_MODIFIED.to_owned()),
    ];
    if header("if-none-match").as_deref() == Some(etag.as_str()) {
        return full(304, &validators, Vec::new());
    }
    let range = header("range").and_then(|r| {
        r.strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok())
    });
    let if_range_ok = header("if-range").is_none_or(|v| v == etag);
    if let (Some(from), true) = (range, if_range_ok) {
        if from >= bytes.len() {
            return full(
                416,
                &[("content-range", format!("bytes */{}", bytes.len()))],
                Vec::new(),
            );
        }
        let mut h = validators.to_vec();
        h.push((
            "content-range",
            format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len()),
        ));
        return full(206, &h, bytes[from..].to_vec());
    }
    if let Some(limit) = st.cut_off.remove(&path) {
        // Send `limit` bytes, then fail the body: hyper drops the connection mid-transfer.
        let head = Bytes::from(bytes[..limit.min(bytes.len())].to_vec());
        let body = CutOff(Some(head)).boxed();
        let mut r = Response::builder()
            .status(200)
            .header("content-length", bytes.len().to_string());
        for (k, v) in &validators {
            r = r.header(*k, v);
        }
        return r.body(body).unwrap();
    }
    full(200, &validators, bytes)
}

/// A body that sends its bytes, then fails: hyper drops the connection mid-transfer.
struct CutOff(Option<Bytes>);

impl http_body::Body for CutOff {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(Some(match self.0.take() {
            Some(b) => Ok(Frame::data(b)),
            None => Err(std::io::Error::other("cut off")),
        }))
    }
}

impl PkgServer {
    pub async fn start() -> PkgServer {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let ca_pem = cert.cert.pem();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Files::default()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (sock, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let (acceptor, st) = (acceptor.clone(), Arc::clone(&st));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let r = answer(&st, &req);
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        PkgServer {
            addr,
            ca_pem,
            state,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}/{}",
            self.addr.port(),
            path.trim_start_matches('/')
        )
    }

    /// Publishes (or replaces) a file; its ETag is derived from its bytes.
    pub fn put(&self, path: &str, bytes: &[u8]) {
        let etag = format!("\"{}\"", &super::packages::sha256_hex(bytes)[..16]);
        self.state.lock().unwrap().files.insert(
            path.trim_start_matches('/').to_owned(),
            (bytes.to_vec(), etag),
        );
    }

    /// The next full download of `path` stops after `bytes` bytes.
    pub fn cut_off_next(&self, path: &str, bytes: usize) {
        self.state
            .lock()
            .unwrap()
            .cut_off
            .insert(path.trim_start_matches('/').to_owned(), bytes);
    }

    /// Answer everything with `status` (Some) or serve again (None).
    pub fn outage(&self, status: Option<u16>) {
        self.state.lock().unwrap().outage = status;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Drop for PkgServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
