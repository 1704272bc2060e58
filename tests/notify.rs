//! Notifiers, end to end: a real difusor fed by real `sftp` uploads, notifying a local
//! scripted HTTP receiver (`common::receiver`) or running shell-script hooks.
//!
//! Behaviours covered:
//! - webhook: the `cut-published` body (cut id, sha256, counts incl. changed files) and the
//!   `incident` body for a rejected package, both signed (`X-Difusor-Signature` verified here
//!   with the secret)
//! - retries: 500/503 then 200 is exactly 3 requests and no incident; `429 Retry-After: 1` is
//!   honoured; a 400 is not retried and is a `notify-failed`, closed by `notify-recovered`
//! - a hanging webhook delays neither the uploader's `put` nor the next cut going live over
//!   HTTPS; it ends in `notify-failed` after its retries, then `notify-recovered`, and the
//!   webhook is never told about its own failure
//! - Cloudflare: `/client/v4/zones/<zone>/purge_cache` with the token from `token_file`,
//!   batches of ≤ 30 URLs covering exactly the changed files (and `/` for `index.html`);
//!   `purge_everything` (also when a cut changed more URLs than `purge_everything_above`); a
//!   `"success": false` answer is retried; a failed purge is one incident
//! - command hook: its `DIFUSOR_*` environment and changed-paths list; a hook sleeping past its
//!   timeout is killed with its whole process group and recorded as a failure
//! - stats and the no-loop rule, with the library API directly
//! - config errors name their key

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::packages::{self, CutTime};
use common::receiver::{Receiver, Reply};
use common::*;

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

async fn server(extra: &str, setup: impl FnOnce(&Path)) -> (TestServer, ClientKey) {
    start_publisher_server(extra, setup).await
}

/// A server whose Cloudflare notifier `cdn` calls `api_base` with `token` (in
/// `keys/cloudflare.token`), plus `options` (TOML lines of that `[[notify]]`).
async fn cloudflare_server(api_base: &str, token: &str, options: &str) -> (TestServer, ClientKey) {
    let extra = format!(
        "[[notify]]\ntype = \"cloudflare\"\nname = \"cdn\"\nzone_id = \"{ZONE}\"\ntoken_file = \"keys/cloudflare.token\"\napi_base = \"{api_base}\"\n{options}{QUICK}"
    );
    server(&extra, |dir| {
        std::fs::write(dir.join("keys/cloudflare.token"), token).unwrap();
    })
    .await
}

/// Uploads `bytes` as `name` with real sftp; returns how long the `put` took.
async fn push(srv: &TestServer, key: &ClientKey, name: &str, bytes: &[u8]) -> Duration {
    let started = Instant::now();
    let o = put_as_institute(srv, key, name, bytes).await;
    let took = started.elapsed();
    assert!(o.status.success(), "push {name}: {}", text(&o));
    took
}

/// Uploads a package the pipeline refuses (the `put` fails).
async fn push_rejected(srv: &TestServer, key: &ClientKey, name: &str) {
    let o = put_as_institute(srv, key, name, b"this is not a zip archive").await;
    assert!(
        !o.status.success(),
        "a bad package was accepted: {}",
        text(&o)
    );
}

fn live_id(srv: &TestServer) -> String {
    srv.running.pipeline.store().live().expect("a live cut")
}

fn incidents(srv: &TestServer) -> Vec<serde_json::Value> {
    std::fs::read_to_string(srv.root().join("data/state/incidents.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn incidents_of(srv: &TestServer, kind: &str) -> Vec<serde_json::Value> {
    incidents(srv)
        .into_iter()
        .filter(|i| i["kind"] == kind)
        .collect()
}

/// Waits until `data/state/incidents.jsonl` has `n` incidents of `kind`.
async fn wait_incidents(
    srv: &TestServer,
    kind: &str,
    n: usize,
    within: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let found = incidents_of(srv, kind);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} {kind} incident(s) within {within:?}; incidents: {:#?}",
            incidents(srv)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The cut the HTTPS server answers with (`X-Difusor-Cut` of `/`).
async fn served_cut(srv: &TestServer) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-"])
        .arg("--cacert")
        .arg(&srv.running.web.tls.cert_path)
        .arg(format!(
            "https://127.0.0.1:{}/",
            srv.running.web.https_addr.port()
        ))
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-difusor-cut")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no X-Difusor-Cut: {}", String::from_utf8_lossy(&out.stderr)))
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An RFC 3339 time from JSON.
fn instant(v: &serde_json::Value) -> time::OffsetDateTime {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn cut(mi: u8) -> CutTime {
    CutTime::new(2024, 6, 2, 20, mi)
}

/// A small site: `index.html`, `dip/index.html`, `css/a b.css` and `datos/d000.json` …
/// `datos/d{n-1}.json`, every file's content tagged with `version`.
fn small_site(n: usize, version: u32) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "index.html".to_owned(),
            format!("<h1>v{version}</h1>").into_bytes(),
        ),
        (
            "dip/index.html".to_owned(),
            format!("<h2>v{version}</h2>").into_bytes(),
        ),
        ("css/a b.css".to_owned(), b"body{}".to_vec()),
    ];
    for i in 0..n {
        files.push((
            format!("datos/d{i:03}.json"),
            format!("{{\"i\":{i},\"v\":{version}}}").into_bytes(),
        ));
    }
    files
}

const QUICK: &str = "timeout_secs = 5\nretry_backoff_ms = 50\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bodies_for_a_cut_and_an_incident_are_signed() {
    let recv = Receiver::start(vec![], Reply::status(204)).await;
    let extra = format!(
        "[[notify]]\ntype = \"webhook\"\nname = \"newsroom\"\nurl = \"{}\"\nsecret_file = \"keys/webhook.secret\"\n{QUICK}",
        recv.url("/hooks/difusor?k=1")
    );
    let (srv, key) = server(&extra, |dir| {
        std::fs::write(dir.join("keys/webhook.secret"), "s3cret-key\n").unwrap();
    })
    .await;

    let full = packages::full_site(&cut(0), 1);
    let full_zip = packages::zip_bytes(&full);
    let name1 = cut(0).name(".zip");
    push(&srv, &key, &name1, &full_zip).await;
    let id1 = live_id(&srv);
    let r = recv.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hooks/difusor?k=1");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.header("user-agent").unwrap().starts_with("difusor/"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-difusor-event"), Some("cut-published"));
    assert_eq!(
        r.header("x-difusor-signature").unwrap(),
        format!("sha256={}", hmac_hex("s3cret-key", &r.body))
    );
    let b = r.json();
    assert_eq!(b["event"], "cut-published");
    assert_eq!(b["cut_id"], id1.as_str());
    assert_eq!(b["package"], name1.as_str());
    assert_eq!(b["sha256"], sha256_hex(&full_zip).as_str());
    assert_eq!(b["size"], full_zip.len() as u64);
    assert_eq!(b["mode"], "increment");
    assert_eq!(
        instant(&b["cut_time"]),
        time::macros::datetime!(2024-06-03 02:00 UTC)
    );
    assert!(b["published_at"].is_string(), "{b}");
    let c = &b["counts"];
    assert_eq!(c["files"], full.len() as u64, "{b}");
    assert!(c["entries"].as_u64().unwrap() >= full.len() as u64, "{b}");
    assert!(c["uncompressed_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        c["changed"],
        full.len() as u64,
        "first cut: every file is new: {b}"
    );
    assert_eq!(c["removed"], 0);
    assert_eq!(c["packages_in_history"], 1);

    // An increment: `changed` counts exactly the files whose bytes differ.
    let before: BTreeMap<String, Vec<u8>> = full.iter().cloned().collect();
    let inc = packages::increment(&cut(15), 1);
    let expected_changed = inc
        .iter()
        .filter(|(p, bytes)| before.get(p) != Some(bytes))
        .count();
    assert!(expected_changed > 0 && expected_changed <= inc.len());
    push(
        &srv,
        &key,
        &cut(15).name(".zip"),
        &packages::zip_bytes(&inc),
    )
    .await;
    let r = recv.wait_for(2, Duration::from_secs(10)).await.remove(1);
    let b = r.json();
    assert_eq!(b["cut_id"], live_id(&srv).as_str());
    assert_eq!(b["previous_cut_id"], id1.as_str());
    assert_eq!(b["counts"]["changed"], expected_changed as u64, "{b}");
    assert_eq!(b["counts"]["removed"], 0);
    assert_eq!(b["counts"]["packages_in_history"], 2);

    // A rejected package: an incident webhook, signed too.
    let bad = cut(30).name(".zip");
    push_rejected(&srv, &key, &bad).await;
    let r = recv.wait_for(3, Duration::from_secs(10)).await.remove(2);
    assert_eq!(r.header("x-difusor-event"), Some("incident"));
    assert_eq!(
        r.header("x-difusor-signature").unwrap(),
        format!("sha256={}", hmac_hex("s3cret-key", &r.body))
    );
    let b = r.json();
    assert_eq!(b["event"], "incident");
    assert_eq!(b["kind"], "package-rejected");
    assert_eq!(b["severity"], "warning");
    assert_eq!(b["package"], bad.as_str());
    assert!(b["reason"].as_str().is_some_and(|r| !r.is_empty()), "{b}");
    assert!(b["time"].is_string());
    for k in ["uploader", "subject"] {
        assert!(b.get(k).is_some(), "{k} missing: {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_server_errors_honours_retry_after_and_gives_up_on_4xx() {
    let recv = Receiver::start(
        vec![Reply::status(500), Reply::status(503)],
        Reply::status(200),
    )
    .await;
    let extra = format!(
        "[[notify]]\ntype = \"webhook\"\nname = \"newsroom\"\nurl = \"{}\"\nevents = [\"cut-published\"]\nretries = 5\n{QUICK}",
        recv.url("/hook")
    );
    let (srv, key) = server(&extra, |_| {}).await;

    push(
        &srv,
        &key,
        &cut(0).name(".zip"),
        &packages::zip_bytes(&small_site(2, 1)),
    )
    .await;
    let got = recv.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        recv.count(),
        3,
        "500, 503, then 200: three requests, no more"
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "every attempt sends the same body"
    );
    assert!(incidents_of(&srv, "notify-failed").is_empty());

    // 429 with Retry-After: 1 waits a second (the back-off alone would be 50 ms).
    recv.script(vec![
        Reply::status(429).with_header("retry-after", "1"),
        Reply::status(200),
    ]);
    push(
        &srv,
        &key,
        &cut(15).name(".zip"),
        &packages::zip_bytes(&small_site(2, 2)),
    )
    .await;
    let got = recv.wait_for(5, Duration::from_secs(10)).await;
    let gap = got[4].at.duration_since(got[3].at);
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {gap:?}"
    );
    assert!(gap < Duration::from_secs(5), "{gap:?}");

    // A 400 cannot get better: one request, then notify-failed for that cut's package.
    recv.script(vec![Reply::status(400)]);
    let name3 = cut(30).name(".zip");
    push(&srv, &key, &name3, &packages::zip_bytes(&small_site(2, 3))).await;
    let failed = wait_incidents(&srv, "notify-failed", 1, Duration::from_secs(10)).await;
    assert_eq!(recv.count(), 6, "a 400 is not retried");
    assert_eq!(failed[0]["subject"], "newsroom");
    assert_eq!(failed[0]["severity"], "warning");
    assert_eq!(failed[0]["package"], name3.as_str());
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("400") && reason.contains("status 400"),
        "{reason}"
    );
    assert!(
        !reason.contains("/hook"),
        "the URL's path is not shown: {reason}"
    );

    // The next delivery works: notify-recovered.
    push(
        &srv,
        &key,
        &cut(45).name(".zip"),
        &packages::zip_bytes(&small_site(2, 4)),
    )
    .await;
    let rec = wait_incidents(&srv, "notify-recovered", 1, Duration::from_secs(10)).await;
    assert_eq!(rec[0]["subject"], "newsroom");
    assert_eq!(rec[0]["severity"], "info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_delays_nothing_then_fails_and_recovers() {
    // The first two requests (cut 1 and its one retry) hang; then the receiver answers.
    let recv = Receiver::start(vec![Reply::Hang, Reply::Hang], Reply::status(200)).await;
    let extra = format!(
        "[[notify]]\ntype = \"webhook\"\nname = \"newsroom\"\nurl = \"{}\"\nmin_severity = \"info\"\ntimeout_secs = 4\nretries = 1\nretry_backoff_ms = 100\n",
        recv.url("/hook")
    );
    let (srv, key) = server(&extra, |_| {}).await;

    let name1 = cut(0).name(".zip");
    push(&srv, &key, &name1, &packages::zip_bytes(&small_site(3, 1))).await;
    let id1 = live_id(&srv);
    recv.wait_for(1, Duration::from_secs(10)).await;

    // While the webhook hangs on cut 1, cut 2 is pushed and goes live at once.
    let took = push(
        &srv,
        &key,
        &cut(15).name(".zip"),
        &packages::zip_bytes(&small_site(3, 2)),
    )
    .await;
    let id2 = live_id(&srv);
    assert_ne!(id1, id2);
    assert_eq!(served_cut(&srv).await, id2, "cut 2 is served over HTTPS");
    assert_eq!(
        recv.count(),
        1,
        "cut 2 went live while the webhook was still hanging on cut 1"
    );
    assert!(incidents_of(&srv, "notify-failed").is_empty());
    assert!(took < Duration::from_secs(4), "put took {took:?}");

    // After the timeout and its one retry: notify-failed for cut 1.
    let failed = wait_incidents(&srv, "notify-failed", 1, Duration::from_secs(15)).await;
    assert_eq!(failed[0]["subject"], "newsroom");
    assert_eq!(failed[0]["package"], name1.as_str());
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("timed out") && reason.contains("2 attempts"),
        "{reason}"
    );

    // Cut 2's notification is delivered next (the receiver answers now): recovered.
    let rec = wait_incidents(&srv, "notify-recovered", 1, Duration::from_secs(10)).await;
    assert_eq!(rec[0]["subject"], "newsroom");
    // The operator's status page and /status.json show the notifier and its counters.
    let admin = srv.running.admin_addr.expect("admin listener on");
    let o = curl(&["-sS", &format!("http://{admin}/status.json")]).await;
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = &status["notifiers"][0];
    assert_eq!(n["name"], "newsroom", "{status}");
    assert_eq!(n["kind"], "webhook");
    assert_eq!(n["failures"], 1, "{n}");
    assert_eq!(n["retries"], 1, "{n}");
    assert_eq!(n["failing"], false, "{n}");
    assert!(n["successes"].as_u64().unwrap() >= 1, "{n}");
    let page = curl(&["-sS", &format!("http://{admin}/")]).await;
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("<h2>Notifiers</h2>") && page.contains("<td>newsroom</td>"),
        "{page}"
    );
    let got = recv.requests();
    assert_eq!(got[2].json()["cut_id"], id2.as_str());
    // The webhook takes incidents down to info, yet never hears about its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in recv.requests() {
        let b = r.json();
        assert_ne!(b["event"], "incident", "told about itself: {b}");
    }
}

/// The URLs of every purge call, after checking each call's shape.
fn purged(calls: &[common::receiver::Recorded]) -> Vec<Vec<String>> {
    calls
        .iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, format!("/client/v4/zones/{ZONE}/purge_cache"));
            assert_eq!(r.header("authorization"), Some("Bearer cf-token-123"));
            assert_eq!(r.header("content-type"), Some("application/json"));
            r.json()["files"]
                .as_array()
                .unwrap_or_else(|| panic!("no files: {}", r.json()))
                .iter()
                .map(|u| u.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

fn site_urls<'a>(paths: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in paths {
        out.insert(format!("https://prep.example.mx/{}", p.replace(' ', "%20")));
        if p == "index.html" {
            out.insert("https://prep.example.mx/".to_owned());
        }
        if let Some(d) = p.strip_suffix("/index.html") {
            out.insert(format!("https://prep.example.mx/{d}/"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_purges_exactly_the_changed_urls_in_batches_of_30() {
    let recv = Receiver::start(vec![], Reply::cloudflare_ok()).await;
    let (srv, key) = cloudflare_server(
        &recv.url(""),
        "cf-token-123\n",
        "base_urls = [\"https://prep.example.mx/\"]\nbatch_size = 30\n",
    )
    .await;

    // First cut: 103 files, all new, + `/` and `dip/` = 105 URLs = 30+30+30+15.
    let v1 = small_site(100, 1);
    push(&srv, &key, &cut(0).name(".zip"), &packages::zip_bytes(&v1)).await;
    let calls = recv.wait_for(4, Duration::from_secs(10)).await;
    let batches = purged(&calls);
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        [30, 30, 30, 15]
    );
    let all: BTreeSet<String> = batches.concat().into_iter().collect();
    assert_eq!(all, site_urls(v1.iter().map(|(p, _)| p.as_str())));
    assert!(all.contains("https://prep.example.mx/css/a%20b.css"));

    // Increment: index.html and d000..d063 change (65 files); d064 is re-sent identical and
    // must not be purged. 65 + `/` = 66 URLs = 30+30+6.
    let v2 = small_site(100, 2);
    let mut inc: Vec<(String, Vec<u8>)> = v2
        .iter()
        .filter(|(p, _)| {
            p == "index.html"
                || p.strip_prefix("datos/d")
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n < 64)
        })
        .cloned()
        .collect();
    assert_eq!(inc.len(), 65);
    inc.push(
        v1.iter()
            .find(|(p, _)| p == "datos/d064.json")
            .unwrap()
            .clone(),
    );
    push(
        &srv,
        &key,
        &cut(15).name(".zip"),
        &packages::zip_bytes(&inc),
    )
    .await;
    let calls = recv.wait_for(7, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.count(), 7, "three calls for the increment");
    let batches = purged(&calls[4..]);
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        [30, 30, 6]
    );
    let urls = batches.concat();
    let set: BTreeSet<String> = urls.iter().cloned().collect();
    assert_eq!(set.len(), urls.len(), "no URL twice");
    assert_eq!(set, site_urls(inc[..65].iter().map(|(p, _)| p.as_str())));
    assert!(set.contains("https://prep.example.mx/"));
    assert!(!set.contains("https://prep.example.mx/datos/d064.json"));
    assert!(!set.contains("https://prep.example.mx/dip/"));
    assert!(incidents_of(&srv, "notify-failed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_purge_everything_retries_unsuccessful_answers_and_reports_failure() {
    let recv = Receiver::start(
        vec![Reply::json(
            200,
            r#"{"success":false,"errors":[{"code":1234,"message":"try later"}],"messages":[],"result":null}"#,
        )],
        Reply::cloudflare_ok(),
    )
    .await;
    let (srv, key) = cloudflare_server(
        &recv.url("/"),
        "cf-token-123",
        "purge_everything = true\nretries = 1\n",
    )
    .await;

    push(
        &srv,
        &key,
        &cut(0).name(".zip"),
        &packages::zip_bytes(&small_site(40, 1)),
    )
    .await;
    let calls = recv.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.count(), 2, "success:false once, then success");
    for c in &calls {
        assert_eq!(c.path, format!("/client/v4/zones/{ZONE}/purge_cache"));
        assert_eq!(c.header("authorization"), Some("Bearer cf-token-123"));
        assert_eq!(c.json(), serde_json::json!({"purge_everything": true}));
    }
    assert!(incidents_of(&srv, "notify-failed").is_empty());

    // Failing past its retries: one notify-failed for the cut.
    recv.script(vec![
        Reply::status(502),
        Reply::status(429).with_header("retry-after", "0"),
    ]);
    let name2 = cut(15).name(".zip");
    push(&srv, &key, &name2, &packages::zip_bytes(&small_site(40, 2))).await;
    let failed = wait_incidents(&srv, "notify-failed", 1, Duration::from_secs(10)).await;
    assert_eq!(recv.count(), 4);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["subject"], "cdn");
    assert_eq!(failed[0]["package"], name2.as_str());
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("429"),
        "{}",
        failed[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_hooks_get_the_cut_in_their_environment_and_are_killed_on_timeout() {
    use std::os::unix::fs::PermissionsExt;
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display().to_string();
    let extra = format!(
        r#"
[[notify]]
type = "command"
name = "on-cut"
command = ["hooks/on-cut.sh", "{o}/on-cut"]
events = ["cut-published"]
{QUICK}
[[notify]]
type = "command"
name = "slow"
command = ["hooks/slow.sh", "{o}/slow"]
events = ["cut-published"]
timeout_secs = 1
retries = 0
"#
    );
    let (srv, key) = server(&extra, |dir| {
        let hooks = dir.join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let scripts = [
            (
                "on-cut.sh",
                "#!/bin/sh\nenv | grep '^DIFUSOR_' | sort > \"$1.env.tmp\"\ncp \"$DIFUSOR_CHANGED_LIST\" \"$1.changed\"\necho 'hello from the hook'\nmv \"$1.env.tmp\" \"$1.env\"\n",
            ),
            (
                "slow.sh",
                "#!/bin/sh\nsleep 30 &\necho $! > \"$1.child\"\nwait\n",
            ),
        ];
        for (name, body) in scripts {
            let p = hooks.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    })
    .await;

    let site = small_site(2, 1);
    let zip = packages::zip_bytes(&site);
    let name = cut(0).name(".zip");
    push(&srv, &key, &name, &zip).await;
    let id = live_id(&srv);

    let env_file = out.path().join("on-cut.env");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env_file.exists() {
        assert!(Instant::now() < deadline, "the hook did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let env: BTreeMap<String, String> = std::fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let var = |k: &str| {
        env.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} missing: {env:?}"))
    };
    assert_eq!(var("DIFUSOR_EVENT"), "cut-published");
    assert_eq!(var("DIFUSOR_CUT_ID"), id);
    assert_eq!(var("DIFUSOR_PACKAGE"), name);
    assert_eq!(var("DIFUSOR_SHA256"), sha256_hex(&zip));
    assert_eq!(var("DIFUSOR_FILES"), site.len().to_string());
    assert_eq!(var("DIFUSOR_CHANGED"), site.len().to_string());
    assert_eq!(
        instant(&serde_json::json!(var("DIFUSOR_CUT_TIME"))),
        time::macros::datetime!(2024-06-03 02:00 UTC)
    );
    assert!(!var("DIFUSOR_PUBLISHED_AT").is_empty());
    assert_eq!(
        Path::new(var("DIFUSOR_CUT_DIR")),
        srv.root().join("data/cuts").join(&id)
    );
    let mut expected: Vec<&str> = site.iter().map(|(p, _)| p.as_str()).collect();
    expected.sort();
    let listed = std::fs::read_to_string(out.path().join("on-cut.changed")).unwrap();
    assert_eq!(listed.lines().collect::<Vec<_>>(), expected);
    // The list is removed once the hook is done.
    let list = std::path::PathBuf::from(var("DIFUSOR_CHANGED_LIST"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while list.exists() {
        assert!(Instant::now() < deadline, "{} left behind", list.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The slow hook: killed at its timeout, with what it started; recorded as a failure.
    let failed = wait_incidents(&srv, "notify-failed", 1, Duration::from_secs(10)).await;
    assert_eq!(failed[0]["subject"], "slow");
    assert_eq!(failed[0]["package"], name.as_str());
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("timed out"), "{reason}");
    let child: u32 = std::fs::read_to_string(out.path().join("slow.child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Gone, or a zombie waiting for whoever adopted it: either way not running.
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hook's child survived: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        incidents_of(&srv, "notify-failed").len(),
        1,
        "on-cut succeeded"
    );
}

fn test_manifest(id: &str) -> difusor::store::Manifest {
    let now = time::OffsetDateTime::now_utc();
    difusor::store::Manifest {
        cut_id: id.to_owned(),
        sha256: "ab".repeat(32),
        size: 10,
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
        uncompressed_bytes: 2,
        cut_time: None,
        mode: "replace".into(),
        previous_cut: None,
        publish_seconds: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_and_a_notifier_never_hears_about_itself() {
    let a = Receiver::start(vec![Reply::status(500)], Reply::status(200)).await;
    let b = Receiver::start(vec![], Reply::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = difusor::config::Config::parse(
        &format!(
            "[[notify]]\ntype = \"webhook\"\nname = \"a\"\nurl = \"{}\"\nmin_severity = \"info\"\nretries = 0\n{QUICK}\
             [[notify]]\ntype = \"webhook\"\nname = \"b\"\nurl = \"{}\"\nmin_severity = \"info\"\n{QUICK}",
            a.url("/a"),
            b.url("/b")
        ),
        dir.path(),
        None,
    )
    .unwrap();
    let store = difusor::store::Store::open(&dir.path().join("data")).unwrap();
    let (cuts_tx, cuts_rx) = tokio::sync::broadcast::channel(8);
    let notifiers = difusor::notify::start(
        cfg.notify.clone(),
        store.clone(),
        cuts_rx,
        store.subscribe_incidents(),
    );
    let cut_event = |id: &str| {
        let d = store.cut_dir(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("index.html"), id).unwrap();
        difusor::events::CutPublished {
            cut_id: id.to_owned(),
            cut_dir: d,
            manifest: test_manifest(id),
            previous_live: None,
            packages_in_history: 1,
        }
    };
    cuts_tx.send(cut_event("c1")).unwrap();
    // a fails (500, no retries) → notify-failed about a → b hears of it, a does not.
    let got_b = b.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got_b[0].json()["cut_id"], "c1");
    let inc = got_b[1].json();
    assert_eq!(inc["kind"], "notify-failed");
    assert_eq!(inc["subject"], "a");
    let s = notifiers.stats();
    assert_eq!((s[0].name.as_str(), s[0].kind), ("a", "webhook"));
    assert_eq!((s[0].successes, s[0].failures, s[0].retries), (0, 1, 0));
    assert!(s[0].failing);

    cuts_tx.send(cut_event("c2")).unwrap();
    let got_b = b.wait_for(4, Duration::from_secs(10)).await;
    let kinds: BTreeSet<String> = got_b[2..]
        .iter()
        .map(|r| {
            r.json()["event"].as_str().unwrap().to_owned()
                + "/"
                + r.json()["kind"].as_str().unwrap_or("")
        })
        .collect();
    assert!(kinds.contains("incident/notify-recovered"), "{kinds:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_a = a.requests();
    assert_eq!(
        got_a.len(),
        2,
        "a got the two cuts and nothing about itself"
    );
    assert!(got_a.iter().all(|r| r.json()["event"] == "cut-published"));
    let s = notifiers.stats();
    assert_eq!((s[0].successes, s[0].failures), (1, 1));
    assert!(!s[0].failing);
    assert_eq!((s[1].successes, s[1].failures, s[1].queued), (4, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_purges_queued_behind_a_slow_one_are_merged_into_one() {
    let recv = Receiver::start(vec![Reply::Hang], Reply::cloudflare_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "cf-token-123").unwrap();
    let cfg = difusor::config::Config::parse(
        &format!(
            "[[notify]]\ntype = \"cloudflare\"\nname = \"cdn\"\nzone_id = \"{ZONE}\"\ntoken_file = \"token\"\nbase_urls = [\"https://s.mx\"]\napi_base = \"{}\"\ntimeout_secs = 1\nretries = 0\n",
            recv.url("")
        ),
        dir.path(),
        None,
    )
    .unwrap();
    let store = difusor::store::Store::open(&dir.path().join("data")).unwrap();
    let notifiers = difusor::notify::start_without_cuts(
        cfg.notify.clone(),
        store.clone(),
        store.subscribe_incidents(),
    );
    let cut_event = |id: &str, previous: Option<&str>, files: &[(&str, &str)]| {
        let d = store.cut_dir(id);
        for (p, body) in files {
            std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
            std::fs::write(d.join(p), body).unwrap();
        }
        difusor::events::CutPublished {
            cut_id: id.to_owned(),
            cut_dir: d,
            manifest: test_manifest(id),
            previous_live: previous.map(str::to_owned),
            packages_in_history: 1,
        }
    };
    let c1 = cut_event("c1", None, &[("index.html", "1"), ("x.json", "x")]);
    let c2 = cut_event("c2", Some("c1"), &[("index.html", "2"), ("x.json", "x")]);
    let c3 = cut_event(
        "c3",
        Some("c2"),
        &[("index.html", "2"), ("x.json", "x"), ("y.json", "y")],
    );
    notifiers.notify_cut(&c1);
    recv.wait_for(1, Duration::from_secs(5)).await;
    // c1's purge hangs (then times out): c2 and c3 queue up behind it.
    notifiers.notify_cut(&c2);
    notifiers.notify_cut(&c3);
    assert_eq!(notifiers.stats()[0].queued, 2);
    let calls = recv.wait_for(2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.count(), 2, "c2 and c3 in one purge");
    assert_eq!(
        purged(&calls[1..]),
        [[
            "https://s.mx/index.html",
            "https://s.mx/",
            "https://s.mx/y.json"
        ]],
        "the union of both cuts' changes"
    );
    let s = &notifiers.stats()[0];
    assert_eq!(
        (s.kind, s.successes, s.failures, s.queued),
        ("cloudflare", 1, 1, 0)
    );
    let kinds: Vec<String> = store.incidents().into_iter().map(|i| i.kind).collect();
    assert_eq!(kinds, ["notify-failed", "notify-recovered"]);
    let rec = store.incidents().pop().unwrap();
    assert_eq!(rec.subject.as_deref(), Some("cdn"));
    assert_eq!(rec.package.as_deref(), Some("c3.zip"));
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |text: &str| {
        difusor::config::Config::parse(text, dir.path(), None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("accepted: {text}"))
    };
    let webhook = "[[notify]]\ntype = \"webhook\"\nurl = \"https://hooks.example.mx/x\"\n";
    let m = parse("[[notify]]\ntype = \"webhook\"\nurl = \"not a url\"\n");
    assert!(m.contains("`notify[0].url`"), "{m}");
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let m = parse(&format!(
        "{webhook}[[notify]]\ntype = \"cloudflare\"\nzone_id = \"{ZONE}\"\ntoken_file = \"token\"\nbase_urls = [\"https://prep.example.mx\"]\nbatch_size = 31\n"
    ));
    assert!(m.contains("`notify[1].batch_size`"), "{m}");
    let m = parse(&format!(
        "[[notify]]\ntype = \"cloudflare\"\nzone_id = \"{ZONE}\"\ntoken_file = \"keys/missing.token\"\nbase_urls = [\"https://prep.example.mx\"]\n"
    ));
    assert!(
        m.contains("`notify[0].token_file`") && m.contains("missing.token"),
        "{m}"
    );
    let m = parse("[[notify]]\ntype = \"cloudflare\"\ntoken = \"in-the-config\"\n");
    assert!(
        m.contains("token"),
        "a token in the config text is refused: {m}"
    );
    // A good config's Debug output never shows the token.
    std::fs::write(dir.path().join("token"), "very-secret-token").unwrap();
    let c = difusor::config::Config::parse(
        &format!("[[notify]]\ntype = \"cloudflare\"\nzone_id = \"{ZONE}\"\ntoken_file = \"token\"\nbase_urls = [\"https://prep.example.mx\"]\n"),
        dir.path(),
        None,
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("very-secret-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_purges_everything_when_a_cut_changed_more_urls_than_the_limit() {
    let recv = Receiver::start(vec![], Reply::cloudflare_ok()).await;
    let (srv, key) = cloudflare_server(
        &recv.url("/"),
        "cf-token-123",
        "base_urls = [\"https://prep.example.mx\"]\npurge_everything_above = 20\n",
    )
    .await;
    // A first cut of 40 files: 41 URLs with `/`, over the limit of 20 → one call.
    push(
        &srv,
        &key,
        &cut(0).name(".zip"),
        &packages::zip_bytes(&small_site(40, 1)),
    )
    .await;
    let calls = recv.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.count(), 1);
    assert_eq!(
        calls[0].json(),
        serde_json::json!({"purge_everything": true})
    );
    drop(srv);
}
