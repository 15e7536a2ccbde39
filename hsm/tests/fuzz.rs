//! Structured random requests: valid frames with hostile contents. The
//! handler must answer every one without panicking.

mod common;

use common::*;
use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckk, ckm, cko};
use hsmlink_core::wire::{Attribute, MechParam, Mechanism, Op, Request, Template};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const TYPES: &[u64] = &[
    cka::CLASS,
    cka::KEY_TYPE,
    cka::TOKEN,
    cka::PRIVATE,
    cka::LABEL,
    cka::ID,
    cka::VALUE,
    cka::VALUE_LEN,
    cka::MODULUS,
    cka::MODULUS_BITS,
    cka::PUBLIC_EXPONENT,
    cka::PRIVATE_EXPONENT,
    cka::PRIME_1,
    cka::EC_PARAMS,
    cka::EC_POINT,
    cka::SENSITIVE,
    cka::EXTRACTABLE,
    cka::SIGN,
    cka::ENCRYPT,
    cka::MODIFIABLE,
    cka::COPYABLE,
    cka::DESTROYABLE,
    cka::LOCAL,
    cka::CERTIFICATE_TYPE,
    cka::SUBJECT,
    cka::WRAP_TEMPLATE,
    cka::ALLOWED_MECHANISMS,
    cka::ALWAYS_AUTHENTICATE,
    0x8000_1234,
];

const MECHS: &[u64] = &[
    ckm::RSA_PKCS_KEY_PAIR_GEN,
    ckm::RSA_PKCS,
    ckm::RSA_X_509,
    ckm::RSA_PKCS_PSS,
    ckm::RSA_PKCS_OAEP,
    ckm::SHA256_RSA_PKCS,
    ckm::SHA384_RSA_PKCS_PSS,
    ckm::EC_KEY_PAIR_GEN,
    ckm::ECDSA,
    ckm::ECDSA_SHA256,
    ckm::SHA256_HMAC,
    ckm::SHA_1_HMAC,
    ckm::AES_KEY_GEN,
    ckm::GENERIC_SECRET_KEY_GEN,
    ckm::AES_ECB,
    ckm::AES_CBC,
    ckm::AES_CBC_PAD,
    ckm::AES_CTR,
    ckm::AES_GCM,
    ckm::AES_KEY_WRAP,
    ckm::AES_KEY_WRAP_PAD,
    ckm::SHA256,
    0xdead_beef,
];

fn value(r: &mut Rng, ty: u64) -> Vec<u8> {
    match r.below(6) {
        0 => r.bytes(40),
        1 => attr::ulong(r.pick(&[
            cko::DATA,
            cko::CERTIFICATE,
            cko::PUBLIC_KEY,
            cko::PRIVATE_KEY,
            cko::SECRET_KEY,
            ckk::RSA,
            ckk::EC,
            ckk::AES,
            ckk::GENERIC_SECRET,
            16,
            24,
            32,
            1024,
            0,
            u64::MAX,
        ]))
        .to_vec(),
        2 => vec![r.below(2) as u8],
        3 => P256.to_vec(),
        4 if ty == cka::MODULUS => {
            let mut v = r.bytes(128);
            v.push(1);
            v
        }
        _ => r.bytes(3),
    }
}

fn template<'a>(r: &mut Rng, store: &'a mut Vec<Vec<u8>>) -> Template<'a> {
    let n = r.below(7) as usize;
    let mut tys = Vec::new();
    store.clear();
    for _ in 0..n {
        let ty = r.pick(TYPES);
        store.push(value(r, ty));
        tys.push(ty);
    }
    let mut t = Template::new();
    for (ty, v) in tys.into_iter().zip(store.iter()) {
        let _ = t.push(Attribute { ty, value: v });
    }
    t
}

fn mech<'a>(r: &mut Rng, bytes: &'a [u8]) -> Mechanism<'a> {
    let ty = r.pick(MECHS);
    let fitting = match ty {
        ckm::AES_CBC | ckm::AES_CBC_PAD => 0,
        ckm::AES_GCM => 1,
        ckm::AES_CTR => 2,
        ckm::RSA_PKCS_PSS | ckm::SHA384_RSA_PKCS_PSS => 3,
        ckm::RSA_PKCS_OAEP => 4,
        _ => 8,
    };
    let choice = if r.below(3) > 0 { fitting } else { r.below(9) };
    let param = match choice {
        0 => MechParam::Iv(&bytes[..r.pick(&[16usize, 16, 0, 17])]),
        1 => MechParam::Gcm {
            iv: &bytes[..r.below(20) as usize],
            aad: &bytes[..r.below(20) as usize],
            tag_bits: r.pick(&[0, 96, 128, 129, 64]),
        },
        2 => MechParam::Ctr {
            counter_bits: r.pick(&[0, 1, 32, 128, 129]),
            block: [r.next() as u8; 16],
        },
        3 => MechParam::Pss {
            hash: r.pick(&[ckm::SHA256, ckm::SHA384, ckm::SHA_1, 0, 77]),
            mgf: r.below(7),
            salt_len: r.pick(&[0, 20, 32, 32, 1 << 40, u64::MAX]),
        },
        4 => MechParam::Oaep {
            hash: r.pick(&[ckm::SHA256, 5]),
            mgf: r.below(7),
            label: &bytes[..r.below(20) as usize],
        },
        5 => MechParam::Ulong(r.next()),
        6 => MechParam::Bytes(&bytes[..r.below(20) as usize]),
        _ => MechParam::None,
    };
    Mechanism { ty, param }
}

#[test]
fn hostile_requests_get_answers() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut c = Client::alice();
    let mut handles: Vec<u64> = vec![0, 1, u64::MAX, 1 << 31];
    // Some real objects to aim at, which the fuzzer cannot destroy or change.
    let keep = || vec![(cka::DESTROYABLE, b(false)), (cka::MODIFIABLE, b(false))];
    let with = |extra: &[(u64, Vec<u8>)]| {
        let mut t = keep();
        t.extend_from_slice(extra);
        t
    };
    let (p, k) = c
        .gen_pair(
            ckm::RSA_PKCS_KEY_PAIR_GEN,
            &with(&[(cka::MODULUS_BITS, ul(1024))]),
            &with(&[(cka::EXTRACTABLE, b(true))]),
        )
        .unwrap();
    let (ep, ek) = c
        .gen_pair(
            ckm::EC_KEY_PAIR_GEN,
            &with(&[(cka::EC_PARAMS, P256.to_vec())]),
            &keep(),
        )
        .unwrap();
    handles.extend([
        p,
        k,
        ep,
        ek,
        c.aes(16, &keep()),
        c.aes(32, &with(&[(cka::EXTRACTABLE, b(true))])),
    ]);
    handles.push(
        c.gen_key(
            ckm::GENERIC_SECRET_KEY_GEN,
            &with(&[(cka::VALUE_LEN, ul(32))]),
        )
        .unwrap(),
    );
    let targets = handles.clone();
    let ops = [Op::Encrypt, Op::Decrypt, Op::Sign, Op::Verify];
    let pool: Vec<u8> = (0..=255u8).cycle().take(600).collect();
    let mut s1 = Vec::new();
    let mut s2 = Vec::new();
    // Kinds of answer seen: the fuzzer must reach past the front door.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20_000 {
        // Mostly the real keys, sometimes anything seen.
        let h = if r.below(4) > 0 {
            r.pick(&targets)
        } else {
            r.pick(&handles)
        };
        let op = r.pick(&ops);
        let data = &pool[..r.pick(&[0usize, 1, 15, 16, 20, 32, 64, 100, 128, 300, 600])];
        let sig = &pool[..r.pick(&[0usize, 20, 32, 64, 128, 256])];
        let m = mech(&mut r, &pool);
        let req = match r.below(16) {
            0 => Request::CreateObject {
                template: template(&mut r, &mut s1),
            },
            1 => Request::CopyObject {
                object: h,
                template: template(&mut r, &mut s1),
            },
            2 => Request::DestroyObject { object: h },
            3 => {
                let mut types = heapless::Vec::new();
                for _ in 0..r.below(8) {
                    let _ = types.push(r.pick(TYPES));
                }
                Request::GetAttributes { object: h, types }
            }
            4 => Request::SetAttributes {
                object: h,
                template: template(&mut r, &mut s1),
            },
            5 => Request::FindObjects {
                template: template(&mut r, &mut s1),
                max: r.below(100) as u32,
            },
            6 => Request::FindNext {
                max: r.next() as u32,
            },
            7 => Request::GenerateKey {
                mechanism: m,
                template: template(&mut r, &mut s1),
            },
            8 if i % 50 == 0 => Request::GenerateKeyPair {
                mechanism: m,
                public: template(&mut r, &mut s1),
                private: template(&mut r, &mut s2),
            },
            9 => Request::CryptoInit {
                op,
                mechanism: m,
                key: h,
            },
            10 => Request::CryptoUpdate { op, data },
            11 => Request::CryptoFinal {
                op,
                data,
                signature: sig,
            },
            12 => Request::CryptoOneShot {
                op,
                mechanism: m,
                key: h,
                data,
                signature: sig,
            },
            13 => Request::WrapKey {
                mechanism: m,
                wrapping_key: h,
                key: r.pick(&handles),
            },
            14 => Request::UnwrapKey {
                mechanism: m,
                unwrapping_key: h,
                wrapped: data,
                template: template(&mut r, &mut s1),
            },
            _ => Request::DigestKey {
                mechanism: r.pick(MECHS),
                key: h,
            },
        };
        let reply = c.req(&req);
        seen.insert(format!("{reply:?}").chars().take(8).collect::<String>());
        match reply {
            hsmlink_hsm::Reply::Object(n) => handles.push(n),
            hsmlink_hsm::Reply::KeyPair { public, private } => handles.extend([public, private]),
            _ => {}
        }
    }
    for kind in ["Data", "KeyInfo", "Attribut", "Objects", "Object(", "Ok"] {
        assert!(
            seen.iter().any(|s| s.starts_with(kind)),
            "no {kind} answer: {seen:?}"
        );
    }
    // Still serving normally.
    assert!(c.create(&data_object("after-fuzz")).is_ok());
}
