//! The admin status page: the [`Overview`] as one HTML page for a tired operator — a banner
//! whose colour says whether all is well, the live cut and its age in big type, then the last
//! packages, open conditions and incidents, traffic now and disk use. Refreshes itself.
//!
//! Owns: the markup (self-contained: inline CSS, no scripts, no external resources).
//! Must never: print anything unescaped — package names and reasons come from outside.

use std::fmt::Write;

use crate::monitor::overview::{Overview, human_bytes, human_duration, human_time, severity_label};
use crate::monitor::watch::Level;
use crate::store::Severity;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2430}\
header{padding:18px 28px;color:#fff;font-size:28px;font-weight:700}\
.ok{background:#1e7d3a}.warning{background:#c77700}.critical{background:#b3261e}.idle{background:#4a5568}\
main{padding:8px 28px 40px}section{background:#fff;border-radius:8px;padding:14px 18px;margin:14px 0;box-shadow:0 1px 2px #0002}\
h2{margin:0 0 8px;font-size:18px;color:#4a5568;text-transform:uppercase;letter-spacing:.04em}\
.big{font-size:40px;font-weight:700}.sub{color:#4a5568;font-size:18px}\
table{border-collapse:collapse;width:100%;font-size:15px}td,th{padding:5px 8px;text-align:left;border-bottom:1px solid #e2e5ea}\
th{color:#4a5568;font-weight:600}.r{text-align:right;font-variant-numeric:tabular-nums}\
.pill{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:13px;font-weight:600}\
.p-published,.p-info{background:#1e7d3a}.p-rejected,.p-critical{background:#b3261e}.p-archived,.p-warning{background:#c77700}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:14px}\
.bar{height:16px;background:#e2e5ea;border-radius:8px;overflow:hidden}.bar>div{height:100%;background:#3b6fd8}\
footer{color:#718096;font-size:13px;padding:0 28px 20px}";

/// The page. `refresh_secs`: how often the browser reloads it.
pub fn render(o: &Overview, refresh_secs: u32) -> String {
    let mut h = String::with_capacity(16 << 10);
    let (class, banner) = match (o.live.is_some(), o.staleness.watching, o.staleness.level) {
        (false, false, _) => ("idle", "Waiting for the first cut".to_owned()),
        (_, false, _) => ("idle", "Outside the publication window".to_owned()),
        (_, true, Level::Ok) => ("ok", "Cuts on time".to_owned()),
        (_, true, Level::Warning) => (
            "warning",
            format!("Cut late: {} expected cut(s) missed", o.staleness.missed),
        ),
        (_, true, Level::Critical) => (
            "critical",
            format!(
                "CRITICAL: {} expected cuts missed — the contracts disconnect at 3",
                o.staleness.missed
            ),
        ),
    };
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{refresh_secs}\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>difusor — {}</title><style>{STYLE}</style></head><body>\
<header class=\"{class}\">{}</header><main>",
        esc(&banner),
        esc(&banner)
    );
    // Live cut.
    h.push_str("<div class=\"grid\"><section><h2>Live cut</h2>");
    match &o.live {
        Some(l) => {
            let age = l.age_secs.map(human_duration).unwrap_or_default();
            let _ = write!(
                h,
                "<div class=\"big\">{} ago</div><div class=\"sub\">went live {} · cut time {}</div><div class=\"sub\">{} · one cut expected every {}</div>",
                esc(&age),
                l.published_at.map(human_time).unwrap_or_else(|| "?".into()),
                l.cut_time.map(human_time).unwrap_or_else(|| "unknown".into()),
                esc(&l.cut_id),
                esc(&human_duration(o.staleness.period_secs as i64)),
            );
            if let Some(due) = o.staleness.next_due {
                let _ = write!(h, "<div class=\"sub\">next cut due {}</div>", human_time(due));
            }
        }
        None => h.push_str("<div class=\"big\">none yet</div><div class=\"sub\">the site shows the waiting page</div>"),
    }
    h.push_str("</section>");
    // Traffic now.
    h.push_str("<section><h2>Traffic now</h2>");
    match &o.traffic {
        Some(t) => {
            let _ = write!(
                h,
                "<div class=\"big\">{:.0} req/s</div><div class=\"sub\">{}/s · {} open connections</div><div class=\"sub\">{} requests, {} sent since start</div>",
                t.now.requests_per_second,
                human_bytes(t.now.bytes_per_second as u64),
                t.open_connections,
                t.requests_total,
                human_bytes(t.bytes_total)
            );
        }
        None => h.push_str("<div class=\"sub\">not running</div>"),
    }
    h.push_str("</section>");
    // Disk.
    let d = &o.disk;
    let total = d.total_bytes.unwrap_or(0).max(1);
    let used_pct = d
        .free_bytes
        .map(|f| 100.0 - (f as f64 * 100.0 / total as f64))
        .unwrap_or(0.0);
    let _ = write!(
        h,
        "<section><h2>Disk</h2><div class=\"big\">{} free</div><div class=\"bar\"><div style=\"width:{used_pct:.0}%\"></div></div>\
<div class=\"sub\">history uses {} of the {} the institutes require to keep{}</div></section></div>",
        d.free_bytes.map_or("?".into(), human_bytes),
        human_bytes(d.history_bytes),
        human_bytes(d.keep_history_bytes),
        if d.required_history_fits {
            " — fits"
        } else {
            " — <b>would NOT fit</b>"
        }
    );
    // Object-storage mirror.
    if !o.mirror.is_empty() {
        h.push_str("<section><h2>Mirror (object storage)</h2><table><tr><th>target</th><th>state</th><th class=\"r\">cuts behind</th><th class=\"r\">behind</th><th>bucket shows</th><th class=\"r\">uploads</th><th class=\"r\">failures</th></tr>");
        for m in &o.mirror {
            let (class, state) = match (m.healthy, m.cuts_behind) {
                (false, _) => ("critical", "failing"),
                (true, 0) => ("info", "up to date"),
                (true, _) => ("warning", "catching up"),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td><span class=\"pill p-{class}\">{state}</span></td><td class=\"r\">{}</td><td class=\"r\">{}</td><td>{}</td><td class=\"r\">{}</td><td class=\"r\">{}</td></tr>",
                esc(&m.name),
                m.cuts_behind,
                human_duration(m.seconds_behind as i64),
                esc(m.last_mirrored_cut.as_deref().unwrap_or("nothing yet")),
                m.uploads_total,
                m.failures_total
            );
        }
        h.push_str("</table></section>");
    }
    // Notifiers (webhooks, hooks, CDN purges).
    if !o.notifiers.is_empty() {
        h.push_str("<section><h2>Notifiers</h2><table><tr><th>name</th><th>kind</th><th>state</th><th class=\"r\">delivered</th><th class=\"r\">failures</th><th class=\"r\">retries</th><th class=\"r\">queued</th></tr>");
        for n in &o.notifiers {
            let (class, state) = if n.failing {
                ("critical", "failing")
            } else {
                ("info", "ok")
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><span class=\"pill p-{class}\">{state}</span></td><td class=\"r\">{}</td><td class=\"r\">{}</td><td class=\"r\">{}</td><td class=\"r\">{}</td></tr>",
                esc(&n.name),
                n.kind,
                n.successes,
                n.failures,
                n.retries,
                n.queued
            );
        }
        h.push_str("</table></section>");
    }
    // Open conditions.
    if !o.open_conditions.is_empty() {
        h.push_str("<section><h2>Open conditions</h2><table>");
        for i in &o.open_conditions {
            incident_row(&mut h, i);
        }
        h.push_str("</table></section>");
    }
    // Packages.
    let _ = write!(
        h,
        "<section><h2>Last packages ({} in history)</h2><table><tr><th>received</th><th>package</th><th class=\"r\">size</th><th class=\"r\">MB/s</th><th class=\"r\">to live</th><th>result</th></tr>",
        o.packages_in_history
    );
    if o.last_packages.is_empty() {
        h.push_str("<tr><td colspan=\"6\">none received yet</td></tr>");
    }
    for p in &o.last_packages {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"r\">{}</td><td class=\"r\">{}</td><td class=\"r\">{}</td><td><span class=\"pill p-{}\">{}</span> {}</td></tr>",
            human_time(p.time),
            esc(&p.name),
            p.size.map(human_bytes).unwrap_or_default(),
            p.transfer_mb_per_s
                .map(|r| format!("{r:.1}"))
                .unwrap_or_default(),
            p.publish_seconds
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_default(),
            p.result,
            p.result,
            esc(p.reason.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table></section>");
    // Incidents.
    let _ = write!(
        h,
        "<section><h2>Incidents, last 24 h ({})</h2><table>",
        o.incidents_24h.len()
    );
    if o.incidents_24h.is_empty() {
        h.push_str("<tr><td>none</td></tr>");
    }
    for i in o.incidents_24h.iter().take(50) {
        incident_row(&mut h, i);
    }
    let _ = write!(
        h,
        "</table></section></main><footer>{} · refreshes every {refresh_secs} s · <a href=\"/metrics\">metrics</a> · <a href=\"/status.json\">status.json</a></footer></body></html>",
        human_time(o.now)
    );
    h
}

fn incident_row(h: &mut String, i: &crate::store::Incident) {
    let class = match i.severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    };
    let about = i.package.as_deref().or(i.subject.as_deref()).unwrap_or("");
    let _ = write!(
        h,
        "<tr><td>{}</td><td><span class=\"pill p-{class}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
        human_time(i.time),
        severity_label(i.severity),
        esc(&i.kind),
        esc(about),
        esc(&i.reason)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::overview::{DiskView, Overview, PackageRow, StalenessView};
    use time::macros::datetime;

    #[test]
    fn outside_text_is_escaped() {
        let hostile = "<script>alert(1)</script>";
        let o = Overview {
            now: datetime!(2024-06-03 02:00 UTC),
            live: None,
            staleness: StalenessView {
                level: Level::Ok,
                missed: 0,
                watching: false,
                period_secs: 900,
                next_due: None,
            },
            packages_in_history: 0,
            last_packages: vec![PackageRow {
                time: datetime!(2024-06-03 01:00 UTC),
                name: hostile.to_owned(),
                cut_id: None,
                size: None,
                transfer_mb_per_s: None,
                publish_seconds: None,
                result: "rejected",
                reason: Some(format!("bad name {hostile}")),
            }],
            incidents_24h: vec![],
            open_conditions: vec![],
            disk: DiskView {
                history_bytes: 0,
                free_bytes: Some(1),
                total_bytes: Some(2),
                keep_history_bytes: 20_000_000_000,
                required_history_fits: false,
            },
            traffic: None,
            mirror: vec![],
            notifiers: vec![crate::notify::NotifierStats {
                name: hostile.into(),
                kind: "webhook",
                successes: 3,
                failures: 1,
                retries: 2,
                queued: 0,
                failing: true,
            }],
        };
        let html = render(&o, 10);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Waiting for the first cut"));
        assert!(html.contains("<h2>Notifiers</h2>"), "{html}");
        assert!(html.contains("failing"), "{html}");
    }
}
