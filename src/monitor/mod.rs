//! Operations: metrics, the staleness/disk/certificate watch, the operator's overview (admin
//! status page, `/status.json`, `difusor status`) and the admin listener that serves them.
//!
//! Owns: `config` (`[monitor]`, `[admin]`), `metrics` (Prometheus), `watch` (incidents on
//! late cuts, low disk, expiring certificate; health samples), `overview` (the facts an
//! operator needs at a glance), `page` (their HTML), `admin` (the loopback HTTP listener).
//!
//! Must never: sit on the publish or serve path: everything here reads state, counts with
//! atomics, or runs on its own task.

pub mod admin;
pub mod config;
pub mod metrics;
pub mod overview;
pub mod page;
pub mod watch;
