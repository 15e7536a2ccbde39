//! Known-answer checks in both directions with OpenSSL, for every mechanism
//! the token offers: the token signs and OpenSSL verifies, OpenSSL signs and
//! the token verifies; the token encrypts and OpenSSL decrypts, and back;
//! the token wraps and OpenSSL unwraps, and back; ECDH agrees with OpenSSL.
//! Keys are made by OpenSSL and imported, so both sides hold the same key
//! (RSA with and without CRT parts, EC points raw and DER-wrapped).

use cryptoki::error::RvError;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use hsmlink_tests::raw::{self, Raw};
use hsmlink_tests::verify::{self, attribute_bytes};
use hsmlink_tests::{assert_rv, token};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};

const MSG: &[u8] = b"known answer: the quick brown fox jumps over the lazy dog";

fn ck_ulong(v: u64) -> cryptoki_sys::CK_ULONG {
    v as cryptoki_sys::CK_ULONG
}

// ----- key import ---------------------------------------------------------------

struct Pair {
    public: ObjectHandle,
    private: ObjectHandle,
}

fn import_rsa(session: &Session, rsa: &Rsa<Private>, crt: bool) -> Pair {
    let public = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Modulus(rsa.n().to_vec()),
            Attribute::PublicExponent(rsa.e().to_vec()),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
        ])
        .expect("import RSA public key");
    let mut t = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Modulus(rsa.n().to_vec()),
        Attribute::PublicExponent(rsa.e().to_vec()),
        Attribute::PrivateExponent(rsa.d().to_vec()),
        Attribute::Sign(true),
        Attribute::Decrypt(true),
        Attribute::Unwrap(true),
    ];
    if crt {
        t.extend([
            Attribute::Prime1(rsa.p().unwrap().to_vec()),
            Attribute::Prime2(rsa.q().unwrap().to_vec()),
            Attribute::Exponent1(rsa.dmp1().unwrap().to_vec()),
            Attribute::Exponent2(rsa.dmq1().unwrap().to_vec()),
            Attribute::Coefficient(rsa.iqmp().unwrap().to_vec()),
        ]);
    }
    let private = session.create_object(&t).expect("import RSA private key");
    Pair { public, private }
}

fn oid_of(nid: Nid) -> Vec<u8> {
    match nid {
        Nid::SECP256K1 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
        other => verify::params_of_curve(other),
    }
}

fn import_ec(session: &Session, key: &EcKey<Private>, nid: Nid, raw_point: bool) -> Pair {
    let group = key.group();
    let mut ctx = BigNumContext::new().unwrap();
    let point = key
        .public_key()
        .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    let point = if raw_point {
        point
    } else {
        der_octet_string(&point)
    };
    let field = (group.degree() as usize).div_ceil(8);
    let public = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::EcParams(oid_of(nid)),
            Attribute::EcPoint(point),
            Attribute::Verify(true),
        ])
        .expect("import EC public key");
    let private = session
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::EcParams(oid_of(nid)),
            Attribute::Value(key.private_key().to_vec_padded(field as i32).unwrap()),
            Attribute::Sign(true),
            // ECDH needs it: CKA_DERIVE defaults to false (v2.40).
            Attribute::Derive(true),
            Attribute::Derive(true),
            Attribute::Extractable(true),
        ])
        .expect("import EC private key");
    Pair { public, private }
}

fn der_octet_string(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    if v.len() < 0x80 {
        out.push(v.len() as u8);
    } else {
        out.extend([0x81, v.len() as u8]);
    }
    out.extend_from_slice(v);
    out
}

fn printable(s: &str) -> Vec<u8> {
    let mut v = vec![0x13, s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn import_ed(session: &Session, key: &PKey<Private>, params: Vec<u8>) -> Pair {
    let public = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Token(false),
            Attribute::EcParams(params.clone()),
            Attribute::EcPoint(der_octet_string(&key.raw_public_key().unwrap())),
            Attribute::Verify(true),
        ])
        .expect("import Edwards public key");
    let private = session
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Token(false),
            Attribute::EcParams(params),
            Attribute::Value(key.raw_private_key().unwrap()),
            Attribute::Sign(true),
        ])
        .expect("import Edwards private key");
    Pair { public, private }
}

fn import_secret(session: &Session, kt: KeyType, value: &[u8], extractable: bool) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(kt),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Extractable(extractable),
            Attribute::Sensitive(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
        ])
        .expect("import secret key")
}

// ----- RSA ------------------------------------------------------------------------

/// (digest mechanism, MGF1 generator, OpenSSL digest, OpenSSL md).
type HashRow = (
    u64,
    u64,
    fn() -> MessageDigest,
    fn() -> &'static openssl::md::MdRef,
);

const HASHES: [HashRow; 5] = [
    (0x220, 0x1, MessageDigest::sha1, Md::sha1),
    (0x255, 0x5, MessageDigest::sha224, Md::sha224),
    (0x250, 0x2, MessageDigest::sha256, Md::sha256),
    (0x260, 0x3, MessageDigest::sha384, Md::sha384),
    (0x270, 0x4, MessageDigest::sha512, Md::sha512),
];

/// `C_SignInit` + `C_Sign` at the C ABI, for mechanisms cryptoki has no
/// name for (`CKM_SHA224_RSA_PKCS_PSS`, `CKM_AES_CMAC_GENERAL`).
fn raw_sign<P>(
    raw: &Raw,
    session: &Session,
    mech: u64,
    param: Option<&P>,
    key: ObjectHandle,
    data: &[u8],
) -> Vec<u8> {
    let h = session.handle();
    let rv = raw.sign_init(h, ck_ulong(mech), param, key);
    assert_eq!(
        rv,
        raw::CKR_OK,
        "C_SignInit({mech:#x}): {}",
        raw::rv_name(rv)
    );
    let out = raw.sign(h, data, Some(1024));
    assert_eq!(out.rv, raw::CKR_OK, "C_Sign({mech:#x}): {}", out.rv_name());
    out.data
}

/// `C_VerifyInit` + `C_Verify` at the C ABI; the `C_Verify` result.
fn raw_verify<P>(
    raw: &Raw,
    session: &Session,
    mech: u64,
    param: Option<&P>,
    key: ObjectHandle,
    data: &[u8],
    sig: &[u8],
) -> cryptoki_sys::CK_RV {
    let h = session.handle();
    let rv = raw.verify_init(h, ck_ulong(mech), param, key);
    assert_eq!(
        rv,
        raw::CKR_OK,
        "C_VerifyInit({mech:#x}): {}",
        raw::rv_name(rv)
    );
    raw.verify(h, data, sig)
}

fn pss_mechanism(
    ty: u64,
    hash: u64,
    mgf: u64,
    salt: usize,
) -> (u64, cryptoki_sys::CK_RSA_PKCS_PSS_PARAMS) {
    (
        ty,
        cryptoki_sys::CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: ck_ulong(hash),
            mgf: ck_ulong(mgf),
            sLen: ck_ulong(salt as u64),
        },
    )
}

#[test]
fn rsa_pkcs1_sign_verify_both_directions_with_and_without_crt() {
    let t = token();
    let session = t.user_session();
    let rsa = Rsa::generate(2048).unwrap();
    let pkey = PKey::from_rsa(rsa.clone()).unwrap();
    let public: PKey<Public> =
        PKey::public_key_from_der(&pkey.public_key_to_der().unwrap()).unwrap();
    for crt in [true, false] {
        let pair = import_rsa(&session, &rsa, crt);
        let hashed = [
            (Mechanism::Sha1RsaPkcs, MessageDigest::sha1()),
            (Mechanism::Sha224RsaPkcs, MessageDigest::sha224()),
            (Mechanism::Sha256RsaPkcs, MessageDigest::sha256()),
            (Mechanism::Sha384RsaPkcs, MessageDigest::sha384()),
            (Mechanism::Sha512RsaPkcs, MessageDigest::sha512()),
        ];
        for (mech, md) in hashed {
            let sig = session.sign(&mech, pair.private, MSG).unwrap();
            assert!(
                verify::rsa_pkcs1_verifies(&public, md, MSG, &sig),
                "{mech:?} crt={crt}"
            );
            let mut s = Signer::new(md, &pkey).unwrap();
            s.set_rsa_padding(Padding::PKCS1).unwrap();
            let theirs = s.sign_oneshot_to_vec(MSG).unwrap();
            assert_eq!(theirs, sig, "PKCS#1 v1.5 is deterministic: {mech:?}");
            session.verify(&mech, pair.public, MSG, &theirs).unwrap();
        }
        // Raw CKM_RSA_PKCS over a DigestInfo made here.
        let di = verify::digest_info(
            MessageDigest::sha256(),
            &verify::hash(MessageDigest::sha256(), MSG),
        );
        let sig = session
            .sign(&Mechanism::RsaPkcs, pair.private, &di)
            .unwrap();
        assert_eq!(verify::rsa_pkcs1_recover(&public, &sig).unwrap(), di);
        let mut theirs = vec![0u8; 256];
        let n = rsa
            .private_encrypt(&di, &mut theirs, Padding::PKCS1)
            .unwrap();
        session
            .verify(&Mechanism::RsaPkcs, pair.public, &di, &theirs[..n])
            .unwrap();
        // CKM_RSA_X_509: raw RSA both ways, sign/verify and encrypt/decrypt.
        let block: Vec<u8> = (0..256u32).map(|i| (i * 7 + 1) as u8 & 0x7f).collect();
        let sig = session
            .sign(&Mechanism::RsaX509, pair.private, &block)
            .unwrap();
        assert_eq!(verify::rsa_raw_public(&public, &sig), block);
        let mut theirs = vec![0u8; 256];
        rsa.private_encrypt(&block, &mut theirs, Padding::NONE)
            .unwrap();
        session
            .verify(&Mechanism::RsaX509, pair.public, &block, &theirs)
            .unwrap();
        let c = session
            .encrypt(&Mechanism::RsaX509, pair.public, &block)
            .unwrap();
        let mut p = vec![0u8; 256];
        rsa.private_decrypt(&c, &mut p, Padding::NONE).unwrap();
        assert_eq!(p, block);
        let mut c = vec![0u8; 256];
        rsa.public_encrypt(&block, &mut c, Padding::NONE).unwrap();
        assert_eq!(
            session
                .decrypt(&Mechanism::RsaX509, pair.private, &c)
                .unwrap(),
            block
        );
        // CKM_RSA_PKCS encryption both ways.
        let c = session
            .encrypt(&Mechanism::RsaPkcs, pair.public, MSG)
            .unwrap();
        let mut p = vec![0u8; 256];
        let n = rsa.private_decrypt(&c, &mut p, Padding::PKCS1).unwrap();
        assert_eq!(&p[..n], MSG);
        let mut c = vec![0u8; 256];
        rsa.public_encrypt(MSG, &mut c, Padding::PKCS1).unwrap();
        assert_eq!(
            session
                .decrypt(&Mechanism::RsaPkcs, pair.private, &c)
                .unwrap(),
            MSG
        );
    }
}

#[test]
fn rsa_pss_every_hash_and_mgf_pairing_both_directions() {
    let t = token();
    let session = t.user_session();
    let rsa = Rsa::generate(2048).unwrap();
    let pkey = PKey::from_rsa(rsa.clone()).unwrap();
    let pair = import_rsa(&session, &rsa, true);
    let hashed_pss = [0x0e, 0x47, 0x43, 0x44, 0x45]; // SHA1, SHA224, SHA256, SHA384, SHA512 _RSA_PKCS_PSS
    for (i, (hash, _, md, md_ref)) in HASHES.iter().enumerate() {
        for (_, mgf, _, mgf_md) in HASHES.iter() {
            let salt = md().size();
            let (ty, params) = pss_mechanism(hashed_pss[i], *hash, *mgf, salt);
            let sig = raw_sign(&t.raw, &session, ty, Some(&params), pair.private, MSG);
            let mut v = Verifier::new(md(), &pkey).unwrap();
            v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            v.set_rsa_mgf1_md(openssl::hash::MessageDigest::from_nid(mgf_md().type_()).unwrap())
                .unwrap();
            v.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt as i32))
                .unwrap();
            assert!(
                v.verify_oneshot(&sig, MSG).unwrap(),
                "PSS hash {hash:#x} mgf {mgf}"
            );
            let mut s = Signer::new(md(), &pkey).unwrap();
            s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            s.set_rsa_mgf1_md(openssl::hash::MessageDigest::from_nid(mgf_md().type_()).unwrap())
                .unwrap();
            s.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt as i32))
                .unwrap();
            let theirs = s.sign_oneshot_to_vec(MSG).unwrap();
            let rv = raw_verify(
                &t.raw,
                &session,
                ty,
                Some(&params),
                pair.public,
                MSG,
                &theirs,
            );
            assert_eq!(rv, raw::CKR_OK, "verify PSS hash {hash:#x} mgf {mgf}");
            // Raw CKM_RSA_PKCS_PSS over the digest, with the same parameters.
            let digest = verify::hash(md(), MSG);
            let (ty, params) = pss_mechanism(0x0d, *hash, *mgf, salt);
            let rv = raw_verify(
                &t.raw,
                &session,
                ty,
                Some(&params),
                pair.public,
                &digest,
                &theirs,
            );
            assert_eq!(rv, raw::CKR_OK, "verify raw PSS hash {hash:#x} mgf {mgf}");
            let sig = raw_sign(&t.raw, &session, ty, Some(&params), pair.private, &digest);
            let mut ctx = PkeyCtx::new(&pkey).unwrap();
            ctx.verify_init().unwrap();
            ctx.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            ctx.set_signature_md(md_ref()).unwrap();
            ctx.set_rsa_mgf1_md(mgf_md()).unwrap();
            ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt as i32))
                .unwrap();
            assert!(ctx.verify(&digest, &sig).unwrap());
        }
    }
}

#[test]
fn rsa_oaep_every_hash_with_and_without_label_both_directions() {
    let t = token();
    let session = t.user_session();
    let rsa = Rsa::generate(2048).unwrap();
    let pkey = PKey::from_rsa(rsa.clone()).unwrap();
    let pair = import_rsa(&session, &rsa, true);
    let types = [
        (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224),
        (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    ];
    for (i, (hash, mgf)) in types.into_iter().enumerate() {
        let md = HASHES[i].3;
        for label in [&b""[..], b"a label"] {
            let source = if label.is_empty() {
                PkcsOaepSource::empty()
            } else {
                PkcsOaepSource::data_specified(label)
            };
            let mech = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, source));
            let c = session.encrypt(&mech, pair.public, MSG).unwrap();
            let mut ctx = PkeyCtx::new(&pkey).unwrap();
            ctx.decrypt_init().unwrap();
            ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
            ctx.set_rsa_oaep_md(md()).unwrap();
            ctx.set_rsa_mgf1_md(md()).unwrap();
            if !label.is_empty() {
                ctx.set_rsa_oaep_label(label).unwrap();
            }
            let mut p = Vec::new();
            ctx.decrypt_to_vec(&c, &mut p).unwrap();
            assert_eq!(p, MSG, "OAEP {hash:?} label {label:?}");
            let mut ctx = PkeyCtx::new(&pkey).unwrap();
            ctx.encrypt_init().unwrap();
            ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
            ctx.set_rsa_oaep_md(md()).unwrap();
            ctx.set_rsa_mgf1_md(md()).unwrap();
            if !label.is_empty() {
                ctx.set_rsa_oaep_label(label).unwrap();
            }
            let mut c = Vec::new();
            ctx.encrypt_to_vec(MSG, &mut c).unwrap();
            assert_eq!(session.decrypt(&mech, pair.private, &c).unwrap(), MSG);
        }
    }
    // A mixed pairing: SHA-256 hash, MGF1 with SHA-1.
    let mech = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ));
    let c = session.encrypt(&mech, pair.public, MSG).unwrap();
    let mut ctx = PkeyCtx::new(&pkey).unwrap();
    ctx.decrypt_init().unwrap();
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    ctx.set_rsa_oaep_md(Md::sha256()).unwrap();
    ctx.set_rsa_mgf1_md(Md::sha1()).unwrap();
    let mut p = Vec::new();
    ctx.decrypt_to_vec(&c, &mut p).unwrap();
    assert_eq!(p, MSG);
}

// ----- ECDSA and EdDSA ------------------------------------------------------------

#[test]
fn ecdsa_every_curve_and_hash_both_directions() {
    let t = token();
    let session = t.user_session();
    let curves = [
        (Nid::X9_62_PRIME256V1, true),
        (Nid::SECP384R1, false),
        (Nid::SECP521R1, false),
        (Nid::SECP256K1, true),
    ];
    for (nid, raw_point) in curves {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let public = EcKey::from_public_key(&group, key.public_key()).unwrap();
        let pair = import_ec(&session, &key, nid, raw_point);
        let field = (group.degree() as usize).div_ceil(8);
        let pub_pkey = PKey::from_ec_key(public.clone()).unwrap();
        let mechs = [
            (Mechanism::EcdsaSha1, Some(MessageDigest::sha1())),
            (Mechanism::EcdsaSha224, Some(MessageDigest::sha224())),
            (Mechanism::EcdsaSha256, Some(MessageDigest::sha256())),
            (Mechanism::EcdsaSha384, Some(MessageDigest::sha384())),
            (Mechanism::EcdsaSha512, Some(MessageDigest::sha512())),
            (Mechanism::Ecdsa, None),
        ];
        for (mech, md) in mechs {
            let data = match md {
                Some(_) => MSG.to_vec(),
                None => verify::hash(MessageDigest::sha256(), MSG),
            };
            let sig = session.sign(&mech, pair.private, &data).unwrap();
            assert_eq!(sig.len(), 2 * field);
            assert!(
                verify::ecdsa_verifies(&pub_pkey, md, &data, &sig),
                "{nid:?} {mech:?}"
            );
            let digest = match md {
                Some(md) => verify::hash(md, &data),
                None => data.clone(),
            };
            let theirs = EcdsaSig::sign(&digest, &key).unwrap();
            let mut rs = theirs.r().to_vec_padded(field as i32).unwrap();
            rs.extend(theirs.s().to_vec_padded(field as i32).unwrap());
            session.verify(&mech, pair.public, &data, &rs).unwrap();
            let mut bad = rs.clone();
            bad[3] ^= 1;
            assert_rv(
                session.verify(&mech, pair.public, &data, &bad),
                RvError::SignatureInvalid,
            );
        }
    }
}

#[test]
fn eddsa_ed25519_and_ed448_both_directions() {
    let t = token();
    let session = t.user_session();
    let cases = [
        (
            PKey::generate_ed25519().unwrap(),
            printable("edwards25519"),
            64,
        ),
        (
            PKey::generate_ed25519().unwrap(),
            vec![0x06, 0x03, 0x2b, 0x65, 0x70],
            64,
        ),
        (
            PKey::generate_ed448().unwrap(),
            vec![0x06, 0x03, 0x2b, 0x65, 0x71],
            114,
        ),
    ];
    for (key, params, sig_len) in cases {
        let pair = import_ed(&session, &key, params.clone());
        assert_eq!(
            attribute_bytes(&session, pair.public, AttributeType::EcParams),
            params,
            "CKA_EC_PARAMS reads as given"
        );
        assert_eq!(
            attribute_bytes(&session, pair.public, AttributeType::EcPoint),
            der_octet_string(&key.raw_public_key().unwrap()),
            "CKA_EC_POINT is the DER OCTET STRING of the public key"
        );
        let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let sig = session.sign(&mech, pair.private, MSG).unwrap();
        assert_eq!(sig.len(), sig_len);
        let mut v = Verifier::new_without_digest(&key).unwrap();
        assert!(v.verify_oneshot(&sig, MSG).unwrap());
        let mut s = Signer::new_without_digest(&key).unwrap();
        let theirs = s.sign_oneshot_to_vec(MSG).unwrap();
        assert_eq!(theirs, sig, "EdDSA is deterministic");
        session.verify(&mech, pair.public, MSG, &theirs).unwrap();
        let mut bad = theirs.clone();
        bad[0] ^= 1;
        assert_rv(
            session.verify(&mech, pair.public, MSG, &bad),
            RvError::SignatureInvalid,
        );
        // Multi-part: the same signature.
        session.sign_init(&mech, pair.private).unwrap();
        session.sign_update(&MSG[..10]).unwrap();
        session.sign_update(&MSG[10..]).unwrap();
        assert_eq!(session.sign_final().unwrap(), sig);
    }
}

#[test]
fn eddsa_key_pair_generation_gives_openssl_usable_keys() {
    let t = token();
    let session = t.user_session();
    for (params, id) in [
        (printable("edwards25519"), openssl::pkey::Id::ED25519),
        (vec![0x06, 0x03, 0x2b, 0x65, 0x71], openssl::pkey::Id::ED448),
    ] {
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::EcParams(params.clone()),
                    Attribute::Verify(true),
                ],
                &[Attribute::Token(false), Attribute::Sign(true)],
            )
            .unwrap();
        let point = attribute_bytes(&session, public, AttributeType::EcPoint);
        assert_eq!(point[0], 0x04, "CKA_EC_POINT is a DER OCTET STRING");
        assert_eq!(point[1] as usize, point.len() - 2);
        let key = PKey::public_key_from_raw_bytes(&point[2..], id).unwrap();
        let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let sig = session.sign(&mech, private, MSG).unwrap();
        let mut v = Verifier::new_without_digest(&key).unwrap();
        assert!(v.verify_oneshot(&sig, MSG).unwrap());
        assert_eq!(
            session
                .get_attributes(private, &[AttributeType::KeyType])
                .unwrap(),
            vec![Attribute::KeyType(KeyType::EC_EDWARDS)]
        );
    }
}

// ----- AES: CMAC and key wrap -----------------------------------------------------

fn openssl_cmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let cipher = match key.len() {
        16 => openssl::symm::Cipher::aes_128_cbc(),
        24 => openssl::symm::Cipher::aes_192_cbc(),
        _ => openssl::symm::Cipher::aes_256_cbc(),
    };
    let k = PKey::cmac(&cipher, key).unwrap();
    let mut s = Signer::new_without_digest(&k).unwrap();
    s.sign_oneshot_to_vec(data).unwrap()
}

#[test]
fn aes_cmac_matches_openssl_for_every_key_size_and_length() {
    let t = token();
    let session = t.user_session();
    for len in [16usize, 24, 32] {
        let value: Vec<u8> = (0..len).map(|i| (i * 11 + 5) as u8).collect();
        let key = import_secret(&session, KeyType::AES, &value, false);
        for n in [0usize, 1, 15, 16, 17, 32, 33, 100] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let want = openssl_cmac(&value, &data);
            let got = session.sign(&Mechanism::AesCMac, key, &data).unwrap();
            assert_eq!(got, want, "AES-{} CMAC of {n} bytes", len * 8);
            session
                .verify(&Mechanism::AesCMac, key, &data, &want)
                .unwrap();
            // Multi-part, in uneven pieces.
            session.sign_init(&Mechanism::AesCMac, key).unwrap();
            for chunk in data.chunks(7) {
                session.sign_update(chunk).unwrap();
            }
            assert_eq!(session.sign_final().unwrap(), want);
            // CMAC_GENERAL: the first 8 bytes.
            let eight: cryptoki_sys::CK_ULONG = 8;
            let got = raw_sign(&t.raw, &session, 0x108B, Some(&eight), key, &data);
            assert_eq!(got, want[..8]);
            let rv = raw_verify(
                &t.raw,
                &session,
                0x108B,
                Some(&eight),
                key,
                &data,
                &want[..8],
            );
            assert_eq!(rv, raw::CKR_OK);
        }
    }
}

fn wrap_cipher(len: usize, pad: bool) -> &'static openssl::cipher::CipherRef {
    use openssl::cipher::Cipher;
    match (len, pad) {
        (16, false) => Cipher::aes_128_wrap(),
        (24, false) => Cipher::aes_192_wrap(),
        (32, false) => Cipher::aes_256_wrap(),
        (16, true) => Cipher::aes_128_wrap_pad(),
        (24, true) => Cipher::aes_192_wrap_pad(),
        _ => Cipher::aes_256_wrap_pad(),
    }
}

fn openssl_wrap(kek: &[u8], pad: bool, data: &[u8], encrypt: bool) -> Vec<u8> {
    let mut ctx = openssl::cipher_ctx::CipherCtx::new().unwrap();
    ctx.set_flags(openssl::cipher_ctx::CipherCtxFlags::FLAG_WRAP_ALLOW);
    let cipher = wrap_cipher(kek.len(), pad);
    if encrypt {
        ctx.encrypt_init(Some(cipher), Some(kek), None).unwrap();
    } else {
        ctx.decrypt_init(Some(cipher), Some(kek), None).unwrap();
    }
    let mut out = vec![0u8; data.len() + 64];
    let n = ctx.cipher_update(data, Some(&mut out)).unwrap();
    let m = ctx.cipher_final(&mut out[n..]).unwrap();
    out.truncate(n + m);
    out
}

#[test]
fn aes_key_wrap_both_directions_for_secret_and_private_keys() {
    let t = token();
    let session = t.user_session();
    for kek_len in [16usize, 24, 32] {
        let kek_value: Vec<u8> = (0..kek_len).map(|i| (i * 5 + 3) as u8).collect();
        let kek = import_secret(&session, KeyType::AES, &kek_value, false);
        let secret: Vec<u8> = (0..32u8).map(|i| i ^ 0x5a).collect();
        let key = import_secret(&session, KeyType::AES, &secret, true);
        for (mech, pad) in [
            (Mechanism::AesKeyWrap, false),
            (Mechanism::AesKeyWrapPad, true),
        ] {
            // Token wraps, OpenSSL unwraps.
            let wrapped = session.wrap_key(&mech, kek, key).unwrap();
            assert_eq!(openssl_wrap(&kek_value, pad, &wrapped, false), secret);
            // OpenSSL wraps, token unwraps; the key encrypts like the original.
            let theirs = openssl_wrap(&kek_value, pad, &secret, true);
            let unwrapped = session
                .unwrap_key(
                    &mech,
                    kek,
                    &theirs,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(false),
                        Attribute::Encrypt(true),
                        Attribute::Sensitive(true),
                    ],
                )
                .unwrap();
            let block = [7u8; 16];
            assert_eq!(
                session
                    .encrypt(&Mechanism::AesEcb, unwrapped, &block)
                    .unwrap(),
                verify::aes_encrypt(
                    openssl::symm::Cipher::aes_256_ecb(),
                    &secret,
                    None,
                    false,
                    &block
                )
            );
            let flags = session
                .get_attributes(
                    unwrapped,
                    &[
                        AttributeType::Local,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                    ],
                )
                .unwrap();
            assert_eq!(
                flags,
                vec![
                    Attribute::Local(false),
                    Attribute::AlwaysSensitive(false),
                    Attribute::NeverExtractable(false)
                ]
            );
        }
        // A private key travels as PKCS#8 with the padding variant.
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let pair = import_ec(&session, &ec, Nid::X9_62_PRIME256V1, false);
        let wrapped = session
            .wrap_key(&Mechanism::AesKeyWrapPad, kek, pair.private)
            .unwrap();
        let pkcs8 = openssl_wrap(&kek_value, true, &wrapped, false);
        let back = PKey::private_key_from_pkcs8(&pkcs8)
            .unwrap()
            .ec_key()
            .unwrap();
        assert_eq!(back.private_key().to_vec(), ec.private_key().to_vec());
        let rsa = Rsa::generate(2048).unwrap();
        let pkey = PKey::from_rsa(rsa).unwrap();
        let theirs = openssl_wrap(
            &kek_value,
            true,
            &pkey.private_key_to_pkcs8().unwrap(),
            true,
        );
        let private = session
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek,
                &theirs,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Token(false),
                    Attribute::Sign(true),
                ],
            )
            .unwrap();
        let sig = session
            .sign(&Mechanism::Sha256RsaPkcs, private, MSG)
            .unwrap();
        let public: PKey<Public> =
            PKey::public_key_from_der(&pkey.public_key_to_der().unwrap()).unwrap();
        assert!(verify::rsa_pkcs1_verifies(
            &public,
            MessageDigest::sha256(),
            MSG,
            &sig
        ));
    }
}

#[test]
fn rsa_wrap_of_secret_keys_both_directions_and_the_exportable_rule() {
    let t = token();
    let session = t.user_session();
    let rsa = Rsa::generate(2048).unwrap();
    let pkey = PKey::from_rsa(rsa.clone()).unwrap();
    let pair = import_rsa(&session, &rsa, true);
    let secret: Vec<u8> = (0..32u8).collect();
    let key = import_secret(&session, KeyType::AES, &secret, true);
    let oaep = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    ));
    // PKCS#1 v1.5.
    let wrapped = session
        .wrap_key(&Mechanism::RsaPkcs, pair.public, key)
        .unwrap();
    let mut p = vec![0u8; 256];
    let n = rsa
        .private_decrypt(&wrapped, &mut p, Padding::PKCS1)
        .unwrap();
    assert_eq!(&p[..n], &secret[..]);
    // OAEP.
    let wrapped = session.wrap_key(&oaep, pair.public, key).unwrap();
    let mut ctx = PkeyCtx::new(&pkey).unwrap();
    ctx.decrypt_init().unwrap();
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    ctx.set_rsa_oaep_md(Md::sha256()).unwrap();
    ctx.set_rsa_mgf1_md(Md::sha256()).unwrap();
    let mut p = Vec::new();
    ctx.decrypt_to_vec(&wrapped, &mut p).unwrap();
    assert_eq!(p, secret);
    // OpenSSL wraps (OAEP), the token unwraps.
    let mut ctx = PkeyCtx::new(&pkey).unwrap();
    ctx.encrypt_init().unwrap();
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    ctx.set_rsa_oaep_md(Md::sha256()).unwrap();
    ctx.set_rsa_mgf1_md(Md::sha256()).unwrap();
    let mut c = Vec::new();
    ctx.encrypt_to_vec(&secret, &mut c).unwrap();
    let unwrapped = session
        .unwrap_key(
            &oaep,
            pair.private,
            &c,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Sign(true),
            ],
        )
        .unwrap();
    assert_eq!(
        session
            .sign(&Mechanism::Sha256Hmac, unwrapped, MSG)
            .unwrap(),
        verify::hmac(MessageDigest::sha256(), &secret, MSG)
    );
    // The profile: a non-exportable key is not wrapped, in any form.
    let fixed = import_secret(&session, KeyType::AES, &secret, false);
    assert_rv(
        session.wrap_key(&oaep, pair.public, fixed),
        RvError::KeyUnextractable,
    );
    let sensitive = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(secret.clone()),
            Attribute::Extractable(true),
            Attribute::Sensitive(true),
        ])
        .unwrap();
    assert_rv(
        session.wrap_key(&Mechanism::RsaPkcs, pair.public, sensitive),
        RvError::KeyUnextractable,
    );
}

// ----- ECDH ---------------------------------------------------------------------

fn x963(md: MessageDigest, z: &[u8], shared: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter = 1u32;
    while out.len() < len {
        let mut h = openssl::hash::Hasher::new(md).unwrap();
        h.update(z).unwrap();
        h.update(&counter.to_be_bytes()).unwrap();
        h.update(shared).unwrap();
        out.extend_from_slice(&h.finish().unwrap());
        counter += 1;
    }
    out.truncate(len);
    out
}

#[test]
fn ecdh_derive_agrees_with_openssl() {
    let t = token();
    let session = t.user_session();
    for nid in [Nid::X9_62_PRIME256V1, Nid::SECP384R1, Nid::SECP256K1] {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let ours = EcKey::generate(&group).unwrap();
        let pair = import_ec(&session, &ours, nid, true);
        let peer = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let peer_point = peer
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap();
        let peer_pkey = PKey::from_ec_key(peer).unwrap();
        let our_public =
            PKey::from_ec_key(EcKey::from_public_key(&group, ours.public_key()).unwrap()).unwrap();
        let mut d = openssl::derive::Deriver::new(&peer_pkey).unwrap();
        d.set_peer(&our_public).unwrap();
        let z = d.derive_to_vec().unwrap();
        let template = |len: Option<u64>| {
            let mut t = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ];
            if let Some(l) = len {
                t.push(Attribute::ValueLen(Ulong::from(l)));
            }
            t
        };
        // CKD_NULL: the shared secret itself; the raw and the DER-wrapped
        // peer point are both accepted.
        for point in [peer_point.clone(), der_octet_string(&peer_point)] {
            let mech = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &point));
            let k = session
                .derive_key(&mech, pair.private, &template(None))
                .unwrap();
            assert_eq!(
                attribute_bytes(&session, k, AttributeType::Value),
                z,
                "{nid:?}"
            );
            let flags = session
                .get_attributes(k, &[AttributeType::Local, AttributeType::NeverExtractable])
                .unwrap();
            assert_eq!(
                flags,
                vec![Attribute::Local(false), Attribute::NeverExtractable(false)]
            );
        }
        // X9.63 KDF with SHA-256 and shared data.
        let shared = b"shared info";
        let mech =
            Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::sha256(shared), &peer_point));
        let k = session
            .derive_key(&mech, pair.private, &template(Some(48)))
            .unwrap();
        assert_eq!(
            attribute_bytes(&session, k, AttributeType::Value),
            x963(MessageDigest::sha256(), &z, shared, 48)
        );
        // CKD_NULL with shared data is a parameter error.
        let mech = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(
            EcKdf::sha256(shared),
            &[0x04, 1, 2, 3],
        ));
        assert_rv(
            session.derive_key(&mech, pair.private, &template(Some(16))),
            RvError::MechanismParamInvalid,
        );
    }
}

// ----- C_DigestKey and CKA_ALLOWED_MECHANISMS -------------------------------------

#[test]
fn digest_key_mixes_an_exportable_key_and_refuses_the_others() {
    let t = token();
    let session = t.user_session();
    let value: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(9)).collect();
    let key = import_secret(&session, KeyType::GENERIC_SECRET, &value, true);
    session.digest_init(&Mechanism::Sha256).unwrap();
    session.digest_update(b"before ").unwrap();
    session.digest_key(key).unwrap();
    session.digest_update(b" after").unwrap();
    let got = session.digest_final().unwrap();
    let mut all = b"before ".to_vec();
    all.extend_from_slice(&value);
    all.extend_from_slice(b" after");
    assert_eq!(got, verify::hash(MessageDigest::sha256(), &all));
    let fixed = import_secret(&session, KeyType::GENERIC_SECRET, &value, false);
    session.digest_init(&Mechanism::Sha256).unwrap();
    assert_rv(session.digest_key(fixed), RvError::KeyIndigestible);
}

#[test]
fn allowed_mechanisms_are_enforced() {
    let t = token();
    let session = t.user_session();
    let rsa = Rsa::generate(2048).unwrap();
    let private = session
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Modulus(rsa.n().to_vec()),
            Attribute::PublicExponent(rsa.e().to_vec()),
            Attribute::PrivateExponent(rsa.d().to_vec()),
            Attribute::Sign(true),
            Attribute::AllowedMechanisms(vec![MechanismType::SHA256_RSA_PKCS]),
        ])
        .unwrap();
    assert_eq!(
        session
            .get_attributes(private, &[AttributeType::AllowedMechanisms])
            .unwrap(),
        vec![Attribute::AllowedMechanisms(vec![
            MechanismType::SHA256_RSA_PKCS
        ])]
    );
    session
        .sign(&Mechanism::Sha256RsaPkcs, private, MSG)
        .unwrap();
    assert_rv(
        session.sign(&Mechanism::Sha1RsaPkcs, private, MSG),
        RvError::MechanismInvalid,
    );
    // Raw PKCS#1 only over a SHA-256 DigestInfo.
    assert_rv(
        session.sign(&Mechanism::RsaPkcs, private, MSG),
        RvError::MechanismInvalid,
    );
    let di = verify::digest_info(
        MessageDigest::sha256(),
        &verify::hash(MessageDigest::sha256(), MSG),
    );
    session.sign(&Mechanism::RsaPkcs, private, &di).unwrap();
    let aes = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![1; 16]),
            Attribute::Encrypt(true),
            Attribute::AllowedMechanisms(vec![MechanismType::AES_ECB]),
        ])
        .unwrap();
    session.encrypt(&Mechanism::AesEcb, aes, &[0; 16]).unwrap();
    assert_rv(
        session.encrypt(&Mechanism::AesCbc([0; 16]), aes, &[0; 16]),
        RvError::MechanismInvalid,
    );
}

// ----- simple derivations from secret keys ----------------------------------------

fn derive_value(
    session: &Session,
    mech: &Mechanism,
    base: ObjectHandle,
    template: &[Attribute],
) -> Vec<u8> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    t.extend_from_slice(template);
    let k = session.derive_key(mech, base, &t).unwrap();
    attribute_bytes(session, k, AttributeType::Value)
}

fn derivable(session: &Session, kt: KeyType, value: &[u8], extractable: bool) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(kt),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Derive(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(extractable),
        ])
        .unwrap()
}

/// `CKM_EXTRACT_KEY_FROM_KEY` by its definition: `len` bytes of the bits
/// from `bit` on, wrapping around the key.
fn extract_bits(key: &[u8], bit: usize, len: usize) -> Vec<u8> {
    let total = key.len() * 8;
    let mut out = vec![0u8; len];
    for i in 0..len * 8 {
        let src = (bit + i) % total;
        let on = (key[src / 8] >> (7 - src % 8)) & 1;
        out[i / 8] |= on << (7 - i % 8);
    }
    out
}

// The bases are 16 bytes and the results 14 or more: generic secrets
// shorter than 112 bits are refused (docs/security.md).
#[test]
fn simple_derivations_from_secret_keys() {
    use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
    use cryptoki::mechanism::misc::{ExtractParams, KeyDerivationStringData};
    let t = token();
    let session = t.user_session();
    // v2.40's example key, 0x329F84A9, four times over: its bits read the
    // same as the example's, which wrap around the 4-byte key.
    let av = [0x32, 0x9f, 0x84, 0xa9].repeat(4);
    let a = derivable(&session, KeyType::GENERIC_SECRET, &av, true);
    let bv: Vec<u8> = (100..114u8).collect();
    let b = derivable(&session, KeyType::GENERIC_SECRET, &bv, true);
    let cat = |x: &[u8], y: &[u8]| [x, y].concat();
    assert_eq!(
        derive_value(&session, &Mechanism::ConcatenateBaseAndKey(b), a, &[]),
        cat(&av, &bv)
    );
    let data = [0xf0u8, 0x0f];
    let d = KeyDerivationStringData::new(&data);
    assert_eq!(
        derive_value(&session, &Mechanism::ConcatenateBaseAndData(d), a, &[]),
        cat(&av, &data)
    );
    assert_eq!(
        derive_value(&session, &Mechanism::ConcatenateDataAndBase(d), a, &[]),
        cat(&data, &av)
    );
    let long: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(0x11)).collect();
    let dl = KeyDerivationStringData::new(&long);
    assert_eq!(
        derive_value(&session, &Mechanism::XorBaseAndData(dl), a, &[]),
        av.iter().zip(&long).map(|(x, y)| x ^ y).collect::<Vec<_>>()
    );
    // v2.40's own example: 16 bits from bit 21 of 0x329F84A9 are 0x9526
    // (here the first two of 14 bytes).
    let extracted = derive_value(
        &session,
        &Mechanism::ExtractKeyFromKey(ExtractParams::new(21)),
        a,
        &[Attribute::ValueLen(14.into())],
    );
    assert_eq!(extracted[..2], [0x95, 0x26]);
    assert_eq!(extracted, extract_bits(&av, 21, 14));
    // Cut by CKA_VALUE_LEN (from an exportable base: allowed).
    assert_eq!(
        derive_value(
            &session,
            &Mechanism::ConcatenateBaseAndData(d),
            a,
            &[Attribute::ValueLen(14.into())]
        ),
        av[..14]
    );
    // AES-CBC encryption of data, as OpenSSL computes it (cryptoki has no
    // name for CKM_AES_ECB_ENCRYPT_DATA; it shares the code).
    let kv: Vec<u8> = (0..32u8).collect();
    let aes = derivable(&session, KeyType::AES, &kv, true);
    let data: Vec<u8> = (100..132u8).collect();
    let iv = [7u8; 16];
    let cbc = derive_value(
        &session,
        &Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new(iv, &data)),
        aes,
        &[Attribute::KeyType(KeyType::AES)],
    );
    assert_eq!(
        cbc,
        verify::aes_encrypt(
            openssl::symm::Cipher::aes_256_cbc(),
            &kv,
            Some(&iv),
            false,
            &data
        )
    );
    // A derivation that shows a non-exportable key's bits is refused
    // (tests/tests/attacks.rs has the attacks).
    let fixed = derivable(&session, KeyType::GENERIC_SECRET, &[9; 16], false);
    assert_rv(
        session.derive_key(
            &Mechanism::ConcatenateBaseAndData(d),
            fixed,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(false),
                Attribute::Extractable(true),
            ],
        ),
        RvError::KeyFunctionNotPermitted,
    );
}
