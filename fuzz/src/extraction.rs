//! The `extraction` target's harness (docs/security.md): a logged-in user
//! runs random sequences of every operation they have (derive, copy, set
//! and get attributes, wrap, unwrap, digest-key, sign, encrypt, create,
//! find, destroy) with random templates and parameters against an
//! in-process software HSM that holds non-exportable keys whose values the
//! harness knows (it reads them from the server's memory, as the attacker
//! cannot). The target fails if
//!
//! - any output (an attribute value, a ciphertext, a MAC, a wrapped blob, a
//!   digest-key answer) holds 4 or more consecutive bytes of one of those
//!   keys. A match is confirmed before it fails the run: the input runs
//!   again against keys of other values, and only a match that follows the
//!   key (the same output holding the same part of the new key) is a leak;
//!   a chance match (about one output byte in 2^22 here) is not;
//! - a key derived (or copied) from a non-exportable secret key is
//!   exportable, or a derived key's value is shorter than a non-exportable
//!   secret key it was derived from;
//! - a non-exportable key becomes exportable.
//!
//! An input is a sequence of [`Step`]s, each postcard-encoded after the
//! other (decoding stops at the first that does not decode): the seeds
//! (`attack_seeds`, written to `corpus/extraction/` by `record_corpus`) are
//! the attacks of `tests/tests/attacks.rs` in this form.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckd, ckg, ckk, ckm, cko};
use hsmlink_core::wire::{Attribute, MechParam, Mechanism, Op, Request, Template};
use hsmlink_hsm::conn::OwnedAttr;
use hsmlink_hsm::{Connection, Hsm, Reply};
use serde::{Deserialize, Serialize};

use crate::server::{APP, PASSWORD, USER, logged_in, owner};

/// Most steps run per input.
pub const MAX_STEPS: usize = 24;

/// An attribute value: given as is, or picked from values with a meaning
/// for that attribute ([`pick`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Val {
    Bool(bool),
    Ulong(u64),
    Pick(u8),
    Bytes(Vec<u8>),
}

/// A template: attribute (index into [`ATTRS`]) and value.
pub type Tpl = Vec<(u8, Val)>;

/// One call of the attacker. Objects are named by index among those the
/// input knows: the keys of [`Keys`] first, then what the input made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Step {
    Derive {
        mech: u8,
        base: u8,
        other: u8,
        ulong: u64,
        data: Vec<u8>,
        template: Tpl,
    },
    Copy {
        obj: u8,
        template: Tpl,
    },
    Set {
        obj: u8,
        template: Tpl,
    },
    Get {
        obj: u8,
        types: Vec<u8>,
    },
    Wrap {
        mech: u8,
        wrapping: u8,
        key: u8,
        iv: Vec<u8>,
    },
    /// `last`: the blob is the previous output.
    Unwrap {
        mech: u8,
        unwrapping: u8,
        last: bool,
        blob: Vec<u8>,
        iv: Vec<u8>,
        template: Tpl,
    },
    DigestKey {
        mech: u8,
        key: u8,
    },
    /// `op`: encrypt, decrypt, sign, verify; `last`: the data is the
    /// previous output.
    Crypto {
        op: u8,
        mech: u8,
        key: u8,
        param: Vec<u8>,
        last: bool,
        data: Vec<u8>,
    },
    Create {
        template: Tpl,
    },
    Find {
        template: Tpl,
    },
    Destroy {
        obj: u8,
    },
}

/// Attribute types templates and reads pick from.
pub const ATTRS: &[u64] = &[
    cka::CLASS,
    cka::KEY_TYPE,
    cka::VALUE_LEN,
    cka::SENSITIVE,
    cka::EXTRACTABLE,
    cka::ENCRYPT,
    cka::DECRYPT,
    cka::SIGN,
    cka::VERIFY,
    cka::WRAP,
    cka::UNWRAP,
    cka::DERIVE,
    cka::TOKEN,
    cka::VALUE,
    cka::LABEL,
    cka::ALLOWED_MECHANISMS,
    cka::ALWAYS_SENSITIVE,
    cka::NEVER_EXTRACTABLE,
    cka::MODIFIABLE,
    cka::COPYABLE,
    cka::WRAP_WITH_TRUSTED,
    cka::TRUSTED,
    cka::PRIVATE_EXPONENT,
    cka::PRIME_1,
    cka::PRIME_2,
    cka::EXPONENT_1,
    cka::EXPONENT_2,
    cka::COEFFICIENT,
    cka::MODULUS,
    cka::PUBLIC_EXPONENT,
    cka::EC_PARAMS,
    cka::EC_POINT,
    cka::LOCAL,
    cka::ID,
];

/// `C_DeriveKey` mechanisms.
pub const DERIVE: &[u64] = &[
    ckm::CONCATENATE_BASE_AND_KEY,
    ckm::CONCATENATE_BASE_AND_DATA,
    ckm::CONCATENATE_DATA_AND_BASE,
    ckm::XOR_BASE_AND_DATA,
    ckm::EXTRACT_KEY_FROM_KEY,
    ckm::AES_ECB_ENCRYPT_DATA,
    ckm::AES_CBC_ENCRYPT_DATA,
    ckm::ECDH1_DERIVE,
    ckm::ECDH1_COFACTOR_DERIVE,
];

/// `C_WrapKey` / `C_UnwrapKey` mechanisms.
pub const WRAP: &[u64] = &[
    ckm::AES_KEY_WRAP,
    ckm::AES_KEY_WRAP_PAD,
    ckm::RSA_PKCS,
    ckm::RSA_PKCS_OAEP,
    ckm::RSA_X_509,
];

/// Single-part operation mechanisms.
pub const CRYPTO: &[u64] = &[
    ckm::AES_ECB,
    ckm::AES_CBC,
    ckm::AES_CBC_PAD,
    ckm::AES_CTR,
    ckm::AES_GCM,
    ckm::SHA256_HMAC,
    ckm::SHA_1_HMAC,
    ckm::AES_CMAC,
    ckm::RSA_PKCS,
    ckm::RSA_X_509,
    ckm::RSA_PKCS_OAEP,
    ckm::ECDSA,
    ckm::SHA256_RSA_PKCS,
    ckm::AES_KEY_WRAP,
];

/// `C_DigestKey` mechanisms.
pub const DIGEST: &[u64] = &[ckm::SHA256, ckm::SHA_1, ckm::SHA512];

fn at<T: Copy>(table: &[T], i: u8) -> T {
    table[i as usize % table.len()]
}

/// A value with a meaning for attribute `ty`.
fn pick(ty: u64, i: u8) -> Vec<u8> {
    match ty {
        cka::CLASS => attr::ulong(at(
            &[
                cko::SECRET_KEY,
                cko::PRIVATE_KEY,
                cko::PUBLIC_KEY,
                cko::DATA,
            ],
            i,
        ))
        .to_vec(),
        cka::KEY_TYPE => attr::ulong(at(
            &[
                ckk::GENERIC_SECRET,
                ckk::AES,
                ckk::SHA256_HMAC,
                ckk::SHA_1_HMAC,
                ckk::EC,
                ckk::RSA,
            ],
            i,
        ))
        .to_vec(),
        cka::VALUE_LEN => attr::ulong(at(&[1, 8, 13, 14, 16, 24, 31, 32, 33, 48, 64], i)).to_vec(),
        cka::ALLOWED_MECHANISMS => CRYPTO
            .iter()
            .chain(DERIVE)
            .chain(WRAP)
            .enumerate()
            .filter(|(n, _)| (i as usize >> (n % 8)) & 1 == 1)
            .flat_map(|(_, m)| attr::ulong(*m))
            .collect(),
        _ => vec![i & 1],
    }
}

fn value(ty: u64, v: &Val) -> Vec<u8> {
    match v {
        Val::Bool(b) => vec![u8::from(*b)],
        Val::Ulong(u) => attr::ulong(*u).to_vec(),
        Val::Pick(i) => pick(ty, *i),
        Val::Bytes(b) => b.iter().copied().take(600).collect(),
    }
}

/// The template's attributes with their values (owned).
fn owned(t: &Tpl) -> Vec<(u64, Vec<u8>)> {
    t.iter()
        .take(hsmlink_core::wire::MAX_ATTRS)
        .map(|(a, v)| {
            let ty = at(ATTRS, *a);
            (ty, value(ty, v))
        })
        .collect()
}

fn template(v: &[(u64, Vec<u8>)]) -> Template<'_> {
    let mut t = Template::new();
    for (ty, value) in v {
        let _ = t.push(Attribute { ty: *ty, value });
    }
    t
}

/// One RSA key pair made once per process (RSA generation is slow), for
/// each of the two runs of a confirmation.
struct World {
    hsm: Arc<Hsm>,
    /// (public, private) handles, non-modifiable token objects.
    rsa: [(u64, u64); 2],
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let hsm = Arc::new(Hsm::dev(USER, PASSWORD).expect("in-memory HSM"));
        let mut c = logged_in(&hsm);
        let keep = [
            (cka::TOKEN, vec![1]),
            (cka::MODIFIABLE, vec![0]),
            (cka::DESTROYABLE, vec![0]),
        ];
        let mut rsa = [(0, 0); 2];
        for r in &mut rsa {
            let mut public = keep.to_vec();
            public.push((cka::MODULUS_BITS, attr::ulong(2048).to_vec()));
            let mut private = keep.to_vec();
            private.push((cka::SENSITIVE, vec![1]));
            let reply = c.handle(Request::GenerateKeyPair {
                mechanism: Mechanism::plain(ckm::RSA_PKCS_KEY_PAIR_GEN),
                public: template(&public),
                private: template(&private),
            });
            let Reply::KeyPair { public, private } = reply else {
                panic!("setup RSA pair: {reply:?}");
            };
            *r = (public, private);
        }
        World { hsm, rsa }
    })
}

/// What one run saw.
struct Run {
    /// Per step, the bytes of each output.
    outputs: Vec<Vec<Vec<u8>>>,
    /// The secrets of the non-exportable keys.
    secrets: Vec<Vec<u8>>,
}

/// Per-input keys; their order is the objects' first indices.
/// 0 AES-256 imported, 1 AES-128 generated, 2 generic secret generated,
/// 3 EC P-256 private, 4 RSA private (all non-exportable); 5 exportable
/// AES-256 (wrap, unwrap, encrypt, decrypt, derive), 6 exportable generic
/// secret (derive, sign), 7 RSA public, 8 EC public.
pub const KEYS: usize = 9;
const SEALED: usize = 5;

fn object(reply: Reply, what: &str) -> u64 {
    match reply {
        Reply::Object(h) => h,
        r => panic!("setup {what}: {r:?}"),
    }
}

fn make_keys(c: &mut Connection, variant: usize, rsa: (u64, u64)) -> Vec<u64> {
    let sealed_usages: Vec<(u64, Vec<u8>)> = [
        cka::ENCRYPT,
        cka::DECRYPT,
        cka::SIGN,
        cka::VERIFY,
        cka::WRAP,
        cka::UNWRAP,
        cka::DERIVE,
    ]
    .into_iter()
    .map(|ty| (ty, vec![1]))
    .chain([(cka::SENSITIVE, vec![1]), (cka::EXTRACTABLE, vec![0])])
    .collect();
    let with = |extra: &[(u64, Vec<u8>)]| {
        let mut t = sealed_usages.clone();
        t.extend_from_slice(extra);
        t
    };
    // Random for each run, so that no input can know it beforehand (the
    // fuzzer learns constants the code compares).
    let imported: Vec<u8> = {
        use std::hash::BuildHasher;
        let r = std::collections::hash_map::RandomState::new();
        (0..4u64)
            .flat_map(|i| r.hash_one((i, variant)).to_le_bytes())
            .collect()
    };
    let class = attr::ulong(cko::SECRET_KEY).to_vec();
    let s0 = c.handle(Request::CreateObject {
        template: template(&with(&[
            (cka::CLASS, class.clone()),
            (cka::KEY_TYPE, attr::ulong(ckk::AES).to_vec()),
            (cka::VALUE, imported),
        ])),
    });
    let s0 = object(s0, "AES-256");
    let s1 = c.handle(Request::GenerateKey {
        mechanism: Mechanism::plain(ckm::AES_KEY_GEN),
        template: template(&with(&[(cka::VALUE_LEN, attr::ulong(16).to_vec())])),
    });
    let s1 = object(s1, "AES-128");
    let s2 = c.handle(Request::GenerateKey {
        mechanism: Mechanism::plain(ckm::GENERIC_SECRET_KEY_GEN),
        template: template(&with(&[(cka::VALUE_LEN, attr::ulong(32).to_vec())])),
    });
    let s2 = object(s2, "generic secret");
    let p256 = hsmlink_hsm::keys::Curve::P256.oid_der().to_vec();
    let pair = c.handle(Request::GenerateKeyPair {
        mechanism: Mechanism::plain(ckm::EC_KEY_PAIR_GEN),
        public: template(&[(cka::EC_PARAMS, p256)]),
        private: template(&[
            (cka::SENSITIVE, vec![1]),
            (cka::DERIVE, vec![1]),
            (cka::SIGN, vec![1]),
        ]),
    });
    let Reply::KeyPair {
        public: ec_public,
        private: s3,
    } = pair
    else {
        panic!("setup EC pair: {pair:?}");
    };
    let open = [(cka::SENSITIVE, vec![0]), (cka::EXTRACTABLE, vec![1])];
    let mut e0 = vec![
        (cka::CLASS, class.clone()),
        (cka::KEY_TYPE, attr::ulong(ckk::AES).to_vec()),
        (cka::VALUE, vec![0xe0; 32]),
    ];
    e0.extend(sealed_usages[..7].iter().cloned());
    e0.extend(open.iter().cloned());
    let e0 = c.handle(Request::CreateObject {
        template: template(&e0),
    });
    let e0 = object(e0, "exportable AES");
    let mut e1 = vec![
        (cka::CLASS, class),
        (cka::KEY_TYPE, attr::ulong(ckk::GENERIC_SECRET).to_vec()),
        (cka::VALUE, vec![0xe1; 32]),
        (cka::DERIVE, vec![1]),
        (cka::SIGN, vec![1]),
    ];
    e1.extend(open.iter().cloned());
    let e1 = c.handle(Request::CreateObject {
        template: template(&e1),
    });
    let e1 = object(e1, "exportable generic secret");
    vec![s0, s1, s2, s3, rsa.1, e0, e1, rsa.0, ec_public]
}

/// The object's secrets as the server holds them.
fn secrets_of(hsm: &Hsm, conn: u64, h: u64) -> Vec<Vec<u8>> {
    let o = hsm.get(owner(hsm), &APP, conn, h).expect("a setup key");
    [
        cka::VALUE,
        cka::PRIVATE_EXPONENT,
        cka::PRIME_1,
        cka::PRIME_2,
        cka::EXPONENT_1,
        cka::EXPONENT_2,
        cka::COEFFICIENT,
    ]
    .into_iter()
    .filter_map(|ty| o.get(ty).map(<[u8]>::to_vec))
    .collect()
}

/// Whether `h` is a non-exportable secret key, and its length.
fn sealed_secret(hsm: &Hsm, conn: u64, h: u64) -> Option<usize> {
    let o = hsm.get(owner(hsm), &APP, conn, h)?;
    (o.class() == Some(cko::SECRET_KEY) && !o.exportable())
        .then(|| o.get(cka::VALUE).map_or(0, <[u8]>::len))
}

/// Decode the steps of an input.
pub fn steps(mut data: &[u8]) -> Vec<Step> {
    let mut out = Vec::new();
    while out.len() < MAX_STEPS {
        match postcard::take_from_bytes::<Step>(data) {
            Ok((s, rest)) => {
                out.push(s);
                data = rest;
            }
            Err(_) => break,
        }
    }
    out
}

/// Encode steps as an input.
pub fn encode(steps: &[Step]) -> Vec<u8> {
    steps
        .iter()
        .flat_map(|s| postcard::to_allocvec(s).expect("steps encode"))
        .collect()
}

fn outputs_of(r: &Reply) -> Vec<Vec<u8>> {
    match r {
        Reply::Data(d) => vec![d.clone()],
        Reply::Attributes(v) => v
            .iter()
            .filter_map(|a| match a {
                OwnedAttr::Value(v) => Some(v.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn run(steps: &[Step], variant: usize) -> Run {
    let w = world();
    let hsm = &w.hsm;
    let mut c = logged_in(hsm);
    let conn = c.id();
    let mut objs = make_keys(&mut c, variant, w.rsa[variant]);
    let secrets: Vec<Vec<u8>> = objs[..SEALED]
        .iter()
        .flat_map(|h| secrets_of(hsm, conn, *h))
        .collect();
    // Handle → the longest non-exportable secret key it descends from.
    let mut lineage: BTreeMap<u64, usize> = BTreeMap::new();
    let mut outputs = Vec::new();
    let mut last: Vec<u8> = Vec::new();
    let ec_point = hsm
        .get(owner(&hsm), &APP, conn, objs[8])
        .and_then(|o| o.get(cka::EC_POINT).map(<[u8]>::to_vec))
        .unwrap_or_default();
    for step in steps {
        let h = |i: u8| objs[i as usize % objs.len()];
        let mut derived_from: Vec<u64> = Vec::new();
        let reply = match step {
            Step::Derive {
                mech,
                base,
                other,
                ulong,
                data,
                template: t,
            } => {
                let ty = at(DERIVE, *mech);
                let (b, o) = (h(*base), h(*other));
                let mut iv = [0u8; 16];
                iv[..8].copy_from_slice(&ulong.to_le_bytes());
                let public = if data.is_empty() {
                    &ec_point[..]
                } else {
                    &data[..]
                };
                let param = match ty {
                    ckm::CONCATENATE_BASE_AND_KEY => MechParam::Ulong(o),
                    ckm::EXTRACT_KEY_FROM_KEY => MechParam::Ulong(*ulong),
                    ckm::AES_CBC_ENCRYPT_DATA => MechParam::AesCbcData { iv, data },
                    ckm::ECDH1_DERIVE | ckm::ECDH1_COFACTOR_DERIVE => MechParam::Ecdh {
                        kdf: at(&[ckd::NULL, ckd::SHA1_KDF, ckd::SHA256_KDF], *ulong as u8),
                        shared_data: &[],
                        public_data: public,
                    },
                    _ => MechParam::Bytes(data),
                };
                derived_from.push(b);
                if ty == ckm::CONCATENATE_BASE_AND_KEY {
                    derived_from.push(o);
                }
                let t = owned(t);
                c.handle(Request::DeriveKey {
                    mechanism: Mechanism { ty, param },
                    base_key: b,
                    template: template(&t),
                })
            }
            Step::Copy { obj, template: t } => {
                derived_from.push(h(*obj));
                let t = owned(t);
                c.handle(Request::CopyObject {
                    object: h(*obj),
                    template: template(&t),
                })
            }
            Step::Set { obj, template: t } => {
                let t = owned(t);
                c.handle(Request::SetAttributes {
                    object: h(*obj),
                    template: template(&t),
                })
            }
            Step::Get { obj, types } => {
                let mut ts = heapless::Vec::new();
                for ty in types.iter().take(hsmlink_core::wire::MAX_ATTRS) {
                    let _ = ts.push(at(ATTRS, *ty));
                }
                c.handle(Request::GetAttributes {
                    object: h(*obj),
                    types: ts,
                })
            }
            Step::Wrap {
                mech,
                wrapping,
                key,
                iv,
            } => {
                let ty = at(WRAP, *mech);
                c.handle(Request::WrapKey {
                    mechanism: Mechanism {
                        ty,
                        param: wrap_param(ty, iv),
                    },
                    wrapping_key: h(*wrapping),
                    key: h(*key),
                })
            }
            Step::Unwrap {
                mech,
                unwrapping,
                last: use_last,
                blob,
                iv,
                template: t,
            } => {
                let ty = at(WRAP, *mech);
                let t = owned(t);
                let blob = if *use_last {
                    last.clone()
                } else {
                    blob.clone()
                };
                c.handle(Request::UnwrapKey {
                    mechanism: Mechanism {
                        ty,
                        param: wrap_param(ty, iv),
                    },
                    unwrapping_key: h(*unwrapping),
                    wrapped: &blob,
                    template: template(&t),
                })
            }
            Step::DigestKey { mech, key } => c.handle(Request::DigestKey {
                mechanism: at(DIGEST, *mech),
                key: h(*key),
            }),
            Step::Crypto {
                op,
                mech,
                key,
                param,
                last: use_last,
                data,
            } => {
                let ty = at(CRYPTO, *mech);
                let op = at(&[Op::Encrypt, Op::Decrypt, Op::Sign, Op::Verify], *op);
                let data = if *use_last {
                    last.clone()
                } else {
                    data.clone()
                };
                let mut block = [0u8; 16];
                for (b, p) in block.iter_mut().zip(param) {
                    *b = *p;
                }
                let param = match ty {
                    ckm::AES_CBC | ckm::AES_CBC_PAD => MechParam::Iv(param),
                    ckm::AES_CTR => MechParam::Ctr {
                        counter_bits: 128,
                        block,
                    },
                    ckm::AES_GCM => MechParam::Gcm {
                        iv: param,
                        aad: &[],
                        tag_bits: 128,
                    },
                    ckm::RSA_PKCS_OAEP => MechParam::Oaep {
                        hash: ckm::SHA_1,
                        mgf: ckg::MGF1_SHA1,
                        label: &[],
                    },
                    _ => MechParam::None,
                };
                c.handle(Request::CryptoOneShot {
                    op,
                    mechanism: Mechanism { ty, param },
                    key: h(*key),
                    data: &data,
                    signature: &[],
                })
            }
            Step::Create { template: t } => {
                let t = owned(t);
                c.handle(Request::CreateObject {
                    template: template(&t),
                })
            }
            Step::Find { template: t } => {
                let t = owned(t);
                c.handle(Request::FindObjects {
                    template: template(&t),
                    max: 64,
                })
            }
            Step::Destroy { obj } => {
                let o = h(*obj);
                if objs[..KEYS].contains(&o) {
                    // The per-input keys stay (the setup RSA keys cannot
                    // be destroyed anyway).
                    Reply::Ok
                } else {
                    c.handle(Request::DestroyObject { object: o })
                }
            }
        };
        // A new object: its lineage, and the rule on it.
        if let Reply::Object(new) = reply {
            let mut longest: Option<usize> = None;
            for src in &derived_from {
                for l in [lineage.get(src).copied(), sealed_secret(hsm, conn, *src)]
                    .into_iter()
                    .flatten()
                {
                    longest = Some(longest.map_or(l, |x| x.max(l)));
                }
            }
            if let Some(l) = longest {
                lineage.insert(new, l);
                let o = hsm
                    .get(owner(hsm), &APP, conn, new)
                    .expect("the new object");
                let len = o.get(cka::VALUE).map_or(0, <[u8]>::len);
                assert!(
                    len >= l,
                    "{step:?}: a {len}-byte key made from a non-exportable {l}-byte key"
                );
            }
            objs.push(new);
        }
        // Every key made from a non-exportable key, and every
        // non-exportable key, stays non-exportable.
        for (h, _) in lineage.iter() {
            if let Some(o) = hsm.get(owner(hsm), &APP, conn, *h) {
                assert!(
                    !o.exportable(),
                    "{step:?}: object {h}, made from a non-exportable key, is exportable"
                );
            }
        }
        for h in &objs[..SEALED] {
            let o = hsm.get(owner(hsm), &APP, conn, *h).expect("a setup key");
            assert!(!o.exportable(), "{step:?}: setup key {h} became exportable");
        }
        let out = outputs_of(&reply);
        if let Some(d) = out.last() {
            last = d.clone();
        }
        outputs.push(out);
    }
    // Token objects the input made do not outlive it.
    for h in &objs[KEYS..] {
        if hsm
            .get(owner(hsm), &APP, conn, *h)
            .is_some_and(|o| o.is_token())
        {
            let _ = hsm.remove(*h);
        }
    }
    drop(c);
    Run { outputs, secrets }
}

fn wrap_param(ty: u64, iv: &[u8]) -> MechParam<'_> {
    match ty {
        ckm::AES_KEY_WRAP | ckm::AES_KEY_WRAP_PAD if !iv.is_empty() => MechParam::Bytes(iv),
        ckm::RSA_PKCS_OAEP => MechParam::Oaep {
            hash: ckm::SHA_1,
            mgf: ckg::MGF1_SHA1,
            label: iv,
        },
        _ => MechParam::None,
    }
}

/// Every 4-byte window of the secrets: (secret, offset).
fn windows(secrets: &[Vec<u8>]) -> HashMap<[u8; 4], (usize, usize)> {
    let mut m = HashMap::new();
    for (i, s) in secrets.iter().enumerate() {
        for (off, w) in s.windows(4).enumerate() {
            m.entry([w[0], w[1], w[2], w[3]]).or_insert((i, off));
        }
    }
    m
}

/// Run an input; panic on a leak.
pub fn check(data: &[u8]) {
    let steps = steps(data);
    let first = run(&steps, 0);
    let known = windows(&first.secrets);
    // (step, output, secret, offset) of every match.
    let mut matches = Vec::new();
    for (s, outs) in first.outputs.iter().enumerate() {
        for (o, out) in outs.iter().enumerate() {
            for w in out.windows(4) {
                if let Some((i, off)) = known.get(&[w[0], w[1], w[2], w[3]]) {
                    matches.push((s, o, *i, *off));
                }
            }
        }
    }
    if matches.is_empty() {
        return;
    }
    // Confirm against keys of other values: a leak follows the key.
    let second = run(&steps, 1);
    for (s, o, i, off) in matches {
        let (Some(out), Some(secret)) = (
            second.outputs.get(s).and_then(|v| v.get(o)),
            second.secrets.get(i),
        ) else {
            continue;
        };
        let Some(w) = secret.get(off..off + 4) else {
            continue;
        };
        assert!(
            !out.windows(4).any(|x| x == w),
            "step {s} ({:?}) output {o} holds bytes {off}..{} of non-exportable secret {i}",
            steps[s],
            off + 4
        );
    }
}

fn tpl(v: &[(u64, Val)]) -> Tpl {
    v.iter()
        .map(|(ty, val)| {
            let i = ATTRS
                .iter()
                .position(|a| a == ty)
                .expect("a listed attribute") as u8;
            (i, val.clone())
        })
        .collect()
}

fn idx(table: &[u64], m: u64) -> u8 {
    table
        .iter()
        .position(|x| *x == m)
        .expect("a listed mechanism") as u8
}

/// The attacks of `tests/tests/attacks.rs` as inputs (the seed corpus).
pub fn attack_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Val::*;
    let secret = (cka::CLASS, Pick(0));
    let generic = (cka::KEY_TYPE, Pick(0));
    let aes = (cka::KEY_TYPE, Pick(1));
    let hmac_key = |len: u64| {
        tpl(&[
            secret.clone(),
            generic.clone(),
            (cka::VALUE_LEN, Ulong(len)),
            (cka::SIGN, Bool(true)),
        ])
    };
    let derive =
        |m: u64, base: u8, other: u8, ulong: u64, data: Vec<u8>, template: Tpl| Step::Derive {
            mech: idx(DERIVE, m),
            base,
            other,
            ulong,
            data,
            template,
        };
    let sign_last_made = |obj: u8| Step::Crypto {
        op: 2,
        mech: idx(CRYPTO, ckm::SHA256_HMAC),
        key: obj,
        param: vec![],
        last: false,
        data: b"a message the attacker knows".to_vec(),
    };
    let get_value = |obj: u8| Step::Get {
        obj,
        types: vec![13],
    };
    let wrap = |m: u64, wrapping: u8, key: u8| Step::Wrap {
        mech: idx(WRAP, m),
        wrapping,
        key,
        iv: vec![],
    };
    let mut seeds: Vec<(&'static str, Vec<Step>)> = vec![
        (
            "extract_key_from_key",
            (0..4)
                .flat_map(|i| {
                    [
                        derive(ckm::EXTRACT_KEY_FROM_KEY, 0, 0, 8 * i, vec![], hmac_key(1)),
                        sign_last_made(9 + i as u8),
                        get_value(9 + i as u8),
                    ]
                })
                .collect(),
        ),
        (
            "concatenate_data_and_base_truncated",
            vec![
                derive(
                    ckm::CONCATENATE_DATA_AND_BASE,
                    0,
                    0,
                    0,
                    vec![0xa5; 13],
                    hmac_key(14),
                ),
                sign_last_made(9),
                derive(
                    ckm::CONCATENATE_BASE_AND_DATA,
                    1,
                    0,
                    0,
                    vec![1; 16],
                    hmac_key(14),
                ),
            ],
        ),
        (
            "concatenate_base_and_key_victim_second",
            vec![
                derive(ckm::CONCATENATE_BASE_AND_KEY, 6, 0, 0, vec![], hmac_key(33)),
                get_value(9),
            ],
        ),
        (
            "xor_base_and_short_data",
            vec![
                derive(
                    ckm::XOR_BASE_AND_DATA,
                    0,
                    0,
                    0,
                    vec![0],
                    tpl(&[secret.clone(), generic.clone()]),
                ),
                derive(
                    ckm::XOR_BASE_AND_DATA,
                    2,
                    0,
                    0,
                    vec![0; 32],
                    tpl(&[secret.clone(), aes.clone(), (cka::DECRYPT, Bool(true))]),
                ),
            ],
        ),
        (
            "derive_turned_back_on",
            vec![
                Step::Set {
                    obj: 1,
                    template: tpl(&[(cka::DERIVE, Bool(false))]),
                },
                Step::Set {
                    obj: 1,
                    template: tpl(&[(cka::DERIVE, Bool(true))]),
                },
                derive(
                    ckm::AES_ECB_ENCRYPT_DATA,
                    1,
                    0,
                    0,
                    vec![0; 16],
                    tpl(&[
                        (cka::SENSITIVE, Bool(false)),
                        (cka::EXTRACTABLE, Bool(true)),
                    ]),
                ),
                get_value(9),
            ],
        ),
        (
            "wrap_then_decrypt",
            vec![
                wrap(ckm::AES_KEY_WRAP, 5, 0),
                wrap(ckm::AES_KEY_WRAP_PAD, 5, 3),
                Step::Crypto {
                    op: 1,
                    mech: idx(CRYPTO, ckm::AES_ECB),
                    key: 5,
                    param: vec![],
                    last: true,
                    data: vec![],
                },
            ],
        ),
        (
            "trojan_wrapped_key",
            vec![
                Step::Crypto {
                    op: 0,
                    mech: idx(CRYPTO, ckm::AES_ECB),
                    key: 5,
                    param: vec![],
                    last: false,
                    data: vec![0x77; 32],
                },
                Step::Unwrap {
                    mech: idx(WRAP, ckm::AES_KEY_WRAP),
                    unwrapping: 5,
                    last: false,
                    blob: vec![0x11; 40],
                    iv: vec![],
                    template: tpl(&[
                        secret.clone(),
                        aes.clone(),
                        (cka::WRAP, Bool(true)),
                        (cka::SENSITIVE, Bool(true)),
                    ]),
                },
                wrap(ckm::AES_KEY_WRAP, 5, 6),
                Step::Unwrap {
                    mech: idx(WRAP, ckm::AES_KEY_WRAP),
                    unwrapping: 5,
                    last: true,
                    blob: vec![],
                    iv: vec![],
                    template: tpl(&[secret.clone(), generic.clone(), (cka::WRAP, Bool(true))]),
                },
                wrap(ckm::AES_KEY_WRAP, 9, 0),
            ],
        ),
        (
            "trojan_public_key_and_raw_rsa",
            vec![
                wrap(ckm::RSA_PKCS, 7, 0),
                wrap(ckm::RSA_PKCS_OAEP, 7, 1),
                wrap(ckm::RSA_X_509, 7, 2),
                wrap(ckm::AES_KEY_WRAP_PAD, 5, 4),
            ],
        ),
        (
            "key_conflict_via_copy",
            vec![
                Step::Copy {
                    obj: 0,
                    template: tpl(&[(cka::SENSITIVE, Bool(false))]),
                },
                Step::Copy {
                    obj: 0,
                    template: tpl(&[(cka::EXTRACTABLE, Bool(true))]),
                },
                Step::Copy {
                    obj: 0,
                    template: tpl(&[(cka::TOKEN, Bool(true))]),
                },
                get_value(9),
                Step::Copy {
                    obj: 4,
                    template: tpl(&[(cka::TOKEN, Bool(false))]),
                },
                Step::Get {
                    obj: 10,
                    types: vec![22, 23, 24, 25, 26, 27],
                },
            ],
        ),
        (
            "set_conflicting_usage_and_allowed_mechanisms",
            vec![
                Step::Set {
                    obj: 0,
                    template: tpl(&[(cka::ALLOWED_MECHANISMS, Pick(1))]),
                },
                Step::Set {
                    obj: 0,
                    template: tpl(&[(cka::ALLOWED_MECHANISMS, Bytes(vec![]))]),
                },
                Step::Set {
                    obj: 0,
                    template: tpl(&[
                        (cka::SENSITIVE, Bool(false)),
                        (cka::EXTRACTABLE, Bool(true)),
                    ]),
                },
                get_value(0),
            ],
        ),
        (
            "derived_keys_inherit",
            vec![
                derive(
                    ckm::AES_CBC_ENCRYPT_DATA,
                    0,
                    0,
                    7,
                    vec![0x3c; 32],
                    tpl(&[
                        secret.clone(),
                        aes.clone(),
                        (cka::SENSITIVE, Bool(false)),
                        (cka::EXTRACTABLE, Bool(true)),
                    ]),
                ),
                get_value(9),
                derive(
                    ckm::AES_ECB_ENCRYPT_DATA,
                    0,
                    0,
                    0,
                    vec![0x3c; 16],
                    tpl(&[secret.clone(), aes.clone()]),
                ),
                derive(
                    ckm::AES_ECB_ENCRYPT_DATA,
                    0,
                    0,
                    0,
                    vec![0x3c; 32],
                    hmac_key(16),
                ),
            ],
        ),
        (
            "ecdh_points",
            vec![
                derive(
                    ckm::ECDH1_DERIVE,
                    3,
                    0,
                    0,
                    vec![],
                    tpl(&[
                        secret.clone(),
                        generic.clone(),
                        (cka::VALUE_LEN, Ulong(32)),
                        (cka::SENSITIVE, Bool(false)),
                        (cka::EXTRACTABLE, Bool(true)),
                    ]),
                ),
                get_value(9),
                derive(
                    ckm::ECDH1_DERIVE,
                    3,
                    0,
                    0,
                    [vec![4], vec![0; 31], vec![1], vec![0; 31], vec![1]].concat(),
                    hmac_key(32),
                ),
            ],
        ),
        (
            "digest_key_and_search",
            vec![
                Step::DigestKey { mech: 0, key: 0 },
                Step::DigestKey { mech: 1, key: 2 },
                Step::DigestKey { mech: 0, key: 5 },
                Step::Find {
                    template: tpl(&[(cka::VALUE, Bytes(vec![0xe0; 32]))]),
                },
                Step::Get {
                    obj: 4,
                    types: vec![22, 23, 24, 25, 26, 27, 28],
                },
                Step::Get {
                    obj: 3,
                    types: vec![13, 30, 31],
                },
            ],
        ),
        (
            "forged_history",
            vec![
                wrap(ckm::AES_KEY_WRAP, 5, 6),
                Step::Unwrap {
                    mech: idx(WRAP, ckm::AES_KEY_WRAP),
                    unwrapping: 5,
                    last: true,
                    blob: vec![],
                    iv: vec![],
                    template: tpl(&[
                        secret.clone(),
                        generic.clone(),
                        (cka::ALWAYS_SENSITIVE, Bool(true)),
                    ]),
                },
                Step::Create {
                    template: tpl(&[
                        secret.clone(),
                        generic.clone(),
                        (cka::VALUE, Bytes(vec![9; 13])),
                    ]),
                },
                Step::Set {
                    obj: 0,
                    template: tpl(&[(cka::NEVER_EXTRACTABLE, Bool(true))]),
                },
            ],
        ),
        (
            "gcm_and_ctr_with_chosen_iv",
            vec![
                Step::Crypto {
                    op: 0,
                    mech: idx(CRYPTO, ckm::AES_GCM),
                    key: 0,
                    param: vec![0; 12],
                    last: false,
                    data: vec![0; 32],
                },
                Step::Crypto {
                    op: 0,
                    mech: idx(CRYPTO, ckm::AES_GCM),
                    key: 0,
                    param: vec![0; 12],
                    last: false,
                    data: vec![0; 32],
                },
                Step::Crypto {
                    op: 0,
                    mech: idx(CRYPTO, ckm::AES_CTR),
                    key: 1,
                    param: vec![0; 16],
                    last: false,
                    data: vec![0; 64],
                },
                Step::Crypto {
                    op: 2,
                    mech: idx(CRYPTO, ckm::AES_CMAC),
                    key: 1,
                    param: vec![],
                    last: false,
                    data: vec![0; 16],
                },
            ],
        ),
    ];
    seeds
        .drain(..)
        .map(|(name, steps)| (name, encode(&steps)))
        .collect()
}
