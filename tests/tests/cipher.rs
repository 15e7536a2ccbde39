//! AES (ECB, CBC, CBC_PAD, CTR, GCM), HMAC, digests and random numbers, each
//! cross-checked with OpenSSL; multi-part against single-part.

use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsmlink_tests::keys::{self, pattern};
use hsmlink_tests::verify::{self, attribute_bytes};
use hsmlink_tests::{assert_rv, rv_of, token};
use openssl::hash::MessageDigest;
use openssl::symm::Cipher;

const IV: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];

fn aes_key_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (0x40 + i * 3) as u8).collect()
}

fn cipher(mode: &str, key_len: usize) -> Cipher {
    match (mode, key_len) {
        ("ecb", 16) => Cipher::aes_128_ecb(),
        ("ecb", 24) => Cipher::aes_192_ecb(),
        ("ecb", 32) => Cipher::aes_256_ecb(),
        ("cbc", 16) => Cipher::aes_128_cbc(),
        ("cbc", 24) => Cipher::aes_192_cbc(),
        ("cbc", 32) => Cipher::aes_256_cbc(),
        ("ctr", 16) => Cipher::aes_128_ctr(),
        ("ctr", 24) => Cipher::aes_192_ctr(),
        ("ctr", 32) => Cipher::aes_256_ctr(),
        _ => panic!("no cipher {mode}/{key_len}"),
    }
}

fn ctr_params() -> cryptoki_sys::CK_AES_CTR_PARAMS {
    cryptoki_sys::CK_AES_CTR_PARAMS {
        ulCounterBits: 128,
        cb: IV,
    }
}

/// Encrypts single-part and multi-part (odd chunks) and checks both agree.
fn encrypt_both_ways(
    session: &Session,
    mechanism: &Mechanism,
    key: ObjectHandle,
    data: &[u8],
) -> Vec<u8> {
    let single = session
        .encrypt(mechanism, key, data)
        .unwrap_or_else(|e| panic!("C_Encrypt({mechanism:?}): {e}"));
    session.encrypt_init(mechanism, key).expect("C_EncryptInit");
    let mut multi = Vec::new();
    for chunk in data.chunks(13) {
        multi.extend(session.encrypt_update(chunk).expect("C_EncryptUpdate"));
    }
    multi.extend(session.encrypt_final().expect("C_EncryptFinal"));
    assert_eq!(
        multi, single,
        "{mechanism:?}: multi-part ciphertext differs from single-part"
    );
    single
}

/// Decrypts single-part and multi-part and checks both agree.
fn decrypt_both_ways(
    session: &Session,
    mechanism: &Mechanism,
    key: ObjectHandle,
    data: &[u8],
) -> Vec<u8> {
    let single = session
        .decrypt(mechanism, key, data)
        .unwrap_or_else(|e| panic!("C_Decrypt({mechanism:?}): {e}"));
    session.decrypt_init(mechanism, key).expect("C_DecryptInit");
    let mut multi = Vec::new();
    for chunk in data.chunks(17) {
        multi.extend(session.decrypt_update(chunk).expect("C_DecryptUpdate"));
    }
    multi.extend(session.decrypt_final().expect("C_DecryptFinal"));
    assert_eq!(
        multi, single,
        "{mechanism:?}: multi-part plaintext differs from single-part"
    );
    single
}

#[test]
fn aes_key_generation_128_192_256() {
    let t = token();
    let session = t.user_session();
    for len in [16u64, 24, 32] {
        let key = keys::aes(&session, len, true);
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Class,
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                ],
            )
            .expect("attributes");
        assert!(
            attrs.contains(&Attribute::Class(ObjectClass::SECRET_KEY)),
            "{attrs:?}"
        );
        assert!(
            attrs.contains(&Attribute::KeyType(KeyType::AES)),
            "{attrs:?}"
        );
        assert!(
            attrs.contains(&Attribute::ValueLen(len.into())),
            "{attrs:?}"
        );
        assert_eq!(
            attribute_bytes(&session, key, AttributeType::Value).len() as u64,
            len
        );
        // A generated key encrypts like OpenSSL with the same key bytes.
        let value = attribute_bytes(&session, key, AttributeType::Value);
        let data = pattern(32);
        let ct = session
            .encrypt(&Mechanism::AesEcb, key, &data)
            .expect("encrypt");
        assert_eq!(
            ct,
            verify::aes_encrypt(cipher("ecb", len as usize), &value, None, false, &data)
        );
    }
    for bad in [0u64, 8, 17, 64] {
        let rv = rv_of(session.generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(bad.into())],
        ));
        assert!(
            matches!(rv, RvError::KeySizeRange | RvError::AttributeValueInvalid),
            "AES CKA_VALUE_LEN={bad}: got {rv:?}"
        );
    }
    assert_rv(
        session.generate_key(&Mechanism::AesKeyGen, &[Attribute::Token(false)]),
        RvError::TemplateIncomplete,
    );
}

#[test]
fn aes_ecb_cbc_match_openssl() {
    let t = token();
    let session = t.user_session();
    let data = pattern(80);
    for len in [16usize, 24, 32] {
        let bytes = aes_key_bytes(len);
        let key = keys::import_aes(&session, &bytes);
        for (mechanism, mode, iv) in [
            (Mechanism::AesEcb, "ecb", None),
            (Mechanism::AesCbc(IV), "cbc", Some(&IV[..])),
        ] {
            let ct = encrypt_both_ways(&session, &mechanism, key, &data);
            let expected = verify::aes_encrypt(cipher(mode, len), &bytes, iv, false, &data);
            assert_eq!(
                ct,
                expected,
                "{mechanism:?} AES-{} differs from OpenSSL",
                len * 8
            );
            assert_eq!(decrypt_both_ways(&session, &mechanism, key, &ct), data);
            // Not a whole number of blocks.
            assert_rv(
                session.encrypt(&mechanism, key, &data[..79]),
                RvError::DataLenRange,
            );
            assert_rv(
                session.decrypt(&mechanism, key, &ct[..79]),
                RvError::EncryptedDataLenRange,
            );
        }
    }
}

#[test]
fn aes_cbc_pad_matches_openssl() {
    let t = token();
    let session = t.user_session();
    for len in [16usize, 24, 32] {
        let bytes = aes_key_bytes(len);
        let key = keys::import_aes(&session, &bytes);
        for data_len in [0usize, 1, 15, 16, 17, 100] {
            let data = pattern(data_len);
            let mechanism = Mechanism::AesCbcPad(IV);
            let ct = encrypt_both_ways(&session, &mechanism, key, &data);
            assert_eq!(ct.len(), (data_len / 16 + 1) * 16);
            let expected = verify::aes_encrypt(cipher("cbc", len), &bytes, Some(&IV), true, &data);
            assert_eq!(
                ct,
                expected,
                "CBC_PAD AES-{} over {data_len} bytes",
                len * 8
            );
            assert_eq!(decrypt_both_ways(&session, &mechanism, key, &ct), data);
        }
    }
    // A ciphertext whose padding is wrong.
    let key = keys::import_aes(&session, &aes_key_bytes(16));
    let bad = verify::aes_encrypt(
        Cipher::aes_128_cbc(),
        &aes_key_bytes(16),
        Some(&IV),
        false,
        &[0x11; 32],
    );
    assert_rv(
        session.decrypt(&Mechanism::AesCbcPad(IV), key, &bad),
        RvError::EncryptedDataInvalid,
    );
}

#[test]
fn aes_ctr_matches_openssl() {
    let t = token();
    let session = t.user_session();
    let params = ctr_params();
    let mechanism = Mechanism::VendorDefined(VendorDefinedMechanism::new(
        MechanismType::AES_CTR,
        Some(&params),
    ));
    for len in [16usize, 24, 32] {
        let bytes = aes_key_bytes(len);
        let key = keys::import_aes(&session, &bytes);
        for data_len in [1usize, 16, 45, 1000] {
            let data = pattern(data_len);
            let ct = encrypt_both_ways(&session, &mechanism, key, &data);
            let expected = verify::aes_encrypt(cipher("ctr", len), &bytes, Some(&IV), false, &data);
            assert_eq!(ct, expected, "CTR AES-{} over {data_len} bytes", len * 8);
            assert_eq!(decrypt_both_ways(&session, &mechanism, key, &ct), data);
        }
    }
}

#[test]
fn aes_gcm_matches_openssl() {
    let t = token();
    let session = t.user_session();
    let aad = b"header authenticated, not encrypted";
    for len in [16usize, 24, 32] {
        let bytes = aes_key_bytes(len);
        let key = keys::import_aes(&session, &bytes);
        for (data_len, tag_bits) in [(0usize, 128u64), (1, 128), (64, 96), (1000, 128)] {
            let data = pattern(data_len);
            let mut iv = [0x5au8; 12];
            let expected = verify::aes_gcm_encrypt(&bytes, &iv, aad, tag_bits as usize / 8, &data);
            let ct = session
                .encrypt(
                    &Mechanism::AesGcm(
                        GcmParams::new(&mut iv, aad, tag_bits.into()).expect("gcm params"),
                    ),
                    key,
                    &data,
                )
                .unwrap_or_else(|e| panic!("C_Encrypt(AES-GCM): {e}"));
            assert_eq!(
                ct,
                expected,
                "GCM AES-{} over {data_len} bytes, {tag_bits}-bit tag",
                len * 8
            );
            let pt = session
                .decrypt(
                    &Mechanism::AesGcm(
                        GcmParams::new(&mut iv, aad, tag_bits.into()).expect("gcm params"),
                    ),
                    key,
                    &ct,
                )
                .expect("C_Decrypt(AES-GCM)");
            assert_eq!(pt, data);

            // Multi-part encryption gives the same ciphertext and tag.
            let gcm = Mechanism::AesGcm(
                GcmParams::new(&mut iv, aad, tag_bits.into()).expect("gcm params"),
            );
            session.encrypt_init(&gcm, key).expect("C_EncryptInit(GCM)");
            let mut multi = Vec::new();
            for chunk in data.chunks(23) {
                multi.extend(session.encrypt_update(chunk).expect("C_EncryptUpdate(GCM)"));
            }
            multi.extend(session.encrypt_final().expect("C_EncryptFinal(GCM)"));
            assert_eq!(multi, expected, "multi-part GCM");

            // A flipped bit anywhere fails authentication.
            let mut tampered = ct.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            let rv = rv_of(session.decrypt(
                &Mechanism::AesGcm(
                    GcmParams::new(&mut iv, aad, tag_bits.into()).expect("gcm params"),
                ),
                key,
                &tampered,
            ));
            assert_eq!(rv, RvError::EncryptedDataInvalid, "tampered GCM tag");
        }
    }
}

#[test]
fn aes_with_a_generated_non_exportable_key_round_trips() {
    let t = token();
    let session = t.user_session();
    let key = keys::aes(&session, 32, false);
    let data = pattern(64);
    let params = ctr_params();
    let mut iv = [7u8; 12];
    let gcm_aad = b"aad";
    let mechanisms = [
        Mechanism::AesEcb,
        Mechanism::AesCbc(IV),
        Mechanism::AesCbcPad(IV),
        Mechanism::VendorDefined(VendorDefinedMechanism::new(
            MechanismType::AES_CTR,
            Some(&params),
        )),
    ];
    for mechanism in &mechanisms {
        let ct = encrypt_both_ways(&session, mechanism, key, &data);
        assert_ne!(ct[..16], data[..16], "{mechanism:?} did not encrypt");
        assert_eq!(decrypt_both_ways(&session, mechanism, key, &ct), data);
    }
    let ct = session
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, gcm_aad, 128.into()).expect("gcm")),
            key,
            &data,
        )
        .expect("GCM");
    let pt = session
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, gcm_aad, 128.into()).expect("gcm")),
            key,
            &ct,
        )
        .expect("GCM");
    assert_eq!(pt, data);
}

#[test]
fn aes_mechanism_parameters_are_checked() {
    let t = token();
    let session = t.user_session();
    let key = keys::import_aes(&session, &aes_key_bytes(16));
    // CBC with an IV of the wrong size.
    let short_iv = [0u8; 8];
    let bad_cbc = Mechanism::VendorDefined(VendorDefinedMechanism::new(
        MechanismType::AES_CBC,
        Some(&short_iv),
    ));
    assert_rv(
        session.encrypt_init(&bad_cbc, key),
        RvError::MechanismParamInvalid,
    );
    // CBC without an IV.
    let no_iv = Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
        MechanismType::AES_CBC,
        None,
    ));
    assert_rv(
        session.encrypt_init(&no_iv, key),
        RvError::MechanismParamInvalid,
    );
    // CTR with a counter width out of range.
    let bad_ctr = cryptoki_sys::CK_AES_CTR_PARAMS {
        ulCounterBits: 129,
        cb: IV,
    };
    let ctr = Mechanism::VendorDefined(VendorDefinedMechanism::new(
        MechanismType::AES_CTR,
        Some(&bad_ctr),
    ));
    assert_rv(
        session.encrypt_init(&ctr, key),
        RvError::MechanismParamInvalid,
    );
    // GCM with a tag longer than 128 bits.
    let mut iv = [0u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 136.into()).expect("gcm"));
    assert_rv(
        session.encrypt_init(&gcm, key),
        RvError::MechanismParamInvalid,
    );
    // An AES key with CKA_ENCRYPT false.
    let no_encrypt = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(aes_key_bytes(16)),
            Attribute::Encrypt(false),
            Attribute::Decrypt(true),
        ])
        .expect("AES key with CKA_ENCRYPT=false");
    assert_rv(
        session.encrypt_init(&Mechanism::AesEcb, no_encrypt),
        RvError::KeyFunctionNotPermitted,
    );
    // An imported AES key of a bad length.
    let rv = rv_of(session.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(vec![1u8; 20]),
    ]));
    assert!(
        matches!(rv, RvError::AttributeValueInvalid | RvError::KeySizeRange),
        "a 20-byte AES key: got {rv:?}"
    );
}

fn hmac_cases() -> Vec<(Mechanism<'static>, MessageDigest)> {
    vec![
        (Mechanism::Sha1Hmac, MessageDigest::sha1()),
        (Mechanism::Sha256Hmac, MessageDigest::sha256()),
        (Mechanism::Sha384Hmac, MessageDigest::sha384()),
        (Mechanism::Sha512Hmac, MessageDigest::sha512()),
    ]
}

#[test]
fn hmac_matches_openssl() {
    let t = token();
    let session = t.user_session();
    let secret = pattern(48);
    let key = keys::import_generic_secret(&session, &secret);
    let data = pattern(1000);
    for (mechanism, md) in hmac_cases() {
        let mac = session
            .sign(&mechanism, key, &data)
            .unwrap_or_else(|e| panic!("C_Sign({mechanism:?}): {e}"));
        assert_eq!(
            mac,
            verify::hmac(md, &secret, &data),
            "{mechanism:?} differs from OpenSSL"
        );
        session
            .verify(&mechanism, key, &data, &mac)
            .expect("C_Verify(HMAC)");
        let mut bad = mac.clone();
        bad[0] ^= 0x80;
        assert_rv(
            session.verify(&mechanism, key, &data, &bad),
            RvError::SignatureInvalid,
        );

        session
            .sign_init(&mechanism, key)
            .expect("C_SignInit(HMAC)");
        for chunk in data.chunks(99) {
            session.sign_update(chunk).expect("C_SignUpdate(HMAC)");
        }
        assert_eq!(
            session.sign_final().expect("C_SignFinal(HMAC)"),
            mac,
            "multi-part HMAC"
        );
        session
            .verify_init(&mechanism, key)
            .expect("C_VerifyInit(HMAC)");
        for chunk in data.chunks(101) {
            session.verify_update(chunk).expect("C_VerifyUpdate(HMAC)");
        }
        session.verify_final(&mac).expect("C_VerifyFinal(HMAC)");
    }
}

#[test]
fn generic_secret_key_generation_for_hmac() {
    let t = token();
    let session = t.user_session();
    let key = session
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Extractable(true),
                Attribute::Sensitive(false),
            ],
        )
        .expect("C_GenerateKey(CKM_GENERIC_SECRET_KEY_GEN)");
    let kt = session
        .get_attributes(key, &[AttributeType::KeyType])
        .expect("key type");
    assert_eq!(kt, vec![Attribute::KeyType(KeyType::GENERIC_SECRET)]);
    let secret = attribute_bytes(&session, key, AttributeType::Value);
    assert_eq!(secret.len(), 32);
    for (mechanism, md) in hmac_cases() {
        let mac = session.sign(&mechanism, key, b"data").expect("HMAC");
        assert_eq!(mac, verify::hmac(md, &secret, b"data"), "{mechanism:?}");
    }
    // A non-exportable one signs and verifies too.
    let hidden = session
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(64.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )
        .expect("C_GenerateKey(generic secret, 64)");
    let mac = session
        .sign(&Mechanism::Sha512Hmac, hidden, b"data")
        .expect("HMAC");
    session
        .verify(&Mechanism::Sha512Hmac, hidden, b"data", &mac)
        .expect("verify");
    assert_rv(
        session.generate_key(&Mechanism::GenericSecretKeyGen, &[Attribute::Token(false)]),
        RvError::TemplateIncomplete,
    );
}

#[test]
fn hmac_with_an_aes_key_is_inconsistent() {
    let t = token();
    let session = t.user_session();
    let aes = keys::import_aes(&session, &aes_key_bytes(32));
    assert_rv(
        session.sign_init(&Mechanism::Sha256Hmac, aes),
        RvError::KeyTypeInconsistent,
    );
    let hmac = keys::import_generic_secret(&session, &pattern(32));
    assert_rv(
        session.encrypt_init(&Mechanism::AesEcb, hmac),
        RvError::KeyTypeInconsistent,
    );
}

fn digests() -> Vec<(Mechanism<'static>, MessageDigest)> {
    vec![
        (Mechanism::Sha1, MessageDigest::sha1()),
        (Mechanism::Sha224, MessageDigest::sha224()),
        (Mechanism::Sha256, MessageDigest::sha256()),
        (Mechanism::Sha384, MessageDigest::sha384()),
        (Mechanism::Sha512, MessageDigest::sha512()),
    ]
}

#[test]
fn digests_match_openssl() {
    let t = token();
    let session = t.user_session();
    for len in [0usize, 1, 55, 64, 1000, 1 << 20] {
        let data = pattern(len);
        for (mechanism, md) in digests() {
            let expected = verify::hash(md, &data);
            let single = session
                .digest(&mechanism, &data)
                .unwrap_or_else(|e| panic!("C_Digest({mechanism:?}): {e}"));
            assert_eq!(single, expected, "{mechanism:?} over {len} bytes");
            session.digest_init(&mechanism).expect("C_DigestInit");
            for chunk in data.chunks(4093) {
                session.digest_update(chunk).expect("C_DigestUpdate");
            }
            assert_eq!(
                session.digest_final().expect("C_DigestFinal"),
                expected,
                "multi-part {mechanism:?}"
            );
        }
    }
}

#[test]
fn digest_works_without_login() {
    // Digesting touches no object: a public session may do it.
    let t = token();
    let session = t.rw_session();
    let out = session.digest(&Mechanism::Sha256, b"abc");
    match out {
        Ok(d) => assert_eq!(d, verify::hash(MessageDigest::sha256(), b"abc")),
        Err(e) => assert_eq!(
            rv_of::<()>(Err(e)),
            RvError::UserNotLoggedIn,
            "C_Digest before login"
        ),
    }
}

#[test]
fn digest_key_hashes_a_secret_key_value() {
    let t = token();
    let session = t.user_session();
    let secret = aes_key_bytes(32);
    let key = keys::import_aes(&session, &secret);
    session
        .digest_init(&Mechanism::Sha256)
        .expect("C_DigestInit");
    session.digest_update(b"prefix").expect("C_DigestUpdate");
    match session.digest_key(key) {
        Ok(()) => {
            let d = session.digest_final().expect("C_DigestFinal");
            assert_eq!(
                d,
                verify::hash(MessageDigest::sha256(), &[&b"prefix"[..], &secret].concat())
            );
        }
        Err(e) => {
            // C_DigestKey is not in the list; refusing it is allowed.
            let rv = rv_of::<()>(Err(e));
            assert!(
                matches!(rv, RvError::FunctionNotSupported | RvError::KeyIndigestible),
                "C_DigestKey: got {rv:?}"
            );
        }
    }
}

#[test]
fn generate_random_gives_fresh_bytes() {
    let t = token();
    let session = t.user_session();
    for len in [1u32, 16, 32, 1000, 65536] {
        let a = session.generate_random_vec(len).expect("C_GenerateRandom");
        let b = session.generate_random_vec(len).expect("C_GenerateRandom");
        assert_eq!(a.len(), len as usize);
        if len >= 16 {
            assert_ne!(a, b, "two {len}-byte random strings are equal");
            assert!(a.iter().any(|&x| x != a[0]), "{len} random bytes all equal");
        }
    }
    // SeedRandom: mixing in is allowed, refusing with the standard code too.
    match session.seed_random(b"some application entropy") {
        Ok(()) => {}
        Err(e) => assert_eq!(
            rv_of::<()>(Err(e)),
            RvError::RandomSeedNotSupported,
            "C_SeedRandom"
        ),
    }
    assert_eq!(
        session
            .generate_random_vec(32)
            .expect("after seeding")
            .len(),
        32
    );
}
