//! Operations, driven for real: OpenSSH `sftp` pushes, `curl` reads the site and the admin
//! listener, the `difusor` binary answers `status` and `incidents`.
//!
//! Behaviours covered:
//! - `/metrics` on the admin listener is the OpenMetrics text format; scraped and parsed after
//!   real traffic, every family the issue lists is there with the values the traffic implies
//!   (packages by result and reason, SSH connections and auth failures, upload bytes and rate,
//!   pipeline steps, HTTP requests by status and cache class, bytes sent, TLS handshakes,
//!   rate-limited requests, seconds since the last cut, live cut time, disk free)
//! - the status page (rendered by headless Chromium) and `/status.json` show the live cut, the last packages with their
//!   result, incidents, traffic and disk; package names are escaped
//! - staleness with a short period: `cut-late` (warning) after one missed period,
//!   `cuts-missed` (critical) after three, `/healthz` 503 on the public and admin listeners
//!   while critical, `cuts-resumed` when a cut arrives; health samples record it
//! - outside the publication window the watch is quiet
//! - disk too small for the history the institutes require: `disk-low`, and `difusor status`
//!   warns and exits 1
//! - a certificate near expiry raises `certificate-expiring`
//! - `difusor incidents [--since]` lists incidents and open conditions
//! - conditions a previous run left open are closed by the next run once they cleared

mod chromium;
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::packages::{self, CutTime};
use common::*;

async fn server(extra: &str) -> (TestServer, ClientKey) {
    start_publisher_server(extra, |_| {}).await
}

async fn push(srv: &TestServer, key: &ClientKey, name: &str, bytes: &[u8]) -> std::process::Output {
    put_as_institute(srv, key, name, bytes).await
}

/// `(status, body)` of a GET.
async fn get(url: &str) -> (u16, String) {
    let o = curl(&["-k", "-w", "\n%{http_code}", url]).await;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn admin(srv: &TestServer) -> SocketAddr {
    srv.running.admin_addr.expect("admin listener on")
}

fn https(srv: &TestServer) -> String {
    format!("https://{}", srv.running.web.https_addr)
}

/// A parsed exposition: `name{labels}` → value, plus the `# TYPE` of each family.
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

/// Parses the OpenMetrics/Prometheus text format strictly enough to catch a broken line.
fn parse_exposition(text: &str) -> Exposition {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "nothing may follow # EOF: {line:?}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        // name{labels} value  |  name value
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
            let labels = &series[name_end + 1..series.len() - 1];
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                assert!(!k.is_empty(), "{line:?}");
                let _ = v;
            }
        }
        let v: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.insert(series.to_owned(), v);
    }
    assert!(saw_eof, "the exposition ends with # EOF");
    Exposition { samples, types }
}

impl Exposition {
    /// The sum of every series starting with `prefix`.
    fn sum(&self, prefix: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}; have: {:#?}", self.samples.keys()))
    }
}

async fn scrape(srv: &TestServer) -> Exposition {
    let o = curl(&["-D", "-", &format!("http://{}/metrics", admin(srv))]).await;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").expect("headers then body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    parse_exposition(body)
}

fn incidents(srv: &TestServer) -> Vec<serde_json::Value> {
    std::fs::read_to_string(srv.root().join("data/state/incidents.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds(srv: &TestServer) -> Vec<String> {
    incidents(srv)
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn difusor(srv: &TestServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_difusor"))
        .args(args)
        .args([
            "--config",
            srv.root().join("difusor.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

const CUT: CutTime = CutTime {
    y: 2024,
    mo: 6,
    d: 2,
    h: 20,
    mi: 0,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_page_and_status_json_reflect_real_traffic() {
    let (srv, key) = server("[web.rate_limit]\nrequests_per_sec = 1.0\nburst = 3\n").await;
    // A published cut, a rejected package, a failed login.
    let zip = packages::zip_bytes(&packages::full_site(&CUT, 1));
    let o = push(&srv, &key, &CUT.name(".zip"), &zip).await;
    assert!(o.status.success(), "{}", text(&o));
    let bad_name = "20240602_2015_PREP_bad.zip";
    let o = push(&srv, &key, bad_name, b"PK\x03\x04 this is not a zip").await;
    assert!(!o.status.success());
    assert!(text(&o).contains("package rejected"), "{}", text(&o));
    let stranger = ssh_keygen(&srv.root().join("keys"), "stranger", &["-t", "ed25519"]);
    let o = sftp(srv.addr, "institute", &stranger.private, "ls\n", &[]).await;
    assert!(!o.status.success());
    // Site traffic: main.json (no-store), the index, a 404, then past the rate limit.
    let base = https(&srv);
    wait_for("the cut served", Duration::from_secs(10), async || {
        get(&format!("{base}/json/main.json")).await.0 == 200
    })
    .await;
    assert_eq!(get(&format!("{base}/")).await.0, 200);
    let mut limited = 0;
    for _ in 0..6 {
        if get(&format!("{base}/no/such/page")).await.0 == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "the rate limit answered 429");

    let m = scrape(&srv).await;
    assert_eq!(
        m.types.get("difusor_packages").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        m.get("difusor_packages_total{result=\"accepted\",reason=\"published\"}"),
        1.0
    );
    assert_eq!(
        m.sum("difusor_packages_total{result=\"rejected\""),
        1.0,
        "one rejection, labelled by reason"
    );
    assert!(m.get("difusor_ssh_connections_total") >= 3.0);
    assert!(m.get("difusor_ssh_auth_failures_total") >= 1.0);
    assert_eq!(m.get("difusor_ssh_bans_total"), 0.0);
    assert!(m.get("difusor_upload_bytes_total") >= zip.len() as f64);
    assert!(m.get("difusor_upload_throughput_mb_per_second_count") >= 2.0);
    assert!(m.get("difusor_upload_size_bytes_count") >= 2.0);
    assert_eq!(
        m.types
            .get("difusor_pipeline_step_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    for step in ["verify-extract", "sync-cut", "archive", "go-live"] {
        assert_eq!(
            m.get(&format!(
                "difusor_pipeline_step_seconds_count{{step=\"{step}\"}}"
            )),
            1.0,
            "{step}"
        );
    }
    assert!(m.get("difusor_http_requests_total{code=\"200\",cache=\"no-store\"}") >= 1.0);
    assert!(m.sum("difusor_http_requests_total{code=\"429\"") >= 1.0);
    assert!(m.get("difusor_http_rate_limited_total") >= 1.0);
    assert!(m.get("difusor_http_response_seconds_count") >= 4.0);
    assert!(m.get("difusor_http_sent_bytes_total") > 0.0);
    assert!(m.get("difusor_tls_handshakes_total{result=\"ok\"}") >= 4.0);
    let age = m.get("difusor_since_last_cut_seconds");
    assert!(
        (0.0..120.0).contains(&age),
        "seconds since the last cut: {age}"
    );
    assert_eq!(
        m.get("difusor_live_cut_time_seconds"),
        CUT.unix_time() as f64,
        "cut time from the name (-06:00 by default)"
    );
    assert!(m.get("difusor_disk_free_bytes") > 0.0);
    assert!(m.get("difusor_history_bytes") >= zip.len() as f64);
    assert_eq!(m.get("difusor_packages_in_history"), 1.0);
    assert_eq!(m.get("difusor_staleness_level"), 0.0);
    let _ = m.get("difusor_http_open_connections");

    // The status page: what an operator needs, escaped.
    let live = srv.running.pipeline.store().live().unwrap();
    let (code, page) = get(&format!("http://{}/", admin(&srv))).await;
    assert_eq!(code, 200);
    assert!(page.contains("Cuts on time"), "{page}");
    assert!(page.contains(&live));
    assert!(page.contains("published") && page.contains("rejected"));
    assert!(page.contains(bad_name));
    assert!(page.contains("package-rejected"));
    assert!(page.contains("req/s") && page.contains("free"));
    let (code, json) = get(&format!("http://{}/status.json", admin(&srv))).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["live"]["cut_id"], live.as_str());
    assert_eq!(v["staleness"]["level"], "ok");
    assert_eq!(v["last_packages"][0]["result"], "rejected");
    assert_eq!(v["last_packages"][1]["result"], "published");
    assert!(v["traffic"]["requests_total"].as_u64().unwrap() >= 4);
    assert!(v["disk"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(get(&format!("http://{}/healthz", admin(&srv))).await.0, 200);
    // The page as a browser shows it: the green "on time" banner across the top.
    let url = format!("http://{}/", admin(&srv));
    let shot = tokio::task::spawn_blocking(move || {
        chromium::screenshot(&url, "admin-status.png", 1280, 1000)
    })
    .await
    .unwrap();
    let banner = shot.pixels[..(1280 * 40) as usize]
        .iter()
        .filter(|p| {
            p.iter()
                .zip([0x1e, 0x7d, 0x3a])
                .all(|(a, b)| a.abs_diff(b) < 8)
        })
        .count();
    assert!(banner > 1280 * 20, "the green banner: {banner} pixels");
    assert!(shot.distinct_colours() > 50, "text and tables drawn");

    // The terminal views.
    let o = difusor(&srv, &["status"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&live) && out.contains("on time"), "{out}");
    assert!(
        out.contains("rejected") && out.contains("package-rejected"),
        "{out}"
    );
    let o = difusor(&srv, &["incidents"]);
    assert!(text(&o).contains("package-rejected"), "{}", text(&o));
    let o = difusor(&srv, &["incidents", "--since", "2099-01-01"]);
    assert!(
        text(&o).contains("no incidents in that span"),
        "{}",
        text(&o)
    );
    let o = difusor(&srv, &["incidents", "--since", "1h", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["kind"], "package-rejected");
    let o = difusor(&srv, &["incidents", "--since", "tomorrow"]);
    assert!(!o.status.success() && text(&o).contains("--since"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_cuts_raise_warning_then_critical_and_healthz_fails_until_cuts_resume() {
    let (srv, key) =
        server("[monitor]\ncut_period_secs = 3\ngrace_secs = 0\nhealth_sample_secs = 1\nkeep_history_bytes = 0\nmin_free_bytes = 0\n").await;
    let base = https(&srv);
    let adm = admin(&srv);
    // Before any cut and without a window: nothing is expected.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(kinds(&srv).is_empty(), "{:?}", kinds(&srv));
    let o = push(
        &srv,
        &key,
        &CUT.name(".zip"),
        &packages::zip_bytes(&packages::full_site(&CUT, 1)),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let pushed = Instant::now();
    wait_for("cut-late", Duration::from_secs(8), async || {
        kinds(&srv).contains(&"cut-late".to_owned())
    })
    .await;
    assert!(
        pushed.elapsed() >= Duration::from_millis(2500),
        "not before one period"
    );
    assert_eq!(
        get(&format!("{base}/healthz")).await.0,
        200,
        "a warning keeps /healthz up"
    );
    wait_for("cuts-missed", Duration::from_secs(12), async || {
        kinds(&srv).contains(&"cuts-missed".to_owned())
    })
    .await;
    assert!(
        pushed.elapsed() >= Duration::from_millis(8500),
        "three periods"
    );
    let (code, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("3 expected cut(s) missed"), "{body}");
    assert_eq!(get(&format!("http://{adm}/healthz")).await.0, 503);
    let (_, page) = get(&format!("http://{adm}/")).await;
    assert!(page.contains("CRITICAL"), "{page}");
    let o = difusor(&srv, &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("CRITICAL"), "{}", text(&o));
    let m = scrape(&srv).await;
    assert_eq!(m.get("difusor_staleness_level"), 2.0);
    let health = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(srv.root().join("data/state/health.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_for(
        "an unhealthy health sample",
        Duration::from_secs(3),
        async || health().iter().any(|s| s["ok"] == false),
    )
    .await;
    let all = incidents(&srv);
    let late = all.iter().find(|i| i["kind"] == "cut-late").unwrap();
    assert_eq!(late["severity"], "warning");
    let missed = all.iter().find(|i| i["kind"] == "cuts-missed").unwrap();
    assert_eq!(missed["severity"], "critical");

    // A cut arrives: resumed, healthy again.
    let next = CUT.plus_minutes(15);
    let o = push(
        &srv,
        &key,
        &next.name(".zip"),
        &packages::zip_bytes(&packages::increment(&next, 1)),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    wait_for("cuts-resumed", Duration::from_secs(5), async || {
        kinds(&srv).contains(&"cuts-resumed".to_owned())
    })
    .await;
    let resumed = incidents(&srv)
        .into_iter()
        .find(|i| i["kind"] == "cuts-resumed")
        .unwrap();
    assert_eq!(resumed["severity"], "info");
    assert!(resumed["reason"].as_str().unwrap().contains("went live"));
    let o = difusor(&srv, &["incidents"]);
    let listed = text(&o);
    assert!(
        listed.contains("cuts-missed") && listed.contains("cuts-resumed"),
        "{listed}"
    );
    // Health samples say when the site was unhealthy.
    let samples = health();
    assert!(samples.len() >= 8, "one a second: {}", samples.len());
    assert!(samples.iter().all(|s| s["interval_secs"] == 1));
    let unhealthy = samples.iter().find(|s| s["ok"] == false).unwrap();
    assert_eq!(unhealthy["level"], "critical");
    assert!(unhealthy["reason"].as_str().unwrap().contains("missed"));
    assert!(samples.first().unwrap()["ok"] == true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_publication_window_the_watch_is_quiet() {
    let start = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    let start = start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (srv, key) = server(&format!(
        "[monitor]\ncut_period_secs = 1\ngrace_secs = 0\nwindow_start = \"{start}\"\nkeep_history_bytes = 0\nmin_free_bytes = 0\n"
    ))
    .await;
    let o = push(
        &srv,
        &key,
        &CUT.name(".zip"),
        &packages::zip_bytes(&packages::full_site(&CUT, 1)),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(kinds(&srv).is_empty(), "{:?}", kinds(&srv));
    let (_, page) = get(&format!("http://{}/", admin(&srv))).await;
    assert!(page.contains("Outside the publication window"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_too_small_for_the_required_history_is_an_incident_and_status_warns() {
    // A requirement no test machine meets: 1 EB of history.
    let (srv, _key) = server("[monitor]\nkeep_history_bytes = 1000000000000000000\n").await;
    wait_for("disk-low", Duration::from_secs(5), async || {
        kinds(&srv).contains(&"disk-low".to_owned())
    })
    .await;
    let i = incidents(&srv)
        .into_iter()
        .find(|i| i["kind"] == "disk-low")
        .unwrap();
    assert_eq!(i["severity"], "warning");
    assert!(
        i["reason"].as_str().unwrap().contains("would not fit"),
        "{i}"
    );
    let o = difusor(&srv, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("would not fit"), "{}", text(&o));
    let (_, page) = get(&format!("http://{}/", admin(&srv))).await;
    assert!(page.contains("would NOT fit"), "{page}");
    let o = difusor(&srv, &["incidents"]);
    assert!(text(&o).contains("still open"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_expiry_is_an_incident() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let o = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "3", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (srv, _key) = server(&format!(
        "[web]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ))
    .await;
    wait_for("certificate-expiring", Duration::from_secs(5), async || {
        kinds(&srv).contains(&"certificate-expiring".to_owned())
    })
    .await;
    let i = incidents(&srv)
        .into_iter()
        .find(|i| i["kind"] == "certificate-expiring")
        .unwrap();
    assert_eq!(i["severity"], "warning");
    assert!(i["reason"].as_str().unwrap().contains("days left"), "{i}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_left_open_by_a_previous_run_are_closed_when_they_cleared() {
    // A previous run recorded a late cut and a low disk, then stopped before they cleared.
    let (srv, _key) = start_publisher_server("", |dir| {
            std::fs::create_dir_all(dir.join("data/state")).unwrap();
            let line = |kind: &str, severity: &str| {
                format!(
                    "{{\"time\":\"2024-06-02T20:30:00Z\",\"severity\":\"{severity}\",\"kind\":\"{kind}\",\"package\":null,\"uploader\":null,\"reason\":\"before the restart\"}}\n"
                )
            };
            std::fs::write(
                dir.join("data/state/incidents.jsonl"),
                line("cut-late", "warning") + &line("disk-low", "warning"),
            )
            .unwrap();
    })
    .await;
    wait_for(
        "the conditions closed",
        Duration::from_secs(10),
        async || {
            let k = kinds(&srv);
            k.contains(&"cuts-resumed".to_owned()) && k.contains(&"disk-ok".to_owned())
        },
    )
    .await;
    let o = difusor(&srv, &["incidents"]);
    assert!(!text(&o).contains("still open"), "{}", text(&o));
    // And nothing is reopened by a restart that finds them closed.
    assert_eq!(kinds(&srv).len(), 4, "{:?}", kinds(&srv));
}
