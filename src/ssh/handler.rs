//! One SSH connection: authentication and what its channels may do.
//!
//! Owns: the russh [`Handler`] — public-key authentication against the user database
//! (SHA-1 `ssh-rsa` refused), and the channel policy: `session` channels only, the `sftp`
//! subsystem, and `scp -t` over exec. Everything else (shell, pty, other commands, port and
//! agent forwarding, X11) is refused.
//!
//! Must never: accept a password or keyboard-interactive login, run a process, or read the
//! channel in `data()` (the channel's own queue is the one consumer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use russh::keys::{Algorithm, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

use super::auth::AuthDecision;
use super::transfer::Who;
use super::{Shared, exec, sftp};
use crate::keys;

/// What the connection task needs to know after the session ends.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Some authentication was tried (and, unless `authenticated`, failed).
    pub attempted: AtomicBool,
    pub authenticated: AtomicBool,
}

pub struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    who: Option<Who>,
    /// Session channels opened but not yet given a purpose (subsystem or exec).
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr, state: Arc<ConnState>) -> Connection {
        Connection {
            shared,
            peer,
            state,
            who: None,
            channels: HashMap::new(),
        }
    }

    fn decide(&self, user: &str, key: &PublicKey, alg: &Algorithm) -> AuthDecision {
        self.shared
            .users
            .check(user, key, alg, crate::listener::canonical_ip(self.peer))
    }

    fn reject(&self, user: &str, key: &PublicKey, reason: &str) -> Auth {
        self.state.attempted.store(true, Ordering::Relaxed);
        tracing::info!(user, key = %keys::fingerprint(key), reason, "public key refused");
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        })
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        self.state.attempted.store(true, Ordering::Relaxed);
        tracing::info!(user, "password login refused (public keys only)");
        Ok(Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.decide(user, offer.public_key, offer.algorithm) {
            AuthDecision::Accept { .. } => Ok(Auth::Accept),
            AuthDecision::Reject(why) => Ok(self.reject(user, offer.public_key, why)),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.decide(user, key.public_key, key.algorithm) {
            AuthDecision::Accept { role } => {
                self.state.authenticated.store(true, Ordering::Relaxed);
                tracing::info!(
                    user,
                    role = role.as_str(),
                    key = %keys::fingerprint(key.public_key),
                    algorithm = %key.algorithm,
                    "logged in"
                );
                self.who = Some(Who {
                    user: user.to_owned(),
                    role,
                    peer: self.peer,
                });
                Ok(Auth::Accept)
            }
            AuthDecision::Reject(why) => Ok(self.reject(user, key.public_key, why)),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.who.is_none() || self.channels.len() >= 8 {
            return Ok(()); // dropping `reply` refuses the channel
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(who), true) = (self.who.clone(), name == "sftp") else {
            tracing::info!(subsystem = name, "subsystem refused");
            return session.channel_failure(id);
        };
        let Some(channel) = self.channels.remove(&id) else {
            return session.channel_failure(id);
        };
        session.channel_success(id)?;
        let ctx = sftp::SessionCtx {
            who,
            vfs: Arc::clone(&self.shared.vfs),
            transfers: Arc::clone(&self.shared.transfers),
            max_open_handles: self.shared.cfg.max_open_handles,
            verdict_timeout: self.shared.verdict_timeout,
        };
        tokio::spawn(sftp::serve(channel, ctx));
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(who), Some(channel)) = (self.who.clone(), self.channels.remove(&id)) else {
            return session.channel_failure(id);
        };
        let command = String::from_utf8_lossy(data).into_owned();
        session.channel_success(id)?;
        tokio::spawn(exec::run(channel, command, who, Arc::clone(&self.shared)));
        Ok(())
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!("shell refused");
        self.channels.remove(&id);
        session.channel_failure(id)
    }

    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)
    }

    async fn agent_request(
        &mut self,
        _id: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        tracing::info!("port forwarding refused");
        Ok(false)
    }
}
