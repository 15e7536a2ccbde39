//! `extraction`: random sequences of every operation a logged-in user has,
//! against an in-process software HSM holding non-exportable keys whose
//! values the harness knows; fails if an output holds 4 consecutive bytes
//! of one of them, if a key made from one is exportable or shorter, or if
//! one becomes exportable (`src/extraction.rs`, docs/security.md).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hsmlink_fuzz::extraction::check(data);
});
