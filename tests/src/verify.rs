//! Independent checks with OpenSSL (the `openssl` crate): public keys rebuilt
//! from the standard attributes the token returns, signatures verified and
//! ciphertexts recomputed outside the module.

use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};

/// Reads one attribute's bytes with cryptoki, panicking with the attribute
/// name when the token does not return it.
pub fn attribute_bytes(session: &Session, object: ObjectHandle, type_: AttributeType) -> Vec<u8> {
    let attrs = session
        .get_attributes(object, &[type_])
        .unwrap_or_else(|e| panic!("C_GetAttributeValue({type_:?}): {e}"));
    let value = attrs.into_iter().next().unwrap_or_else(|| {
        panic!("C_GetAttributeValue({type_:?}): attribute not returned (unavailable)")
    });
    match value {
        Attribute::Modulus(v)
        | Attribute::PublicExponent(v)
        | Attribute::EcParams(v)
        | Attribute::EcPoint(v)
        | Attribute::Value(v)
        | Attribute::Id(v)
        | Attribute::Label(v)
        | Attribute::Application(v)
        | Attribute::ObjectId(v)
        | Attribute::Subject(v)
        | Attribute::Issuer(v)
        | Attribute::SerialNumber(v) => v,
        other => panic!("attribute {type_:?} is not a byte string: {other:?}"),
    }
}

/// The RSA public key of `public_key`, from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`.
pub fn rsa_public_key(session: &Session, public_key: ObjectHandle) -> PKey<Public> {
    let n = attribute_bytes(session, public_key, AttributeType::Modulus);
    let e = attribute_bytes(session, public_key, AttributeType::PublicExponent);
    let rsa = Rsa::from_public_components(
        BigNum::from_slice(&n).expect("modulus"),
        BigNum::from_slice(&e).expect("exponent"),
    )
    .expect("RSA public key from CKA_MODULUS/CKA_PUBLIC_EXPONENT");
    PKey::from_rsa(rsa).expect("PKey")
}

/// The curve named by a DER `CKA_EC_PARAMS` (a namedCurve OID).
pub fn curve_of_params(params: &[u8]) -> Nid {
    match params {
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07] => Nid::X9_62_PRIME256V1,
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22] => Nid::SECP384R1,
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23] => Nid::SECP521R1,
        other => panic!("CKA_EC_PARAMS is not a P-256/384/521 namedCurve OID: {other:02x?}"),
    }
}

/// DER `CKA_EC_PARAMS` for a curve.
pub fn params_of_curve(nid: Nid) -> Vec<u8> {
    match nid {
        Nid::X9_62_PRIME256V1 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        Nid::SECP384R1 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        Nid::SECP521R1 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        other => panic!("no params for {other:?}"),
    }
}

/// The uncompressed point inside a DER OCTET STRING (`CKA_EC_POINT`).
pub fn unwrap_ec_point(der: &[u8]) -> Vec<u8> {
    let (tag, rest) = der.split_first().expect("CKA_EC_POINT is empty");
    assert_eq!(
        *tag, 0x04,
        "CKA_EC_POINT is not a DER OCTET STRING: {der:02x?}"
    );
    let (len, body) = match rest {
        [l, body @ ..] if *l < 0x80 => (*l as usize, body),
        [0x81, l, body @ ..] => (*l as usize, body),
        _ => panic!("CKA_EC_POINT has an unexpected DER length: {der:02x?}"),
    };
    assert_eq!(
        body.len(),
        len,
        "CKA_EC_POINT DER length does not match: {der:02x?}"
    );
    assert_eq!(
        body.first(),
        Some(&0x04),
        "CKA_EC_POINT is not an uncompressed point"
    );
    body.to_vec()
}

/// The EC public key of `public_key`, from `CKA_EC_PARAMS` and DER `CKA_EC_POINT`.
pub fn ec_public_key(session: &Session, public_key: ObjectHandle) -> PKey<Public> {
    let params = attribute_bytes(session, public_key, AttributeType::EcParams);
    let point_der = attribute_bytes(session, public_key, AttributeType::EcPoint);
    let group = EcGroup::from_curve_name(curve_of_params(&params)).expect("group");
    let mut ctx = openssl::bn::BigNumContext::new().expect("bn ctx");
    let point = EcPoint::from_bytes(&group, &unwrap_ec_point(&point_der), &mut ctx)
        .expect("CKA_EC_POINT is a point on the curve");
    let key = EcKey::from_public_key(&group, &point).expect("EC public key");
    key.check_key().expect("EC public key is valid");
    PKey::from_ec_key(key).expect("PKey")
}

/// Verifies an RSA PKCS#1 v1.5 signature over `data` hashed with `md`.
pub fn rsa_pkcs1_verifies(key: &PKey<Public>, md: MessageDigest, data: &[u8], sig: &[u8]) -> bool {
    let mut v = Verifier::new(md, key).expect("verifier");
    v.set_rsa_padding(Padding::PKCS1).expect("padding");
    v.verify_oneshot(sig, data).unwrap_or(false)
}

/// Verifies an RSA-PSS signature over `data` hashed with `md` (MGF1 with the
/// same hash, salt of `salt_len` bytes).
pub fn rsa_pss_verifies(
    key: &PKey<Public>,
    md: MessageDigest,
    salt_len: i32,
    data: &[u8],
    sig: &[u8],
) -> bool {
    let mut v = Verifier::new(md, key).expect("verifier");
    v.set_rsa_padding(Padding::PKCS1_PSS).expect("padding");
    v.set_rsa_mgf1_md(md).expect("mgf1");
    v.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt_len))
        .expect("salt");
    v.verify_oneshot(sig, data).unwrap_or(false)
}

/// Verifies an RSA-PSS signature over an already computed `digest`.
pub fn rsa_pss_digest_verifies(
    key: &PKey<Public>,
    md: MessageDigest,
    salt_len: i32,
    digest: &[u8],
    sig: &[u8],
) -> bool {
    let mut ctx = PkeyCtx::new(key).expect("ctx");
    ctx.verify_init().expect("verify init");
    ctx.set_rsa_padding(Padding::PKCS1_PSS).expect("padding");
    ctx.set_signature_md(openssl::md::Md::from_nid(md.type_()).expect("md"))
        .expect("signature md");
    ctx.set_rsa_mgf1_md(openssl::md::Md::from_nid(md.type_()).expect("md"))
        .expect("mgf1");
    ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt_len))
        .expect("salt");
    ctx.verify(digest, sig).unwrap_or(false)
}

/// The input block of a raw `CKM_RSA_PKCS` signature: the public operation
/// with PKCS#1 type-1 padding removed (for a hash-then-sign check this is a
/// DigestInfo).
pub fn rsa_pkcs1_recover(key: &PKey<Public>, sig: &[u8]) -> Option<Vec<u8>> {
    let rsa = key.rsa().expect("RSA key");
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa.public_decrypt(sig, &mut out, Padding::PKCS1).ok()?;
    out.truncate(n);
    Some(out)
}

/// `x^e mod n` without padding (checks `CKM_RSA_X_509`).
pub fn rsa_raw_public(key: &PKey<Public>, sig: &[u8]) -> Vec<u8> {
    let rsa = key.rsa().expect("RSA key");
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa
        .public_decrypt(sig, &mut out, Padding::NONE)
        .expect("raw RSA public operation");
    out.truncate(n);
    out
}

/// The DER DigestInfo of `digest` for `md` (input of `CKM_RSA_PKCS` hash-then-sign).
pub fn digest_info(md: MessageDigest, digest: &[u8]) -> Vec<u8> {
    let prefix: &[u8] = match md.type_() {
        Nid::SHA1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        Nid::SHA224 => &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
        Nid::SHA256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        Nid::SHA384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        Nid::SHA512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        other => panic!("no DigestInfo prefix for {other:?}"),
    };
    let mut out = prefix.to_vec();
    out.extend_from_slice(digest);
    out
}

/// Verifies a PKCS#11 ECDSA signature (`r || s`, each the size of the
/// curve order) over `data` hashed with `md`, or over `data` itself as the
/// hash when `md` is `None` (`CKM_ECDSA`).
pub fn ecdsa_verifies(
    key: &PKey<Public>,
    md: Option<MessageDigest>,
    data: &[u8],
    sig: &[u8],
) -> bool {
    let ec = key.ec_key().expect("EC key");
    let field_bytes = (ec.group().degree() as usize).div_ceil(8);
    if sig.len() != 2 * field_bytes {
        return false;
    }
    let (r, s) = sig.split_at(field_bytes);
    let Ok(sig) = EcdsaSig::from_private_components(
        BigNum::from_slice(r).expect("r"),
        BigNum::from_slice(s).expect("s"),
    ) else {
        return false;
    };
    let digest = match md {
        Some(md) => openssl::hash::hash(md, data).expect("hash").to_vec(),
        None => data.to_vec(),
    };
    sig.verify(&digest, &ec).unwrap_or(false)
}

/// `md(data)` computed by OpenSSL.
pub fn hash(md: MessageDigest, data: &[u8]) -> Vec<u8> {
    openssl::hash::hash(md, data).expect("hash").to_vec()
}

/// HMAC-`md`(key, data) computed by OpenSSL.
pub fn hmac(md: MessageDigest, key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = PKey::hmac(key).expect("hmac key");
    let mut signer = openssl::sign::Signer::new(md, &key).expect("signer");
    signer.sign_oneshot_to_vec(data).expect("hmac")
}

/// AES encryption with OpenSSL, padding on or off.
pub fn aes_encrypt(
    cipher: openssl::symm::Cipher,
    key: &[u8],
    iv: Option<&[u8]>,
    pad: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut c = openssl::symm::Crypter::new(cipher, openssl::symm::Mode::Encrypt, key, iv)
        .expect("crypter");
    c.pad(pad);
    let mut out = vec![0u8; data.len() + cipher.block_size()];
    let mut n = c.update(data, &mut out).expect("update");
    n += c.finalize(&mut out[n..]).expect("finalize");
    out.truncate(n);
    out
}

/// AES-GCM encryption with OpenSSL: `ciphertext || tag` as PKCS#11 returns it.
pub fn aes_gcm_encrypt(key: &[u8], iv: &[u8], aad: &[u8], tag_len: usize, data: &[u8]) -> Vec<u8> {
    let cipher = match key.len() {
        16 => openssl::symm::Cipher::aes_128_gcm(),
        24 => openssl::symm::Cipher::aes_192_gcm(),
        32 => openssl::symm::Cipher::aes_256_gcm(),
        n => panic!("no AES-GCM for a {n}-byte key"),
    };
    let mut tag = vec![0u8; tag_len];
    let mut out =
        openssl::symm::encrypt_aead(cipher, key, Some(iv), aad, data, &mut tag).expect("gcm");
    out.extend_from_slice(&tag);
    out
}
