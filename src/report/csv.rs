//! The report as one CSV file (RFC 4180: comma-separated, CRLF line ends, fields with a comma,
//! quote or line break quoted with quotes doubled).
//!
//! Owns: the one header every row shares — the first column `table` says which table a row
//! belongs to (summary, daily, hourly, pages, cuts, incidents, downtime, notes) and each table fills
//! the columns that apply to it, leaving the others empty.
//!
//! Must never: let a text field from a log or a package (a path, a name, a reason) start with
//! `=`, `+`, `-`, `@`, a tab or a carriage return as a spreadsheet would run it as a formula:
//! such a field gets a leading `'`.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::{PeriodStats, Report};

/// The shared header.
pub const COLUMNS: &[&str] = &[
    "table",
    "start",
    "end",
    "name",
    "hits",
    "human_hits",
    "bot_hits",
    "page_views",
    "bot_page_views",
    "unique_visitors",
    "visits",
    "mean_visit_secs",
    "median_visit_secs",
    "bytes",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "status_other",
    "median_ms",
    "p95_ms",
    "value",
    "cut_time",
    "severity",
    "kind",
    "subject",
    "package",
    "uploader",
    "size",
    "transfer_mb_per_s",
    "publish_seconds",
    "duration_secs",
    "closed_by",
    "result",
    "reason",
];

/// One row being filled: column → cell.
struct Row(HashMap<&'static str, String>);

impl Row {
    fn new(table: &str) -> Row {
        let mut r = Row(HashMap::new());
        r.0.insert("table", table.to_owned());
        r
    }
    fn set(&mut self, col: &'static str, value: impl ToString) -> &mut Row {
        debug_assert!(COLUMNS.contains(&col), "unknown CSV column {col}");
        self.0.insert(col, value.to_string());
        self
    }
    fn opt<T: ToString>(&mut self, col: &'static str, value: Option<T>) -> &mut Row {
        if let Some(v) = value {
            self.set(col, v);
        }
        self
    }
    /// Text that came from outside (logs, packages, incidents).
    fn text(&mut self, col: &'static str, value: &str) -> &mut Row {
        self.set(col, defuse(value))
    }
    fn time(&mut self, col: &'static str, t: OffsetDateTime) -> &mut Row {
        self.set(col, super::rfc3339(t))
    }
}

/// A leading `'` for text a spreadsheet would take for a formula.
fn defuse(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

/// One RFC 4180 field.
fn field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn line(out: &mut String, cells: &[&str]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, c);
    }
    out.push_str("\r\n");
}

fn period(table: &str, p: &PeriodStats) -> Row {
    let mut r = Row::new(table);
    r.time("start", p.start)
        .time("end", p.end)
        .set("hits", p.hits)
        .set("human_hits", p.human_hits)
        .set("bot_hits", p.bot_hits)
        .set("page_views", p.page_views)
        .set("bot_page_views", p.bot_page_views)
        .set("unique_visitors", p.unique_visitors)
        .set("visits", p.visits)
        .opt("mean_visit_secs", p.mean_visit_secs)
        .opt("median_visit_secs", p.median_visit_secs)
        .set("bytes", p.bytes)
        .set("status_2xx", p.status.s2xx)
        .set("status_3xx", p.status.s3xx)
        .set("status_4xx", p.status.s4xx)
        .set("status_5xx", p.status.s5xx)
        .set("status_other", p.status.other)
        .opt("median_ms", p.median_ms)
        .opt("p95_ms", p.p95_ms);
    r
}

fn metric(name: &str, value: impl ToString, at: Option<OffsetDateTime>) -> Row {
    let mut r = Row::new("summary");
    r.set("name", name).set("value", value);
    if let Some(t) = at {
        r.time("start", t);
    }
    r
}

/// The report as CSV (see the module doc for the layout).
pub fn to_csv(report: &Report) -> String {
    let mut rows: Vec<Row> = Vec::new();
    let mut s = period("summary", &report.summary);
    s.set("name", "window");
    rows.push(s);
    let p = &report.peak;
    if let Some(m) = &p.minute {
        rows.push(metric("peak_minute_requests", m.requests, Some(m.start)));
        rows.push(metric("peak_minute_bytes", m.bytes, Some(m.start)));
        rows.push(metric(
            "peak_minute_mbit_per_s",
            m.mbit_per_s,
            Some(m.start),
        ));
    }
    if let Some(m) = &p.bandwidth_minute {
        rows.push(metric(
            "peak_bandwidth_minute_mbit_per_s",
            m.mbit_per_s,
            Some(m.start),
        ));
    }
    if let Some(s) = &p.second {
        rows.push(metric("peak_second_requests", s.requests, Some(s.start)));
    }
    if let Some(h) = &p.hour {
        rows.push(metric("peak_hour_hits", h.hits, Some(h.start)));
    }
    let a = &report.availability;
    let unknown = || "unknown".to_owned();
    rows.push(metric(
        "availability_percent",
        a.percent.map_or_else(unknown, |v| v.to_string()),
        None,
    ));
    rows.push(metric(
        "downtime_secs",
        a.downtime_secs.map_or_else(unknown, |v| v.to_string()),
        None,
    ));
    let c = &report.cuts_summary;
    rows.push(metric("cuts_received", c.received, None));
    rows.push(metric("cuts_published", c.published, None));
    rows.push(metric("cuts_rejected", c.rejected, None));
    let none = String::new;
    rows.push(metric(
        "median_publish_secs",
        c.median_publish_secs.map_or_else(none, |v| v.to_string()),
        None,
    ));
    rows.push(metric(
        "max_publish_secs",
        c.max_publish_secs.map_or_else(none, |v| v.to_string()),
        None,
    ));
    rows.push(metric(
        "mean_transfer_mb_per_s",
        c.mean_transfer_mb_per_s
            .map_or_else(none, |v| v.to_string()),
        None,
    ));
    if let Some(g) = &c.largest_gap {
        let mut r = metric("largest_gap_secs", g.seconds, Some(g.from));
        r.time("end", g.to);
        rows.push(r);
    }
    let q = &report.data_quality.access_log;
    rows.push(metric("dropped_log_lines", q.dropped_lines, None));
    rows.push(metric("unparsable_log_lines", q.unparsable_lines, None));

    rows.extend(report.daily.iter().map(|d| period("daily", d)));
    rows.extend(report.hourly.iter().map(|h| period("hourly", h)));
    for pg in &report.pages {
        let mut r = Row::new("pages");
        r.text("name", &pg.path).set("page_views", pg.views);
        rows.push(r);
    }
    for cut in &report.cuts {
        let mut r = Row::new("cuts");
        r.time("start", cut.received_at)
            .text("package", &cut.original_name)
            .opt("size", cut.size)
            .opt("transfer_mb_per_s", cut.transfer_mb_per_s)
            .opt("publish_seconds", cut.publish_seconds)
            .set("result", &cut.result);
        if let Some(id) = &cut.cut_id {
            r.text("name", id);
        }
        if let Some(t) = cut.published_at {
            r.time("end", t);
        }
        if let Some(t) = cut.cut_time {
            r.time("cut_time", t);
        }
        if let Some(u) = &cut.uploader {
            r.text("uploader", u);
        }
        if let Some(why) = &cut.reason {
            r.text("reason", why);
        }
        rows.push(r);
    }
    for i in &report.incidents {
        let mut r = Row::new("incidents");
        let severity = serde_json::to_value(i.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        r.time("start", i.time)
            .set("severity", severity)
            .text("kind", &i.kind)
            .text("reason", &i.reason)
            .set("result", &i.status)
            .opt("duration_secs", i.duration_secs)
            .opt("closed_by", i.closed_by.as_deref());
        if let Some(t) = i.ends_at {
            r.time("end", t);
        }
        for (col, v) in [
            ("subject", &i.subject),
            ("package", &i.package),
            ("uploader", &i.uploader),
        ] {
            if let Some(v) = v {
                r.text(col, v);
            }
        }
        rows.push(r);
    }
    for d in &report.availability.down {
        let mut r = Row::new("downtime");
        r.time("start", d.start)
            .time("end", d.end)
            .set("duration_secs", d.seconds)
            .set("result", &d.cause);
        if let Some(why) = &d.reason {
            r.text("reason", why);
        }
        rows.push(r);
    }

    // Notes last, so a reader of the file sees them too.
    for n in &report.notes {
        let mut r = Row::new("notes");
        r.text("reason", n);
        rows.push(r);
    }

    let mut out = String::with_capacity(rows.len() * 128);
    line(&mut out, COLUMNS);
    for r in &rows {
        let cells: Vec<&str> = COLUMNS
            .iter()
            .map(|c| r.0.get(c).map_or("", String::as_str))
            .collect();
        line(&mut out, &cells);
    }
    out
}
