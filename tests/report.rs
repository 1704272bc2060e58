//! The memoria técnica (`difusor report`), from a synthetic data directory whose every answer
//! was computed by hand (the working is in the comments beside the data).
//!
//! Behaviours covered:
//! - hits, human/bot hits, page views (GET 200/304 of HTML documents, query stripped), the
//!   pages list and its order, bytes, status classes, median/p95 latency — per window, day
//!   (crossing local midnight at -06:00 and UTC midnight) and hour
//! - unique visitors per day: one address with two user agents is two visitors, one visitor
//!   on two days is one per day; the window total is the sum of the days
//! - visits: a 29-minute gap continues a visit, a 31-minute one splits it; a visit crossing
//!   midnight belongs to the day it started; mean and (even-count) median durations
//! - the busiest minute (and its Mbit/s), second and hour
//! - availability with an unhealthy stretch and a stretch with no samples at all; "unknown"
//!   without a health file
//! - incident durations: closed by the right kind and subject, still open at the window's end
//!   ("ongoing"), opened before the window; instants
//! - cuts received: published manifests in the window and rejections, with the summary
//! - dropped-lines notes and unparsable lines counted, never fatal; lines outside the window
//!   (in the neighbouring days' files) excluded; no client address anywhere in the output
//! - the CLI: JSON (default `--from` = earliest data), CSV that parses back with one column
//!   count, HTML rendered by headless Chromium (not blank, no external references, an injected
//!   `<script>` inert); bad arguments exit 2 with a message

mod chromium;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use difusor::report::{self, ReportOptions};
use difusor::store::{Incident, Manifest, Severity, Store};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::{datetime, offset};

fn difusor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_difusor"))
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1";
const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/125.0 Safari/537.36";
const EDGE: &str = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/125.0 Edg/125.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Visitor A: one address, two browsers (A = Firefox, A' = iPhone).
const IP_A: &str = "203.0.113.7";
const IP_B: &str = "198.51.100.20";
const IP_C: &str = "192.0.2.50";
const XSS_PATH: &str = "/<script>alert(1)</script>";

#[allow(clippy::too_many_arguments)]
fn req(
    time: &str,
    client: &str,
    method: &str,
    path: &str,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    user_agent: Option<&str>,
) -> String {
    json!({
        "time": time, "client": client, "method": method, "path": path, "proto": "HTTP/2",
        "status": status, "bytes": bytes, "duration_ms": duration_ms, "referer": null,
        "user_agent": user_agent, "cut": "20240602T2015Z-aaaa1111"
    })
    .to_string()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// As [`write_lines`], gzip-compressed (an operator may compress old days' logs).
fn write_lines_gz(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

fn manifest(
    cut_id: &str,
    name: &str,
    received: OffsetDateTime,
    published_after: f64,
    mb_per_s: f64,
) -> Manifest {
    let published = received + Duration::from_secs_f64(published_after);
    Manifest {
        cut_id: cut_id.into(),
        sha256: "ab".repeat(32),
        size: 1_000_000,
        original_name: name.into(),
        extension: "zip".into(),
        uploader: "institute".into(),
        client_address: "10.9.9.9".into(),
        upload_started: received - Duration::from_secs(10),
        upload_finished: received,
        transfer_mb_per_s: mb_per_s,
        received_at: received,
        verified_at: received,
        published_at: Some(published),
        entries: 10,
        files: 9,
        uncompressed_bytes: 5_000_000,
        cut_time: Some(received - Duration::from_secs(60)),
        mode: "increment".into(),
        previous_cut: None,
        publish_seconds: Some(published_after),
    }
}

fn incident(
    time: OffsetDateTime,
    severity: Severity,
    kind: &str,
    subject: Option<&str>,
    reason: &str,
) -> Incident {
    Incident {
        time,
        severity,
        kind: kind.into(),
        package: None,
        uploader: None,
        reason: reason.into(),
        subject: subject.map(str::to_owned),
    }
}

/// Writes the synthetic data directory `<root>/data`. The window of the checks is the local
/// days 2024-06-02 and 2024-06-03 at -06:00: [2024-06-02T06:00Z, 2024-06-04T06:00Z).
fn write_data(root: &Path, with_health: bool) -> PathBuf {
    let data = root.join("data");
    let logs = data.join("logs");
    // Before the window and beyond the neighbouring days: never opened (see `files`), but it
    // is the earliest data (the default --from).
    write_lines(
        &logs.join("access-2024-05-20.log"),
        &[req(
            "2024-05-20T12:00:00Z",
            IP_A,
            "GET",
            "/",
            200,
            1,
            1.0,
            Some(FIREFOX),
        )],
    );
    // The day before: read, but outside the window.
    write_lines(
        &logs.join("access-2024-06-01.log"),
        &[req(
            "2024-06-01T12:00:00Z",
            IP_A,
            "GET",
            "/",
            200,
            1,
            1.0,
            Some(FIREFOX),
        )],
    );
    // Local day 1 (2024-06-02 -06:00). Hour 14:00 local = 20:00Z.
    write_lines(
        &logs.join("access-2024-06-02.log"),
        &[
            // 1 ms before the window (local 2024-06-01 23:59:59.999).
            req(
                "2024-06-02T05:59:59.999Z",
                IP_A,
                "GET",
                "/",
                200,
                1,
                1.0,
                Some(FIREFOX),
            ),
            // A visit 1: 20:00:00 → 20:39:00 (gaps 8.5 and 29 min) = 2340 s.
            req(
                "2024-06-02T20:00:00.000Z",
                IP_A,
                "GET",
                "/",
                200,
                1000,
                1.0,
                Some(FIREFOX),
            ),
            req(
                "2024-06-02T20:00:00.500Z",
                "66.249.66.1",
                "GET",
                "/",
                200,
                1000,
                0.7,
                Some(GOOGLEBOT),
            ),
            req(
                "2024-06-02T20:00:01.500Z",
                IP_A,
                "GET",
                "/css/site.css",
                200,
                5000,
                0.5,
                Some(FIREFOX),
            ),
            // A' (same address, another browser): another visitor; a one-request visit.
            req(
                "2024-06-02T20:05:00Z",
                IP_A,
                "GET",
                "/index.html",
                200,
                1000,
                1.5,
                Some(IPHONE),
            ),
            req(
                "2024-06-02T20:10:00Z",
                IP_A,
                "GET",
                "/resultados/",
                200,
                2000,
                2.0,
                Some(FIREFOX),
            ),
            req(
                "2024-06-02T20:39:00Z",
                IP_A,
                "GET",
                "/resultados/index.html?x=1",
                304,
                0,
                0.2,
                Some(FIREFOX),
            ),
            // 31 min later: A visit 2 (0 s).
            req(
                "2024-06-02T21:10:00Z",
                IP_A,
                "GET",
                "/presidencia",
                200,
                3000,
                3.0,
                Some(FIREFOX),
            ),
        ],
    );
    // Local 2024-06-02 23:50 → 2024-06-03 (after local midnight at 06:00Z).
    write_lines(
        &logs.join("access-2024-06-03.log"),
        &[
            // B visit 1: 23:50 local day 1 → 00:10 local day 2 = 1200 s, belongs to day 1.
            req(
                "2024-06-03T05:50:00Z",
                IP_B,
                "GET",
                "/",
                200,
                1000,
                0.8,
                Some(CHROME),
            ),
            req(
                "2024-06-03T06:10:00Z",
                IP_B,
                "GET",
                "/diputaciones/",
                200,
                1500,
                1.2,
                Some(CHROME),
            ),
            r#"{"dropped_lines":3}"#.into(),
            req(
                "2024-06-03T10:00:00Z",
                "192.0.2.99",
                "GET",
                "/index.html",
                200,
                1000,
                0.5,
                None,
            ),
            req(
                "2024-06-03T10:30:00Z",
                IP_A,
                "GET",
                "/",
                200,
                1000,
                0.5,
                Some(""),
            ),
            req(
                "2024-06-03T11:00:00Z",
                "192.0.2.98",
                "GET",
                "/healthz",
                200,
                10,
                0.1,
                Some("Mozilla/5.0 (compatible; UptimeRobot/2.0)"),
            ),
            "not json at all".into(),
            req(
                "2024-06-03T12:00:00Z",
                IP_A,
                "GET",
                XSS_PATH,
                200,
                500,
                0.3,
                Some(IPHONE),
            ),
            // A visit 3: 14:00:00 → 14:20:00.250 = 1200.25 s.
            req(
                "2024-06-03T14:00:00Z",
                IP_A,
                "GET",
                "/",
                200,
                1000,
                0.4,
                Some(FIREFOX),
            ),
            req(
                "2024-06-03T14:20:00Z",
                IP_A,
                "GET",
                "/presidencia",
                200,
                3000,
                0.6,
                Some(FIREFOX),
            ),
            req(
                "2024-06-03T14:20:00.250Z",
                IP_A,
                "GET",
                "/js/app.js",
                404,
                100,
                0.1,
                Some(FIREFOX),
            ),
            r#"{"time":"2024-06-03T"#.into(),
            // The busiest minute (15:00Z: 6 requests, 50,000 bytes) and second (15:00:10Z: 3).
            // C visit: 15:00:10.100 → 15:00:40.000 = 29.9 s.
            req(
                "2024-06-03T15:00:10.100Z",
                IP_C,
                "GET",
                "/elecciones/",
                200,
                10000,
                5.0,
                Some(EDGE),
            ),
            req(
                "2024-06-03T15:00:10.200Z",
                IP_C,
                "GET",
                "/img/logo.png",
                200,
                10000,
                1.0,
                Some(EDGE),
            ),
            req(
                "2024-06-03T15:00:10.300Z",
                IP_C,
                "GET",
                "/json/main.json",
                200,
                10000,
                2.0,
                Some(EDGE),
            ),
            req(
                "2024-06-03T15:00:20Z",
                IP_C,
                "GET",
                "/elecciones/",
                304,
                0,
                0.3,
                Some(EDGE),
            ),
            req(
                "2024-06-03T15:00:30Z",
                "192.0.2.97",
                "GET",
                "/json/main.json",
                200,
                10000,
                1.0,
                Some("curl/8.5.0"),
            ),
            req(
                "2024-06-03T15:00:40Z",
                IP_C,
                "POST",
                "/elecciones/",
                500,
                10000,
                9.0,
                Some(EDGE),
            ),
            req(
                "2024-06-03T15:45:00Z",
                "192.0.2.96",
                "GET",
                "/json/main.json",
                200,
                10000,
                1.0,
                Some("python-requests/2.31"),
            ),
            r#"{"time":"yesterday","client":"1.2.3.4","method":"GET","path":"/","status":200}"#
                .into(),
            // A visit 4: 99.75 min after visit 3 (0 s); HEAD is not a page view.
            req(
                "2024-06-03T16:00:00Z",
                IP_A,
                "HEAD",
                "/",
                200,
                0,
                0.1,
                Some(FIREFOX),
            ),
        ],
    );
    write_lines_gz(
        &logs.join("access-2024-06-04.log.gz"),
        &[
            // Local 2024-06-03 23:59: inside; B visit 2 (0 s).
            req(
                "2024-06-04T05:59:00Z",
                IP_B,
                "GET",
                "/gubernaturas",
                200,
                2000,
                0.9,
                Some(CHROME),
            ),
            // Exactly the window's end: outside (half-open window).
            req(
                "2024-06-04T06:00:00Z",
                IP_B,
                "GET",
                "/",
                200,
                1,
                1.0,
                Some(CHROME),
            ),
        ],
    );
    write_lines(
        &logs.join("access-2024-06-05.log"),
        &[req(
            "2024-06-05T00:00:00Z",
            IP_B,
            "GET",
            "/",
            200,
            1,
            1.0,
            Some(CHROME),
        )],
    );

    let store = Store::open(&data).unwrap();
    // Published cuts: one before the window, four in it (publish 2, 3, 1.5, 10 s; 10-40 MB/s).
    for m in [
        manifest(
            "20240601T2000Z-00000000",
            "20240601_1400_PREP.zip",
            datetime!(2024-06-01 20:01 UTC),
            1.0,
            5.0,
        ),
        manifest(
            "20240602T2015Z-aaaa1111",
            "20240602_1415_PREP.zip",
            datetime!(2024-06-02 20:16 UTC),
            2.0,
            10.0,
        ),
        manifest(
            "20240602T2030Z-bbbb2222",
            "20240602_1430_PREP.zip",
            datetime!(2024-06-02 20:31 UTC),
            3.0,
            20.0,
        ),
        manifest(
            "20240603T0230Z-cccc3333",
            "20240602_2030_PREP.zip",
            datetime!(2024-06-03 02:31 UTC),
            1.5,
            30.0,
        ),
        manifest(
            "20240603T1500Z-dddd4444",
            "20240603_0900_PREP.zip",
            datetime!(2024-06-03 15:01 UTC),
            10.0,
            40.0,
        ),
    ] {
        store.write_manifest(&m).unwrap();
    }
    std::fs::write(data.join("history/broken.json"), "{").unwrap();

    use Severity::*;
    let mut rejected = incident(
        datetime!(2024-06-03 03:00 UTC),
        Warning,
        "package-rejected",
        None,
        "zip: CRC mismatch in json/main.json",
    );
    rejected.package = Some("20240602_2100_PREP.zip".into());
    rejected.uploader = Some("institute".into());
    for i in [
        // Opened and closed before the window: not reported.
        incident(
            datetime!(2024-06-01 00:00 UTC),
            Warning,
            "certificate-expiring",
            None,
            "expires in 10 days",
        ),
        incident(
            datetime!(2024-06-01 01:00 UTC),
            Info,
            "certificate-ok",
            None,
            "renewed",
        ),
        // Opened before the window, closed in it: 3 h.
        incident(
            datetime!(2024-06-02 04:00 UTC),
            Warning,
            "disk-low",
            Some("data"),
            "2 GB free",
        ),
        incident(
            datetime!(2024-06-02 07:00 UTC),
            Info,
            "disk-ok",
            Some("data"),
            "30 GB free",
        ),
        // Both closed by cuts-resumed: 1 h and 30 min.
        incident(
            datetime!(2024-06-03 01:30 UTC),
            Warning,
            "cut-late",
            None,
            "no cut for 15 min",
        ),
        incident(
            datetime!(2024-06-03 02:00 UTC),
            Critical,
            "cuts-missed",
            None,
            "3 cuts missed",
        ),
        incident(
            datetime!(2024-06-03 02:30 UTC),
            Info,
            "cuts-resumed",
            None,
            "cut published",
        ),
        rejected,
        incident(
            datetime!(2024-06-03 10:20 UTC),
            Info,
            "crash-recovery",
            None,
            "finished 1 publication",
        ),
        // The webhook fails; the CDN (another subject) recovering does not close it, and the
        // webhook's own recovery comes after the window: ongoing for 10 h.
        incident(
            datetime!(2024-06-03 20:00 UTC),
            Warning,
            "notify-failed",
            Some("webhook"),
            "HTTP 503",
        ),
        incident(
            datetime!(2024-06-03 21:00 UTC),
            Info,
            "notify-recovered",
            Some("cdn"),
            "ok",
        ),
        incident(
            datetime!(2024-06-04 07:00 UTC),
            Info,
            "notify-recovered",
            Some("webhook"),
            "ok",
        ),
        incident(
            datetime!(2024-06-05 00:00 UTC),
            Warning,
            "disk-low",
            Some("data"),
            "after the window",
        ),
    ] {
        store.record_incident(&i).unwrap();
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(store.incidents_path())
        .unwrap();
    std::io::Write::write_all(&mut f, b"{not an incident}\n").unwrap();

    if with_health {
        // Every minute: ok until 02:00Z on 06-03, unhealthy 02:00-02:30, ok until 10:00, no
        // samples 10:00-10:20 (down), ok to the window's end (and one sample before it).
        let mut lines = vec![
            r#"{"time":"2024-06-02T05:59:00Z","interval_secs":60,"ok":true,"reason":null,"live_cut":null,"cut_age_secs":null}"#.to_owned(),
            "garbage".to_owned(),
        ];
        let mut t = datetime!(2024-06-02 06:00 UTC);
        while t < datetime!(2024-06-04 06:00 UTC) {
            let sick = t >= datetime!(2024-06-03 02:00 UTC) && t < datetime!(2024-06-03 02:30 UTC);
            let down = t >= datetime!(2024-06-03 10:00 UTC) && t < datetime!(2024-06-03 10:20 UTC);
            if !down {
                let stamp = t
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap();
                lines.push(
                    json!({
                        "time": stamp, "interval_secs": 60, "ok": !sick,
                        "reason": if sick { json!("3 expected cuts missed") } else { Value::Null },
                        "live_cut": "20240602T2015Z-aaaa1111", "cut_age_secs": 120
                    })
                    .to_string(),
                );
            }
            t += Duration::from_secs(60);
        }
        write_lines(&data.join("state/health.jsonl"), &lines);
    }
    data
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[track_caller]
fn num(v: &Value, expected: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!(close(got, expected), "{got} != {expected}");
}

/// Checks every hand-computed figure of the report (as JSON).
fn check_report(r: &Value) {
    assert_eq!(r["utc_offset"], "-06:00");
    assert_eq!(r["from"], "2024-06-02T00:00:00-06:00");
    assert_eq!(r["to"], "2024-06-04T00:00:00-06:00");

    // Window: 25 requests (8 on local day 1, 17 on day 2), 6 of bots.
    let s = &r["summary"];
    assert_eq!(s["hits"], 25);
    assert_eq!(s["human_hits"], 19);
    assert_eq!(s["bot_hits"], 6);
    assert_eq!(s["page_views"], 13);
    assert_eq!(s["bot_page_views"], 4);
    assert_eq!(s["unique_visitors"], 7, "3 on day 1 + 4 on day 2");
    assert_eq!(s["visits"], 9);
    num(&s["mean_visit_secs"], 4770.15 / 9.0);
    num(&s["median_visit_secs"], 0.0);
    assert_eq!(s["bytes"], 84110);
    assert_eq!(
        s["status"],
        json!({"2xx": 21, "3xx": 2, "4xx": 1, "5xx": 1, "other": 0})
    );
    num(&s["median_ms"], 0.8);
    num(&s["p95_ms"], 5.0);

    let days = r["daily"].as_array().unwrap();
    assert_eq!(days.len(), 2);
    let d1 = &days[0];
    assert_eq!(d1["start"], "2024-06-02T00:00:00-06:00");
    assert_eq!(d1["end"], "2024-06-03T00:00:00-06:00");
    assert_eq!(
        (&d1["hits"], &d1["human_hits"], &d1["bot_hits"]),
        (&json!(8), &json!(7), &json!(1))
    );
    assert_eq!(
        (&d1["page_views"], &d1["bot_page_views"]),
        (&json!(6), &json!(1))
    );
    assert_eq!(
        d1["unique_visitors"], 3,
        "A, A' (same address, other browser), B"
    );
    assert_eq!(
        d1["visits"], 4,
        "A twice (31-min gap), A', B (crossing midnight)"
    );
    num(&d1["mean_visit_secs"], 885.0);
    num(&d1["median_visit_secs"], 600.0); // (0 + 1200) / 2
    assert_eq!(d1["bytes"], 14000);
    assert_eq!(
        d1["status"],
        json!({"2xx": 7, "3xx": 1, "4xx": 0, "5xx": 0, "other": 0})
    );
    num(&d1["median_ms"], 0.9); // (0.8 + 1.0) / 2
    num(&d1["p95_ms"], 3.0);
    let d2 = &days[1];
    assert_eq!(d2["start"], "2024-06-03T00:00:00-06:00");
    assert_eq!(
        (&d2["hits"], &d2["human_hits"], &d2["bot_hits"]),
        (&json!(17), &json!(12), &json!(5))
    );
    assert_eq!(
        (&d2["page_views"], &d2["bot_page_views"]),
        (&json!(7), &json!(3))
    );
    assert_eq!(d2["unique_visitors"], 4, "B again (1 per day), A', A, C");
    assert_eq!(d2["visits"], 5);
    num(&d2["mean_visit_secs"], 1230.15 / 5.0);
    num(&d2["median_visit_secs"], 0.0);
    assert_eq!(d2["bytes"], 70110);
    assert_eq!(
        d2["status"],
        json!({"2xx": 14, "3xx": 1, "4xx": 1, "5xx": 1, "other": 0})
    );
    num(&d2["median_ms"], 0.6);
    num(&d2["p95_ms"], 9.0);

    let hours = r["hourly"].as_array().unwrap();
    assert_eq!(hours.len(), 48);
    let hour = |start: &str| {
        hours
            .iter()
            .find(|h| h["start"] == start)
            .unwrap_or_else(|| panic!("no hour {start}"))
    };
    let h = hour("2024-06-02T14:00:00-06:00");
    assert_eq!(
        (&h["hits"], &h["human_hits"], &h["bot_hits"]),
        (&json!(6), &json!(5), &json!(1))
    );
    assert_eq!(
        (&h["page_views"], &h["unique_visitors"], &h["visits"]),
        (&json!(4), &json!(2), &json!(2))
    );
    assert_eq!(h["bytes"], 10000);
    let h = hour("2024-06-02T23:00:00-06:00");
    assert_eq!((&h["hits"], &h["visits"]), (&json!(1), &json!(1)));
    // B's second request is in the next day's first hour, but the visit started before.
    let h = hour("2024-06-03T00:00:00-06:00");
    assert_eq!(
        (&h["hits"], &h["unique_visitors"], &h["visits"]),
        (&json!(1), &json!(1), &json!(0))
    );
    let h = hour("2024-06-03T09:00:00-06:00");
    assert_eq!(
        (&h["hits"], &h["human_hits"], &h["bot_hits"]),
        (&json!(7), &json!(5), &json!(2))
    );
    assert_eq!(
        (&h["page_views"], &h["unique_visitors"], &h["visits"]),
        (&json!(2), &json!(1), &json!(1))
    );
    assert_eq!(h["bytes"], 60000);
    assert_eq!(
        h["status"],
        json!({"2xx": 5, "3xx": 1, "4xx": 0, "5xx": 1, "other": 0})
    );
    assert_eq!(hour("2024-06-02T03:00:00-06:00")["hits"], 0);
    let total: u64 = hours.iter().map(|h| h["hits"].as_u64().unwrap()).sum();
    assert_eq!(total, 25);

    let pages: Vec<(String, u64)> = r["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["views"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("/", 3),
        ("/elecciones/", 2),
        ("/presidencia", 2),
        (XSS_PATH, 1),
        ("/diputaciones/", 1),
        ("/gubernaturas", 1),
        ("/index.html", 1),
        ("/resultados/", 1),
        ("/resultados/index.html", 1),
    ]
    .iter()
    .map(|(p, n)| ((*p).to_owned(), *n))
    .collect();
    assert_eq!(pages, expected);

    let peak = &r["peak"];
    assert_eq!(peak["minute"]["start"], "2024-06-03T09:00:00-06:00");
    assert_eq!(peak["minute"]["requests"], 6);
    assert_eq!(peak["minute"]["bytes"], 50000);
    num(&peak["minute"]["mbit_per_s"], 50000.0 * 8.0 / 60.0 / 1e6);
    assert_eq!(
        peak["bandwidth_minute"]["start"],
        "2024-06-03T09:00:00-06:00"
    );
    assert_eq!(peak["second"]["start"], "2024-06-03T09:00:10-06:00");
    assert_eq!(peak["second"]["requests"], 3);
    assert_eq!(peak["hour"]["start"], "2024-06-03T09:00:00-06:00");
    assert_eq!(peak["hour"]["hits"], 7);

    // Availability: 172,800 s, of which 1,800 unhealthy and 1,200 with no samples.
    let a = &r["availability"];
    assert_eq!(a["known"], true);
    num(&a["ratio"], 169_800.0 / 172_800.0);
    num(&a["percent"], 169_800.0 / 1728.0);
    num(&a["downtime_secs"], 3000.0);
    num(&a["unhealthy_secs"], 1800.0);
    num(&a["no_sample_secs"], 1200.0);
    let down = a["down"].as_array().unwrap();
    assert_eq!(down.len(), 2, "{down:?}");
    assert_eq!(down[0]["start"], "2024-06-02T20:00:00-06:00");
    assert_eq!(down[0]["end"], "2024-06-02T20:30:00-06:00");
    assert_eq!(down[0]["cause"], "unhealthy");
    assert_eq!(down[0]["reason"], "3 expected cuts missed");
    assert_eq!(down[1]["start"], "2024-06-03T04:00:00-06:00");
    assert_eq!(down[1]["end"], "2024-06-03T04:20:00-06:00");
    assert_eq!(down[1]["cause"], "no samples");
    num(&down[1]["seconds"], 1200.0);
    assert_eq!(a["unparsable_lines"], 1);
    let states: Vec<&str> = a["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["ok", "unhealthy", "ok", "no-samples", "ok"]);

    let inc: Vec<(&str, &str, Option<f64>)> = r["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap(),
                i["status"].as_str().unwrap(),
                i["duration_secs"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        inc,
        [
            ("disk-low", "resolved", Some(10_800.0)),
            ("disk-ok", "instant", None),
            ("cut-late", "resolved", Some(3600.0)),
            ("cuts-missed", "resolved", Some(1800.0)),
            ("cuts-resumed", "instant", None),
            ("package-rejected", "instant", None),
            ("crash-recovery", "instant", None),
            ("notify-failed", "ongoing", Some(36_000.0)),
            ("notify-recovered", "instant", None),
        ]
    );
    let incidents = r["incidents"].as_array().unwrap();
    assert_eq!(incidents[0]["time"], "2024-06-01T22:00:00-06:00");
    assert_eq!(incidents[0]["ends_at"], "2024-06-02T01:00:00-06:00");
    assert_eq!(incidents[2]["closed_by"], "cuts-resumed");
    assert_eq!(incidents[7]["ends_at"], "2024-06-04T00:00:00-06:00");
    assert_eq!(incidents[7]["subject"], "webhook");

    let cuts: Vec<(&str, &str)> = r["cuts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["original_name"].as_str().unwrap(),
                c["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cuts,
        [
            ("20240602_1415_PREP.zip", "published"),
            ("20240602_1430_PREP.zip", "published"),
            ("20240602_2030_PREP.zip", "published"),
            ("20240602_2100_PREP.zip", "rejected"),
            ("20240603_0900_PREP.zip", "published"),
        ]
    );
    let c0 = &r["cuts"][0];
    assert_eq!(c0["cut_id"], "20240602T2015Z-aaaa1111");
    assert_eq!(c0["received_at"], "2024-06-02T14:16:00-06:00");
    assert_eq!(c0["cut_time"], "2024-06-02T14:15:00-06:00");
    assert_eq!(c0["size"], 1_000_000);
    num(&c0["transfer_mb_per_s"], 10.0);
    num(&c0["publish_seconds"], 2.0);
    let rej = &r["cuts"][3];
    assert_eq!(rej["reason"], "zip: CRC mismatch in json/main.json");
    assert_eq!(rej["uploader"], "institute");
    assert_eq!(rej["cut_id"], Value::Null);
    let cs = &r["cuts_summary"];
    assert_eq!(
        (&cs["received"], &cs["published"], &cs["rejected"]),
        (&json!(5), &json!(4), &json!(1))
    );
    num(&cs["median_publish_secs"], 2.5);
    num(&cs["max_publish_secs"], 10.0);
    num(&cs["mean_transfer_mb_per_s"], 25.0);
    let gap = &cs["largest_gap"];
    assert_eq!(gap["after_cut"], "20240603T0230Z-cccc3333");
    assert_eq!(gap["before_cut"], "20240603T1500Z-dddd4444");
    num(&gap["seconds"], 45_008.5); // 02:31:01.5 → 15:01:10

    let q = &r["data_quality"];
    let files: Vec<&str> = q["access_log"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "access-2024-06-01.log",
            "access-2024-06-02.log",
            "access-2024-06-03.log",
            "access-2024-06-04.log.gz",
            "access-2024-06-05.log"
        ]
    );
    assert_eq!(q["access_log"]["lines"], 33);
    assert_eq!(q["access_log"]["requests_in_window"], 25);
    assert_eq!(q["access_log"]["requests_outside_window"], 4);
    assert_eq!(q["access_log"]["dropped_lines"], 3);
    assert_eq!(q["access_log"]["unparsable_lines"], 3);
    assert_eq!(q["access_log"]["out_of_order_lines"], 0);
    assert_eq!(q["incidents_unparsable_lines"], 1);
    assert_eq!(q["manifests_unreadable"], 1);
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("3 requests were served but not logged"),
        "{notes}"
    );
}

/// No client address, of a human or a bot, survives into an output.
fn assert_no_addresses(text: &str) {
    for ip in [IP_A, IP_B, IP_C, "66.249.66.1", "192.0.2.99", "192.0.2.97"] {
        assert!(!text.contains(ip), "{ip} in the output");
    }
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = difusor()
        .arg("report")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "difusor report {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn library_report_matches_the_hand_computed_figures() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path(), true);
    let o = offset!(-06:00);
    let mut opts = ReportOptions::new(o);
    opts.now = datetime!(2024-06-10 00:00 UTC);
    let from = report::parse_time_arg("2024-06-02", o, false).unwrap();
    let to = report::parse_time_arg("2024-06-03", o, true).unwrap();
    let r = report::build(&data, from, to, &opts).unwrap();
    let json: Value = serde_json::from_str(&report::to_json(&r).unwrap()).unwrap();
    check_report(&json);

    // A window ending in the future is measured up to the report's moment.
    opts.now = datetime!(2024-06-03 12:00 UTC);
    let r = report::build(&data, from, to, &opts).unwrap();
    assert_eq!(
        r.availability.measured_to,
        datetime!(2024-06-03 06:00 -06:00)
    );
    assert!(close(
        r.availability.downtime_secs.unwrap(),
        1800.0 + 1200.0
    ));
}

#[test]
fn without_health_samples_availability_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path(), false);
    let o = offset!(-06:00);
    let r = report::build(
        &data,
        datetime!(2024-06-02 00:00 -06:00),
        datetime!(2024-06-04 00:00 -06:00),
        &ReportOptions::new(o),
    )
    .unwrap();
    let a = &r.availability;
    assert!(!a.known);
    assert_eq!((a.ratio, a.percent, a.downtime_secs), (None, None, None));
    assert!(a.down.is_empty());
    assert!(a.note.as_deref().unwrap_or("").contains("unknown"));
    let html = report::to_html(&r);
    assert!(
        html.contains("desconocida"),
        "the page says availability is unknown"
    );
    assert!(!html.contains("100.000 %"));
    // An empty data directory is a report of zeros, not an error; a missing one is an error.
    let empty = tempfile::tempdir().unwrap();
    let r = report::build(
        empty.path(),
        datetime!(2024-06-02 00:00 -06:00),
        datetime!(2024-06-03 00:00 -06:00),
        &ReportOptions::new(o),
    )
    .unwrap();
    assert_eq!(
        (r.summary.hits, r.summary.median_ms, r.peak.minute.is_none()),
        (0, None, true)
    );
    let _ = report::to_html(&r);
    let _ = report::to_csv(&r);
    assert!(
        report::build(
            &empty.path().join("nope"),
            r.from,
            r.to,
            &ReportOptions::new(o)
        )
        .is_err()
    );
}

#[test]
fn cli_json_and_csv_carry_the_same_figures() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path(), true);
    let window = ["--from", "2024-06-02", "--to", "2024-06-03"];

    // JSON to stdout, offset given on the command line.
    let out = run(
        dir.path(),
        &[&window[..], &["--format", "json", "--utc-offset", "-06:00"]].concat(),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_no_addresses(&text);
    check_report(&serde_json::from_str(&text).unwrap());

    // The offset from the config (and RFC 3339 / local date-time window bounds).
    std::fs::write(
        dir.path().join("difusor.toml"),
        "data_dir = \"data\"\n[ingest]\nname_utc_offset = \"-06:00\"\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &[
            "--config",
            "difusor.toml",
            "--from",
            "2024-06-02T00:00:00-06:00",
            "--to",
            "2024-06-04T00:00",
            "--format",
            "json",
        ],
    );
    check_report(&serde_json::from_slice(&out.stdout).unwrap());

    // The default --from is the earliest data: the 2024-05-20 log line.
    let out = run(
        dir.path(),
        &[
            "--to",
            "2024-06-03",
            "--format",
            "json",
            "--utc-offset=-06:00",
        ],
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["from"], "2024-05-20T06:00:00-06:00");
    assert_eq!(
        r["summary"]["hits"], 28,
        "the window's 25 + 2024-05-20, 06-01 and 05:59:59.999Z"
    );

    // CSV into a file: one header, every row as wide as it, the same numbers.
    let csv_path = dir.path().join("report.csv");
    run(
        dir.path(),
        &[
            &window[..],
            &[
                "--config",
                "difusor.toml",
                "--format",
                "csv",
                "--out",
                csv_path.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert_no_addresses(&text);
    assert!(text.contains("\r\n"), "RFC 4180 line ends");
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[0], "table");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    for r in &rows {
        assert_eq!(r.len(), header.len());
    }
    let table = |t: &'static str| rows.iter().filter(move |r| &r[0] == t);
    let tables: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    for t in [
        "summary",
        "daily",
        "hourly",
        "pages",
        "cuts",
        "incidents",
        "downtime",
        "notes",
    ] {
        assert!(tables.contains(t), "no {t} rows");
    }
    let window_row = table("summary")
        .find(|r| &r[col("name")] == "window")
        .unwrap();
    assert_eq!(&window_row[col("hits")], "25");
    assert_eq!(&window_row[col("human_hits")], "19");
    assert_eq!(&window_row[col("page_views")], "13");
    assert_eq!(&window_row[col("unique_visitors")], "7");
    assert_eq!(&window_row[col("visits")], "9");
    assert_eq!(&window_row[col("bytes")], "84110");
    let metric = |name: &str| {
        table("summary")
            .find(|r| &r[col("name")] == name)
            .unwrap_or_else(|| panic!("no {name}"))[col("value")]
        .to_owned()
    };
    assert_eq!(metric("peak_minute_requests"), "6");
    assert_eq!(metric("peak_second_requests"), "3");
    assert!(close(
        metric("availability_percent").parse().unwrap(),
        169_800.0 / 1728.0
    ));
    assert_eq!(metric("downtime_secs"), "3000");
    assert_eq!(metric("median_publish_secs"), "2.5");
    let days: Vec<&csv::StringRecord> = table("daily").collect();
    assert_eq!(days.len(), 2);
    assert_eq!(
        (
            &days[0][col("hits")],
            &days[0][col("unique_visitors")],
            &days[0][col("visits")],
            &days[0][col("median_visit_secs")]
        ),
        ("8", "3", "4", "600")
    );
    assert_eq!(
        (
            &days[1][col("hits")],
            &days[1][col("unique_visitors")],
            &days[1][col("visits")]
        ),
        ("17", "4", "5")
    );
    assert_eq!(table("hourly").count(), 48);
    let pages: Vec<(&str, &str)> = table("pages")
        .map(|r| {
            (
                r.get(col("name")).unwrap(),
                r.get(col("page_views")).unwrap(),
            )
        })
        .collect();
    assert_eq!(pages.len(), 9);
    assert_eq!(pages[0], ("/", "3"));
    assert!(
        pages.contains(&(XSS_PATH, "1")),
        "the path is kept verbatim in CSV"
    );
    assert_eq!(table("cuts").count(), 5);
    let rejected = table("cuts")
        .find(|r| &r[col("result")] == "rejected")
        .unwrap();
    assert_eq!(
        &rejected[col("reason")],
        "zip: CRC mismatch in json/main.json"
    );
    let inc: Vec<(&str, &str, &str)> = table("incidents")
        .map(|r| {
            (
                r.get(col("kind")).unwrap(),
                r.get(col("result")).unwrap(),
                r.get(col("duration_secs")).unwrap(),
            )
        })
        .collect();
    assert_eq!(inc.len(), 9);
    assert_eq!(inc[0], ("disk-low", "resolved", "10800"));
    assert_eq!(inc[7], ("notify-failed", "ongoing", "36000"));
    let down: Vec<(&str, &str)> = table("downtime")
        .map(|r| {
            (
                r.get(col("result")).unwrap(),
                r.get(col("duration_secs")).unwrap(),
            )
        })
        .collect();
    assert_eq!(down, [("unhealthy", "1800"), ("no samples", "1200")]);
}

#[test]
fn cli_bad_arguments_exit_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path(), false);
    for (args, says) in [
        (&["--from", "yesterday"][..], "--from"),
        (&["--to", "2024-06-31"][..], "--to"),
        (
            &["--from", "2024-06-03", "--to", "2024-06-02"][..],
            "before",
        ),
        (&["--utc-offset", "6"][..], "offset"),
        (&["--format", "pdf"][..], "pdf"),
    ] {
        let out = difusor()
            .arg("report")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn cli_html_renders_in_headless_chromium_and_is_inert() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path(), true);
    let html_path = dir.path().join("report.html");
    run(
        dir.path(),
        &[
            "--from",
            "2024-06-02",
            "--to",
            "2024-06-03",
            "--utc-offset",
            "-06:00",
            "--out",
            html_path.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    // Kept beside the screenshot for a person to open.
    std::fs::write(chromium::artifacts_dir().join("report.html"), &html).unwrap();
    assert_no_addresses(&html);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "inline charts");
    assert_eq!(html.matches("<svg").count(), 4);
    // Self-contained: no reference to anything outside the page.
    assert!(!html.contains("http://") && !html.contains("https://"));
    for attr in ["src=", "href=", "url(", "@import"] {
        assert!(!html.contains(attr), "{attr} in the page");
    }
    // The injected path is shown escaped, and there is no script at all.
    assert!(html.contains("/&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.to_ascii_lowercase().contains("<script"));
    for text in [
        "Visitantes únicos",
        "<details>",
        "Definiciones",
        "20240603T1500Z-dddd4444",
    ] {
        assert!(html.contains(text), "{text}");
    }
    assert!(
        html.contains("98.264 %"),
        "availability 169,800 / 172,800 s"
    );

    let shot = chromium::screenshot(
        &format!("file://{}", html_path.display()),
        "report.png",
        1280,
        2400,
    );
    let total = shot.pixels.len();
    let white = shot.count(|p| *p == [255, 255, 255]);
    assert!(white < total / 2, "mostly white: {white} of {total}");
    let distinct = shot.distinct_colours();
    assert!(distinct > 200, "only {distinct} colours");
    // The charts' colours are on screen: human-hit bars, the availability band.
    let near = |c: [u8; 3]| shot.near(c);
    assert!(near([0x25, 0x63, 0xeb]) > 500, "no human-hit bars");
    assert!(near([0x16, 0xa3, 0x4a]) > 5000, "no availability band");
    assert!(near([0x7c, 0x3a, 0xed]) > 500, "no visitor bars");
}
