//! Multi-part operations for every mechanism that allows them, with the
//! length-query rule on every output: a null buffer returns the size and
//! keeps the operation, a short buffer is `CKR_BUFFER_TOO_SMALL` and keeps
//! it too, and the parts give what one single-part call (and OpenSSL) gives.

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsmlink_tests::raw::{self, Raw};
use hsmlink_tests::{keys, token, verify};
use openssl::nid::Nid;
use openssl::symm::Cipher;

const DATA: &[u8] = b"multi-part data that spans more than a couple of AES blocks, on purpose.";

fn secret(session: &Session, kt: KeyType, value: &[u8]) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(kt),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ])
        .expect("import secret key")
}

/// Sign `DATA` in three parts; `C_SignFinal` is first asked for its length
/// (null buffer), then given a buffer one byte short, then the right one.
fn sign_in_parts(raw: &Raw, session: &Session, mech: &Mechanism, key: ObjectHandle) -> Vec<u8> {
    let h = session.handle();
    session.sign_init(mech, key).unwrap();
    for part in [&DATA[..5], &DATA[5..40], &DATA[40..]] {
        session.sign_update(part).unwrap();
    }
    let query = raw.sign_final(h, None);
    assert_eq!(
        query.rv,
        raw::CKR_OK,
        "{mech:?}: length query {}",
        query.rv_name()
    );
    let len = query.len as usize;
    let short = raw.sign_final(h, Some(len - 1));
    assert_eq!(
        short.rv,
        raw::CKR_BUFFER_TOO_SMALL,
        "{mech:?}: short buffer {}",
        short.rv_name()
    );
    assert!(
        !short.buffer_touched,
        "{mech:?}: a short buffer is left alone"
    );
    let out = raw.sign_final(h, Some(len));
    assert_eq!(out.rv, raw::CKR_OK, "{mech:?}: {}", out.rv_name());
    assert_eq!(out.data.len(), len, "{mech:?}: the queried length is exact");
    // The operation has ended.
    assert_eq!(
        raw.sign_final(h, Some(len)).rv,
        raw::CKR_OPERATION_NOT_INITIALIZED
    );
    out.data
}

#[test]
fn signatures_in_parts_with_length_queries() {
    let t = token();
    let session = t.user_session();
    let rsa = keys::rsa(&session, 2048, "mp-rsa");
    let rsa_pub = verify::rsa_public_key(&session, rsa.public);
    let pss = |hash, mgf, salt: u64| PkcsPssParams {
        hash_alg: hash,
        mgf,
        s_len: salt.into(),
    };
    let rsa_mechs = [
        Mechanism::Sha1RsaPkcs,
        Mechanism::Sha224RsaPkcs,
        Mechanism::Sha256RsaPkcs,
        Mechanism::Sha384RsaPkcs,
        Mechanism::Sha512RsaPkcs,
        Mechanism::Sha1RsaPkcsPss(pss(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, 20u64)),
        Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64)),
        Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA1, 0u64)),
        Mechanism::Sha512RsaPkcsPss(pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64u64)),
    ];
    for mech in rsa_mechs {
        let sig = sign_in_parts(&t.raw, &session, &mech, rsa.private);
        assert_eq!(sig.len(), 256);
        session.verify(&mech, rsa.public, DATA, &sig).unwrap();
        // And in parts on the verify side.
        session.verify_init(&mech, rsa.public).unwrap();
        session.verify_update(&DATA[..11]).unwrap();
        session.verify_update(&DATA[11..]).unwrap();
        session.verify_final(&sig).unwrap();
    }
    let _ = rsa_pub;
    for (nid, len) in [
        (Nid::X9_62_PRIME256V1, 64),
        (Nid::SECP384R1, 96),
        (Nid::SECP521R1, 132),
    ] {
        let ec = keys::ec(&session, nid, "mp-ec");
        let public = verify::ec_public_key(&session, ec.public);
        for (mech, md) in [
            (Mechanism::EcdsaSha1, openssl::hash::MessageDigest::sha1()),
            (
                Mechanism::EcdsaSha256,
                openssl::hash::MessageDigest::sha256(),
            ),
            (
                Mechanism::EcdsaSha512,
                openssl::hash::MessageDigest::sha512(),
            ),
        ] {
            let sig = sign_in_parts(&t.raw, &session, &mech, ec.private);
            assert_eq!(sig.len(), len);
            assert!(verify::ecdsa_verifies(&public, Some(md), DATA, &sig));
        }
    }
    let (ed_pub, ed_priv) = session
        .generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(vec![0x06, 0x03, 0x2b, 0x65, 0x70]),
                Attribute::Verify(true),
            ],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .unwrap();
    let eddsa = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    let sig = sign_in_parts(&t.raw, &session, &eddsa, ed_priv);
    assert_eq!(sig, session.sign(&eddsa, ed_priv, DATA).unwrap());
    session.verify(&eddsa, ed_pub, DATA, &sig).unwrap();

    let hmac_key: Vec<u8> = (0..100u8).collect();
    let hk = secret(&session, KeyType::GENERIC_SECRET, &hmac_key);
    for (mech, md) in [
        (Mechanism::Sha1Hmac, openssl::hash::MessageDigest::sha1()),
        (
            Mechanism::Sha224Hmac,
            openssl::hash::MessageDigest::sha224(),
        ),
        (
            Mechanism::Sha256Hmac,
            openssl::hash::MessageDigest::sha256(),
        ),
        (
            Mechanism::Sha384Hmac,
            openssl::hash::MessageDigest::sha384(),
        ),
        (
            Mechanism::Sha512Hmac,
            openssl::hash::MessageDigest::sha512(),
        ),
    ] {
        let mac = sign_in_parts(&t.raw, &session, &mech, hk);
        assert_eq!(mac, verify::hmac(md, &hmac_key, DATA), "{mech:?}");
    }
    let ak = secret(&session, KeyType::AES, &[3u8; 32]);
    let mac = sign_in_parts(&t.raw, &session, &Mechanism::AesCMac, ak);
    assert_eq!(mac, session.sign(&Mechanism::AesCMac, ak, DATA).unwrap());
}

/// Encrypt `data` in parts, asking each update and the final for their
/// length first (null buffer), then decrypt the result in parts.
fn encrypt_in_parts(
    raw: &Raw,
    session: &Session,
    mech: &Mechanism,
    key: ObjectHandle,
    data: &[u8],
) -> Vec<u8> {
    let h = session.handle();
    session.encrypt_init(mech, key).unwrap();
    let mut out = Vec::new();
    for part in [&data[..7], &data[7..33], &data[33..]] {
        let query = raw.encrypt_update(h, part, None);
        assert_eq!(
            query.rv,
            raw::CKR_OK,
            "{mech:?}: update length query {}",
            query.rv_name()
        );
        let got = raw.encrypt_update(h, part, Some(query.len as usize));
        assert_eq!(got.rv, raw::CKR_OK, "{mech:?}: update {}", got.rv_name());
        out.extend(got.data);
    }
    let query = raw.encrypt_final(h, None);
    assert_eq!(
        query.rv,
        raw::CKR_OK,
        "{mech:?}: final length query {}",
        query.rv_name()
    );
    let fin = raw.encrypt_final(h, Some(query.len as usize));
    assert_eq!(fin.rv, raw::CKR_OK, "{mech:?}: final {}", fin.rv_name());
    out.extend(fin.data);
    assert_eq!(
        raw.encrypt_final(h, Some(64)).rv,
        raw::CKR_OPERATION_NOT_INITIALIZED
    );
    // Decryption in parts gives the data back.
    session.decrypt_init(mech, key).unwrap();
    let mut back = Vec::new();
    for part in out.chunks(10) {
        back.extend(session.decrypt_update(part).unwrap());
    }
    back.extend(session.decrypt_final().unwrap());
    assert_eq!(back, data, "{mech:?}: decrypted in parts");
    out
}

#[test]
fn ciphers_in_parts_with_length_queries() {
    let t = token();
    let session = t.user_session();
    let iv = [9u8; 16];
    let block_data = &DATA[..64];
    for len in [16usize, 24, 32] {
        let value: Vec<u8> = (0..len as u8).collect();
        let key = secret(&session, KeyType::AES, &value);
        let (ecb, cbc) = match len {
            16 => (Cipher::aes_128_ecb(), Cipher::aes_128_cbc()),
            24 => (Cipher::aes_192_ecb(), Cipher::aes_192_cbc()),
            _ => (Cipher::aes_256_ecb(), Cipher::aes_256_cbc()),
        };
        let c = encrypt_in_parts(&t.raw, &session, &Mechanism::AesEcb, key, block_data);
        assert_eq!(c, verify::aes_encrypt(ecb, &value, None, false, block_data));
        let c = encrypt_in_parts(&t.raw, &session, &Mechanism::AesCbc(iv), key, block_data);
        assert_eq!(
            c,
            verify::aes_encrypt(cbc, &value, Some(&iv), false, block_data)
        );
        let c = encrypt_in_parts(&t.raw, &session, &Mechanism::AesCbcPad(iv), key, DATA);
        assert_eq!(c, verify::aes_encrypt(cbc, &value, Some(&iv), true, DATA));
        let mut gcm_iv = [5u8; 12];
        let gcm = Mechanism::AesGcm(GcmParams::new(&mut gcm_iv, b"aad", 128.into()).unwrap());
        let c = encrypt_in_parts(&t.raw, &session, &gcm, key, DATA);
        assert_eq!(
            c,
            verify::aes_gcm_encrypt(&value, &[5u8; 12], b"aad", 16, DATA)
        );
    }
}
