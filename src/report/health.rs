//! Availability from the monitor's health samples (`state/health.jsonl`).
//!
//! Owns: turning samples into covered intervals, the availability ratio, the merged down
//! intervals and the timeline the HTML draws.
//!
//! Must never: call time without a sample "available" (a missing sample is a difusor that was
//! not running), or invent a figure when there is no health file (availability is unknown).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{ReportError, Window, traffic::parse_ms};

/// One line of `state/health.jsonl`.
#[derive(Deserialize)]
struct Sample {
    time: String,
    interval_secs: u64,
    ok: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// A sample longer than a day is treated as covering one day (a bad value must not be able to
/// mark a week available).
const MAX_INTERVAL_SECS: u64 = 86_400;

/// Availability over the window, measured up to `measured_to` (the window's end or, if that
/// is in the future, the moment of the report).
#[derive(Debug, Clone, Serialize)]
pub struct Availability {
    /// False when there is no health file: every figure below is then `null`/empty.
    pub known: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub measured_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub measured_to: OffsetDateTime,
    /// Time covered by `ok` samples ÷ the measured length (0..1).
    pub ratio: Option<f64>,
    pub percent: Option<f64>,
    pub available_secs: Option<f64>,
    pub downtime_secs: Option<f64>,
    /// Of the downtime: covered by a not-ok sample (the site was up but unhealthy) …
    pub unhealthy_secs: Option<f64>,
    /// … or by no sample at all (the difusor was not running).
    pub no_sample_secs: Option<f64>,
    /// Samples overlapping the measured span.
    pub samples: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_sample: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_sample: Option<OffsetDateTime>,
    /// Unparsable lines of the health file (skipped).
    pub unparsable_lines: u64,
    /// The merged down intervals, in time order.
    pub down: Vec<DownInterval>,
    /// The whole measured span cut into consecutive ok / unhealthy / no-samples segments.
    pub timeline: Vec<Segment>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownInterval {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    pub seconds: f64,
    pub unhealthy_secs: f64,
    pub no_sample_secs: f64,
    /// `unhealthy`, `no samples`, or `unhealthy + no samples`.
    pub cause: String,
    /// The first reason a not-ok sample in the interval gave.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Ok,
    Unhealthy,
    NoSamples,
}

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    pub state: State,
}

/// Sorts and merges overlapping or touching intervals.
fn merge(mut v: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    v.retain(|(a, b)| a < b);
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `span` minus the sorted disjoint `covered`.
fn complement(span: (i64, i64), covered: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut at = span.0;
    for &(a, b) in covered {
        if a > at {
            out.push((at, a.min(span.1)));
        }
        at = at.max(b);
        if at >= span.1 {
            break;
        }
    }
    if at < span.1 {
        out.push((at, span.1));
    }
    out.retain(|(a, b)| a < b);
    out
}

/// Milliseconds of `(a, b)` covered by the sorted disjoint `list`.
fn overlap(a: i64, b: i64, list: &[(i64, i64)]) -> i64 {
    list.iter()
        .map(|&(x, y)| (y.min(b) - x.max(a)).max(0))
        .sum()
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

pub(super) fn availability(state_dir: &Path, w: &Window) -> Result<Availability, ReportError> {
    let path = state_dir.join("health.jsonl");
    let span = (w.from_ms, w.observed_to_ms);
    let mut a = Availability {
        known: false,
        measured_from: w.datetime(span.0),
        measured_to: w.datetime(span.1),
        ratio: None,
        percent: None,
        available_secs: None,
        downtime_secs: None,
        unhealthy_secs: None,
        no_sample_secs: None,
        samples: 0,
        first_sample: None,
        last_sample: None,
        unparsable_lines: 0,
        down: Vec::new(),
        timeline: Vec::new(),
        note: None,
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            a.note = Some(
                "no state/health.jsonl: the monitor recorded no health samples, availability is unknown"
                    .into(),
            );
            return Ok(a);
        }
        Err(e) => {
            return Err(ReportError::Read {
                path: path.display().to_string(),
                source: e,
            });
        }
    };
    a.known = true;
    let mut ok = Vec::new();
    // (start, end, reason) of not-ok samples.
    let mut bad: Vec<(i64, i64, Option<String>)> = Vec::new();
    let (mut first, mut last) = (None::<i64>, None::<i64>);
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| ReportError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Some((s, start)) = serde_json::from_slice::<Sample>(&line)
            .ok()
            .and_then(|s| parse_ms(&s.time).map(|t| (s, t)))
        else {
            a.unparsable_lines += 1;
            continue;
        };
        let len = i64::try_from(s.interval_secs.min(MAX_INTERVAL_SECS)).unwrap_or(0) * 1000;
        let (start, end) = (start.max(span.0), (start + len).min(span.1));
        if start >= end {
            continue;
        }
        a.samples += 1;
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(start, |l| l.max(start)));
        if s.ok {
            ok.push((start, end));
        } else {
            bad.push((start, end, s.reason));
        }
    }
    let ok = merge(ok);
    bad.sort_by_key(|b| (b.0, b.1));
    let bad_union = merge(bad.iter().map(|b| (b.0, b.1)).collect());
    let unhealthy: Vec<(i64, i64)> = bad_union
        .iter()
        .flat_map(|&iv| complement(iv, &ok))
        .collect();

    let down = complement(span, &ok);
    for &(s, e) in &down {
        let unhealthy_ms = overlap(s, e, &unhealthy);
        let none_ms = (e - s) - unhealthy_ms;
        let cause = match (unhealthy_ms > 0, none_ms > 0) {
            (true, true) => "unhealthy + no samples",
            (true, false) => "unhealthy",
            _ => "no samples",
        };
        let reason = bad
            .iter()
            .find(|b| b.0 < e && b.1 > s && b.2.is_some())
            .and_then(|b| b.2.clone());
        a.down.push(DownInterval {
            start: w.datetime(s),
            end: w.datetime(e),
            seconds: secs(e - s),
            unhealthy_secs: secs(unhealthy_ms),
            no_sample_secs: secs(none_ms),
            cause: cause.into(),
            reason,
        });
    }

    // The timeline: ok intervals, and the down ones split into unhealthy / no-samples parts.
    let mut segments: Vec<(i64, i64, State)> = ok.iter().map(|&(s, e)| (s, e, State::Ok)).collect();
    for &(s, e) in &down {
        let sick: Vec<(i64, i64)> = unhealthy
            .iter()
            .map(|&(x, y)| (x.max(s), y.min(e)))
            .filter(|(x, y)| x < y)
            .collect();
        segments.extend(sick.iter().map(|&(x, y)| (x, y, State::Unhealthy)));
        segments.extend(
            complement((s, e), &sick)
                .into_iter()
                .map(|(x, y)| (x, y, State::NoSamples)),
        );
    }
    segments.sort_unstable_by_key(|s| s.0);
    a.timeline = segments
        .into_iter()
        .map(|(s, e, state)| Segment {
            start: w.datetime(s),
            end: w.datetime(e),
            state,
        })
        .collect();

    let total_ms = span.1 - span.0;
    let up_ms: i64 = ok.iter().map(|(s, e)| e - s).sum();
    let unhealthy_ms: i64 = unhealthy.iter().map(|(s, e)| e - s).sum();
    if total_ms > 0 {
        let ratio = up_ms as f64 / total_ms as f64;
        a.ratio = Some(ratio);
        a.percent = Some(ratio * 100.0);
    }
    a.available_secs = Some(secs(up_ms));
    a.downtime_secs = Some(secs(total_ms - up_ms));
    a.unhealthy_secs = Some(secs(unhealthy_ms));
    a.no_sample_secs = Some(secs(total_ms - up_ms - unhealthy_ms));
    a.first_sample = first.map(|t| w.datetime(t));
    a.last_sample = last.map(|t| w.datetime(t));
    if a.samples == 0 {
        a.note =
            Some("state/health.jsonl has no sample in the window: all of it counts as down".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_and_complement() {
        assert_eq!(
            merge(vec![(5, 7), (1, 3), (3, 4), (6, 9)]),
            vec![(1, 4), (5, 9)]
        );
        assert_eq!(
            complement((0, 10), &[(1, 4), (5, 9)]),
            vec![(0, 1), (4, 5), (9, 10)]
        );
        assert_eq!(complement((0, 10), &[(0, 10)]), vec![]);
        assert_eq!(complement((2, 3), &[(0, 1), (5, 6)]), vec![(2, 3)]);
        assert_eq!(overlap(0, 10, &[(1, 4), (8, 20)]), 5);
    }
}
