//! Attribute templates and mechanism parameters, on both ends.
//!
//! The input is a request frame body (seeds are real requests): every
//! template and mechanism it carries is run through
//! - the core: attribute kinds and value checks, `check_params`,
//!   `sign_plan`, `output_len` for every operation;
//! - the module's host-layout conversion (`canonical_template` and back);
//! - the server: template parsing, object building for creation and for
//!   each generator, attribute changes, key material parsing, the
//!   parameter checks of every operation against real keys (and a short
//!   run of the operation), key unwrapping and digests.
//!
//! Properties: no panic; the checks agree with each other (a value the
//! core accepts reads back; a host template converts back to itself).
#![no_main]

use std::sync::Arc;

use hsmlink_core::attr::{self, Kind};
use hsmlink_core::ck::{ckk, ckm, cko, ckr};
use hsmlink_core::mech;
use hsmlink_core::wire::{self, Attribute, KeyInfo, Mechanism, Op, Request};
use hsmlink_fuzz::{rv, server};
use hsmlink_hsm::object::{self, Object, Origin};
use hsmlink_hsm::{crypto, keys, wrap};
use libfuzzer_sys::fuzz_target;

const OPS: [Op; 4] = [Op::Encrypt, Op::Decrypt, Op::Sign, Op::Verify];

fn check_rv<T>(r: &Result<T, u64>) {
    if let Err(e) = r {
        assert!(rv::is_error(*e), "unknown CKR {e:#x}");
    }
}

fn core_template(t: &[Attribute<'_>]) {
    for a in t {
        let checked = attr::check_value(a.ty, a.value);
        check_rv(&checked);
        let _ = attr::is_secret(a.ty);
        if checked.is_ok() {
            match attr::kind(a.ty) {
                Kind::Ulong => assert!(attr::read_ulong(a.value).is_ok()),
                Kind::Bool => assert!(attr::read_bool(a.value).is_ok()),
                _ => {}
            }
        }
        let _ = attr::find_ulong(t, a.ty);
        let _ = attr::find_bool(t, a.ty);
        assert!(attr::find(t, a.ty).is_some());
    }
}

fn module_template(t: &[Attribute<'_>]) {
    use hsmlink_pkcs11::module::{canonical_template, host_value};
    // The template as an application would give it, in the host's layout.
    let host: Vec<(u64, Vec<u8>)> = t
        .iter()
        .map(|a| (a.ty, host_value(a.ty, a.value).into_owned()))
        .collect();
    let raw: Vec<(u64, &[u8])> = host.iter().map(|(t, v)| (*t, v.as_slice())).collect();
    let back = canonical_template(&raw);
    check_rv(&back);
    if let Ok(back) = back {
        for ((ty, v), (ty2, h)) in back.iter().zip(&host) {
            assert_eq!(ty, ty2);
            assert_eq!(host_value(*ty, v).as_ref(), h.as_slice(), "host round trip");
        }
    }
    // The canonical bytes as if they were the host's: never a panic.
    let raw: Vec<(u64, &[u8])> = t.iter().map(|a| (a.ty, a.value)).collect();
    let r = canonical_template(&raw);
    check_rv(&r);
}

fn server_template(t: &[Attribute<'_>], other: &[Attribute<'_>]) {
    check_rv(&object::parse_template(t));
    let origins = [
        Origin::Create,
        Origin::Generate {
            class: cko::SECRET_KEY,
            key_type: ckk::AES,
            mech: ckm::AES_KEY_GEN,
        },
        Origin::Generate {
            class: cko::SECRET_KEY,
            key_type: ckk::GENERIC_SECRET,
            mech: ckm::GENERIC_SECRET_KEY_GEN,
        },
        Origin::Generate {
            class: cko::PUBLIC_KEY,
            key_type: ckk::RSA,
            mech: ckm::RSA_PKCS_KEY_PAIR_GEN,
        },
        Origin::Generate {
            class: cko::PRIVATE_KEY,
            key_type: ckk::EC,
            mech: ckm::EC_KEY_PAIR_GEN,
        },
    ];
    for origin in origins {
        let built = object::build(t, origin);
        check_rv(&built);
        let Ok(mut attrs) = built else { continue };
        if origin != Origin::Create {
            object::finish_generated(&mut attrs);
            continue;
        }
        check_rv(&keys::material(&attrs).map(|_| ()));
        for copy in [false, true] {
            check_rv(&object::apply(&attrs, other, copy).map(|_| ()));
        }
        let o = Object::new(1, server::USER.into(), None, attrs);
        let _ = o.matches(other);
        let _ = o.size();
        let _ = o.exportable();
        for a in other {
            let _ = o.hides(a.ty);
        }
    }
}

fn core_mechanism(m: &Mechanism<'_>) {
    check_rv(&mech::check_params(m));
    let _ = mech::sign_plan(m);
    let _ = mech::info(m.ty);
    for op in OPS {
        for bits in [0, 1, 256, 521, 2048, u32::MAX] {
            let key = KeyInfo {
                class: cko::PRIVATE_KEY,
                key_type: ckk::RSA,
                bits,
            };
            for input in [0, 1, 15, 16, 8192, 1 << 20] {
                let _ = mech::output_len(op, m.ty, &key, input);
            }
        }
    }
}

fn server_mechanism(m: &Mechanism<'_>, data: &[u8]) {
    let world = server::world();
    for &h in &world.base {
        let Some(key) = world.hsm.get(server::USER, &server::APP, 0, h) else {
            continue;
        };
        for op in OPS {
            let r = crypto::init(op, m, Arc::clone(&key));
            check_rv(&r.as_ref().map(|_| ()).map_err(|e| *e));
            let Ok((mut running, _)) = r else { continue };
            // A short run: one update, then the end; errors are fine.
            let part = &data[..data.len().min(64)];
            match running.update(part) {
                Ok(_) => check_rv(&running.finish(part, data).map(|_| ())),
                Err(e) => assert!(rv::is_error(e)),
            }
        }
    }
    for kek in [&[7u8; 16][..], &[7u8; 32][..], &[7u8; 5][..]] {
        check_rv(&wrap::unwrap(m.ty, kek, data).map(|_| ()));
        check_rv(&wrap::wrap(m.ty, kek, data).map(|_| ()));
    }
    check_rv(&crypto::digest(m.ty, data).map(|_| ()));
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = wire::decode::<Request<'_>>(data) else {
        return;
    };
    let empty = wire::Template::new();
    let (templates, mechanism): (Vec<&[Attribute<'_>]>, Option<Mechanism<'_>>) = match &req {
        Request::CreateObject { template }
        | Request::SetAttributes { template, .. }
        | Request::CopyObject { template, .. }
        | Request::FindObjects { template, .. } => (vec![template], None),
        Request::GenerateKey {
            mechanism,
            template,
        }
        | Request::UnwrapKey {
            mechanism,
            template,
            ..
        }
        | Request::DeriveKey {
            mechanism,
            template,
            ..
        } => (vec![template], Some(*mechanism)),
        Request::GenerateKeyPair {
            mechanism,
            public,
            private,
        } => (vec![public, private], Some(*mechanism)),
        Request::CryptoInit { mechanism, .. }
        | Request::CryptoOneShot { mechanism, .. }
        | Request::WrapKey { mechanism, .. } => (vec![&empty], Some(*mechanism)),
        _ => (vec![], None),
    };
    for (i, t) in templates.iter().enumerate() {
        let other = templates.get(i + 1).copied().unwrap_or(t);
        core_template(t);
        module_template(t);
        server_template(t, other);
    }
    if let Some(m) = mechanism {
        core_mechanism(&m);
        let payload: &[u8] = match &req {
            Request::CryptoOneShot { data, .. } => data,
            Request::UnwrapKey { wrapped, .. } => wrapped,
            _ => &data[..data.len().min(48)],
        };
        server_mechanism(&m, payload);
    }
    let _ = ckr::OK;
});
