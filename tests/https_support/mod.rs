//! Harness for `tests/https.rs`: a real web server on 127.0.0.1:0 with a temp keys dir, logs
//! dir and cut directories made on the spot; `curl`, `openssl` and a small hyper client
//! (`client`) drive it.
#![allow(dead_code)]

pub mod client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use difusor::events::CutPublished;
use difusor::publish::{self, CacheRules, CutMeta, LiveSite, Snapshot};
use difusor::store::Manifest;
use difusor::web::{self, WebServer, config::RawWeb, config::WebConfig};
use tokio::sync::{broadcast, watch};

/// A running web server and everything it was made from. Dropping it stops the server.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub server: WebServer,
    pub live: LiveSite,
    pub cfg: WebConfig,
    pub rules: CacheRules,
    pub events: broadcast::Sender<CutPublished>,
    stop: watch::Sender<bool>,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Site {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }
    /// The CA file clients trust: the certificate being served at start.
    pub fn ca(&self) -> PathBuf {
        self.server.tls.cert_path.clone()
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.https_addr
    }
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr().port())
    }

    /// Makes cut `id` under the site's temp dir from `files` and returns its directory.
    pub fn make_cut(&self, id: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
        make_cut(&self.root().join("cuts"), id, files)
    }

    /// Publishes `cut_dir` as `id` through `publish::follow` (as the ingest pipeline would).
    pub fn publish(&self, id: &str, cut_dir: &Path) {
        let _ = self.events.send(event(id, cut_dir));
    }

    /// Waits until the live snapshot is cut `id`.
    pub async fn wait_live(&self, id: &str) {
        for _ in 0..500 {
            if self.live.load().cut_id() == Some(id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("cut {id} did not go live");
    }

    /// Publishes and waits for it to be live.
    pub async fn go_live(&self, id: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let dir = self.make_cut(id, files);
        self.publish(id, &dir);
        self.wait_live(id).await;
        dir
    }
}

pub fn make_cut(root: &Path, id: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = root.join(id);
    for (name, data) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn manifest(id: &str) -> Manifest {
    let now = time::OffsetDateTime::now_utc();
    Manifest {
        cut_id: id.to_owned(),
        sha256: "0".repeat(64),
        size: 1,
        original_name: format!("{id}.zip"),
        extension: "zip".into(),
        uploader: "institute".into(),
        client_address: "127.0.0.1:1".into(),
        upload_started: now,
        upload_finished: now,
        transfer_mb_per_s: 1.0,
        received_at: now,
        verified_at: now,
        published_at: Some(now),
        entries: 1,
        files: 1,
        uncompressed_bytes: 1,
        cut_time: Some(time::macros::datetime!(2024-06-02 20:15 -06:00)),
        mode: "replace".into(),
        previous_cut: None,
        publish_seconds: Some(0.1),
    }
}

pub fn event(id: &str, cut_dir: &Path) -> CutPublished {
    CutPublished {
        cut_id: id.to_owned(),
        cut_dir: cut_dir.to_owned(),
        manifest: manifest(id),
        previous_live: None,
        packages_in_history: 3,
    }
}

pub fn meta(id: &str) -> CutMeta {
    CutMeta::from_event(&event(id, Path::new("/nonexistent")))
}

/// Starts a server with `[web]` given as TOML (listen is forced to 127.0.0.1:0 unless set)
/// and, if given, `initial` files as the first live cut `c0`.
pub async fn start_site(web_toml: &str, initial: Option<&[(&str, Vec<u8>)]>) -> Site {
    start_site_as(web_toml, "c0", initial).await
}

/// [`start_site`] with the initial cut named `id`.
pub async fn start_site_as(web_toml: &str, id: &str, initial: Option<&[(&str, Vec<u8>)]>) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let mut raw: RawWeb = toml::from_str(web_toml).unwrap();
    if raw.listen.is_none() {
        raw.listen = Some("127.0.0.1:0".into());
    }
    let cfg = WebConfig::from_raw(raw, dir.path()).unwrap();
    let rules = cfg.cache_rules();
    let live: LiveSite = match initial {
        Some(files) => {
            let cut = make_cut(&dir.path().join("cuts"), id, files);
            Arc::new(arc_swap::ArcSwap::from_pointee(
                Snapshot::build(&cut, meta(id), &rules).unwrap(),
            ))
        }
        None => publish::waiting_site(&rules),
    };
    let (stop, stop_rx) = watch::channel(false);
    let server = web::start(
        &cfg,
        &dir.path().join("keys"),
        &dir.path().join("logs"),
        Arc::clone(&live),
        Arc::new(difusor::monitor::metrics::Metrics::new()),
        stop_rx,
    )
    .await
    .unwrap();
    let (events, rx) = broadcast::channel(64);
    tokio::spawn(publish::follow(Arc::clone(&live), rx, rules.clone()));
    Site {
        dir,
        server,
        live,
        cfg,
        rules,
        events,
        stop,
    }
}

/// Tries to start a bare server (waiting page) with `[web]` as TOML; the error if it fails.
pub async fn start_site_result(web_toml: &str) -> Result<WebServer, web::WebError> {
    let dir = tempfile::tempdir().unwrap();
    let raw: RawWeb = toml::from_str(web_toml).unwrap();
    let cfg = WebConfig::from_raw(raw, dir.path()).unwrap();
    let live = publish::waiting_site(&cfg.cache_rules());
    let (_stop, stop_rx) = watch::channel(false);
    web::start(
        &cfg,
        &dir.path().join("keys"),
        &dir.path().join("logs"),
        live,
        Arc::new(difusor::monitor::metrics::Metrics::new()),
        stop_rx,
    )
    .await
}

/// What `curl` got.
#[derive(Debug)]
pub struct CurlResp {
    pub status: u16,
    pub version: String,
    /// Lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl CurlResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl` against the site (trusting its certificate) with `args` before the URL.
pub async fn curl(site: &Site, path: &str, args: &[&str]) -> CurlResp {
    curl_url(&site.ca(), &site.url(path), args).await
}

pub async fn curl_url(ca: &Path, url: &str, args: &[&str]) -> CurlResp {
    let tmp = tempfile::tempdir().unwrap();
    let hdr = tmp.path().join("h");
    let body = tmp.path().join("b");
    let out = tokio::process::Command::new("curl")
        .arg("-sS")
        .arg("--max-time")
        .arg("20")
        .arg("--cacert")
        .arg(ca)
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .arg("-w")
        .arg("%{http_code} %{http_version}")
        .args(args)
        .arg(url)
        .output()
        .await
        .expect("curl runs");
    let w = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = w.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = it.next().unwrap_or("").to_owned();
    let raw = std::fs::read_to_string(&hdr).unwrap_or_default();
    // The last header block (no redirects are followed, but 100-continue may precede).
    let block = raw.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    CurlResp {
        status,
        version,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// SHA-256 fingerprint (`AB:CD:…`) of the certificate the server presents, via openssl.
pub async fn served_fingerprint(addr: SocketAddr) -> String {
    let s = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | openssl s_client -connect 127.0.0.1:{} -servername localhost 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            addr.port()
        ))
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&s.stdout).into_owned();
    out.trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// Whether `openssl s_client` with `flag` (`-tls1_2`…) completes a handshake.
pub async fn openssl_handshakes(addr: SocketAddr, flag: &str) -> (bool, String) {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | timeout 10 openssl s_client -connect 127.0.0.1:{} {flag} 2>&1",
            addr.port()
        ))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok = text.contains("BEGIN CERTIFICATE") || text.contains("Server certificate");
    let cipher_ok = !text.contains("Cipher is (NONE)") && !text.contains("Cipher    : 0000");
    (ok && cipher_ok, text)
}
