//! The report as one self-contained HTML page: the institute's "memoria técnica".
//!
//! Owns: the page's layout (summary cards, charts from [`super::svg`], tables, the
//! definitions footnote), in Spanish first with English alongside.
//!
//! Must never: reference anything outside the page (no external CSS, script, font or image;
//! a Content-Security-Policy forbids them besides), include a script, or write text from the
//! data (paths, names, reasons, subjects: attacker- or operator-controlled) without escaping.

use std::fmt::Write;

use super::svg::{self, esc, hm, int};
use super::{DEFINITIONS, PeriodStats, Report};
use crate::store::manifest::Severity;

/// `90` → `1 min 30 s`, `0.5` → `0.5 s`, `45008.5` → `12 h 30 min`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "—".into();
    }
    if secs < 60.0 {
        return if secs.fract() == 0.0 {
            format!("{secs:.0} s")
        } else {
            format!("{secs:.1} s")
        };
    }
    let total = secs.round() as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total % 86_400 / 3600,
        total % 3600 / 60,
        total % 60,
    );
    match (d, h) {
        (0, 0) if s == 0 => format!("{m} min"),
        (0, 0) => format!("{m} min {s} s"),
        (0, _) if m == 0 => format!("{h} h"),
        (0, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// `84110` → `84.1 kB` (SI units).
pub fn bytes(n: u64) -> String {
    let v = n as f64;
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", v / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", v / 1e6),
        1_000_000_000..1_000_000_000_000 => format!("{:.2} GB", v / 1e9),
        _ => format!("{:.2} TB", v / 1e12),
    }
}

fn opt_f(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.digits$}"))
}

fn opt_dur(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), duration)
}

fn date(t: time::OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn hms(t: time::OffsetDateTime) -> String {
    format!("{}:{:02}", hm(t), t.second())
}

const STYLE: &str = r#"
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;background:#e2e8f0;color:#0f172a;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#1e3a5f;color:#f8fafc;padding:26px 40px}
header h1{margin:0 0 6px;font-size:28px}
header p{margin:2px 0;color:#dbeafe}
.en{color:#64748b;font-weight:normal}
header .en{color:#bfdbfe}
main{padding:22px 40px;max-width:1280px;margin:0 auto}
section{background:#f8fafc;border:1px solid #cbd5e1;border-radius:10px;padding:16px 22px;margin:0 0 22px}
h2{margin:0 0 10px;font-size:19px;color:#1e3a5f}
h3{margin:16px 0 6px;font-size:16px;color:#1e3a5f}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(215px,1fr));gap:14px;background:none;border:none;padding:0}
.card{background:#f8fafc;border:1px solid #cbd5e1;border-left:7px solid #2563eb;border-radius:8px;padding:10px 14px}
.card .l{font-size:13px;color:#475569}
.card .v{font-size:26px;font-weight:700;margin:2px 0}
.card .s{font-size:12.5px;color:#334155}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th,td{padding:5px 8px;border-bottom:1px solid #e2e8f0;text-align:right;vertical-align:top}
th{background:#dbe4ee;color:#1e293b;font-weight:600}
td{white-space:nowrap}
.t{text-align:left;white-space:normal}
.nw{white-space:nowrap}
td.path{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere;white-space:normal;text-align:left}
tbody tr:nth-child(even) td{background:#eef2f7}
.chart{display:block;margin:4px 0 8px}
.chart text.tick{font-size:12px;fill:#334155}
.chart text.value{font-size:12px;fill:#0f172a}
.legend{font-size:13px;margin:0 0 6px}
.legend span{display:inline-block;margin-right:18px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.good{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}.warn{color:#b45309;font-weight:600}
details summary{cursor:pointer;color:#1d4ed8;margin:10px 0}
.muted{color:#475569;font-size:13px}
footer{padding:0 40px 40px;max-width:1280px;margin:0 auto;font-size:13px;color:#334155}
footer dt{font-weight:700;margin-top:8px}
footer dd{margin:2px 0 0 18px}
@media print{body{background:#fff}section{break-inside:avoid}}
"#;

struct Page {
    out: String,
}

impl Page {
    fn card(&mut self, colour: &str, label: &str, value: &str, sub: &str) {
        let _ = write!(
            self.out,
            r#"<div class="card" style="border-left-color:{colour}"><div class="l">{label}</div><div class="v">{}</div><div class="s">{}</div></div>"#,
            esc(value),
            esc(sub)
        );
    }

    fn legend(&mut self, items: &[(&str, &str)]) {
        self.out.push_str(r#"<div class="legend">"#);
        for (colour, label) in items {
            let _ = write!(
                self.out,
                r#"<span><i style="background:{colour}"></i>{label}</span>"#
            );
        }
        self.out.push_str("</div>");
    }

    /// A table head; a column whose name starts with `<` is left-aligned (the `<` is dropped).
    fn head(&mut self, cols: &[&str]) {
        self.out.push_str("<table><thead><tr>");
        for c in cols {
            match c.strip_prefix('<') {
                Some(c) => {
                    let _ = write!(self.out, r#"<th class="t">{c}</th>"#);
                }
                None => {
                    let _ = write!(self.out, "<th>{c}</th>");
                }
            }
        }
        self.out.push_str("</tr></thead><tbody>");
    }

    /// A row of already-escaped cells; `(class, html)`.
    fn row(&mut self, cells: &[(&str, String)]) {
        self.out.push_str("<tr>");
        for (class, html) in cells {
            if class.is_empty() {
                let _ = write!(self.out, "<td>{html}</td>");
            } else {
                let _ = write!(self.out, r#"<td class="{class}">{html}</td>"#);
            }
        }
        self.out.push_str("</tr>");
    }

    fn end_table(&mut self) {
        self.out.push_str("</tbody></table>");
    }

    fn periods(
        &mut self,
        first: &str,
        rows: &[PeriodStats],
        label: impl Fn(&PeriodStats) -> String,
    ) {
        self.head(&[
            first,
            "Solicitudes<br><span class=en>hits</span>",
            "Humanas<br><span class=en>human</span>",
            "Bots",
            "Páginas vistas<br><span class=en>page views</span>",
            "Visitantes únicos<br><span class=en>unique visitors</span>",
            "Visitas<br><span class=en>visits</span>",
            "Tiempo medio<br><span class=en>mean visit</span>",
            "Mediana<br><span class=en>median visit</span>",
            "Enviado<br><span class=en>sent</span>",
            "2xx",
            "3xx",
            "4xx",
            "5xx",
            "Mediana ms<br><span class=en>median ms</span>",
            "p95 ms",
        ]);
        for p in rows {
            self.row(&[
                ("t nw", esc(&label(p))),
                ("", int(p.hits)),
                ("", int(p.human_hits)),
                ("", int(p.bot_hits)),
                ("", int(p.page_views)),
                ("", int(p.unique_visitors)),
                ("", int(p.visits)),
                ("", esc(&opt_dur(p.mean_visit_secs))),
                ("", esc(&opt_dur(p.median_visit_secs))),
                ("", esc(&bytes(p.bytes))),
                ("", int(p.status.s2xx)),
                ("", int(p.status.s3xx)),
                ("", int(p.status.s4xx)),
                ("", int(p.status.s5xx)),
                ("", opt_f(p.median_ms, 2)),
                ("", opt_f(p.p95_ms, 2)),
            ]);
        }
        self.end_table();
    }
}

/// The table cell class and label of a severity.
fn severity(s: Severity) -> (&'static str, &'static str) {
    match s {
        Severity::Info => ("t", "info"),
        Severity::Warning => ("t warn", "advertencia / warning"),
        Severity::Critical => ("t bad", "crítico / critical"),
    }
}

/// The report as one self-contained HTML page.
pub fn to_html(r: &Report) -> String {
    let mut p = Page {
        out: String::with_capacity(64 << 10),
    };
    let s = &r.summary;
    let window = format!("{} → {}", hm(r.from), hm(r.to));
    let _ = write!(
        p.out,
        r#"<!DOCTYPE html>
<html lang="es"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Memoria técnica del difusor PREP — {}</title>
<style>{STYLE}</style></head><body>
<header><h1>Memoria técnica del difusor PREP <span class="en">/ technical report</span></h1>
<p>Periodo <span class="en">/ window</span>: <b>{}</b> (UTC{})</p>
<p>Generado <span class="en">/ generated</span>: {} · horas y días en UTC{} <span class="en">/ hours and days at UTC{}</span></p></header>
<main>
"#,
        esc(&window),
        esc(&window),
        esc(&r.utc_offset),
        esc(&hm(r.generated_at)),
        esc(&r.utc_offset),
        esc(&r.utc_offset),
    );

    // Summary cards.
    p.out.push_str(r#"<section class="cards">"#);
    p.card(
        svg::HUMAN,
        "Solicitudes <span class=en>/ hits</span>",
        &int(s.hits),
        &format!("humanas {} · bots {}", int(s.human_hits), int(s.bot_hits)),
    );
    p.card(
        svg::PAGE_VIEWS,
        "Páginas vistas <span class=en>/ page views</span>",
        &int(s.page_views),
        &format!("sin bots · bots aparte: {}", int(s.bot_page_views)),
    );
    p.card(
        svg::VISITORS,
        "Visitantes únicos <span class=en>/ unique visitors</span>",
        &int(s.unique_visitors),
        "suma de los diarios / sum of the daily uniques",
    );
    let days = r.daily.len().max(1) as f64;
    p.card(
        "#0891b2",
        "Visitas <span class=en>/ visits</span>",
        &int(s.visits),
        &format!("{:.1} por día / per day", s.visits as f64 / days),
    );
    p.card(
        "#4f46e5",
        "Tiempo en el sitio <span class=en>/ time on site</span>",
        &opt_dur(s.mean_visit_secs),
        &format!(
            "promedio · mediana / mean · median: {}",
            opt_dur(s.median_visit_secs)
        ),
    );
    let a = &r.availability;
    let (avail, avail_sub, avail_colour) = match (a.known, a.percent) {
        (true, Some(pc)) => (
            format!("{pc:.3} %"),
            format!(
                "caída / downtime: {} en {} intervalo(s)",
                opt_dur(a.downtime_secs),
                a.down.len()
            ),
            if pc >= 99.9 { svg::OK } else { svg::UNHEALTHY },
        ),
        _ => (
            "desconocida".to_owned(),
            "unknown: no hay muestras de salud / no health samples".to_owned(),
            svg::NO_SAMPLES,
        ),
    };
    p.card(
        avail_colour,
        "Disponibilidad <span class=en>/ availability</span>",
        &avail,
        &avail_sub,
    );
    match &r.peak.minute {
        Some(m) => p.card(
            "#db2777",
            "Minuto pico <span class=en>/ peak minute</span>",
            &format!("{} sol./min", int(m.requests)),
            &format!("{} · {:.3} Mbit/s", hm(m.start), m.mbit_per_s),
        ),
        None => p.card(
            "#db2777",
            "Minuto pico <span class=en>/ peak minute</span>",
            "—",
            "",
        ),
    }
    if let Some(sec) = &r.peak.second {
        p.card(
            "#be185d",
            "Segundo pico <span class=en>/ peak second</span>",
            &format!("{} sol./s", int(sec.requests)),
            &hms(sec.start),
        );
    }
    if let Some(h) = &r.peak.hour {
        p.card(
            "#9333ea",
            "Hora pico <span class=en>/ peak hour</span>",
            &format!("{} sol.", int(h.hits)),
            &format!("{} · {} páginas vistas", hm(h.start), int(h.page_views)),
        );
    }
    let c = &r.cuts_summary;
    p.card(
        svg::PUBLISH,
        "Cortes publicados <span class=en>/ cuts published</span>",
        &int(c.published),
        &format!(
            "rechazados / rejected {} · mediana de publicación {}",
            int(c.rejected),
            opt_dur(c.median_publish_secs)
        ),
    );
    p.card(
        "#64748b",
        "Enviado <span class=en>/ bytes sent</span>",
        &bytes(s.bytes),
        &format!(
            "latencia mediana {} ms · p95 {} ms",
            opt_f(s.median_ms, 2),
            opt_f(s.p95_ms, 2)
        ),
    );
    p.out.push_str("</section>\n");

    // Traffic per hour.
    p.out
        .push_str("<section><h2>Tráfico por hora <span class=en>/ traffic per hour</span></h2>");
    p.legend(&[
        (svg::HUMAN, "solicitudes humanas / human hits"),
        (svg::BOT, "bots"),
        (svg::PAGE_VIEWS, "páginas vistas / page views"),
    ]);
    p.out.push_str(&svg::hourly_chart(&r.hourly));
    p.out.push_str("</section>\n");

    // Visitors per day.
    p.out.push_str(
        "<section><h2>Visitantes únicos por día <span class=en>/ unique visitors per day</span></h2>",
    );
    p.out.push_str(&svg::daily_visitors_chart(&r.daily));
    p.out.push_str("</section>\n");

    // Availability.
    p.out.push_str(
        "<section><h2>Disponibilidad e incidentes <span class=en>/ availability and incidents</span></h2>",
    );
    p.legend(&[
        (svg::OK, "disponible / available"),
        (svg::UNHEALTHY, "no saludable / unhealthy"),
        (svg::NO_SAMPLES, "sin muestras, caído / no samples, down"),
        ("#0284c7", "incidente info"),
        ("#d97706", "advertencia / warning"),
        ("#b91c1c", "crítico / critical"),
    ]);
    p.out
        .push_str(&svg::availability_chart(a, &r.incidents, r.from, r.to));
    let _ = write!(
        p.out,
        r#"<p>Disponibilidad <span class=en>/ availability</span>: <b>{}</b> · caída total <span class=en>/ total downtime</span>: <b>{}</b> (no saludable / unhealthy {}, sin muestras / no samples {}) · medida hasta <span class=en>/ measured to</span> {}</p>"#,
        esc(&avail),
        esc(&opt_dur(a.downtime_secs)),
        esc(&opt_dur(a.unhealthy_secs)),
        esc(&opt_dur(a.no_sample_secs)),
        esc(&hm(a.measured_to)),
    );
    p.out
        .push_str("<h3>Intervalos de caída <span class=en>/ down intervals</span></h3>");
    if a.down.is_empty() {
        p.out.push_str(r#"<p class="muted">Ninguno / none.</p>"#);
    } else {
        p.head(&[
            "<Inicio <span class=en>/ start</span>",
            "<Fin <span class=en>/ end</span>",
            "Duración <span class=en>/ duration</span>",
            "<Causa <span class=en>/ cause</span>",
            "<Motivo <span class=en>/ reason</span>",
        ]);
        for d in &a.down {
            p.row(&[
                ("t nw", esc(&hms(d.start))),
                ("t nw", esc(&hms(d.end))),
                ("", esc(&duration(d.seconds))),
                ("t", esc(&d.cause)),
                ("t", esc(d.reason.as_deref().unwrap_or(""))),
            ]);
        }
        p.end_table();
    }
    p.out
        .push_str("<h3>Incidentes <span class=en>/ incidents</span></h3>");
    if r.incidents.is_empty() {
        p.out.push_str(r#"<p class="muted">Ninguno / none.</p>"#);
    } else {
        p.head(&[
            "<Inicio <span class=en>/ start</span>",
            "<Fin <span class=en>/ end</span>",
            "Duración <span class=en>/ duration</span>",
            "<Estado <span class=en>/ status</span>",
            "<Severidad <span class=en>/ severity</span>",
            "<Tipo <span class=en>/ kind</span>",
            "<Sujeto · paquete <span class=en>/ subject · package</span>",
            "<Motivo <span class=en>/ reason</span>",
        ]);
        for i in &r.incidents {
            let (class, sev) = severity(i.severity);
            let status = match i.status.as_str() {
                "ongoing" => "en curso / ongoing",
                "resolved" => "resuelto / resolved",
                _ => "instantáneo / instant",
            };
            let about: Vec<&str> = [i.subject.as_deref(), i.package.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            p.row(&[
                ("t nw", esc(&hms(i.time))),
                ("t nw", i.ends_at.map(|t| esc(&hms(t))).unwrap_or_default()),
                ("", esc(&opt_dur(i.duration_secs))),
                ("t", esc(status)),
                (class, esc(sev)),
                ("t", esc(&i.kind)),
                ("path", esc(&about.join(" · "))),
                ("t", esc(&i.reason)),
            ]);
        }
        p.end_table();
    }
    p.out.push_str("</section>\n");

    // Cuts.
    p.out
        .push_str("<section><h2>Cortes recibidos <span class=en>/ cuts received</span></h2>");
    p.legend(&[
        (svg::PUBLISH, "segundos hasta publicar / seconds to publish"),
        (svg::REJECTED, "✕ rechazado / rejected"),
    ]);
    p.out.push_str(&svg::publish_chart(&r.cuts));
    let gap = c.largest_gap.as_ref().map_or_else(
        || "—".to_owned(),
        |g| format!("{} ({} → {})", duration(g.seconds), hm(g.from), hm(g.to)),
    );
    let _ = write!(
        p.out,
        "<p>Recibidos <span class=en>/ received</span>: <b>{}</b> · publicados <span class=en>/ published</span>: <b>{}</b> · rechazados <span class=en>/ rejected</span>: <b>{}</b> · publicación mediana / máxima <span class=en>/ median / max time to publish</span>: <b>{}</b> / <b>{}</b> · transferencia media <span class=en>/ mean transfer</span>: <b>{} MB/s</b> · mayor intervalo sin corte <span class=en>/ largest gap</span>: <b>{}</b></p>",
        int(c.received),
        int(c.published),
        int(c.rejected),
        esc(&opt_dur(c.median_publish_secs)),
        esc(&opt_dur(c.max_publish_secs)),
        opt_f(c.mean_transfer_mb_per_s, 1),
        esc(&gap),
    );
    if !r.cuts.is_empty() {
        p.head(&[
            "<Recibido <span class=en>/ received</span>",
            "<Corte <span class=en>/ cut</span>",
            "<Hora del corte <span class=en>/ cut time</span>",
            "<Paquete <span class=en>/ package</span>",
            "Tamaño <span class=en>/ size</span>",
            "MB/s",
            "Publicación s <span class=en>/ to publish</span>",
            "<Resultado <span class=en>/ result</span>",
        ]);
        for cut in &r.cuts {
            let result = match cut.result.as_str() {
                "published" => r#"<span class="good">publicado / published</span>"#.to_owned(),
                "rejected" => format!(
                    r#"<span class="bad">rechazado / rejected</span>: {}"#,
                    esc(cut.reason.as_deref().unwrap_or(""))
                ),
                other => esc(other),
            };
            p.row(&[
                ("t nw", esc(&hms(cut.received_at))),
                ("path", esc(cut.cut_id.as_deref().unwrap_or("—"))),
                ("t", cut.cut_time.map(|t| esc(&hm(t))).unwrap_or_default()),
                ("path", esc(&cut.original_name)),
                ("", cut.size.map(bytes).unwrap_or_default()),
                ("", opt_f(cut.transfer_mb_per_s, 1)),
                ("", opt_f(cut.publish_seconds, 3)),
                ("t", result),
            ]);
        }
        p.end_table();
    }
    p.out.push_str("</section>\n");

    // Days.
    p.out
        .push_str("<section><h2>Por día <span class=en>/ per day</span></h2>");
    p.periods("<Día <span class=en>/ day</span>", &r.daily, |d| {
        date(d.start)
    });
    p.out.push_str("</section>\n");

    // Pages.
    let _ = write!(
        p.out,
        "<section><h2>Páginas más vistas <span class=en>/ top pages</span></h2><p class=muted>{} páginas distintas / distinct pages · solo visitas humanas / human page views only</p>",
        int(r.pages.len() as u64)
    );
    let pages_table = |p: &mut Page, pages: &[super::PageViews]| {
        p.head(&[
            "#",
            "<Ruta <span class=en>/ path</span>",
            "Páginas vistas <span class=en>/ page views</span>",
        ]);
        for (n, pg) in pages.iter().enumerate() {
            p.row(&[
                ("", int(n as u64 + 1)),
                ("path", esc(&pg.path)),
                ("", int(pg.views)),
            ]);
        }
        p.end_table();
    };
    let top = r.top_pages.max(1).min(r.pages.len());
    pages_table(&mut p, r.pages.get(..top).unwrap_or(&[]));
    if r.pages.len() > top {
        let _ = write!(
            p.out,
            "<details><summary>Lista completa <span class=en>/ full list</span> ({})</summary>",
            int(r.pages.len() as u64)
        );
        pages_table(&mut p, &r.pages);
        p.out.push_str("</details>");
    }
    p.out.push_str("</section>\n");

    // Hours (long: collapsed).
    p.out.push_str("<section><h2>Por hora <span class=en>/ per hour</span></h2><details><summary>Tabla por hora <span class=en>/ hourly table</span></summary>");
    p.periods("<Hora <span class=en>/ hour</span>", &r.hourly, |h| {
        hm(h.start)
    });
    p.out.push_str("</details></section>\n");

    // Data quality.
    let q = &r.data_quality.access_log;
    let _ = write!(
        p.out,
        "<section><h2>Calidad de los datos <span class=en>/ data quality</span></h2><p>Bitácoras leídas <span class=en>/ log files read</span>: {} · líneas <span class=en>/ lines</span>: {} · en la ventana <span class=en>/ in the window</span>: {} · no registradas por saturación <span class=en>/ dropped by the writer</span>: {} · ilegibles <span class=en>/ unparsable</span>: {} · fuera de orden <span class=en>/ out of order</span>: {}</p><ul>",
        esc(&q.files.join(", ")),
        int(q.lines),
        int(q.requests_in_window),
        int(q.dropped_lines),
        int(q.unparsable_lines),
        int(q.out_of_order_lines),
    );
    for n in &r.notes {
        let _ = write!(p.out, "<li>{}</li>", esc(n));
    }
    p.out.push_str("</ul></section>\n</main>\n");

    // Definitions.
    p.out
        .push_str("<footer><h2>Definiciones <span class=en>/ definitions</span></h2><dl>");
    for (term, meaning) in DEFINITIONS {
        let _ = write!(p.out, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(meaning));
    }
    p.out.push_str("</dl></footer>\n</body></html>\n");
    p.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(duration(0.0), "0 s");
        assert_eq!(duration(29.9), "29.9 s");
        assert_eq!(duration(90.0), "1 min 30 s");
        assert_eq!(duration(2340.0), "39 min");
        assert_eq!(duration(45008.5), "12 h 30 min");
        assert_eq!(duration(7200.0), "2 h");
        assert_eq!(duration(90000.0), "1 d 1 h");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(84110), "84.1 kB");
        assert_eq!(bytes(2_500_000), "2.5 MB");
    }
}
