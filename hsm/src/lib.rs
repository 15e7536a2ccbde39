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
//!
//! ## What one connection can cost
//!
//! Every request is answered from bounded state; these are the bounds
//! (the `Limits` ones are `hsmlink-hsm serve` options):
//! - one frame: a request body of at most [`conn::SERVER_MAX_FRAME`] (64 KiB;
//!   a longer announced length closes the connection before anything is
//!   read), a reply of at most the client's `max_frame` (1 KiB to 1 MiB,
//!   longer replies become `CKR_DATA_LEN_RANGE`); a template or attribute
//!   list of at most 32 entries, random numbers 32 KiB per request;
//! - one PKCS#11 session per connection, [`Limits::max_connections`] of them,
//!   at most [`Limits::max_unauthenticated`] not logged in and
//!   [`Limits::max_connections_per_address`] from one address (see
//!   [`registry`]), [`Limits::max_connections_per_user`] logged in as one
//!   user; a connection idle for [`Limits::idle_secs`] is closed,
//!   one not logged in [`Limits::login_timeout_ms`] after its accept, or
//!   whose frame is not whole [`Limits::frame_timeout_ms`] after its first
//!   byte;
//! - at most four running operations (one per kind, a new one replaces the
//!   old), buffering at most [`Limits::max_inflight_bytes`] together (GCM
//!   decryption, RSA and ECDSA inputs);
//! - one search cursor, of at most [`Limits::max_find`] handles;
//! - at most [`Limits::max_session_objects`] session objects of at most
//!   [`Limits::max_session_bytes`] together, which die with the connection;
//!   all the connections of a user hold at most
//!   [`Limits::max_user_session_bytes`] together (session objects,
//!   running operations' buffers, search cursors);
//! - logins are throttled and lock a user after repeated failures
//!   ([`Limits::login`]); a user name no user can have is refused before
//!   anything remembers it.
//!
//! Token objects are the user's persistent storage: their number is bounded
//! per user by [`Limits::max_objects_per_user`] and [`Limits::max_user_bytes`] (the embedded store keeps
//! them all in memory), as a hardware HSM's by its capacity.
//!
//! A connection thread may spin for [`Limits::spin_us`] after each reply
//! (only while no other connection is busy), so one lone client costs at
//! most that much extra CPU per request. The fuzz targets of `fuzz/` drive
//! [`Connection::handle_body`] with random and structured frames and check
//! that a dropped connection leaves nothing behind.
#![forbid(unsafe_code)]

pub mod admin;
pub mod conn;
pub mod crypto;
pub mod hsm;
pub mod keys;
pub mod object;
pub mod pgstore;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls;
pub mod users;
pub mod vault;
pub mod wrap;

pub use conn::{Connection, Reply};
pub use hsm::{Hsm, Limits};
pub use server::Server;
