//! Who may log in with which key: the user database built from the config.
//!
//! Owns: each configured user's role and authorized keys, reloaded when the key file changes
//! (operators exchange keys with the institute during set-up; no restart needed), and the one
//! decision "may this key, from this address, log in as this user?".
//!
//! Must never: accept a SHA-1 `ssh-rsa` signature, compare keys by anything but their key
//! data, accept a key whose `from=` excludes the client or whose `expiry-time` passed, or keep
//! going with a half-parsed key file (a broken reload keeps the previous keys and logs why).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use russh::keys::{Algorithm, PublicKey};

use crate::config::{Role, UserConfig};
use crate::keys::{self, AuthorizedKey};

/// The result of an authentication check, with the reason kept for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    Accept { role: Role },
    Reject(&'static str),
}

struct UserEntry {
    name: String,
    role: Role,
    path: PathBuf,
    /// (modification time, length) of the key file when `keys` was read.
    stamp: Option<(SystemTime, u64)>,
    keys: Vec<AuthorizedKey>,
}

pub struct UserDb {
    users: Mutex<Vec<UserEntry>>,
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl UserDb {
    /// Loads every user's keys. A user whose key file is missing or broken is an error: the
    /// operator must know before the night starts, not when the institute cannot log in.
    pub fn load(users: &[UserConfig]) -> Result<UserDb, keys::KeyError> {
        let mut entries = Vec::with_capacity(users.len());
        for u in users {
            let stamp = file_stamp(&u.authorized_keys);
            let loaded = keys::load_authorized_keys(&u.authorized_keys)?;
            if loaded.from_private_key {
                tracing::warn!(
                    user = %u.name,
                    file = %u.authorized_keys.display(),
                    "this key file is a PRIVATE key; its public half is used, but a private key should not sit on the server: ask for the .pub"
                );
            }
            for k in &loaded.keys {
                tracing::info!(user = %u.name, role = u.role.as_str(), key = %keys::fingerprint(&k.key), source = %k.source, "authorized key");
            }
            entries.push(UserEntry {
                name: u.name.clone(),
                role: u.role,
                path: u.authorized_keys.clone(),
                stamp,
                keys: loaded.keys,
            });
        }
        Ok(UserDb {
            users: Mutex::new(entries),
        })
    }

    /// May `key`, offered for signature algorithm `alg`, log in as `user` from `addr`?
    pub fn check(
        &self,
        user: &str,
        key: &PublicKey,
        alg: &Algorithm,
        addr: IpAddr,
    ) -> AuthDecision {
        // SECURITY: SHA-1 RSA signatures are refused whatever the key.
        if *alg == (Algorithm::Rsa { hash: None }) {
            return AuthDecision::Reject(
                "ssh-rsa (SHA-1) signatures are not accepted; use rsa-sha2-256/512",
            );
        }
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = users.iter_mut().find(|u| u.name == user) else {
            return AuthDecision::Reject("unknown user");
        };
        refresh(entry);
        let now = SystemTime::now();
        let mut matched = false;
        for k in entry.keys.iter().filter(|k| k.matches(key)) {
            matched = true;
            if k.is_expired(now) {
                continue;
            }
            if !k.permits_address(addr) {
                continue;
            }
            return AuthDecision::Accept { role: entry.role };
        }
        AuthDecision::Reject(if matched {
            "key not allowed from this address or expired"
        } else {
            "key not authorized for this user"
        })
    }
}

/// Re-reads a user's key file if it changed since last read.
fn refresh(entry: &mut UserEntry) {
    let stamp = file_stamp(&entry.path);
    if stamp == entry.stamp {
        return;
    }
    match keys::load_authorized_keys(&entry.path) {
        Ok(loaded) => {
            tracing::info!(user = %entry.name, file = %entry.path.display(), keys = loaded.keys.len(), "authorized keys reloaded");
            entry.keys = loaded.keys;
            entry.stamp = stamp;
        }
        Err(e) => {
            tracing::error!(user = %entry.name, error = %e, "authorized keys changed but cannot be read; keeping the previous keys");
            entry.stamp = stamp;
        }
    }
}
