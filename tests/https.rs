//! HTTPS serving of the live cut, driven by real clients (`curl`, `openssl s_client`, headless
//! Chromium, a small hyper client) against a server on 127.0.0.1:0.
//!
//! Behaviours covered:
//! - the waiting page before the first cut (`X-Difusor-Cut: none`);
//! - headers: Content-Type with charset, strong ETag, Last-Modified, exact Cache-Control on
//!   `json/main.json`, `X-Difusor-Cut` on every status, security headers, no HSTS when
//!   self-signed, HSTS with a configured certificate;
//! - 304 via If-None-Match and If-Modified-Since; 206, 416 and multi-range → 200;
//! - br and gzip negotiated by Accept-Encoding (q-values), `--compressed`, Vary; HTTP/2 by
//!   ALPN;
//! - 405 with Allow, HEAD, 404 (plain and the cut's own 404.html), directory index and the
//!   trailing-slash redirect;
//! - traversal attempts (`..`, `%2e%2e`, `%2f`, backslash, NUL, symlinks out, dotfiles) never
//!   serve anything outside the cut;
//! - TLS 1.1 refused, 1.2 and 1.3 accepted; certificate files reloaded without restart;
//! - atomic swaps under load: no errors, no mixed cuts, large downloads finish from their cut
//!   even when the old cut's directory is deleted, a failed build keeps the previous cut;
//! - slowloris and silent TLS clients cut off while others are served; idle connections
//!   closed (HTTP/1.1 and HTTP/2), busy ones kept; per-address connection cap; rate limit 429
//!   with Retry-After; a second server cannot silently share the port;
//! - `/healthz` (and its probe hook), `/.well-known/difusor/status`;
//! - the access log (one JSON line per request, trusted-proxy client address);
//! - plain HTTP: redirect to HTTPS, or serving behind a proxy;
//! - headless Chromium renders the site (screenshot in `target/test-artifacts/`).

mod chromium;
mod https_support;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use https_support::client::{self, Client};
use https_support::{Site, curl, curl_url, start_site};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NO_CACHE: &str = "no-cache, no-store, must-revalidate";

fn main_json(cut: &str) -> Vec<u8> {
    let mut s = format!("{{\"corte\":\"{cut}\",\"actas\":[");
    for i in 0..60 {
        s.push_str(&format!(
            "{{\"id\":{i},\"votos\":{},\"partido\":\"PARTIDO {}\"}},",
            i * 7,
            i % 9
        ));
    }
    s.push_str("{}]}");
    s.into_bytes()
}

fn site_files(cut: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "index.html",
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>PREP {cut}</title>\
                 <link rel=\"stylesheet\" href=\"css/site.css\"></head><body><h1>Resultados PREP</h1>\
                 <p>Corte {cut}: conteo de actas en curso. Participación ciudadana.</p>\
                 <div class=\"bar\"></div></body></html>"
            )
            .into_bytes(),
        ),
        (
            "css/site.css",
            b"body{background:#6c2c8c;color:#fff;font:24px sans-serif}.bar{height:200px;background:#f0b400;margin:2em}\n"
                .repeat(8),
        ),
        ("json/main.json", main_json(cut)),
        ("datos/casillas.csv", format!("cut,{cut}\n").repeat(400).into_bytes()),
        ("img/logo.png", vec![0x89, b'P', b'N', b'G', 13, 10, 26, 10, 0, 0, 0, 0]),
        ("sub/index.html", format!("<p>sub {cut}</p>").into_bytes()),
    ]
}

async fn site_with_cut(extra: &str) -> Site {
    start_site(extra, Some(&site_files("c0"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_page_is_served_before_the_first_cut() {
    let site = start_site("", None).await;
    let r = curl(&site, "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.stderr);
    assert_eq!(r.header("x-difusor-cut"), Some("none"));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/html; charset=utf-8")
    );
    let t = r.text();
    assert!(
        t.contains("Esperando el primer corte") && t.contains("Waiting for the first cut"),
        "{t}"
    );
    let r = curl(&site, "/json/main.json", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-difusor-cut"), Some("none"));
    // The first cut replaces it.
    site.go_live("c1", &site_files("c1")).await;
    let r = curl(&site, "/", &[]).await;
    assert_eq!(r.header("x-difusor-cut"), Some("c1"));
    assert!(r.text().contains("Corte c1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_carry_type_etag_cache_control_and_cut_headers() {
    let site = site_with_cut("").await;
    let r = curl(&site, "/json/main.json", &[]).await;
    assert_eq!(r.status, 200, "{}", r.stderr);
    assert_eq!(r.body, main_json("c0"));
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    assert_eq!(r.header("x-difusor-cut"), Some("c0"));
    let etag = r.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "{etag}"
    );
    assert!(httpdate::parse_http_date(r.header("last-modified").unwrap()).is_ok());
    assert_eq!(
        r.header("content-length"),
        Some(main_json("c0").len().to_string().as_str())
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(
        r.header("strict-transport-security"),
        None,
        "no HSTS with a self-signed cert"
    );
    assert_eq!(
        r.header("x-frame-options"),
        None,
        "framing must stay allowed"
    );

    let r = curl(&site, "/", &[]).await;
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    let r = curl(&site, "/datos/casillas.csv", &[]).await;
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let r = curl(&site, "/img/logo.png", &[]).await;
    assert_eq!(r.header("content-type"), Some("image/png"));
    let r = curl(&site, "/css/site.css", &[]).await;
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_give_304_with_the_cut_header() {
    let site = site_with_cut("").await;
    let r = curl(&site, "/json/main.json", &[]).await;
    let etag = r.header("etag").unwrap().to_owned();
    let lm = r.header("last-modified").unwrap().to_owned();

    let r = curl(
        &site,
        "/json/main.json",
        &["-H", &format!("If-None-Match: {etag}")],
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("x-difusor-cut"), Some("c0"));
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));

    let r = curl(
        &site,
        "/json/main.json",
        &["-H", &format!("If-Modified-Since: {lm}")],
    )
    .await;
    assert_eq!(r.status, 304);
    let r = curl(
        &site,
        "/json/main.json",
        &["-H", "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT"],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = curl(
        &site,
        "/json/main.json",
        &["-H", "If-None-Match: \"something-else\""],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_give_206_and_416_from_memory_and_from_file_handles() {
    // 1 KiB in-memory limit: casillas.csv (~3 KiB) is served from its file handle.
    let site = site_with_cut("in_memory_max_bytes = 1024").await;
    for path in ["/json/main.json", "/datos/casillas.csv"] {
        let full = curl(&site, path, &[]).await.body;
        let len = full.len();
        let r = curl(&site, path, &["-r", "0-9"]).await;
        assert_eq!(r.status, 206, "{path}");
        assert_eq!(r.body, &full[..10]);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 0-9/{len}").as_str())
        );
        assert_eq!(r.header("x-difusor-cut"), Some("c0"));
        let r = curl(&site, path, &["-H", "Range: bytes=-5"]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &full[len - 5..]);
        let r = curl(&site, path, &["-H", "Range: bytes=100-"]).await;
        assert_eq!(r.body, &full[100..]);
        let r = curl(&site, path, &["-H", &format!("Range: bytes={len}-")]).await;
        assert_eq!(r.status, 416, "{path}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        assert_eq!(r.header("x-difusor-cut"), Some("c0"));
        // Multi-range: the whole file.
        let r = curl(&site, path, &["-H", "Range: bytes=0-1,5-6"]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, full);
        // If-Range with a stale validator: the whole file.
        let r = curl(
            &site,
            path,
            &["-H", "Range: bytes=0-1", "-H", "If-Range: \"old\""],
        )
        .await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn br_and_gzip_are_negotiated_and_decompress_to_the_file() {
    let site = site_with_cut("").await;
    let original = main_json("c0");
    let r = curl(&site, "/json/main.json", &["--compressed"]).await;
    assert_eq!(r.body, original, "--compressed must give back the file");
    // curl built with brotli asks for br too, and br wins a tie.
    let enc = r.header("content-encoding").unwrap_or("").to_owned();
    assert!(enc == "br" || enc == "gzip", "{enc}");

    let r = curl(&site, "/json/main.json", &["-H", "Accept-Encoding: br"]).await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &r.body[..], &mut out).unwrap();
    assert_eq!(out, original);
    assert!(r.header("etag").unwrap().ends_with("-br\""));

    let r = curl(&site, "/json/main.json", &["-H", "Accept-Encoding: gzip"]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    assert!(r.body.len() < original.len());
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, original);
    let gz_etag = r.header("etag").unwrap().to_owned();
    // A 304 for the gzip variant's tag too.
    let r = curl(
        &site,
        "/json/main.json",
        &[
            "-H",
            "Accept-Encoding: gzip",
            "-H",
            &format!("If-None-Match: {gz_etag}"),
        ],
    )
    .await;
    assert_eq!(r.status, 304);

    for refuse in ["gzip;q=0", "zstd", "identity", "br;q=0"] {
        let r = curl(
            &site,
            "/json/main.json",
            &["-H", &format!("Accept-Encoding: {refuse}")],
        )
        .await;
        assert_eq!(r.header("content-encoding"), None, "{refuse}");
        assert_eq!(r.body, original);
    }
    let r = curl(
        &site,
        "/json/main.json",
        &["-H", "Accept-Encoding: br;q=0.4, gzip;q=0.5"],
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = curl(
        &site,
        "/json/main.json",
        &["-H", "Accept-Encoding: gzip, deflate, br, zstd"],
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    let r = curl(&site, "/img/logo.png", &["-H", "Accept-Encoding: gzip"]).await;
    assert_eq!(
        r.header("content-encoding"),
        None,
        "png is not recompressed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_are_negotiated_by_alpn() {
    let site = site_with_cut("").await;
    let r = curl(&site, "/json/main.json", &["--http2"]).await;
    assert_eq!(r.version, "2");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-difusor-cut"), Some("c0"));
    let r = curl(&site, "/json/main.json", &["--http1.1"]).await;
    assert_eq!(r.version, "1.1");
    assert_eq!(r.body, main_json("c0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_and_head_are_allowed() {
    let site = site_with_cut("").await;
    for m in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let r = curl(&site, "/json/main.json", &["-X", m]).await;
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(r.header("x-difusor-cut"), Some("c0"));
    }
    let r = curl(&site, "/json/main.json", &["-I"]).await;
    assert_eq!(r.status, 200);
    // (curl -I writes the headers to its output file: there must be no body after them.)
    assert!(!r.text().contains("\"corte\""), "HEAD sent a body");
    assert_eq!(
        r.header("content-length"),
        Some(main_json("c0").len().to_string().as_str())
    );
    assert!(r.header("etag").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_with_the_cuts_own_page() {
    let site = site_with_cut("").await;
    let r = curl(&site, "/nope.html", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-difusor-cut"), Some("c0"));
    // A JSON that does not exist yet follows the JSON rule: never cached as missing.
    let r = curl(&site, "/json/later.json", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));

    let mut files = site_files("c1");
    files.push(("404.html", b"<h1>No encontrado (c1)</h1>".to_vec()));
    site.go_live("c1", &files).await;
    let r = curl(&site, "/nope.html", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "<h1>No encontrado (c1)</h1>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("x-difusor-cut"), Some("c1"));
    assert_eq!(r.header("etag"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_serve_their_index_and_get_a_trailing_slash() {
    let site = site_with_cut("").await;
    let r = curl(&site, "/sub/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<p>sub c0</p>");
    let r = curl(&site, "/sub?x=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub/?x=1"));
    let r = curl(&site, "/css/", &[]).await;
    assert_eq!(r.status, 404, "no directory listings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_never_serve_anything_outside_the_cut() {
    let site = site_with_cut("").await;
    let secret = "TOP-SECRET-OUTSIDE-THE-CUT";
    std::fs::write(site.root().join("secret.txt"), secret).unwrap();
    std::fs::write(site.root().join("cuts/secret.txt"), secret).unwrap();
    let cut = site.root().join("cuts/c1");
    https_support::make_cut(&site.root().join("cuts"), "c1", &site_files("c1"));
    std::os::unix::fs::symlink("../../secret.txt", cut.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", cut.join("etc")).unwrap();
    std::fs::write(cut.join(".env"), secret).unwrap();
    std::fs::create_dir_all(cut.join(".git")).unwrap();
    std::fs::write(cut.join(".git/config"), secret).unwrap();
    site.publish("c1", &cut);
    site.wait_live("c1").await;

    let attempts = [
        "/../secret.txt",
        "/../../secret.txt",
        "/json/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%2f..%2fsecret.txt",
        "/json%2f..%2f..%2fsecret.txt",
        "/..\\secret.txt",
        "/..%5csecret.txt",
        "/index.html%00.json",
        "/%00",
        "/leak.txt",
        "/etc/passwd",
        "/etc/hostname",
        "/.env",
        "/.git/config",
        "/%2eenv",
        "/json/%2e%2e/%2e%2e/secret.txt",
        "//etc/passwd",
        "/./index.html",
    ];
    for a in attempts {
        let r = curl(&site, a, &["--path-as-is"]).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{a} gave {} ({})",
            r.status,
            r.stderr
        );
        let t = r.text();
        assert!(
            !t.contains(secret) && !t.contains("root:"),
            "{a} leaked: {t}"
        );
        assert_eq!(r.header("x-difusor-cut"), Some("c1"), "{a}");
    }
    // The link that stays inside and ordinary files still work.
    assert_eq!(curl(&site, "/json/main.json", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_is_refused_and_1_2_and_1_3_accepted() {
    let site = site_with_cut("").await;
    let (ok, text) = https_support::openssl_handshakes(site.addr(), "-tls1_1").await;
    assert!(!ok, "TLS 1.1 was accepted:\n{text}");
    for v in ["-tls1_2", "-tls1_3"] {
        let (ok, text) = https_support::openssl_handshakes(site.addr(), v).await;
        assert!(ok, "{v} refused:\n{text}");
    }
    // The generated certificate: ECDSA P-256, its fingerprint is the one served.
    let fp = https_support::served_fingerprint(site.addr()).await;
    assert_eq!(fp, site.server.cert_fingerprint());
    let pem =
        std::fs::read_to_string(site.keys().join(difusor::web::tls::SELF_SIGNED_CERT)).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"));
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(site.keys().join(difusor::web::tls::SELF_SIGNED_CERT))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    // ALPN offers h2 and http/1.1.
    let (_, text) = https_support::openssl_handshakes(site.addr(), "-alpn h2,http/1.1").await;
    assert!(text.contains("ALPN protocol: h2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_are_reloaded_without_restart() {
    let pairs = tempfile::tempdir().unwrap();
    let (a, b) = (pairs.path().join("a"), pairs.path().join("b"));
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    difusor::web::tls::ensure_self_signed(&a, &names).unwrap();
    difusor::web::tls::ensure_self_signed(&b, &names).unwrap();
    let live = pairs.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let copy = |from: &std::path::Path| {
        // Like a renewal tool: new files renamed over the old ones.
        for (src, dst) in [
            (difusor::web::tls::SELF_SIGNED_KEY, "key.pem"),
            (difusor::web::tls::SELF_SIGNED_CERT, "chain.pem"),
        ] {
            let tmp = live.join(format!("{dst}.new"));
            std::fs::copy(from.join(src), &tmp).unwrap();
            std::fs::rename(&tmp, live.join(dst)).unwrap();
        }
    };
    copy(&a);
    let cfg = format!(
        "cert = \"{}\"\nkey = \"{}\"\ncert_poll_secs = 1\nreload_on_sighup = false",
        live.join("chain.pem").display(),
        live.join("key.pem").display()
    );
    let site = site_with_cut(&cfg).await;
    let first = https_support::served_fingerprint(site.addr()).await;
    assert_eq!(first, site.server.cert_fingerprint());
    // A configured (real) certificate gets HSTS.
    let r = curl_url(&live.join("chain.pem"), &site.url("/"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.stderr);
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );

    // A half-done renewal (certificate of b, key still a's) is not taken.
    std::fs::copy(
        b.join(difusor::web::tls::SELF_SIGNED_CERT),
        live.join("chain.pem"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(https_support::served_fingerprint(site.addr()).await, first);
    copy(&b);
    let mut now = String::new();
    for _ in 0..50 {
        now = https_support::served_fingerprint(site.addr()).await;
        if now != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(now, first, "the renewed certificate was not picked up");
    assert_eq!(now, site.server.cert_fingerprint());
    let r = curl_url(&live.join("chain.pem"), &site.url("/json/main.json"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.stderr);
}

/// Cut `id`'s files, all of which say which cut they belong to.
fn load_files(id: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "json/main.json",
            format!("{{\"cut\":\"{id}\",\"pad\":\"{}\"}}", id.repeat(40)).into_bytes(),
        ),
        ("index.html", format!("<p>{id}</p>").repeat(50).into_bytes()),
        // Above the 64 KiB in-memory limit of the test: served from the file handle (1.4 MB,
        // more than loopback buffers hold, so the slow reader's cut is read after deletion).
        (
            "datos/big.csv",
            format!("{id},123,456\n").repeat(100_000).into_bytes(),
        ),
    ]
}

fn body_is_of(body: &[u8], cut: &str) -> bool {
    let text = String::from_utf8_lossy(body);
    !text.is_empty() && text.contains(cut) && !text.replace(cut, "").contains("cut-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_never_mix_cuts_or_404_and_downloads_finish_from_their_cut() {
    let site = https_support::start_site_as(
        "in_memory_max_bytes = 65536\n[rate_limit]\nenabled = false",
        "cut-00",
        Some(&load_files("cut-00")),
    )
    .await;
    let site = Arc::new(site);
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (site, stop, requests) = (Arc::clone(&site), Arc::clone(&stop), Arc::clone(&requests));
        workers.push(tokio::spawn(async move {
            let mut c = Client::connect(site.addr(), &site.ca(), w % 2 == 1).await?;
            let paths = ["/json/main.json", "/", "/datos/big.csv"];
            let mut seen = std::collections::BTreeSet::new();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let path = paths[i % paths.len()];
                i += 1;
                let enc: &[(&str, &str)] = match i % 4 {
                    0 => &[("accept-encoding", "gzip")],
                    1 => &[("accept-encoding", "br")],
                    _ => &[],
                };
                let got = c.get(path, enc).await?;
                requests.fetch_add(1, Ordering::Relaxed);
                let cut = got.headers["x-difusor-cut"].to_str().unwrap().to_owned();
                if got.status != 200 {
                    return Err(format!("{path}: status {} from {cut}", got.status));
                }
                let mut body = Vec::new();
                match got.headers.get("content-encoding").map(|v| v.as_bytes()) {
                    Some(b"gzip") => {
                        flate2::read::GzDecoder::new(&got.body[..])
                            .read_to_end(&mut body)
                            .unwrap();
                    }
                    Some(b"br") => {
                        brotli::BrotliDecompress(&mut &got.body[..], &mut body).unwrap();
                    }
                    _ => body = got.body.to_vec(),
                }
                if !body_is_of(&body, &cut) {
                    return Err(format!("{path}: body does not belong to {cut}"));
                }
                seen.insert(cut);
            }
            Ok::<_, String>(seen)
        }));
    }
    // A slow download that spans many swaps, whose cut directory is deleted under it.
    let slow = {
        let site = Arc::clone(&site);
        tokio::spawn(async move {
            let mut c = Client::connect(site.addr(), &site.ca(), false).await?;
            let resp = c.send("/datos/big.csv", &[]).await?;
            let cut = resp.headers()["x-difusor-cut"].to_str().unwrap().to_owned();
            let mut body = resp.into_body();
            let mut got = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("slow body: {e}"))?;
                if let Some(d) = frame.data_ref() {
                    got.extend_from_slice(d);
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            Ok::<_, String>((cut, got))
        })
    };
    let publish_started = Instant::now();
    for n in 1..=24 {
        let id = format!("cut-{n:02}");
        let dir = site.make_cut(&id, &load_files(&id));
        site.publish(&id, &dir);
        site.wait_live(&id).await;
        // Retention: the cut before the previous one disappears from disk.
        if n >= 2 {
            let _ = std::fs::remove_dir_all(site.root().join(format!("cuts/cut-{:02}", n - 2)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(site.root().join("cuts/cut-00"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = std::collections::BTreeSet::new();
    for w in workers {
        let seen = w
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("worker failed: {e}"));
        all.extend(seen);
    }
    let (cut, body) = slow
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("slow download: {e}"));
    assert_eq!(
        body,
        load_files(&cut)[2].1,
        "the slow download must be its cut's file, whole"
    );
    let n = requests.load(Ordering::Relaxed);
    assert!(
        n > 200,
        "only {n} requests in {:?}",
        publish_started.elapsed()
    );
    assert!(all.len() >= 10, "saw only {} cuts: {all:?}", all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_that_fails_to_build_leaves_the_previous_one_live() {
    let site = site_with_cut("").await;
    site.publish("broken", &site.root().join("does-not-exist"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(site.live.load().cut_id(), Some("c0"));
    let r = curl(&site, "/json/main.json", &[]).await;
    assert_eq!(r.header("x-difusor-cut"), Some("c0"));
    site.go_live("c2", &site_files("c2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_silent_clients_are_cut_off_while_others_are_served() {
    let site = site_with_cut("header_read_timeout_secs = 1\ntls_handshake_timeout_secs = 1").await;
    // A TCP client that never starts TLS.
    let mut silent = tokio::net::TcpStream::connect(site.addr()).await.unwrap();
    // A TLS client that trickles a header line every 300 ms.
    let cfg = client::tls_config(&site.ca(), &[b"http/1.1"]);
    let mut slow = client::tls_connect(site.addr(), cfg).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        for i in 0..40 {
            if slow
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return started.elapsed();
            }
            let _ = slow.flush().await;
            match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {
                    // A 408-ish answer or close: either way, cut off.
                    return started.elapsed();
                }
                Err(_) => {}
            }
        }
        Duration::MAX
    });
    // Meanwhile a normal client is served.
    for _ in 0..3 {
        let r = curl(&site, "/json/main.json", &[]).await;
        assert_eq!(r.status, 200, "{}", r.stderr);
    }
    let cut_after = trickle.await.unwrap();
    assert!(
        cut_after < Duration::from_secs(4),
        "slowloris client kept for {cut_after:?}"
    );
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(4), silent.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "silent client not closed: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let site = site_with_cut("idle_timeout_secs = 1").await;
    for h2 in [true, false] {
        let mut idle = Client::connect(site.addr(), &site.ca(), h2).await.unwrap();
        let mut busy = Client::connect(site.addr(), &site.ca(), h2).await.unwrap();
        assert_eq!(idle.get("/", &[]).await.unwrap().status, 200);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2500) {
            let r = busy.get("/json/main.json", &[]).await;
            assert_eq!(
                r.map(|g| g.status).unwrap_or(0),
                200,
                "busy connection dropped (h2 {h2})"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for _ in 0..30 {
            if idle.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(idle.is_closed(), "idle connection still open (h2 {h2})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_cannot_share_the_port() {
    let site = site_with_cut("").await;
    let other = https_support::start_site_result(&format!("listen = \"{}\"", site.addr())).await;
    match other {
        Err(difusor::web::WebError::Listen { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a second server bound the same port"),
    }
    assert_eq!(curl(&site, "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let site = site_with_cut("max_connections_per_address = 2").await;
    let cfg = client::tls_config(&site.ca(), &[b"http/1.1"]);
    let _a = client::tls_connect(site.addr(), Arc::clone(&cfg))
        .await
        .unwrap();
    let _b = client::tls_connect(site.addr(), Arc::clone(&cfg))
        .await
        .unwrap();
    assert!(
        client::tls_connect(site.addr(), Arc::clone(&cfg))
            .await
            .is_err()
    );
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(client::tls_connect(site.addr(), cfg).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let site = site_with_cut("[rate_limit]\nrequests_per_sec = 0.5\nburst = 3").await;
    let mut c = Client::connect(site.addr(), &site.ca(), false)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("/json/main.json", &[]).await.unwrap().status, 200);
    }
    let r = c.get("/json/main.json", &[]).await.unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "2");
    assert_eq!(r.headers["x-difusor-cut"], "c0");
    let r = curl(&site, "/", &[]).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_status_endpoints() {
    let site = site_with_cut("").await;
    let r = curl(&site, "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
    assert_eq!(r.header("x-difusor-cut"), Some("c0"));
    site.go_live("c1", &site_files("c1")).await;
    let r = curl(&site, "/.well-known/difusor/status", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["cut_id"], "c1");
    assert_eq!(v["packages_in_history"], 3);
    assert_eq!(v["cut_time"], "2024-06-02T20:15:00-06:00");
    assert!(v["published_at"].is_string());
    let since = v["seconds_since_last_cut"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&since), "{since}");
    assert_eq!(v["waiting_for_first_cut"], false);
    // The hook later issues use for staleness.
    site.server.set_health_probe(Some(Box::new(|_snap| {
        Err("no cut for 20 minutes".to_owned())
    })));
    let r = curl(&site, "/healthz", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no cut for 20 minutes"));
    site.server.set_health_probe(None);
    assert_eq!(curl(&site, "/healthz", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request() {
    let site = site_with_cut("").await;
    curl(
        &site,
        "/json/main.json",
        &["-A", "prueba/1.0", "-e", "https://ine.mx/"],
    )
    .await;
    curl(&site, "/nope", &[]).await;
    curl(&site, "/", &["-X", "DELETE"]).await;
    let date = time::OffsetDateTime::now_utc().date();
    let file = site.logs().join(format!(
        "access-{:04}-{:02}-{:02}.log",
        date.year(),
        u8::from(date.month()),
        date.day()
    ));
    let mut lines = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lines = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= 3 {
            break;
        }
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["method"], "GET");
    assert_eq!(v[0]["path"], "/json/main.json");
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[0]["bytes"], main_json("c0").len());
    assert_eq!(v[0]["user_agent"], "prueba/1.0");
    assert_eq!(v[0]["referer"], "https://ine.mx/");
    assert_eq!(v[0]["cut"], "c0");
    assert_eq!(v[0]["client"], "127.0.0.1");
    assert!(v[0]["time"].is_string() && v[0]["duration_ms"].is_number());
    assert_eq!(v[1]["status"], 404);
    assert_eq!(v[2]["status"], 405);
    assert_eq!(site.server.dropped_log_lines(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_to_https() {
    let site = site_with_cut("http_listen = \"127.0.0.1:0\"").await;
    let port = site.server.http_addr.unwrap().port();
    let url = format!("http://127.0.0.1:{port}/json/main.json?x=1");
    let r = curl_url(&site.ca(), &url, &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(
            format!(
                "https://127.0.0.1:{}/json/main.json?x=1",
                site.addr().port()
            )
            .as_str()
        )
    );
    assert_eq!(r.header("x-difusor-cut"), Some("c0"));
    // Following it lands on the file.
    let r = curl_url(&site.ca(), &url, &["-L"]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, main_json("c0"));
    // Load balancers can probe over plain HTTP.
    let r = curl_url(&site.ca(), &format!("http://127.0.0.1:{port}/healthz"), &[]).await;
    assert_eq!(r.status, 200);
    // A hostile Host header cannot steer the redirect.
    let r = curl_url(&site.ca(), &url, &["-H", "Host: evil.example/x"]).await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_serves_behind_a_trusted_proxy_with_the_forwarded_client() {
    let site = site_with_cut(
        "http_listen = \"127.0.0.1:0\"\nhttp_mode = \"serve\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n[rate_limit]\nrequests_per_sec = 0.1\nburst = 2",
    )
    .await;
    let port = site.server.http_addr.unwrap().port();
    let url = format!("http://127.0.0.1:{port}/json/main.json");
    let r = curl_url(
        &site.ca(),
        &url,
        &["-H", "X-Forwarded-For: 6.6.6.6, 203.0.113.5"],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, main_json("c0"));
    // Each forwarded client has its own bucket: the proxy's address is not throttled as one.
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        for _ in 0..2 {
            let r = curl_url(
                &site.ca(),
                &url,
                &["-H", &format!("CF-Connecting-IP: {ip}")],
            )
            .await;
            assert_eq!(r.status, 200, "{ip}");
        }
        let r = curl_url(
            &site.ca(),
            &url,
            &["-H", &format!("CF-Connecting-IP: {ip}")],
        )
        .await;
        assert_eq!(r.status, 429, "{ip}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs: String = std::fs::read_dir(site.logs())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(logs.contains("\"client\":\"203.0.113.5\""), "{logs}");
    assert!(logs.contains("\"client\":\"198.51.100.2\""), "{logs}");
}

/// Screenshots `url` at 1280×900 (Chromium runs on a blocking thread).
async fn screenshot(url: &str, name: &'static str) -> chromium::Shot {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || chromium::screenshot(&url, name, 1280, 900))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_the_site_and_the_waiting_page() {
    let site = site_with_cut("").await;
    let shot = screenshot(&site.url("/"), "https-home.png").await;
    // The page's purple background, not a blank white or an error page.
    let purple = shot.count(|p| p[0] > 0x50 && p[0] < 0x90 && p[1] < 0x50 && p[2] > 0x70);
    let total = (shot.width * shot.height) as usize;
    assert!(
        purple > total / 4,
        "only {purple} of {total} pixels are the page's colour"
    );
    // The browser's requests are in the access log (the stylesheet was fetched too).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs: String = std::fs::read_dir(site.logs())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(logs.contains("/css/site.css"), "{logs}");

    // Before the first cut: the waiting page (light background, a white card with text).
    let waiting = start_site("", None).await;
    let shot = screenshot(&waiting.url("/"), "https-waiting.png").await;
    let white = shot.count(|p| *p == [255, 255, 255]);
    let dark = shot.count(|p| p[0] < 0x60 && p[1] < 0x60);
    assert!(white > 10_000, "no card: {white} white pixels");
    assert!(dark > 500, "no text: {dark} dark pixels");
}
