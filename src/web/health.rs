//! `/healthz` and `/.well-known/difusor/status`.
//!
//! Owns: the two endpoints, answered before the site (a cut cannot shadow them), and the hook
//! through which later checks (staleness of the live cut, …) turn `/healthz` into a 503.
//!
//! Must never: expose anything an anonymous visitor should not see: the status carries what
//! the site already tells (which cut, when), no paths, no addresses, no counters of others.
//! SECURITY: both endpoints are public on purpose (load balancers and the public poll them).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use serde::Serialize;

use crate::publish::Snapshot;

pub const HEALTH_PATH: &str = "/healthz";
pub const STATUS_PATH: &str = "/.well-known/difusor/status";

/// A check `/healthz` runs: `Err(reason)` answers 503 with the reason.
pub type Probe = dyn Fn(&Snapshot) -> Result<(), String> + Send + Sync;

/// The health hook, settable while serving.
#[derive(Default)]
pub struct Health {
    probe: ArcSwapOption<Box<Probe>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("probe", &self.probe.load().is_some())
            .finish()
    }
}

impl Health {
    /// Installs (or with None removes) the check `/healthz` runs.
    pub fn set_probe(&self, probe: Option<Box<Probe>>) {
        self.probe.store(probe.map(Arc::new));
    }

    /// `/healthz`: `Ok` → 200 "ok", `Err(reason)` → 503.
    pub fn check(&self, snap: &Snapshot) -> Result<(), String> {
        match self.probe.load().as_ref() {
            Some(p) => p(snap),
            None => Ok(()),
        }
    }
}

#[derive(Serialize)]
struct Status<'a> {
    cut_id: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339::option")]
    cut_time: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    published_at: Option<time::OffsetDateTime>,
    packages_in_history: usize,
    /// Since the live cut was published (or, without that, since it went live here).
    seconds_since_last_cut: Option<f64>,
    files: usize,
    waiting_for_first_cut: bool,
}

/// The status document for the live snapshot.
pub fn status_json(snap: &Snapshot) -> Bytes {
    let meta = snap.meta();
    let since = meta.map(|m| {
        let at = m
            .published_at
            .map(SystemTime::from)
            .unwrap_or_else(|| snap.built_at());
        SystemTime::now()
            .duration_since(at)
            .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
            .unwrap_or(0.0)
    });
    let s = Status {
        cut_id: snap.cut_id(),
        cut_time: meta.and_then(|m| m.cut_time),
        published_at: meta.and_then(|m| m.published_at),
        packages_in_history: meta.map_or(0, |m| m.packages_in_history),
        seconds_since_last_cut: since,
        files: if snap.is_waiting() {
            0
        } else {
            snap.file_count()
        },
        waiting_for_first_cut: snap.is_waiting(),
    };
    let mut v = serde_json::to_vec_pretty(&s).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    Bytes::from(v)
}
