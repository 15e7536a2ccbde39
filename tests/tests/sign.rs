//! Key pair generation and every signature mechanism of the foundation issue,
//! each signature verified both by the token and, independently, by OpenSSL
//! from the public key the token returns.

use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use hsmlink_tests::keys::{self, pattern};
use hsmlink_tests::raw::{self, rv_name, CKR_OK};
use hsmlink_tests::verify::{self, attribute_bytes};
use hsmlink_tests::{assert_rv, rv_of, token, unique_label};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;

const MESSAGE: &[u8] = b"hsmlink: the quick brown fox signs over the lazy HSM";

fn ulong(session: &Session, object: cryptoki::object::ObjectHandle, type_: AttributeType) -> u64 {
    match session
        .get_attributes(object, &[type_])
        .expect("ulong attribute")
        .as_slice()
    {
        [Attribute::ModulusBits(v)] | [Attribute::ValueLen(v)] => (*v).into(),
        other => panic!("{type_:?}: {other:?}"),
    }
}

fn hash_mechanisms_rsa() -> Vec<(Mechanism<'static>, MessageDigest)> {
    vec![
        (Mechanism::Sha1RsaPkcs, MessageDigest::sha1()),
        (Mechanism::Sha224RsaPkcs, MessageDigest::sha224()),
        (Mechanism::Sha256RsaPkcs, MessageDigest::sha256()),
        (Mechanism::Sha384RsaPkcs, MessageDigest::sha384()),
        (Mechanism::Sha512RsaPkcs, MessageDigest::sha512()),
    ]
}

fn pss(hash: MechanismType, mgf: PkcsMgfType, salt: u64) -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: hash,
        mgf,
        s_len: salt.into(),
    }
}

#[test]
fn rsa_key_pairs_of_every_size_sign_and_openssl_verifies() {
    let t = token();
    let session = t.user_session();
    for bits in [1024u64, 2048, 3072, 4096] {
        let pair = keys::rsa(&session, bits, &unique_label("rsa-size"));
        assert_eq!(
            ulong(&session, pair.public, AttributeType::ModulusBits),
            bits
        );
        let modulus = attribute_bytes(&session, pair.public, AttributeType::Modulus);
        assert_eq!(
            modulus.len() as u64,
            bits / 8,
            "CKA_MODULUS length for RSA-{bits}"
        );
        assert_eq!(
            attribute_bytes(&session, pair.public, AttributeType::PublicExponent),
            vec![1, 0, 1],
            "CKA_PUBLIC_EXPONENT as requested"
        );
        let public = verify::rsa_public_key(&session, pair.public);
        assert_eq!(public.bits() as u64, bits);
        let sig = session
            .sign(&Mechanism::Sha256RsaPkcs, pair.private, MESSAGE)
            .unwrap_or_else(|e| panic!("C_Sign(SHA256_RSA_PKCS, RSA-{bits}): {e}"));
        assert_eq!(sig.len() as u64, bits / 8);
        assert!(
            verify::rsa_pkcs1_verifies(&public, MessageDigest::sha256(), MESSAGE, &sig),
            "OpenSSL rejects the RSA-{bits} signature"
        );
        session
            .verify(&Mechanism::Sha256RsaPkcs, pair.public, MESSAGE, &sig)
            .unwrap_or_else(|e| panic!("C_Verify(RSA-{bits}): {e}"));
    }
}

#[test]
fn rsa_key_size_out_of_range_is_refused() {
    let t = token();
    let session = t.user_session();
    for bits in [512u64, 8192] {
        let result = session.generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::Token(false), Attribute::ModulusBits(bits.into())],
            &[Attribute::Token(false), Attribute::Sign(true)],
        );
        let rv = rv_of(result);
        assert!(
            matches!(
                rv,
                RvError::KeySizeRange
                    | RvError::AttributeValueInvalid
                    | RvError::TemplateInconsistent
            ),
            "RSA-{bits}: got {rv:?}"
        );
    }
}

#[test]
fn rsa_key_pair_attributes() {
    let t = token();
    let session = t.user_session();
    let label = unique_label("rsa-attrs");
    let pair = keys::rsa(&session, 2048, &label);
    let public = session
        .get_attributes(
            pair.public,
            &[
                AttributeType::Class,
                AttributeType::KeyType,
                AttributeType::Token,
                AttributeType::Local,
                AttributeType::Verify,
                AttributeType::Label,
                AttributeType::Id,
            ],
        )
        .expect("public key attributes");
    for expected in [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Local(true),
        Attribute::Verify(true),
        Attribute::Label(label.clone().into_bytes()),
        Attribute::Id(label.clone().into_bytes()),
    ] {
        assert!(
            public.contains(&expected),
            "public key: {expected:?} not in {public:?}"
        );
    }
    let private = session
        .get_attributes(
            pair.private,
            &[
                AttributeType::Class,
                AttributeType::KeyType,
                AttributeType::Sign,
                AttributeType::Local,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )
        .expect("private key attributes");
    for expected in [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Sign(true),
        Attribute::Local(true),
    ] {
        assert!(
            private.contains(&expected),
            "private key: {expected:?} not in {private:?}"
        );
    }
    // The private key carries the public parts too (PKCS#11 RSA private key
    // objects have CKA_MODULUS and CKA_PUBLIC_EXPONENT).
    assert_eq!(
        attribute_bytes(&session, pair.private, AttributeType::Modulus),
        attribute_bytes(&session, pair.public, AttributeType::Modulus)
    );
    // The private exponent of a generated key never leaves the HSM.
    let mut q = [raw::AttrQuery::value(raw::CKA_PRIVATE_EXPONENT, 1024)];
    let rv = t
        .raw
        .get_attribute_value(session.handle(), pair.private, &mut q);
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_SENSITIVE,
        "CKA_PRIVATE_EXPONENT: {}",
        rv_name(rv)
    );
    assert!(q[0].unavailable());
}

#[test]
fn rsa_pkcs1_hash_mechanisms_verify_with_openssl() {
    let t = token();
    let session = t.user_session();
    let pair = keys::rsa(&session, 2048, &unique_label("rsa-pkcs1"));
    let public = verify::rsa_public_key(&session, pair.public);
    for (mechanism, md) in hash_mechanisms_rsa() {
        let sig = session
            .sign(&mechanism, pair.private, MESSAGE)
            .unwrap_or_else(|e| panic!("C_Sign({mechanism:?}): {e}"));
        assert!(
            verify::rsa_pkcs1_verifies(&public, md, MESSAGE, &sig),
            "OpenSSL rejects {mechanism:?}"
        );
        session
            .verify(&mechanism, pair.public, MESSAGE, &sig)
            .unwrap_or_else(|e| panic!("C_Verify({mechanism:?}): {e}"));
        assert_rv(
            session.verify(&mechanism, pair.public, b"another message", &sig),
            RvError::SignatureInvalid,
        );

        // Multi-part gives the same (deterministic) signature.
        session
            .sign_init(&mechanism, pair.private)
            .expect("C_SignInit");
        for chunk in MESSAGE.chunks(7) {
            session.sign_update(chunk).expect("C_SignUpdate");
        }
        let multi = session.sign_final().expect("C_SignFinal");
        assert_eq!(
            multi, sig,
            "{mechanism:?}: multi-part differs from single-part"
        );
        session
            .verify_init(&mechanism, pair.public)
            .expect("C_VerifyInit");
        for chunk in MESSAGE.chunks(11) {
            session.verify_update(chunk).expect("C_VerifyUpdate");
        }
        session.verify_final(&sig).expect("C_VerifyFinal");
    }
}

#[test]
fn rsa_pkcs_raw_signs_a_digest_info() {
    let t = token();
    let session = t.user_session();
    let pair = keys::rsa(&session, 2048, &unique_label("rsa-raw"));
    let public = verify::rsa_public_key(&session, pair.public);
    for (hashed, md) in hash_mechanisms_rsa() {
        let digest_info = verify::digest_info(md, &verify::hash(md, MESSAGE));
        let sig = session
            .sign(&Mechanism::RsaPkcs, pair.private, &digest_info)
            .expect("C_Sign(CKM_RSA_PKCS, DigestInfo)");
        assert_eq!(
            verify::rsa_pkcs1_recover(&public, &sig).as_deref(),
            Some(&digest_info[..]),
            "OpenSSL recovers the DigestInfo"
        );
        let same = session
            .sign(&hashed, pair.private, MESSAGE)
            .expect("hashed");
        assert_eq!(sig, same, "CKM_RSA_PKCS over DigestInfo equals {hashed:?}");
        session
            .verify(&Mechanism::RsaPkcs, pair.public, &digest_info, &sig)
            .expect("C_Verify(CKM_RSA_PKCS)");
    }
    // CKM_RSA_PKCS takes any input up to k-11 bytes, and no more.
    let short = b"not a DigestInfo at all";
    let sig = session
        .sign(&Mechanism::RsaPkcs, pair.private, short)
        .expect("short input");
    assert_eq!(
        verify::rsa_pkcs1_recover(&public, &sig).as_deref(),
        Some(&short[..])
    );
    let too_long = vec![0x42u8; 256 - 10];
    assert_rv(
        session.sign(&Mechanism::RsaPkcs, pair.private, &too_long),
        RvError::DataLenRange,
    );
    // CKM_RSA_PKCS is single-part in v2.40. A module may refuse
    // C_SignUpdate, or collect the parts; if it collects them, C_SignFinal
    // must give the same signature as C_Sign.
    session
        .sign_init(&Mechanism::RsaPkcs, pair.private)
        .expect("C_SignInit");
    match session.sign_update(&short[..10]) {
        Ok(()) => {
            session
                .sign_update(&short[10..])
                .expect("second C_SignUpdate");
            match session.sign_final() {
                Ok(multi) => assert_eq!(multi, sig, "multi-part CKM_RSA_PKCS differs from C_Sign"),
                Err(e) => {
                    let rv = rv_of::<()>(Err(e));
                    assert!(
                        matches!(
                            rv,
                            RvError::FunctionNotSupported | RvError::MechanismInvalid
                        ),
                        "C_SignFinal with CKM_RSA_PKCS: got {rv:?}"
                    );
                }
            }
        }
        Err(e) => {
            let rv = rv_of::<()>(Err(e));
            assert!(
                matches!(
                    rv,
                    RvError::FunctionNotSupported
                        | RvError::MechanismInvalid
                        | RvError::KeyFunctionNotPermitted
                ),
                "C_SignUpdate with CKM_RSA_PKCS: got {rv:?}"
            );
        }
    }
}

#[test]
fn rsa_x509_raw_if_offered() {
    let t = token();
    let mechanisms = t.pkcs11.get_mechanism_list(t.slot).expect("mechanism list");
    if !mechanisms.contains(&MechanismType::RSA_X_509) {
        // Not in this required list; nothing to check.
        return;
    }
    let session = t.user_session();
    let pair = keys::rsa(&session, 2048, &unique_label("rsa-x509"));
    let public = verify::rsa_public_key(&session, pair.public);
    let mut block = pattern(256);
    block[0] = 0; // below the modulus
    let sig = session
        .sign(&Mechanism::RsaX509, pair.private, &block)
        .expect("C_Sign(CKM_RSA_X_509)");
    assert_eq!(verify::rsa_raw_public(&public, &sig), block);
}

#[test]
fn rsa_pss_over_a_digest_verifies_with_openssl() {
    let t = token();
    let session = t.user_session();
    let pair = keys::rsa(&session, 2048, &unique_label("rsa-pss"));
    let public = verify::rsa_public_key(&session, pair.public);
    let cases = [
        (
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            MessageDigest::sha1(),
        ),
        (
            MechanismType::SHA224,
            PkcsMgfType::MGF1_SHA224,
            MessageDigest::sha224(),
        ),
        (
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            MessageDigest::sha256(),
        ),
        (
            MechanismType::SHA384,
            PkcsMgfType::MGF1_SHA384,
            MessageDigest::sha384(),
        ),
        (
            MechanismType::SHA512,
            PkcsMgfType::MGF1_SHA512,
            MessageDigest::sha512(),
        ),
    ];
    for (hash, mgf, md) in cases {
        let digest = verify::hash(md, MESSAGE);
        for salt in [0u64, md.size() as u64] {
            let mechanism = Mechanism::RsaPkcsPss(pss(hash, mgf, salt));
            let sig = session
                .sign(&mechanism, pair.private, &digest)
                .unwrap_or_else(|e| {
                    panic!(
                        "C_Sign(CKM_RSA_PKCS_PSS, {md:?} salt {salt}): {e}",
                        md = md.type_()
                    )
                });
            assert!(
                verify::rsa_pss_digest_verifies(&public, md, salt as i32, &digest, &sig),
                "OpenSSL rejects CKM_RSA_PKCS_PSS with {:?}, salt {salt}",
                md.type_()
            );
            session
                .verify(&mechanism, pair.public, &digest, &sig)
                .expect("C_Verify(CKM_RSA_PKCS_PSS)");
        }
    }
    // The input must be a digest of the announced hash's length.
    let mechanism = Mechanism::RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32));
    assert_rv(
        session.sign(&mechanism, pair.private, &[0u8; 20]),
        RvError::DataLenRange,
    );
}

#[test]
fn rsa_pss_hash_mechanisms_verify_with_openssl() {
    let t = token();
    let session = t.user_session();
    let pair = keys::rsa(&session, 2048, &unique_label("rsa-sha-pss"));
    let public = verify::rsa_public_key(&session, pair.public);
    let cases = [
        (
            Mechanism::Sha1RsaPkcsPss(pss(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, 20)),
            MessageDigest::sha1(),
        ),
        (
            Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32)),
            MessageDigest::sha256(),
        ),
        (
            Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48)),
            MessageDigest::sha384(),
        ),
        (
            Mechanism::Sha512RsaPkcsPss(pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64)),
            MessageDigest::sha512(),
        ),
    ];
    for (mechanism, md) in cases {
        let salt = md.size() as i32;
        let sig = session
            .sign(&mechanism, pair.private, MESSAGE)
            .unwrap_or_else(|e| panic!("C_Sign({mechanism:?}): {e}"));
        assert!(
            verify::rsa_pss_verifies(&public, md, salt, MESSAGE, &sig),
            "OpenSSL rejects {mechanism:?}"
        );
        session
            .verify(&mechanism, pair.public, MESSAGE, &sig)
            .expect("C_Verify");
        // Multi-part: randomized, so check it verifies.
        session
            .sign_init(&mechanism, pair.private)
            .expect("C_SignInit");
        for chunk in MESSAGE.chunks(5) {
            session.sign_update(chunk).expect("C_SignUpdate");
        }
        let multi = session.sign_final().expect("C_SignFinal");
        assert!(
            verify::rsa_pss_verifies(&public, md, salt, MESSAGE, &multi),
            "OpenSSL rejects multi-part {mechanism:?}"
        );
        assert_rv(
            session.verify(&mechanism, pair.public, b"tampered", &sig),
            RvError::SignatureInvalid,
        );
    }

    // CKM_SHA224_RSA_PKCS_PSS has no cryptoki constructor: the raw ABI.
    let params = raw::CK_RSA_PKCS_PSS_PARAMS {
        hashAlg: raw::CKM_SHA224,
        mgf: raw::CKG_MGF1_SHA224,
        sLen: 28,
    };
    let h = session.handle();
    let rv = t
        .raw
        .sign_init(h, raw::CKM_SHA224_RSA_PKCS_PSS, Some(&params), pair.private);
    assert_eq!(
        rv,
        CKR_OK,
        "C_SignInit(CKM_SHA224_RSA_PKCS_PSS): {}",
        rv_name(rv)
    );
    let out = t.raw.sign(h, MESSAGE, Some(512));
    assert_eq!(
        out.rv,
        CKR_OK,
        "C_Sign(CKM_SHA224_RSA_PKCS_PSS): {}",
        out.rv_name()
    );
    assert!(
        verify::rsa_pss_verifies(&public, MessageDigest::sha224(), 28, MESSAGE, &out.data),
        "OpenSSL rejects CKM_SHA224_RSA_PKCS_PSS"
    );
    let rv = t
        .raw
        .verify_init(h, raw::CKM_SHA224_RSA_PKCS_PSS, Some(&params), pair.public);
    assert_eq!(rv, CKR_OK, "C_VerifyInit: {}", rv_name(rv));
    assert_eq!(
        t.raw.verify(h, MESSAGE, &out.data),
        CKR_OK,
        "C_Verify(CKM_SHA224_RSA_PKCS_PSS)"
    );
}

#[test]
fn rsa_pss_with_mismatched_parameters_is_refused() {
    let t = token();
    let session = t.user_session();
    let pair = keys::rsa(&session, 2048, &unique_label("rsa-pss-bad"));
    // SHA256_RSA_PKCS_PSS whose params announce SHA-1.
    let mechanism =
        Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, 20));
    assert_rv(
        session.sign_init(&mechanism, pair.private),
        RvError::MechanismParamInvalid,
    );
}

fn curves() -> [(Nid, usize); 3] {
    [
        (Nid::X9_62_PRIME256V1, 32),
        (Nid::SECP384R1, 48),
        (Nid::SECP521R1, 66),
    ]
}

#[test]
fn ec_key_pairs_on_every_curve_have_standard_attributes() {
    let t = token();
    let session = t.user_session();
    for (curve, field) in curves() {
        let pair = keys::ec(&session, curve, &unique_label("ec-attrs"));
        let params = attribute_bytes(&session, pair.public, AttributeType::EcParams);
        assert_eq!(
            params,
            verify::params_of_curve(curve),
            "CKA_EC_PARAMS of the public key"
        );
        assert_eq!(
            attribute_bytes(&session, pair.private, AttributeType::EcParams),
            params,
            "CKA_EC_PARAMS of the private key"
        );
        let point = attribute_bytes(&session, pair.public, AttributeType::EcPoint);
        let raw_point = verify::unwrap_ec_point(&point);
        assert_eq!(raw_point.len(), 1 + 2 * field, "uncompressed point size");
        let kt = session
            .get_attributes(pair.private, &[AttributeType::KeyType])
            .expect("key type");
        assert_eq!(kt, vec![Attribute::KeyType(KeyType::EC)]);
        // The private value never leaves the HSM.
        let mut q = [raw::AttrQuery::value(raw::CKA_VALUE, 128)];
        let rv = t
            .raw
            .get_attribute_value(session.handle(), pair.private, &mut q);
        assert_eq!(
            rv,
            raw::CKR_ATTRIBUTE_SENSITIVE,
            "EC CKA_VALUE: {}",
            rv_name(rv)
        );
        // And OpenSSL accepts the point as a valid public key.
        verify::ec_public_key(&session, pair.public);
    }
}

#[test]
fn ecdsa_on_every_curve_and_hash_verifies_with_openssl() {
    let t = token();
    let session = t.user_session();
    for (curve, field) in curves() {
        let pair = keys::ec(&session, curve, &unique_label("ecdsa"));
        let public = verify::ec_public_key(&session, pair.public);
        let hashed = [
            (Mechanism::EcdsaSha1, MessageDigest::sha1()),
            (Mechanism::EcdsaSha224, MessageDigest::sha224()),
            (Mechanism::EcdsaSha256, MessageDigest::sha256()),
            (Mechanism::EcdsaSha384, MessageDigest::sha384()),
            (Mechanism::EcdsaSha512, MessageDigest::sha512()),
        ];
        for (mechanism, md) in hashed {
            let sig = session
                .sign(&mechanism, pair.private, MESSAGE)
                .unwrap_or_else(|e| panic!("C_Sign({mechanism:?}, {curve:?}): {e}"));
            assert_eq!(
                sig.len(),
                2 * field,
                "{mechanism:?} on {curve:?}: r||s length"
            );
            assert!(
                verify::ecdsa_verifies(&public, Some(md), MESSAGE, &sig),
                "OpenSSL rejects {mechanism:?} on {curve:?}"
            );
            session
                .verify(&mechanism, pair.public, MESSAGE, &sig)
                .unwrap_or_else(|e| panic!("C_Verify({mechanism:?}, {curve:?}): {e}"));
            assert_rv(
                session.verify(&mechanism, pair.public, b"tampered", &sig),
                RvError::SignatureInvalid,
            );

            session
                .sign_init(&mechanism, pair.private)
                .expect("C_SignInit");
            for chunk in MESSAGE.chunks(9) {
                session.sign_update(chunk).expect("C_SignUpdate");
            }
            let multi = session.sign_final().expect("C_SignFinal");
            assert!(
                verify::ecdsa_verifies(&public, Some(md), MESSAGE, &multi),
                "OpenSSL rejects multi-part {mechanism:?} on {curve:?}"
            );
            session
                .verify_init(&mechanism, pair.public)
                .expect("C_VerifyInit");
            for chunk in MESSAGE.chunks(13) {
                session.verify_update(chunk).expect("C_VerifyUpdate");
            }
            session.verify_final(&multi).expect("C_VerifyFinal");
        }

        // CKM_ECDSA signs a digest the application computed.
        for md in [
            MessageDigest::sha256(),
            MessageDigest::sha384(),
            MessageDigest::sha512(),
        ] {
            let digest = verify::hash(md, MESSAGE);
            let sig = session
                .sign(&Mechanism::Ecdsa, pair.private, &digest)
                .unwrap_or_else(|e| panic!("C_Sign(CKM_ECDSA, {curve:?}): {e}"));
            assert_eq!(sig.len(), 2 * field);
            assert!(
                verify::ecdsa_verifies(&public, None, &digest, &sig),
                "OpenSSL rejects CKM_ECDSA on {curve:?} over a {}-byte digest",
                digest.len()
            );
            session
                .verify(&Mechanism::Ecdsa, pair.public, &digest, &sig)
                .expect("C_Verify(CKM_ECDSA)");
        }
    }
}

#[test]
fn signature_of_wrong_length_is_rejected() {
    let t = token();
    let session = t.user_session();
    let ec = keys::ec(&session, Nid::X9_62_PRIME256V1, &unique_label("siglen"));
    let sig = session
        .sign(&Mechanism::EcdsaSha256, ec.private, MESSAGE)
        .expect("sign");
    for bad in [&sig[..63], &[sig.clone(), vec![0]].concat()[..], &[][..]] {
        let rv = rv_of(session.verify(&Mechanism::EcdsaSha256, ec.public, MESSAGE, bad));
        assert!(
            matches!(rv, RvError::SignatureLenRange | RvError::SignatureInvalid),
            "a {}-byte P-256 signature: got {rv:?}",
            bad.len()
        );
    }
    let rsa = keys::rsa(&session, 2048, &unique_label("siglen"));
    let rv = rv_of(session.verify(&Mechanism::Sha256RsaPkcs, rsa.public, MESSAGE, &[1u8; 255]));
    assert!(
        matches!(rv, RvError::SignatureLenRange | RvError::SignatureInvalid),
        "a 255-byte RSA-2048 signature: got {rv:?}"
    );
}

#[test]
fn large_data_is_signed_in_parts() {
    // 3 MiB through C_SignUpdate: the module streams (or hashes locally).
    let t = token();
    let session = t.user_session();
    let pair = keys::ec(&session, Nid::SECP384R1, &unique_label("large"));
    let public = verify::ec_public_key(&session, pair.public);
    let data = pattern(3 * 1024 * 1024);
    session
        .sign_init(&Mechanism::EcdsaSha384, pair.private)
        .expect("C_SignInit");
    for chunk in data.chunks(64 * 1024 + 3) {
        session.sign_update(chunk).expect("C_SignUpdate");
    }
    let sig = session.sign_final().expect("C_SignFinal");
    assert!(verify::ecdsa_verifies(
        &public,
        Some(MessageDigest::sha384()),
        &data,
        &sig
    ));
    // And single-part on the same data.
    let sig = session
        .sign(&Mechanism::EcdsaSha384, pair.private, &data)
        .expect("C_Sign 3 MiB");
    assert!(verify::ecdsa_verifies(
        &public,
        Some(MessageDigest::sha384()),
        &data,
        &sig
    ));
}

#[test]
fn key_pair_templates_are_checked() {
    let t = token();
    let session = t.user_session();
    // EC without CKA_EC_PARAMS.
    assert_rv(
        session.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(false)],
            &[Attribute::Token(false), Attribute::Sign(true)],
        ),
        RvError::TemplateIncomplete,
    );
    // secp256k1 is not required: refused with the standard code, or, if
    // offered, a working key.
    let secp256k1 = vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
    match session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::EcParams(secp256k1),
            Attribute::Verify(true),
        ],
        &[Attribute::Token(false), Attribute::Sign(true)],
    ) {
        Ok((public, private)) => {
            let point =
                verify::unwrap_ec_point(&attribute_bytes(&session, public, AttributeType::EcPoint));
            let group = openssl::ec::EcGroup::from_curve_name(Nid::SECP256K1).expect("group");
            let mut ctx = openssl::bn::BigNumContext::new().expect("ctx");
            let point = openssl::ec::EcPoint::from_bytes(&group, &point, &mut ctx)
                .expect("a secp256k1 point");
            let key = openssl::pkey::PKey::from_ec_key(
                openssl::ec::EcKey::from_public_key(&group, &point).expect("key"),
            )
            .expect("pkey");
            let sig = session
                .sign(&Mechanism::EcdsaSha256, private, MESSAGE)
                .expect("sign on secp256k1");
            assert!(
                verify::ecdsa_verifies(&key, Some(MessageDigest::sha256()), MESSAGE, &sig),
                "OpenSSL rejects a secp256k1 signature"
            );
        }
        Err(e) => {
            let rv = rv_of::<()>(Err(e));
            assert!(
                matches!(
                    rv,
                    RvError::DomainParamsInvalid
                        | RvError::CurveNotSupported
                        | RvError::AttributeValueInvalid
                ),
                "secp256k1: got {rv:?}"
            );
        }
    }
    // A well-formed OID that names no curve (1.2.3.4).
    let rv = rv_of(session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[Attribute::EcParams(vec![0x06, 0x03, 0x2a, 0x03, 0x04])],
        &[Attribute::Sign(true)],
    ));
    assert!(
        matches!(
            rv,
            RvError::DomainParamsInvalid
                | RvError::CurveNotSupported
                | RvError::AttributeValueInvalid
        ),
        "OID 1.2.3.4 as a curve: got {rv:?}"
    );
    // Garbage CKA_EC_PARAMS.
    let rv = rv_of(session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[Attribute::EcParams(vec![0xff, 0x00, 0x13])],
        &[Attribute::Sign(true)],
    ));
    assert!(
        matches!(
            rv,
            RvError::DomainParamsInvalid | RvError::AttributeValueInvalid
        ),
        "garbage EC params: got {rv:?}"
    );
    // RSA without CKA_MODULUS_BITS.
    assert_rv(
        session.generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::Token(false)],
            &[Attribute::Token(false), Attribute::Sign(true)],
        ),
        RvError::TemplateIncomplete,
    );
    // A class that contradicts the template's role.
    let rv = rv_of(session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::EcParams(verify::params_of_curve(Nid::X9_62_PRIME256V1)),
        ],
        &[Attribute::Sign(true)],
    ));
    assert!(
        matches!(
            rv,
            RvError::TemplateInconsistent | RvError::AttributeValueInvalid
        ),
        "CKA_CLASS=private key in the public template: got {rv:?}"
    );
    // A key-generation mechanism that does not make pairs.
    assert_rv(
        session.generate_key_pair(&Mechanism::AesKeyGen, &[], &[]),
        RvError::MechanismInvalid,
    );
}

#[test]
fn key_usage_and_type_are_enforced() {
    let t = token();
    let session = t.user_session();
    let ec = keys::ec(&session, Nid::X9_62_PRIME256V1, &unique_label("usage"));
    let rsa = keys::rsa(&session, 2048, &unique_label("usage"));
    // Sign with a public key, verify with a private key.
    let rv = rv_of(session.sign_init(&Mechanism::EcdsaSha256, ec.public));
    assert!(
        matches!(
            rv,
            RvError::KeyTypeInconsistent | RvError::KeyFunctionNotPermitted
        ),
        "C_SignInit with a public key: got {rv:?}"
    );
    // ECDSA with an RSA key and RSA with an EC key.
    assert_rv(
        session.sign_init(&Mechanism::EcdsaSha256, rsa.private),
        RvError::KeyTypeInconsistent,
    );
    assert_rv(
        session.sign_init(&Mechanism::Sha256RsaPkcs, ec.private),
        RvError::KeyTypeInconsistent,
    );
    // A private key generated with CKA_SIGN false.
    let label = unique_label("nosign");
    let (_, no_sign) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(verify::params_of_curve(Nid::X9_62_PRIME256V1)),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sign(false),
                Attribute::Label(label.into_bytes()),
            ],
        )
        .expect("key pair with CKA_SIGN=false");
    assert_rv(
        session.sign_init(&Mechanism::EcdsaSha256, no_sign),
        RvError::KeyFunctionNotPermitted,
    );
    // A mechanism the token does not know.
    let eddsa = Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
        cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
    ));
    let rv = rv_of(session.sign_init(&eddsa, rsa.private));
    assert!(
        matches!(rv, RvError::MechanismInvalid | RvError::KeyTypeInconsistent),
        "CKM_EDDSA: got {rv:?}"
    );
}
