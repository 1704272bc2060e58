//! The report's charts as inline SVG, written by hand.
//!
//! Why by hand and not `plotters`: four simple chart shapes need a few hundred lines of
//! string formatting, while a plotting crate brings a font stack (or, SVG-only, text without
//! metrics), dozens of dependencies, and output we could not style with the page's CSS or
//! annotate with `<title>` tooltips. Hand-written SVG is dependable in every browser and in
//! print, and stays one self-contained file.
//!
//! Owns: scales, axes, bars, lines, the availability timeline.
//! Must never: put text in the SVG that did not go through [`esc`] (paths, reasons and
//! subjects are attacker- or operator-controlled), or reference anything outside the page.

use std::fmt::Write;

use time::OffsetDateTime;

use super::{CutRow, IncidentRow, PeriodStats, State, health::Availability};
use crate::store::manifest::Severity;

pub const HUMAN: &str = "#2563eb";
pub const BOT: &str = "#94a3b8";
pub const PAGE_VIEWS: &str = "#ea580c";
pub const VISITORS: &str = "#7c3aed";
pub const PUBLISH: &str = "#0d9488";
pub const REJECTED: &str = "#dc2626";
pub const OK: &str = "#16a34a";
pub const UNHEALTHY: &str = "#dc2626";
pub const NO_SAMPLES: &str = "#475569";
const AXIS: &str = "#334155";
const GRID: &str = "#cbd5e1";

/// Escapes text for HTML and SVG (element content and quoted attributes).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `YYYY-MM-DD HH:MM` of `t` (already in the report's offset).
pub fn hm(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// The smallest 1, 2 or 5 × 10ᵏ at or above `v` (at least 1).
fn nice_max(v: f64) -> f64 {
    // NaN and anything up to 1 get the smallest axis.
    if v.is_nan() || v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

/// A tick label: whole numbers with separators, else up to two decimals.
fn num(v: f64) -> String {
    if v >= 1000.0 || v.fract() == 0.0 {
        int(v.round() as u64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Gridline divisions for an axis up to `max` (a `nice_max`): five for 5 × 10ᵏ so the labels
/// stay round (1, 2, 3 …), four otherwise.
fn divisions(max: f64) -> u32 {
    let lead = max / 10f64.powf(max.log10().floor());
    if (lead - 5.0).abs() < 1e-9 { 5 } else { 4 }
}

const W: f64 = 1160.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;

struct Frame {
    out: String,
    height: f64,
    bottom: f64,
    max: f64,
}

impl Frame {
    /// An SVG with a y axis from 0 to `nice_max(max)`, its gridlines labelled.
    fn new(height: f64, max: f64, label: &str) -> Frame {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg class="chart" viewBox="0 0 {W} {height}" width="100%" role="img" aria-label="{}">"#,
            esc(label)
        );
        let bottom = 40.0;
        let f = Frame {
            out,
            height,
            bottom,
            max: nice_max(max),
        };
        let mut out = f.out;
        let n = divisions(f.max);
        for k in 0..=n {
            let share = f64::from(k) / f64::from(n);
            let v = f.max * share;
            let y = f.height - f.bottom - (f.height - f.bottom - TOP) * share;
            let _ = write!(
                out,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{GRID}" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                num(v)
            );
        }
        Frame { out, ..f }
    }
    fn plot_w(&self) -> f64 {
        W - LEFT - RIGHT
    }
    fn plot_h(&self) -> f64 {
        self.height - self.bottom - TOP
    }
    fn base(&self) -> f64 {
        self.height - self.bottom
    }
    fn y(&self, v: f64) -> f64 {
        self.base() - self.plot_h() * (v / self.max).clamp(0.0, 1.0)
    }
    fn x_label(&mut self, x: f64, text: &str) {
        let _ = write!(
            self.out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{AXIS}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"#,
            self.base(),
            self.base() + 4.0,
            self.base() + 18.0,
            esc(text)
        );
    }
    fn finish(mut self) -> String {
        let _ = write!(
            self.out,
            r#"<line x1="{LEFT}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}" stroke="{AXIS}" stroke-width="1.5"/></svg>"#,
            W - RIGHT,
            b = self.base()
        );
        self.out
    }
}

/// A label every `step` items so that at most `max_labels` appear.
fn label_step(n: usize, max_labels: usize) -> usize {
    n.div_ceil(max_labels.max(1)).max(1)
}

/// Hits per hour as stacked bars (humans, bots) and page views as a line.
pub fn hourly_chart(hours: &[PeriodStats]) -> String {
    let max = hours.iter().map(|h| h.hits).max().unwrap_or(0) as f64;
    let mut f = Frame::new(
        300.0,
        max,
        "Solicitudes y páginas vistas por hora / hits and page views per hour",
    );
    let n = hours.len().max(1) as f64;
    let bw = f.plot_w() / n;
    let mut line = String::new();
    // Hour labels every 1, 2, 3, 6, 12 or 24 hours, on the local clock.
    let every = [1u8, 2, 3, 6, 12, 24]
        .into_iter()
        .find(|e| hours.len() / usize::from(*e) <= 16)
        .unwrap_or(24);
    for (i, h) in hours.iter().enumerate() {
        let x = LEFT + bw * i as f64;
        let human_top = f.y(h.human_hits as f64);
        let all_top = f.y(h.hits as f64);
        let gap = if bw > 4.0 { 1.0 } else { 0.0 };
        let _ = write!(
            f.out,
            r#"<g><title>{} — {} hits ({} humanas/human, {} bots), {} páginas vistas/page views, {} visitantes/visitors</title><rect x="{x:.2}" y="{human_top:.2}" width="{:.2}" height="{:.2}" fill="{HUMAN}"/><rect x="{x:.2}" y="{all_top:.2}" width="{:.2}" height="{:.2}" fill="{BOT}"/></g>"#,
            esc(&hm(h.start)),
            int(h.hits),
            int(h.human_hits),
            int(h.bot_hits),
            int(h.page_views),
            int(h.unique_visitors),
            (bw - gap).max(0.5),
            f.base() - human_top,
            (bw - gap).max(0.5),
            human_top - all_top,
        );
        let _ = write!(line, "{:.2},{:.2} ", x + bw / 2.0, f.y(h.page_views as f64));
        if h.start.hour() % every == 0 {
            let label = if h.start.hour() == 0 {
                format!("{:02}/{:02}", h.start.day(), u8::from(h.start.month()))
            } else {
                format!("{:02}h", h.start.hour())
            };
            f.x_label(x, &label);
        }
        if h.start.hour() == 0 && i > 0 {
            let _ = write!(
                f.out,
                r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{AXIS}" stroke-dasharray="4 3" stroke-width="1"/>"#,
                f.base()
            );
        }
    }
    let _ = write!(
        f.out,
        r#"<polyline points="{}" fill="none" stroke="{PAGE_VIEWS}" stroke-width="2.5" stroke-linejoin="round"/>"#,
        line.trim_end()
    );
    f.finish()
}

/// Unique visitors per day as labelled bars.
pub fn daily_visitors_chart(days: &[PeriodStats]) -> String {
    let max = days.iter().map(|d| d.unique_visitors).max().unwrap_or(0) as f64;
    let mut f = Frame::new(
        260.0,
        max,
        "Visitantes únicos por día / unique visitors per day",
    );
    let n = days.len().max(1) as f64;
    let bw = f.plot_w() / n;
    let step = label_step(days.len(), 20);
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + bw * i as f64;
        let w = (bw * 0.7).max(1.0);
        let top = f.y(d.unique_visitors as f64);
        let date = format!(
            "{:04}-{:02}-{:02}",
            d.start.year(),
            u8::from(d.start.month()),
            d.start.day()
        );
        let _ = write!(
            f.out,
            r#"<g><title>{} — {} visitantes únicos/unique visitors, {} visitas/visits</title><rect x="{:.2}" y="{top:.2}" width="{w:.2}" height="{:.2}" fill="{VISITORS}" rx="2"/></g>"#,
            esc(&date),
            int(d.unique_visitors),
            int(d.visits),
            x + (bw - w) / 2.0,
            f.base() - top
        );
        if days.len() <= 40 {
            let _ = write!(
                f.out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="value">{}</text>"#,
                x + bw / 2.0,
                top - 5.0,
                int(d.unique_visitors)
            );
        }
        if i % step == 0 {
            f.x_label(x + bw / 2.0, &date);
        }
    }
    f.finish()
}

/// Seconds from upload to live per cut (bars) and rejected packages (red crosses).
pub fn publish_chart(cuts: &[CutRow]) -> String {
    let max = cuts
        .iter()
        .filter_map(|c| c.publish_seconds)
        .fold(0.0, f64::max);
    let mut f = Frame::new(
        260.0,
        max,
        "Tiempo de publicación por corte / time to publish per cut",
    );
    let n = cuts.len().max(1) as f64;
    let bw = f.plot_w() / n;
    let step = label_step(cuts.len(), 14);
    for (i, c) in cuts.iter().enumerate() {
        let x = LEFT + bw * i as f64;
        let cx = x + bw / 2.0;
        let name = c.cut_id.as_deref().unwrap_or(&c.original_name);
        match (c.result.as_str(), c.publish_seconds) {
            ("rejected", _) => {
                let y = f.base() - 10.0;
                let _ = write!(
                    f.out,
                    r#"<g><title>{} — rechazado/rejected: {}</title><path d="M{:.1},{:.1} l10,10 m0,-10 l-10,10" stroke="{REJECTED}" stroke-width="3"/></g>"#,
                    esc(&c.original_name),
                    esc(c.reason.as_deref().unwrap_or("")),
                    cx - 5.0,
                    y - 5.0
                );
            }
            (_, Some(s)) => {
                let w = (bw * 0.7).max(1.0);
                let top = f.y(s);
                let _ = write!(
                    f.out,
                    r#"<g><title>{} — {s:.3} s</title><rect x="{:.2}" y="{top:.2}" width="{w:.2}" height="{:.2}" fill="{PUBLISH}" rx="2"/></g>"#,
                    esc(name),
                    x + (bw - w) / 2.0,
                    f.base() - top
                );
            }
            _ => {}
        }
        if i % step == 0 {
            let t = c.cut_time.unwrap_or(c.received_at);
            f.x_label(cx, &format!("{:02}:{:02}", t.hour(), t.minute()));
        }
    }
    f.finish()
}

fn severity_colour(s: Severity) -> &'static str {
    match s {
        Severity::Info => "#0284c7",
        Severity::Warning => "#d97706",
        Severity::Critical => "#b91c1c",
    }
}

/// The window as a band coloured by health state, with incidents below it.
pub fn availability_chart(
    a: &Availability,
    incidents: &[IncidentRow],
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> String {
    let height = 150.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {height}" width="100%" role="img" aria-label="Disponibilidad / availability">"#
    );
    let span = (to - from).as_seconds_f64().max(1.0);
    let plot_w = W - LEFT - RIGHT;
    let x =
        |t: OffsetDateTime| LEFT + plot_w * ((t - from).as_seconds_f64() / span).clamp(0.0, 1.0);
    let (band_y, band_h) = (12.0, 34.0);
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">salud</text>"#,
        LEFT - 6.0,
        band_y + band_h / 2.0 + 4.0
    );
    if a.known {
        for s in &a.timeline {
            let colour = match s.state {
                State::Ok => OK,
                State::Unhealthy => UNHEALTHY,
                State::NoSamples => NO_SAMPLES,
            };
            let label = match s.state {
                State::Ok => "disponible / available",
                State::Unhealthy => "no saludable / unhealthy",
                State::NoSamples => "sin muestras (caído) / no samples (down)",
            };
            let (x0, x1) = (x(s.start), x(s.end));
            let _ = write!(
                out,
                r#"<g><title>{} → {}: {label}</title><rect x="{x0:.2}" y="{band_y}" width="{:.2}" height="{band_h}" fill="{colour}"/></g>"#,
                esc(&hm(s.start)),
                esc(&hm(s.end)),
                (x1 - x0).max(1.0)
            );
        }
        // The time after the measured end (a window ending in the future) is left blank.
    } else {
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{band_y}" width="{plot_w:.1}" height="{band_h}" fill="#e2e8f0" stroke="{GRID}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" class="value">disponibilidad desconocida: no hay muestras de salud / availability unknown: no health samples</text>"##,
            LEFT + plot_w / 2.0,
            band_y + band_h / 2.0 + 4.0
        );
    }
    // Incidents: a bar for the time a condition lasted, a marker for each incident.
    let lane_y = band_y + band_h + 14.0;
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">incid.</text>"#,
        LEFT - 6.0,
        lane_y + 10.0
    );
    for (k, i) in incidents.iter().enumerate() {
        let colour = severity_colour(i.severity);
        let y = lane_y + (k % 4) as f64 * 9.0;
        let x0 = x(i.time.max(from));
        let title = format!(
            "{} {} — {}{}",
            hm(i.time),
            i.kind,
            i.reason,
            i.duration_secs
                .map(|d| format!(" ({})", super::html::duration(d)))
                .unwrap_or_default()
        );
        let _ = write!(out, "<g><title>{}</title>", esc(&title));
        if let Some(end) = i.ends_at {
            let _ = write!(
                out,
                r#"<rect x="{x0:.2}" y="{:.1}" width="{:.2}" height="5" fill="{colour}" opacity="0.55"/>"#,
                y + 2.0,
                (x(end) - x0).max(2.0)
            );
        }
        let _ = write!(
            out,
            r#"<path d="M{x0:.2},{y:.1} l5,9 h-10 z" fill="{colour}"/></g>"#
        );
    }
    // The time axis: local midnights, and every 6 hours when the window is short.
    let axis_y = height - 30.0;
    let _ = write!(
        out,
        r#"<line x1="{LEFT}" y1="{axis_y}" x2="{:.1}" y2="{axis_y}" stroke="{AXIS}"/>"#,
        W - RIGHT
    );
    // Ticks on local hours that are multiples of a step giving at most 16 of them; multiples
    // of 24 are local midnights (labelled with the date).
    let offset_s = i64::from(from.offset().whole_seconds());
    let local_hour = |t: OffsetDateTime| (t.unix_timestamp() + offset_s).div_euclid(3600);
    let (from_h, to_h) = (local_hour(from), local_hour(to));
    let span_h = (to_h - from_h).max(1);
    let step = [1i64, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720]
        .into_iter()
        .find(|s| span_h / s <= 16)
        .unwrap_or(720);
    let mut h = (from_h + step - 1).div_euclid(step) * step;
    while h <= to_h {
        let Ok(t) = OffsetDateTime::from_unix_timestamp(h * 3600 - offset_s) else {
            break;
        };
        let t = t.to_offset(from.offset());
        if t >= from {
            let xx = x(t);
            let label = if t.hour() == 0 {
                format!("{:02}/{:02}", t.day(), u8::from(t.month()))
            } else {
                format!("{:02}h", t.hour())
            };
            let _ = write!(
                out,
                r#"<line x1="{xx:.1}" y1="{axis_y}" x2="{xx:.1}" y2="{:.1}" stroke="{AXIS}"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"#,
                axis_y + 4.0,
                axis_y + 18.0,
                esc(&label)
            );
        }
        h += step;
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_numbers() {
        assert_eq!(
            esc("/<script>alert('x\")</script>&"),
            "/&lt;script&gt;alert(&#39;x&quot;)&lt;/script&gt;&amp;"
        );
        assert_eq!(int(0), "0");
        assert_eq!(int(1234567), "1,234,567");
        assert_eq!(int(100), "100");
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(13.0), 20.0);
        assert_eq!(nice_max(420.0), 500.0);
    }
}
