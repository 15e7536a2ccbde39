//! # hsmlink-hsm
//!
//! The software HSM of hsmlink: a TCP server speaking the wire protocol of
//! [`hsmlink_core::wire`], with users (argon2-hashed passwords), token
//! objects persisted in a `redb` database, session objects tied to their
//! connection, and the cryptography done by OpenSSL.
//!
//! Layers: [`server`] (sockets, threads) → [`conn`] (one connection's
//! request handler, usable in-process) → [`hsm`] (shared state) →
//! [`object`] / [`keys`] / [`crypto`] / [`wrap`] (rules and cryptography) and
//! [`store`] / [`pgstore`] (the only modules that touch the disk or the
//! database; everything secret reaches them sealed by [`vault`]).
//! [`admin`] serves the admin commands on a unix socket of the data folder.
#![forbid(unsafe_code)]

pub mod admin;
pub mod conn;
pub mod crypto;
pub mod hsm;
pub mod keys;
pub mod object;
pub mod pgstore;
pub mod server;
pub mod store;
pub mod tls;
pub mod users;
pub mod vault;
pub mod wrap;

pub use conn::{Connection, Reply};
pub use hsm::{Hsm, Limits};
pub use server::Server;
