//! The `[monitor]` and `[admin]` sections: the expected cadence of cuts, the publication
//! window, disk and certificate thresholds, and the admin listener.
//!
//! Owns: their raw (serde) shape, defaults and validation. Must never: read the clock or the
//! disk — the watch does that.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::config::{ConfigError, count, invalid, secs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    pub cut_period_secs: Option<u64>,
    pub grace_secs: Option<u64>,
    pub warn_after_periods: Option<u64>,
    pub critical_after_periods: Option<u64>,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    pub keep_history_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
    pub disk_check_secs: Option<u64>,
    pub health_sample_secs: Option<u64>,
    pub cert_warn_days: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

/// What the watch expects and when it raises an incident.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// A cut is expected this often.
    pub cut_period: Duration,
    /// Slack before a period counts as missed (uploads take a while).
    pub grace: Duration,
    /// Missed periods that raise a warning (`cut-late`).
    pub warn_after_periods: u64,
    /// Missed periods that raise a critical incident (`cuts-missed`) and turn `/healthz` 503.
    pub critical_after_periods: u64,
    /// The publication window: outside it the watch is quiet. None = always (once a first
    /// cut arrived, or from `window_start`).
    pub window_start: Option<OffsetDateTime>,
    pub window_end: Option<OffsetDateTime>,
    /// The history the institutes require the difusor to be able to keep (20 GB).
    pub keep_history_bytes: u64,
    /// Below this much free space on the data directory: `disk-low`.
    pub min_free_bytes: u64,
    pub disk_check: Duration,
    /// How often a health sample goes to `state/health.jsonl` (availability in the report).
    pub health_sample: Duration,
    /// `certificate-expiring` when the HTTPS certificate has fewer days left than this.
    pub cert_warn_days: u64,
}

/// The admin listener (metrics, status page). None = off.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
}

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

fn instant(key: &str, v: Option<&str>) -> Result<Option<OffsetDateTime>, ConfigError> {
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map(Some)
            .map_err(|_| {
                invalid(
                    key,
                    format!("{t:?} is not an RFC 3339 time such as \"2024-06-02T20:00:00-06:00\""),
                )
            }),
    }
}

impl RawMonitor {
    pub fn validate(self) -> Result<MonitorConfig, ConfigError> {
        let warn = count(
            "monitor.warn_after_periods",
            self.warn_after_periods,
            1,
            1,
            1000,
        )?;
        let critical = count(
            "monitor.critical_after_periods",
            self.critical_after_periods,
            3,
            1,
            1000,
        )?;
        if critical < warn {
            return Err(invalid(
                "monitor.critical_after_periods",
                format!("{critical} is less than monitor.warn_after_periods ({warn})"),
            ));
        }
        let window_start = instant("monitor.window_start", self.window_start.as_deref())?;
        let window_end = instant("monitor.window_end", self.window_end.as_deref())?;
        if let (Some(s), Some(e)) = (window_start, window_end)
            && e <= s
        {
            return Err(invalid(
                "monitor.window_end",
                "the publication window ends before it starts",
            ));
        }
        Ok(MonitorConfig {
            cut_period: secs(
                "monitor.cut_period_secs",
                self.cut_period_secs,
                900,
                1,
                86_400,
            )?,
            grace: secs("monitor.grace_secs", self.grace_secs, 120, 0, 86_400)?,
            warn_after_periods: warn,
            critical_after_periods: critical,
            window_start,
            window_end,
            keep_history_bytes: count(
                "monitor.keep_history_bytes",
                self.keep_history_bytes,
                20_000_000_000,
                0,
                u64::MAX,
            )?,
            min_free_bytes: count(
                "monitor.min_free_bytes",
                self.min_free_bytes,
                2 << 30,
                0,
                u64::MAX,
            )?,
            disk_check: secs(
                "monitor.disk_check_secs",
                self.disk_check_secs,
                60,
                1,
                86_400,
            )?,
            health_sample: secs(
                "monitor.health_sample_secs",
                self.health_sample_secs,
                60,
                1,
                3_600,
            )?,
            cert_warn_days: count("monitor.cert_warn_days", self.cert_warn_days, 14, 0, 3650)?,
        })
    }
}

impl RawAdmin {
    pub fn validate(self) -> Result<AdminConfig, ConfigError> {
        let text = self
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_LISTEN)
            .trim();
        if text.is_empty() || text == "off" {
            return Ok(AdminConfig { listen: None });
        }
        let addr: SocketAddr = text.parse().map_err(|_| {
            invalid(
                "admin.listen",
                format!("{text:?} is not an address:port such as \"127.0.0.1:9090\" (or \"off\")"),
            )
        })?;
        Ok(AdminConfig { listen: Some(addr) })
    }
}
