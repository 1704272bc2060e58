//! Brute-force defence: addresses that keep failing to log in are banned for a while.
//!
//! Owns: per-address failure history within a sliding window, and bans. A "failure" is a
//! connection that tried to authenticate and ended without succeeding (so a client offering
//! several keys before the right one is not punished), or one that hit the login grace time.
//!
//! Must never: ban on successful logins, grow without bound (old entries are pruned), or
//! decide anything about keys (that is `auth`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::DefenderConfig;

#[derive(Debug, Default)]
struct Record {
    failures: VecDeque<Instant>,
    banned_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Defender {
    cfg: DefenderConfig,
    records: Mutex<HashMap<IpAddr, Record>>,
}

/// Above this many tracked addresses, stale records are swept on the next failure.
const SWEEP_THRESHOLD: usize = 4096;

impl Defender {
    pub fn new(cfg: DefenderConfig) -> Defender {
        Defender {
            cfg,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// If `ip` is banned now, how much longer.
    pub fn banned_for(&self, ip: IpAddr) -> Option<Duration> {
        if !self.cfg.enabled {
            return None;
        }
        let now = Instant::now();
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let until = records.get(&ip)?.banned_until?;
        (until > now).then(|| until - now)
    }

    /// Records one failed login from `ip`; returns true if this failure started a ban.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() > SWEEP_THRESHOLD {
            let window = self.cfg.window;
            records.retain(|_, r| {
                r.banned_until.is_some_and(|u| u > now)
                    || r.failures
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let r = records.entry(ip).or_default();
        while r
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.cfg.window)
        {
            r.failures.pop_front();
        }
        r.failures.push_back(now);
        if r.failures.len() >= self.cfg.max_failures as usize
            && r.banned_until.is_none_or(|u| u <= now)
        {
            r.banned_until = Some(now + self.cfg.ban);
            r.failures.clear();
            tracing::warn!(
                address = %ip,
                failures = self.cfg.max_failures,
                window_secs = self.cfg.window.as_secs(),
                ban_secs = self.cfg.ban.as_secs(),
                "address banned after repeated failed logins"
            );
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: u32) -> DefenderConfig {
        DefenderConfig {
            enabled: true,
            max_failures: max,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(60),
        }
    }

    #[test]
    fn bans_after_max_failures_and_only_that_address() {
        let d = Defender::new(cfg(3));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!d.record_failure(a));
        assert!(!d.record_failure(a));
        assert!(d.banned_for(a).is_none());
        assert!(d.record_failure(a));
        assert!(d.banned_for(a).is_some());
        assert!(d.banned_for(b).is_none());
    }

    #[test]
    fn disabled_defender_never_bans() {
        let mut c = cfg(1);
        c.enabled = false;
        let d = Defender::new(c);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!d.record_failure(a));
        assert!(d.banned_for(a).is_none());
    }
}
