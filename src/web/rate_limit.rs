//! Per-client token bucket: `requests_per_sec` sustained, `burst` at once; beyond that 429
//! with `Retry-After`.
//!
//! Owns: the buckets, keyed by client address (an IPv6 client by its /64: one subscriber
//! usually has the whole prefix), in a few mutex-guarded shards, and their pruning.
//!
//! Must never: hold a lock across an await, grow without bound (full buckets — clients quiet
//! for `burst / rate` seconds — are pruned every [`PRUNE_EVERY`]), or sleep to slow a client
//! down (a 429 is cheaper than holding the connection).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::web::config::RateLimitConfig;

/// How often buckets of quiet clients are dropped.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Shared by all connections of one server.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    /// PERF: sharded so that two cores rarely contend; each lock is held for a hash lookup.
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn shard_of(ip: &IpAddr) -> usize {
    let h = match ip {
        IpAddr::V4(v4) => u32::from(*v4) as u64,
        IpAddr::V6(v6) => (u128::from(*v6) >> 64) as u64,
    };
    let h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 60) as usize % SHARDS
}

impl RateLimiter {
    pub fn new(cfg: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            rate: cfg.requests_per_sec,
            burst: cfg.burst as f64,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes one token for `ip`, or says in how many whole seconds one will be there.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let k = key(ip);
        let Some(shard) = self.shards.get(shard_of(&k)) else {
            return Ok(());
        };
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(k).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rate;
            Err((wait.ceil() as u64).max(1))
        }
    }

    /// Drops the buckets that have refilled completely (their clients were quiet).
    pub fn prune(&self, now: Instant) {
        let full_after = Duration::from_secs_f64((self.burst / self.rate).min(86_400.0));
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
        }
    }

    /// Tracked clients (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_then_retry_after() {
        let rl = RateLimiter::new(&RateLimitConfig {
            enabled: true,
            requests_per_sec: 2.0,
            burst: 3,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(ip, t0).is_ok());
        }
        assert_eq!(rl.check(ip, t0), Err(1));
        assert!(rl.check(ip, t0 + Duration::from_millis(600)).is_ok());
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(rl.check(other, t0).is_ok());
        rl.prune(t0 + Duration::from_secs(10));
        assert_eq!(rl.tracked(), 0);
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let rl = RateLimiter::new(&RateLimitConfig {
            enabled: true,
            requests_per_sec: 1.0,
            burst: 1,
        });
        let t0 = Instant::now();
        assert!(rl.check("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(rl.check("2001:db8::2".parse().unwrap(), t0).is_err());
        assert!(rl.check("2001:db8:0:1::1".parse().unwrap(), t0).is_ok());
    }
}
