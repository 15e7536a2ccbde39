//! # hsmlink-transport-embedded
//!
//! hsmlink on a microcontroller gateway: the core's [`Link`] over any
//! [`embedded_nal::TcpClientStack`], and a small firmware-facing API
//! ([`gateway`]) to open a session, log in, find a key and sign. `no_std`, no
//! `alloc`, only compiler-checked code (see the `forbid` below); every buffer and
//! capacity is declared by the caller.
//!
//! Layers, top-down:
//! - [`gateway`]: what firmware calls. [`gateway::Resources`] holds the
//!   session slots (a `const fn new()`, so it can live in a `static` or on
//!   the stack); [`gateway::Gateway`] wraps the core's
//!   [`hsmlink_core::token::Token`] with calls shaped for a gateway, and
//!   retries idempotent calls once the link is back after a dropped socket.
//! - [`tcp`]: [`tcp::TcpConnector`] and [`tcp::TcpLink`], the
//!   [`Connector`]/[`Link`] pair over an embedded-nal stack, driving the
//!   non-blocking (`nb`) calls to completion under a [`Policy`].
//! - [`SharedStack`]: the network stack, shared by every link (one per
//!   PKCS#11 session) and by interrupt handlers, behind a `critical-section`
//!   mutex that is held only for the length of one `nb` call.
//! - [`Clock`] and [`Policy`]: time as the caller counts it (milliseconds of a
//!   timer, or mere polls with [`Polls`]) and the bounds on every wait.
//!
//! ## Sizing
//! A session slot holds two frame buffers of `BUF` bytes each (request and
//! reply) plus about 1 KiB of state. 2 KiB frames carry everything a gateway
//! that signs needs (an ECDSA P-256 or RSA-4096 signature, a key pair
//! generation with short templates). One session is enough for a gateway
//! that signs from one task.
//!
//! ## Reconnection
//! When a send or receive fails (peer closed, stack error, timeout), the link
//! closes its socket and reports the failure; the core drops the link and the
//! call returns `CKR_DEVICE_ERROR`. The next call on that session connects
//! again and logs in again with the kept credential. [`gateway::Gateway`]
//! does that retry itself for idempotent calls (find, sign, read attributes),
//! up to [`gateway::Config::reconnects`] times. Session objects die with
//! their connection; token objects survive it.
//!
//! ## Interrupt safety
//! The stack is reached only inside `critical_section::with`, for one `nb`
//! call at a time; waits happen outside the critical section (in
//! [`Clock::wait`]), so interrupts keep running while a call waits for the
//! HSM. The session locks are spin locks ([`Lock`]): use a session from one
//! context at a time (a task, or an interrupt that never preempts another
//! user of the same session).
//!
//! ## Features
//! - `defmt` (firmware) or `log` (hosts): logging, never both; secrets are
//!   never logged.
//! - `portable-atomic`: for targets without compare-and-swap (thumbv6m,
//!   riscv32imc); the application provides a `critical-section`
//!   implementation (it needs one anyway for [`SharedStack`]).
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

#[cfg(all(feature = "log", feature = "defmt"))]
compile_error!("features `log` and `defmt` are exclusive: pick one logging backend");

#[macro_use]
mod fmt;

pub mod gateway;
mod policy;
mod stack;
pub mod tcp;

pub use hsmlink_core::link::{Connector, Link, LinkError};
pub use policy::{Clock, Policy, Polls};
pub use stack::SharedStack;

/// The lock of a session slot: a spin lock that implements
/// `lock_api::RawMutex` (on targets without compare-and-swap, enable the
/// `portable-atomic` feature).
pub type Lock = spin::Mutex<()>;
