//! # libhsmlink_pkcs11
//!
//! The PKCS#11 v2.40 C ABI of hsmlink: the shared library applications load.
//! It is a thin shell: [`types`] are the C types written from the OASIS
//! specification, `ffi` holds every exported function (the only `unsafe`
//! code of the project: pointer checks and the panic boundary), and
//! [`module`] is the safe state behind them (configuration, the
//! [`hsmlink_core::token::Token`], attribute layout conversions).
//!
//! Configuration is read at `C_Initialize` from the environment:
//! `HSMLINK_ADDR` (`host:port[,host:port...]`, default `127.0.0.1:4433`),
//! `HSMLINK_USER` (the HSM user; the PIN is its password),
//! `HSMLINK_SPECIAL_PIN=1` (the PIN is `user:password@host[:port]`),
//! `HSMLINK_CONNECT_TIMEOUT_MS`, `HSMLINK_TIMEOUT_MS`, `HSMLINK_LOG`,
//! `HSMLINK_LOG_FILE`; the vendor names `DFENCE_PKCS11_IP`,
//! `DFENCE_PKCS11_USER` and `DFENCE_PKCS11_SPECIAL_PWD` are accepted too.

// `CK_ULONG` is `u64` on this host but 32 bits on others: the casts stay.
#![allow(clippy::unnecessary_cast)]

pub mod ffi;
mod logger;
pub mod module;
pub mod types;
