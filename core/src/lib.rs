//! # hsmlink-core
//!
//! The Cryptoki (PKCS#11 v2.40) logic of hsmlink, with no heap and no OS: it
//! runs inside the host library (`p11-abi`) and on microcontroller firmware.
//!
//! Layers, top-down:
//! - [`token`]: the token as an application sees it: the session table, login
//!   state, one active operation per session and its PKCS#11 transitions.
//! - [`mech`]: the mechanism table, local hashing, output sizes.
//! - [`attr`]: attribute types and their canonical form.
//! - [`wire`]: the framed, versioned postcard protocol spoken with the HSM,
//!   one definition for both ends.
//! - [`link`]: the [`link::Link`] trait a transport implements (one request
//!   frame out, one reply frame in).
//! - [`ck`]: PKCS#11 constants.
//!
//! Every failure is a `CKR_*` value; nothing here panics on any input.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(all(feature = "log", feature = "defmt"))]
compile_error!("features `log` and `defmt` are exclusive: pick one logging backend");

// The tests (only they) run on the host, with its standard library under
// another name, so that the library code can be seen to name none.
#[cfg(test)]
#[macro_use]
extern crate std as host;

#[macro_use]
mod fmt;

pub mod attr;
pub mod ck;
pub mod link;
pub mod mech;
pub mod token;
pub mod wire;
