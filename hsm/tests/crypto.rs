//! Every mechanism, checked against OpenSSL used independently.

mod common;

use common::*;
use hsmlink_core::ck::{cka, ckg, ckk, ckm, cko, ckr};
use hsmlink_core::wire::{MechParam, Mechanism, Op, Request};
use hsmlink_hsm::conn::Reply;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use openssl::symm::{decrypt, decrypt_aead, encrypt, encrypt_aead, Cipher};

fn rsa_public(c: &mut Client, h: u64) -> Rsa<Public> {
    let n = BigNum::from_slice(&c.value(h, cka::MODULUS)).unwrap();
    let e = BigNum::from_slice(&c.value(h, cka::PUBLIC_EXPONENT)).unwrap();
    Rsa::from_public_components(n, e).unwrap()
}

fn ec_public(c: &mut Client, h: u64, nid: Nid) -> EcKey<Public> {
    let point = c.value(h, cka::EC_POINT);
    // DER OCTET STRING: skip tag and (short or 0x81 long) length.
    let raw = if point[1] == 0x81 {
        &point[3..]
    } else {
        &point[2..]
    };
    let group = EcGroup::from_curve_name(nid).unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let p = EcPoint::from_bytes(&group, raw, &mut ctx).unwrap();
    EcKey::from_public_key(&group, &p).unwrap()
}

fn digest_info(md: MessageDigest, prefix: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(&hash(md, msg).unwrap());
    v
}

const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

#[test]
fn rsa_pkcs1_sign_verify_encrypt_decrypt() {
    let mut c = Client::alice();
    let (pubk, privk) = c.rsa(2048, &[]);
    let pk = PKey::from_rsa(rsa_public(&mut c, pubk)).unwrap();
    let msg = b"hello hsmlink";
    // Module-translated form: CKM_RSA_PKCS over a DigestInfo.
    let di = digest_info(MessageDigest::sha256(), &SHA256_PREFIX, msg);
    let m = Mechanism::plain(ckm::RSA_PKCS);
    let sig = c.one_shot(Op::Sign, m, privk, &di, &[]).unwrap();
    assert_eq!(sig.len(), 256);
    let mut v = Verifier::new(MessageDigest::sha256(), &pk).unwrap();
    v.update(msg).unwrap();
    assert!(
        v.verify(&sig).unwrap(),
        "OpenSSL verifies the token's signature"
    );
    assert_eq!(c.one_shot(Op::Verify, m, pubk, &di, &sig), Ok(vec![]));
    let mut bad = sig.clone();
    bad[10] ^= 1;
    assert_eq!(
        c.one_shot(Op::Verify, m, pubk, &di, &bad),
        Err(ckr::SIGNATURE_INVALID)
    );
    assert_eq!(
        c.one_shot(Op::Verify, m, pubk, &di, &sig[1..]),
        Err(ckr::SIGNATURE_LEN_RANGE)
    );
    assert_eq!(
        c.one_shot(Op::Sign, m, privk, &[0; 246], &[]),
        Err(ckr::DATA_LEN_RANGE)
    );
    // Server-side hashing (SHA256_RSA_PKCS sent untranslated), multi-part.
    let h = Mechanism::plain(ckm::SHA256_RSA_PKCS);
    assert!(matches!(
        c.req(&Request::CryptoInit {
            op: Op::Sign,
            mechanism: h,
            key: privk
        }),
        Reply::KeyInfo(_)
    ));
    assert_eq!(
        c.req(&Request::CryptoUpdate {
            op: Op::Sign,
            data: b"hello "
        }),
        Reply::Data(vec![])
    );
    let sig2 = match c.req(&Request::CryptoFinal {
        op: Op::Sign,
        data: b"hsmlink",
        signature: &[],
    }) {
        Reply::Data(d) => d,
        r => panic!("{r:?}"),
    };
    assert_eq!(sig2, sig, "PKCS#1 v1.5 is deterministic");

    // Encryption both ways with OpenSSL.
    let rsa = rsa_public(&mut c, pubk);
    let mut ct = vec![0u8; 256];
    rsa.public_encrypt(b"secret", &mut ct, Padding::PKCS1)
        .unwrap();
    assert_eq!(
        c.one_shot(Op::Decrypt, m, privk, &ct, &[]),
        Ok(b"secret".to_vec())
    );
    let ct2 = c.one_shot(Op::Encrypt, m, pubk, b"other", &[]).unwrap();
    assert_eq!(
        c.one_shot(Op::Decrypt, m, privk, &ct2, &[]),
        Ok(b"other".to_vec())
    );
    assert_eq!(
        c.one_shot(Op::Decrypt, m, privk, &ct2[1..], &[]),
        Err(ckr::ENCRYPTED_DATA_LEN_RANGE)
    );
}

#[test]
fn rsa_raw_x509() {
    let mut c = Client::alice();
    let (pubk, privk) = c.rsa(1024, &[]);
    let rsa = rsa_public(&mut c, pubk);
    let m = Mechanism::plain(ckm::RSA_X_509);
    let data = [7u8; 20];
    let sig = c.one_shot(Op::Sign, m, privk, &data, &[]).unwrap();
    assert_eq!(sig.len(), 128);
    let mut out = vec![0u8; 128];
    let n = rsa.public_decrypt(&sig, &mut out, Padding::NONE).unwrap();
    assert_eq!(&out[n - 20..n], &data);
    assert!(out[..n - 20].iter().all(|b| *b == 0));
    assert_eq!(c.one_shot(Op::Verify, m, pubk, &data, &sig), Ok(vec![]));
    let ct = c.one_shot(Op::Encrypt, m, pubk, &data, &[]).unwrap();
    let pt = c.one_shot(Op::Decrypt, m, privk, &ct, &[]).unwrap();
    assert_eq!(pt.len(), 128);
    assert_eq!(&pt[108..], &data);
    assert_eq!(
        c.one_shot(Op::Sign, m, privk, &[1; 129], &[]),
        Err(ckr::DATA_LEN_RANGE)
    );
}

#[test]
fn rsa_pss_and_oaep() {
    let mut c = Client::alice();
    let (pubk, privk) = c.rsa(2048, &[]);
    let pk = PKey::from_rsa(rsa_public(&mut c, pubk)).unwrap();
    let msg = b"pss message";
    for (hm, md, mgf) in [
        (ckm::SHA256, MessageDigest::sha256(), ckg::MGF1_SHA256),
        (ckm::SHA384, MessageDigest::sha384(), ckg::MGF1_SHA384),
        (ckm::SHA_1, MessageDigest::sha1(), ckg::MGF1_SHA1),
    ] {
        let digest = hash(md, msg).unwrap();
        let m = Mechanism {
            ty: ckm::RSA_PKCS_PSS,
            param: MechParam::Pss {
                hash: hm,
                mgf,
                salt_len: digest.len() as u64,
            },
        };
        let sig = c.one_shot(Op::Sign, m, privk, &digest, &[]).unwrap();
        let mut v = Verifier::new(md, &pk).unwrap();
        v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        v.set_rsa_mgf1_md(md).unwrap();
        v.update(msg).unwrap();
        assert!(v.verify(&sig).unwrap(), "OpenSSL verifies PSS with {hm:#x}");
        assert_eq!(c.one_shot(Op::Verify, m, pubk, &digest, &sig), Ok(vec![]));
        assert_eq!(
            c.one_shot(Op::Verify, m, pubk, &digest[1..], &sig),
            Err(ckr::DATA_LEN_RANGE)
        );
        assert_eq!(
            c.one_shot(Op::Sign, m, privk, &digest[1..], &[]),
            Err(ckr::DATA_LEN_RANGE)
        );
        let mut bad = sig.clone();
        bad[0] ^= 0x40;
        assert_eq!(
            c.one_shot(Op::Verify, m, pubk, &digest, &bad),
            Err(ckr::SIGNATURE_INVALID)
        );
    }
    let huge_salt = Mechanism {
        ty: ckm::RSA_PKCS_PSS,
        param: MechParam::Pss {
            hash: ckm::SHA256,
            mgf: ckg::MGF1_SHA256,
            salt_len: 1000,
        },
    };
    assert_eq!(
        c.one_shot(Op::Sign, huge_salt, privk, &[0; 32], &[]),
        Err(ckr::MECHANISM_PARAM_INVALID)
    );
    assert_eq!(
        c.one_shot(
            Op::Sign,
            Mechanism::plain(ckm::RSA_PKCS_PSS),
            privk,
            &[0; 32],
            &[]
        ),
        Err(ckr::MECHANISM_PARAM_INVALID)
    );

    // OAEP SHA-256 with a label, decrypted by the token after OpenSSL encrypts.
    let m = Mechanism {
        ty: ckm::RSA_PKCS_OAEP,
        param: MechParam::Oaep {
            hash: ckm::SHA256,
            mgf: ckg::MGF1_SHA256,
            label: b"lbl",
        },
    };
    let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&pk).unwrap();
    ctx.encrypt_init().unwrap();
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    ctx.set_rsa_oaep_md(openssl::md::Md::sha256()).unwrap();
    ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).unwrap();
    ctx.set_rsa_oaep_label(b"lbl").unwrap();
    let mut ct = Vec::new();
    ctx.encrypt_to_vec(b"oaep secret", &mut ct).unwrap();
    assert_eq!(
        c.one_shot(Op::Decrypt, m, privk, &ct, &[]),
        Ok(b"oaep secret".to_vec())
    );
    let ct2 = c.one_shot(Op::Encrypt, m, pubk, b"again", &[]).unwrap();
    assert_eq!(
        c.one_shot(Op::Decrypt, m, privk, &ct2, &[]),
        Ok(b"again".to_vec())
    );
    assert_eq!(
        c.one_shot(Op::Encrypt, m, pubk, &[0; 200], &[]),
        Err(ckr::DATA_LEN_RANGE)
    );
}

#[test]
fn ecdsa_on_every_curve() {
    let mut c = Client::alice();
    for (params, nid, md, width) in [
        (P256, Nid::X9_62_PRIME256V1, MessageDigest::sha256(), 32),
        (P384, Nid::SECP384R1, MessageDigest::sha384(), 48),
        (P521, Nid::SECP521R1, MessageDigest::sha512(), 66),
    ] {
        let (pubk, privk) = c.ec(params);
        let key = ec_public(&mut c, pubk, nid);
        let digest = hash(md, b"ecdsa message").unwrap();
        let m = Mechanism::plain(ckm::ECDSA);
        let sig = c.one_shot(Op::Sign, m, privk, &digest, &[]).unwrap();
        assert_eq!(sig.len(), 2 * width);
        let (r, s) = sig.split_at(width);
        let der = EcdsaSig::from_private_components(
            BigNum::from_slice(r).unwrap(),
            BigNum::from_slice(s).unwrap(),
        )
        .unwrap();
        assert!(der.verify(&digest, &key).unwrap(), "OpenSSL verifies");
        assert_eq!(c.one_shot(Op::Verify, m, pubk, &digest, &sig), Ok(vec![]));
        assert_eq!(
            c.one_shot(Op::Verify, m, pubk, &digest, &sig[1..]),
            Err(ckr::SIGNATURE_LEN_RANGE)
        );
        let mut bad = sig.clone();
        bad[5] ^= 1;
        assert_eq!(
            c.one_shot(Op::Verify, m, pubk, &digest, &bad),
            Err(ckr::SIGNATURE_INVALID)
        );
        // Server-side hashing (ECDSA_SHA256 untranslated), multi-part.
        let hm = Mechanism::plain(ckm::ECDSA_SHA256);
        assert!(matches!(
            c.req(&Request::CryptoInit {
                op: Op::Sign,
                mechanism: hm,
                key: privk
            }),
            Reply::KeyInfo(k) if k.key_type == ckk::EC
        ));
        c.req(&Request::CryptoUpdate {
            op: Op::Sign,
            data: b"ecdsa ",
        });
        let sig = match c.req(&Request::CryptoFinal {
            op: Op::Sign,
            data: b"message",
            signature: &[],
        }) {
            Reply::Data(d) => d,
            r => panic!("{r:?}"),
        };
        let d256 = hash(MessageDigest::sha256(), b"ecdsa message").unwrap();
        assert_eq!(c.one_shot(Op::Verify, m, pubk, &d256, &sig), Ok(vec![]));
    }
}

#[test]
fn imported_keys_work() {
    let mut c = Client::alice();
    // An OpenSSL EC key imported as private + public (raw point form).
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let k = EcKey::generate(&group).unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let raw = k
        .public_key()
        .to_bytes(
            &group,
            openssl::ec::PointConversionForm::UNCOMPRESSED,
            &mut ctx,
        )
        .unwrap();
    let privk = c
        .create(&[
            (cka::CLASS, ul(cko::PRIVATE_KEY)),
            (cka::KEY_TYPE, ul(ckk::EC)),
            (cka::EC_PARAMS, P256.to_vec()),
            (cka::VALUE, k.private_key().to_vec()),
        ])
        .unwrap();
    let pubk = c
        .create(&[
            (cka::CLASS, ul(cko::PUBLIC_KEY)),
            (cka::KEY_TYPE, ul(ckk::EC)),
            (cka::EC_PARAMS, P256.to_vec()),
            (cka::EC_POINT, raw.clone()),
        ])
        .unwrap();
    let point = c.value(pubk, cka::EC_POINT);
    assert_eq!(&point[..2], &[0x04, 65]);
    assert_eq!(&point[2..], &raw[..]);
    let digest = [9u8; 32];
    let sig = c
        .one_shot(Op::Sign, Mechanism::plain(ckm::ECDSA), privk, &digest, &[])
        .unwrap();
    let der = EcdsaSig::from_private_components(
        BigNum::from_slice(&sig[..32]).unwrap(),
        BigNum::from_slice(&sig[32..]).unwrap(),
    )
    .unwrap();
    assert!(der.verify(&digest, &k).unwrap());
    // The same point given as DER OCTET STRING.
    let mut wrapped = vec![0x04, 65];
    wrapped.extend_from_slice(&raw);
    let pubk2 = c
        .create(&[
            (cka::CLASS, ul(cko::PUBLIC_KEY)),
            (cka::KEY_TYPE, ul(ckk::EC)),
            (cka::EC_PARAMS, P256.to_vec()),
            (cka::EC_POINT, wrapped.clone()),
        ])
        .unwrap();
    assert_eq!(c.value(pubk2, cka::EC_POINT), wrapped);

    // An OpenSSL RSA key imported with CRT parts, and without.
    let rsa = Rsa::generate(1024).unwrap();
    let mut t = vec![
        (cka::CLASS, ul(cko::PRIVATE_KEY)),
        (cka::KEY_TYPE, ul(ckk::RSA)),
        (cka::MODULUS, rsa.n().to_vec()),
        (cka::PUBLIC_EXPONENT, rsa.e().to_vec()),
        (cka::PRIVATE_EXPONENT, rsa.d().to_vec()),
    ];
    let no_crt = c.create(&t).unwrap();
    t.extend([
        (cka::PRIME_1, rsa.p().unwrap().to_vec()),
        (cka::PRIME_2, rsa.q().unwrap().to_vec()),
        (cka::EXPONENT_1, rsa.dmp1().unwrap().to_vec()),
        (cka::EXPONENT_2, rsa.dmq1().unwrap().to_vec()),
        (cka::COEFFICIENT, rsa.iqmp().unwrap().to_vec()),
    ]);
    let crt = c.create(&t).unwrap();
    assert_eq!(c.value(crt, cka::MODULUS_BITS), ul(1024));
    let m = Mechanism::plain(ckm::RSA_PKCS);
    let s1 = c.one_shot(Op::Sign, m, no_crt, b"abc", &[]).unwrap();
    let s2 = c.one_shot(Op::Sign, m, crt, b"abc", &[]).unwrap();
    assert_eq!(s1, s2);
    let mut out = vec![0u8; 128];
    let n = rsa.public_decrypt(&s1, &mut out, Padding::PKCS1).unwrap();
    assert_eq!(&out[..n], b"abc");
    // Inconsistent CRT parts are refused.
    t[5].1 = Rsa::generate(1024).unwrap().p().unwrap().to_vec();
    assert_eq!(c.create(&t), Err(ckr::ATTRIBUTE_VALUE_INVALID));
}

#[test]
fn hmac_all_hashes() {
    let mut c = Client::alice();
    let key = b"0123456789abcdef0123".to_vec();
    let k = c
        .create(&[
            (cka::CLASS, ul(cko::SECRET_KEY)),
            (cka::KEY_TYPE, ul(ckk::GENERIC_SECRET)),
            (cka::VALUE, key.clone()),
        ])
        .unwrap();
    let pk = PKey::hmac(&key).unwrap();
    for (mech, md) in [
        (ckm::SHA_1_HMAC, MessageDigest::sha1()),
        (ckm::SHA224_HMAC, MessageDigest::sha224()),
        (ckm::SHA256_HMAC, MessageDigest::sha256()),
        (ckm::SHA384_HMAC, MessageDigest::sha384()),
        (ckm::SHA512_HMAC, MessageDigest::sha512()),
    ] {
        let mut s = openssl::sign::Signer::new(md, &pk).unwrap();
        s.update(b"mac me").unwrap();
        let want = s.sign_to_vec().unwrap();
        let m = Mechanism::plain(mech);
        assert_eq!(c.one_shot(Op::Sign, m, k, b"mac me", &[]), Ok(want.clone()));
        assert_eq!(c.one_shot(Op::Verify, m, k, b"mac me", &want), Ok(vec![]));
        assert_eq!(
            c.one_shot(Op::Verify, m, k, b"mac me", &want[1..]),
            Err(ckr::SIGNATURE_LEN_RANGE)
        );
        assert_eq!(
            c.one_shot(Op::Verify, m, k, b"mac mE", &want),
            Err(ckr::SIGNATURE_INVALID)
        );
        // Multi-part.
        c.req(&Request::CryptoInit {
            op: Op::Sign,
            mechanism: m,
            key: k,
        });
        c.req(&Request::CryptoUpdate {
            op: Op::Sign,
            data: b"mac",
        });
        assert_eq!(
            c.req(&Request::CryptoFinal {
                op: Op::Sign,
                data: b" me",
                signature: &[]
            }),
            Reply::Data(want)
        );
    }
    // AES keys are not HMAC keys.
    let aes = c.aes(16, &[]);
    assert_eq!(
        c.one_shot(Op::Sign, Mechanism::plain(ckm::SHA256_HMAC), aes, b"x", &[]),
        Err(ckr::KEY_TYPE_INCONSISTENT)
    );
}

#[test]
fn aes_modes_round_trip_against_openssl() {
    let mut c = Client::alice();
    let key = [0x11u8; 32];
    let k = c
        .create(&aes_object(&key, &[(cka::EXTRACTABLE, b(true))]))
        .unwrap();
    let iv = [0x22u8; 16];
    let pt: Vec<u8> = (0..100u8).collect();
    let pt48 = &pt[..48];

    // ECB / CBC: block multiples.
    let ecb = Mechanism::plain(ckm::AES_ECB);
    let ct = c.one_shot(Op::Encrypt, ecb, k, pt48, &[]).unwrap();
    let mut cr = openssl::symm::Crypter::new(
        Cipher::aes_256_ecb(),
        openssl::symm::Mode::Encrypt,
        &key,
        None,
    )
    .unwrap();
    cr.pad(false);
    let mut want = vec![0u8; 64 + 16];
    let n = cr.update(pt48, &mut want).unwrap();
    want.truncate(n);
    assert_eq!(ct, want);
    assert_eq!(c.one_shot(Op::Decrypt, ecb, k, &ct, &[]), Ok(pt48.to_vec()));
    assert_eq!(
        c.one_shot(Op::Encrypt, ecb, k, &pt[..47], &[]),
        Err(ckr::DATA_LEN_RANGE)
    );
    assert_eq!(
        c.one_shot(Op::Decrypt, ecb, k, &ct[..47], &[]),
        Err(ckr::ENCRYPTED_DATA_LEN_RANGE)
    );

    let cbc = Mechanism {
        ty: ckm::AES_CBC,
        param: MechParam::Iv(&iv),
    };
    let ct = c.one_shot(Op::Encrypt, cbc, k, pt48, &[]).unwrap();
    let mut want = encrypt(Cipher::aes_256_cbc(), &key, Some(&iv), pt48).unwrap();
    want.truncate(48); // OpenSSL added a padding block
    assert_eq!(ct, want);
    assert_eq!(c.one_shot(Op::Decrypt, cbc, k, &ct, &[]), Ok(pt48.to_vec()));

    // CBC_PAD: any length, PKCS#7.
    let pad = Mechanism {
        ty: ckm::AES_CBC_PAD,
        param: MechParam::Iv(&iv),
    };
    let ct = c.one_shot(Op::Encrypt, pad, k, &pt, &[]).unwrap();
    assert_eq!(
        ct,
        encrypt(Cipher::aes_256_cbc(), &key, Some(&iv), &pt).unwrap()
    );
    assert_eq!(c.one_shot(Op::Decrypt, pad, k, &ct, &[]), Ok(pt.clone()));
    let mut bad = ct.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x5a;
    assert_eq!(
        c.one_shot(Op::Decrypt, pad, k, &bad, &[]),
        Err(ckr::ENCRYPTED_DATA_INVALID)
    );
    assert_eq!(
        c.one_shot(Op::Decrypt, pad, k, &ct[..ct.len() - 1], &[]),
        Err(ckr::ENCRYPTED_DATA_LEN_RANGE)
    );
    // Multi-part CBC_PAD in odd pieces.
    c.req(&Request::CryptoInit {
        op: Op::Encrypt,
        mechanism: pad,
        key: k,
    });
    let mut got = Vec::new();
    for chunk in pt.chunks(7) {
        match c.req(&Request::CryptoUpdate {
            op: Op::Encrypt,
            data: chunk,
        }) {
            Reply::Data(d) => got.extend(d),
            r => panic!("{r:?}"),
        }
    }
    match c.req(&Request::CryptoFinal {
        op: Op::Encrypt,
        data: &[],
        signature: &[],
    }) {
        Reply::Data(d) => got.extend(d),
        r => panic!("{r:?}"),
    }
    assert_eq!(got, ct);

    // CTR.
    let block = [0x33u8; 16];
    let ctr = Mechanism {
        ty: ckm::AES_CTR,
        param: MechParam::Ctr {
            counter_bits: 128,
            block,
        },
    };
    let ct = c.one_shot(Op::Encrypt, ctr, k, &pt, &[]).unwrap();
    assert_eq!(
        ct,
        encrypt(Cipher::aes_256_ctr(), &key, Some(&block), &pt).unwrap()
    );
    assert_eq!(c.one_shot(Op::Decrypt, ctr, k, &ct, &[]), Ok(pt.clone()));
    // A 4-bit counter at 14 has two blocks left before it would wrap.
    let mut small = [0u8; 16];
    small[15] = 14;
    let ctr4 = Mechanism {
        ty: ckm::AES_CTR,
        param: MechParam::Ctr {
            counter_bits: 4,
            block: small,
        },
    };
    assert_eq!(
        c.one_shot(Op::Encrypt, ctr4, k, &pt[..32], &[])
            .map(|v| v.len()),
        Ok(32)
    );
    assert_eq!(
        c.one_shot(Op::Encrypt, ctr4, k, &pt[..33], &[]),
        Err(ckr::DATA_LEN_RANGE)
    );

    // GCM: ciphertext || tag.
    let giv = [0x44u8; 12];
    let gcm = Mechanism {
        ty: ckm::AES_GCM,
        param: MechParam::Gcm {
            iv: &giv,
            aad: b"header",
            tag_bits: 128,
        },
    };
    let out = c.one_shot(Op::Encrypt, gcm, k, &pt, &[]).unwrap();
    let mut tag = [0u8; 16];
    let want = encrypt_aead(
        Cipher::aes_256_gcm(),
        &key,
        Some(&giv),
        b"header",
        &pt,
        &mut tag,
    )
    .unwrap();
    assert_eq!(&out[..100], &want[..]);
    assert_eq!(&out[100..], &tag);
    assert_eq!(
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &key,
            Some(&giv),
            b"header",
            &out[..100],
            &tag
        )
        .unwrap(),
        pt
    );
    assert_eq!(c.one_shot(Op::Decrypt, gcm, k, &out, &[]), Ok(pt.clone()));
    let mut bad = out.clone();
    bad[3] ^= 1;
    assert_eq!(
        c.one_shot(Op::Decrypt, gcm, k, &bad, &[]),
        Err(ckr::ENCRYPTED_DATA_INVALID)
    );
    assert_eq!(
        c.one_shot(Op::Decrypt, gcm, k, &out[..10], &[]),
        Err(ckr::ENCRYPTED_DATA_LEN_RANGE)
    );
    // Multi-part GCM decryption buffers until the tag.
    c.req(&Request::CryptoInit {
        op: Op::Decrypt,
        mechanism: gcm,
        key: k,
    });
    assert_eq!(
        c.req(&Request::CryptoUpdate {
            op: Op::Decrypt,
            data: &out[..50]
        }),
        Reply::Data(vec![])
    );
    assert_eq!(
        c.req(&Request::CryptoFinal {
            op: Op::Decrypt,
            data: &out[50..],
            signature: &[]
        }),
        Reply::Data(pt.clone())
    );
    // A 12-byte tag and a 16-byte IV.
    let giv16 = [5u8; 16];
    let gcm96 = Mechanism {
        ty: ckm::AES_GCM,
        param: MechParam::Gcm {
            iv: &giv16,
            aad: &[],
            tag_bits: 96,
        },
    };
    let out = c.one_shot(Op::Encrypt, gcm96, k, b"short", &[]).unwrap();
    assert_eq!(out.len(), 5 + 12);
    assert_eq!(
        c.one_shot(Op::Decrypt, gcm96, k, &out, &[]),
        Ok(b"short".to_vec())
    );
    let _ = decrypt;

    // A generated AES-128 key works too (and cannot be read).
    let g = c.aes(16, &[]);
    let ct = c.one_shot(Op::Encrypt, ecb, g, &[0; 16], &[]).unwrap();
    assert_eq!(c.one_shot(Op::Decrypt, ecb, g, &ct, &[]), Ok(vec![0; 16]));
}

#[test]
fn digest_key_only_for_exportable_secrets() {
    let mut c = Client::alice();
    let k = c
        .create(&aes_object(&[1; 16], &[(cka::EXTRACTABLE, b(true))]))
        .unwrap();
    assert_eq!(
        c.req(&Request::DigestKey {
            mechanism: ckm::SHA256,
            key: k
        }),
        Reply::Data(vec![1; 16])
    );
    let s = c.aes(16, &[]);
    assert_eq!(
        c.req(&Request::DigestKey {
            mechanism: ckm::SHA256,
            key: s
        }),
        Reply::Error(ckr::KEY_INDIGESTIBLE)
    );
}
