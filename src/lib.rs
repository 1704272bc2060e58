//! difusor: the official PREP difusor in one binary.
//!
//! Modules, one per concern (see ARCHITECTURE.md): `config` (the TOML file and its defaults),
//! `keys` (host keys, authorized keys, client key generation), `listener` (the shared accept
//! loop and connection caps), `ssh` (the SSH/SFTP/scp front door), `vfs` (the jailed virtual
//! filesystem clients see), `events` (in-process events between capabilities), `app` (wiring
//! them into a running server).
pub mod app;
pub mod config;
pub mod events;
pub mod ingest;
pub mod keys;
pub mod listener;
pub mod mirror;
pub mod monitor;
pub mod notify;
pub mod publish;
pub mod report;
pub mod sources;
pub mod ssh;
pub mod store;
pub mod vfs;
pub mod web;
