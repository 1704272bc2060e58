//! Accepting TCP connections: the one accept loop both doors (SSH, HTTPS) use.
//!
//! Owns: binding, the accept loop with capped back-off on errors (EMFILE and friends must
//! never stop the server), and admission after accept — a cap on connections in total and
//! per client address, released when the connection's [`Permit`] drops.
//!
//! Must never: do a protocol handshake in the loop (one slow client would stall everyone:
//! handshakes run in the per-connection task), or exit on an accept error.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Why a connection was turned away at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections in total")]
    Total,
    #[error("too many connections from this address")]
    PerAddress,
}

/// Connection caps, shared by all connections of one listener.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    /// Open connections per client address; the sum is the total.
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_total,
            max_per_address,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        if total >= self.max_total {
            return Err(Refusal::Total);
        }
        let mine = open.entry(ip).or_insert(0);
        if *mine >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *mine += 1;
        Ok(Permit {
            admission: Arc::clone(self),
            ip,
        })
    }

    pub fn open_connections(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// Holds one connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts until `shutdown` turns true, handing each socket (with `TCP_NODELAY` set) to
/// `on_connection`, which must spawn and return at once.
pub async fn accept_loop<F>(
    listener: TcpListener,
    door: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut on_connection: F,
) where
    F: FnMut(TcpStream, SocketAddr),
{
    // Back-off on accept errors: 5 ms doubling to 1 s, reset after a success (as net/http and
    // SFTPGo do). Errors such as EMFILE clear up when connections close.
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                backoff = Duration::from_millis(5);
                if let Err(e) = sock.set_nodelay(true) {
                    tracing::debug!(door, %peer, error = %e, "could not set TCP_NODELAY");
                }
                on_connection(sock, peer);
            }
            Err(e) => {
                tracing::warn!(door, error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Normalises IPv4-mapped IPv6 addresses so per-address accounting sees one client once.
pub fn canonical_ip(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_total_and_per_address_and_releases_on_drop() {
        let a = Admission::new(3, 2);
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = a.try_admit(x).unwrap();
        let _p2 = a.try_admit(x).unwrap();
        assert_eq!(a.try_admit(x).unwrap_err(), Refusal::PerAddress);
        let _p3 = a.try_admit(y).unwrap();
        assert_eq!(a.try_admit(y).unwrap_err(), Refusal::Total);
        drop(p1);
        assert_eq!(a.open_connections(), 2);
        let _p4 = a.try_admit(x).unwrap();
    }

    #[test]
    fn mapped_ipv6_is_the_ipv4_client() {
        let s: SocketAddr = "[::ffff:127.0.0.1]:22".parse().unwrap();
        assert_eq!(canonical_ip(s), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
