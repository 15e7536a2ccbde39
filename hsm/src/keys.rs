//! Key material: import (validation and normalisation of `C_CreateObject`
//! templates), generation, and the parsed OpenSSL form used by operations.

use std::collections::BTreeMap;

use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckk, ckm, cko, ckr, Rv};
use hsmlink_core::wire::Attribute;
use openssl::bn::{BigNum, BigNumContext, BigNumRef};
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Rsa, RsaPrivateKeyBuilder};
use zeroize::Zeroizing;

use crate::object::{add_generated, set_ulong, Attrs};

/// A named curve the token supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
    Secp256k1,
}

impl Curve {
    pub const ALL: [Curve; 4] = [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1];

    /// The curve of an OpenSSL group.
    pub fn from_nid(nid: Nid) -> Option<Curve> {
        Curve::ALL.into_iter().find(|c| c.nid() == nid)
    }

    /// DER encoding of the curve's OID (the `CKA_EC_PARAMS` value).
    pub const fn oid_der(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
            Curve::Secp256k1 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
        }
    }

    pub const fn bits(self) -> u32 {
        match self {
            Curve::P256 | Curve::Secp256k1 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// Bytes of a scalar or coordinate.
    pub const fn bytes(self) -> usize {
        (self.bits() as usize).div_ceil(8)
    }

    fn nid(self) -> Nid {
        match self {
            Curve::P256 => Nid::X9_62_PRIME256V1,
            Curve::P384 => Nid::SECP384R1,
            Curve::P521 => Nid::SECP521R1,
            Curve::Secp256k1 => Nid::SECP256K1,
        }
    }

    pub fn group(self) -> Result<EcGroup, Rv> {
        EcGroup::from_curve_name(self.nid()).map_err(|_| ckr::GENERAL_ERROR)
    }

    /// The curve named by a `CKA_EC_PARAMS` value: a DER OID, or a DER
    /// PrintableString with the curve's OpenSSL/SEC name.
    pub fn from_params(p: &[u8]) -> Result<Curve, Rv> {
        for c in Curve::ALL {
            if p == c.oid_der() {
                return Ok(c);
            }
        }
        if let Some(name) = der_content(p, 0x13) {
            return match name {
                b"prime256v1" | b"secp256r1" | b"P-256" => Ok(Curve::P256),
                b"secp384r1" | b"P-384" => Ok(Curve::P384),
                b"secp521r1" | b"P-521" => Ok(Curve::P521),
                b"secp256k1" => Ok(Curve::Secp256k1),
                _ => Err(ckr::CURVE_NOT_SUPPORTED),
            };
        }
        match der_content(p, 0x06) {
            // A well-formed OID of a curve we do not have.
            Some(_) => Err(ckr::CURVE_NOT_SUPPORTED),
            None => Err(ckr::DOMAIN_PARAMS_INVALID),
        }
    }
}

/// An Edwards curve (`CKK_EC_EDWARDS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdCurve {
    Ed25519,
    Ed448,
}

impl EdCurve {
    /// DER encoding of the curve's OID (RFC 8410).
    pub const fn oid_der(self) -> &'static [u8] {
        match self {
            EdCurve::Ed25519 => &[0x06, 0x03, 0x2b, 0x65, 0x70],
            EdCurve::Ed448 => &[0x06, 0x03, 0x2b, 0x65, 0x71],
        }
    }

    /// Field size in bits, as `KeyInfo` and the mechanism table report it.
    pub const fn bits(self) -> u32 {
        match self {
            EdCurve::Ed25519 => 255,
            EdCurve::Ed448 => 448,
        }
    }

    /// Bytes of a public or private key.
    pub const fn key_len(self) -> usize {
        match self {
            EdCurve::Ed25519 => 32,
            EdCurve::Ed448 => 57,
        }
    }

    pub fn id(self) -> openssl::pkey::Id {
        match self {
            EdCurve::Ed25519 => openssl::pkey::Id::ED25519,
            EdCurve::Ed448 => openssl::pkey::Id::ED448,
        }
    }

    /// The curve named by a `CKA_EC_PARAMS` value: the DER OID, or a DER
    /// PrintableString "edwards25519" / "edwards448" (PKCS#11 3.0 §2.3.5).
    pub fn from_params(p: &[u8]) -> Result<EdCurve, Rv> {
        for c in [EdCurve::Ed25519, EdCurve::Ed448] {
            if p == c.oid_der() {
                return Ok(c);
            }
        }
        if let Some(name) = der_content(p, 0x13) {
            return match name {
                b"edwards25519" | b"ed25519" | b"Ed25519" => Ok(EdCurve::Ed25519),
                b"edwards448" | b"ed448" | b"Ed448" => Ok(EdCurve::Ed448),
                _ => Err(ckr::CURVE_NOT_SUPPORTED),
            };
        }
        match der_content(p, 0x06) {
            Some(_) => Err(ckr::CURVE_NOT_SUPPORTED),
            None => Err(ckr::DOMAIN_PARAMS_INVALID),
        }
    }
}

/// The content of a DER TLV with tag `tag` that spans all of `der`.
pub fn der_content(der: &[u8], tag: u8) -> Option<&[u8]> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        let (lb, rest) = rest.split_at(n);
        (lb.iter().fold(0usize, |a, b| (a << 8) | *b as usize), rest)
    };
    if rest.len() == len {
        Some(rest)
    } else {
        None
    }
}

/// DER OCTET STRING around `content`.
pub fn der_octet_string(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// Parsed key material, ready for operations.
pub enum KeyMaterial {
    RsaPrivate {
        rsa: Rsa<Private>,
        pkey: PKey<Private>,
        bits: u32,
    },
    RsaPublic {
        rsa: Rsa<Public>,
        pkey: PKey<Public>,
        bits: u32,
    },
    EcPrivate {
        key: EcKey<Private>,
        curve: Curve,
    },
    EcPublic {
        key: EcKey<Public>,
        curve: Curve,
    },
    EdPrivate {
        pkey: PKey<Private>,
        curve: EdCurve,
    },
    EdPublic {
        pkey: PKey<Public>,
        curve: EdCurve,
    },
    Secret(Zeroizing<Vec<u8>>),
    /// Data objects and certificates.
    None,
}

impl KeyMaterial {
    /// Bits as `KeyInfo` reports them.
    pub fn bits(&self) -> u32 {
        match self {
            KeyMaterial::RsaPrivate { bits, .. } | KeyMaterial::RsaPublic { bits, .. } => *bits,
            KeyMaterial::EcPrivate { curve, .. } | KeyMaterial::EcPublic { curve, .. } => {
                curve.bits()
            }
            KeyMaterial::EdPrivate { curve, .. } | KeyMaterial::EdPublic { curve, .. } => {
                curve.bits()
            }
            KeyMaterial::Secret(v) => u32::try_from(v.len() * 8).unwrap_or(u32::MAX),
            KeyMaterial::None => 0,
        }
    }
}

fn bn(v: &[u8]) -> Result<BigNum, Rv> {
    BigNum::from_slice(v).map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)
}

fn need(a: &Attrs, ty: u64) -> Result<&[u8], Rv> {
    a.get(&ty)
        .map(Vec::as_slice)
        .ok_or(ckr::TEMPLATE_INCOMPLETE)
}

fn class_and_type(a: &Attrs) -> (Option<u64>, Option<u64>) {
    let g = |ty| a.get(&ty).and_then(|v| attr::read_ulong(v).ok());
    (g(cka::CLASS), g(cka::KEY_TYPE))
}

/// Parse the material of a stored object.
pub fn material(a: &Attrs) -> Result<KeyMaterial, Rv> {
    let (class, kt) = class_and_type(a);
    let bad = |_| ckr::GENERAL_ERROR;
    match (class, kt) {
        (Some(cko::PUBLIC_KEY), Some(ckk::RSA)) => {
            let rsa = Rsa::from_public_components(
                bn(need(a, cka::MODULUS)?)?,
                bn(need(a, cka::PUBLIC_EXPONENT)?)?,
            )
            .map_err(bad)?;
            let bits = rsa.n().num_bits() as u32;
            let pkey = PKey::from_rsa(rsa.clone()).map_err(bad)?;
            Ok(KeyMaterial::RsaPublic { rsa, pkey, bits })
        }
        (Some(cko::PRIVATE_KEY), Some(ckk::RSA)) => {
            let rsa = rsa_private(a)?;
            let bits = rsa.n().num_bits() as u32;
            let pkey = PKey::from_rsa(rsa.clone()).map_err(bad)?;
            Ok(KeyMaterial::RsaPrivate { rsa, pkey, bits })
        }
        (Some(cko::PUBLIC_KEY), Some(ckk::EC)) => {
            let curve = Curve::from_params(need(a, cka::EC_PARAMS)?)?;
            let group = curve.group()?;
            let raw = ec_point_raw(need(a, cka::EC_POINT)?, curve)?;
            let mut ctx = BigNumContext::new().map_err(bad)?;
            let p = EcPoint::from_bytes(&group, &raw, &mut ctx)
                .map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)?;
            let key = EcKey::from_public_key(&group, &p).map_err(bad)?;
            Ok(KeyMaterial::EcPublic { key, curve })
        }
        (Some(cko::PRIVATE_KEY), Some(ckk::EC)) => {
            let curve = Curve::from_params(need(a, cka::EC_PARAMS)?)?;
            let key = ec_private(curve, need(a, cka::VALUE)?)?;
            Ok(KeyMaterial::EcPrivate { key, curve })
        }
        (Some(cko::PUBLIC_KEY), Some(ckk::EC_EDWARDS)) => {
            let curve = EdCurve::from_params(need(a, cka::EC_PARAMS)?)?;
            let raw = ed_point_raw(need(a, cka::EC_POINT)?, curve)?;
            let pkey = PKey::public_key_from_raw_bytes(&raw, curve.id())
                .map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)?;
            Ok(KeyMaterial::EdPublic { pkey, curve })
        }
        (Some(cko::PRIVATE_KEY), Some(ckk::EC_EDWARDS)) => {
            let curve = EdCurve::from_params(need(a, cka::EC_PARAMS)?)?;
            let pkey = ed_private(curve, need(a, cka::VALUE)?)?;
            Ok(KeyMaterial::EdPrivate { pkey, curve })
        }
        (Some(cko::SECRET_KEY), Some(_)) => Ok(KeyMaterial::Secret(Zeroizing::new(
            need(a, cka::VALUE)?.to_vec(),
        ))),
        _ => Ok(KeyMaterial::None),
    }
}

fn rsa_private(a: &Attrs) -> Result<Rsa<Private>, Rv> {
    let n = bn(need(a, cka::MODULUS)?)?;
    let e = bn(need(a, cka::PUBLIC_EXPONENT)?)?;
    let d = bn(need(a, cka::PRIVATE_EXPONENT)?)?;
    let crt = [
        cka::PRIME_1,
        cka::PRIME_2,
        cka::EXPONENT_1,
        cka::EXPONENT_2,
        cka::COEFFICIENT,
    ];
    let given = crt.iter().filter(|t| a.contains_key(t)).count();
    let bad = |_| ckr::ATTRIBUTE_VALUE_INVALID;
    if given == crt.len() {
        let v = |ty| bn(need(a, ty)?);
        Rsa::from_private_components(
            n,
            e,
            d,
            v(cka::PRIME_1)?,
            v(cka::PRIME_2)?,
            v(cka::EXPONENT_1)?,
            v(cka::EXPONENT_2)?,
            v(cka::COEFFICIENT)?,
        )
        .map_err(bad)
    } else if given == 0 {
        RsaPrivateKeyBuilder::new(n, e, d)
            .map_err(bad)
            .map(|b| b.build())
    } else {
        Err(ckr::TEMPLATE_INCOMPLETE)
    }
}

fn ec_private(curve: Curve, value: &[u8]) -> Result<EcKey<Private>, Rv> {
    let group = curve.group()?;
    let d = bn(value)?;
    let mut ctx = BigNumContext::new().map_err(|_| ckr::GENERAL_ERROR)?;
    let mut order = BigNum::new().map_err(|_| ckr::GENERAL_ERROR)?;
    group
        .order(&mut order, &mut ctx)
        .map_err(|_| ckr::GENERAL_ERROR)?;
    if d.num_bits() == 0 || d >= order {
        return Err(ckr::ATTRIBUTE_VALUE_INVALID);
    }
    let mut p = EcPoint::new(&group).map_err(|_| ckr::GENERAL_ERROR)?;
    p.mul_generator2(&group, &d, &mut ctx)
        .map_err(|_| ckr::GENERAL_ERROR)?;
    EcKey::from_private_components(&group, &d, &p).map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)
}

/// The raw point of a `CKA_EC_POINT` value: DER OCTET STRING or raw.
fn ec_point_raw(v: &[u8], curve: Curve) -> Result<Vec<u8>, Rv> {
    let plausible = |p: &[u8]| match p.first() {
        Some(0x04) => p.len() == 1 + 2 * curve.bytes(),
        Some(0x02 | 0x03) => p.len() == 1 + curve.bytes(),
        _ => false,
    };
    match der_content(v, 0x04) {
        Some(inner) if plausible(inner) => Ok(inner.to_vec()),
        _ if plausible(v) => Ok(v.to_vec()),
        _ => Err(ckr::ATTRIBUTE_VALUE_INVALID),
    }
}

fn ed_private(curve: EdCurve, value: &[u8]) -> Result<PKey<Private>, Rv> {
    if value.len() != curve.key_len() {
        return Err(ckr::ATTRIBUTE_VALUE_INVALID);
    }
    PKey::private_key_from_raw_bytes(value, curve.id()).map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)
}

/// The raw public key of an Edwards `CKA_EC_POINT`: DER OCTET STRING or raw.
fn ed_point_raw(v: &[u8], curve: EdCurve) -> Result<Vec<u8>, Rv> {
    match der_content(v, 0x04) {
        Some(inner) if inner.len() == curve.key_len() => Ok(inner.to_vec()),
        _ if v.len() == curve.key_len() => Ok(v.to_vec()),
        _ => Err(ckr::ATTRIBUTE_VALUE_INVALID),
    }
}

/// The raw bytes of another party's public key given to `CKM_ECDH1_DERIVE`
/// (raw point, or the point in a DER OCTET STRING), as an OpenSSL key.
pub fn ec_peer_key(curve: Curve, public_data: &[u8]) -> Result<PKey<Public>, Rv> {
    let raw = ec_point_raw(public_data, curve).map_err(|_| ckr::MECHANISM_PARAM_INVALID)?;
    let group = curve.group()?;
    let mut ctx = BigNumContext::new().map_err(|_| ckr::GENERAL_ERROR)?;
    let p =
        EcPoint::from_bytes(&group, &raw, &mut ctx).map_err(|_| ckr::MECHANISM_PARAM_INVALID)?;
    let key = EcKey::from_public_key(&group, &p).map_err(|_| ckr::MECHANISM_PARAM_INVALID)?;
    PKey::from_ec_key(key).map_err(|_| ckr::GENERAL_ERROR)
}

/// Material attributes (type, canonical value) of a key.
pub type MaterialAttrs = Vec<(u64, Zeroizing<Vec<u8>>)>;

/// A private key as PKCS#8 `PrivateKeyInfo` DER (for wrapping).
pub fn private_to_pkcs8(m: &KeyMaterial) -> Result<Zeroizing<Vec<u8>>, Rv> {
    let e = |_| ckr::GENERAL_ERROR;
    let der = match m {
        KeyMaterial::RsaPrivate { pkey, .. } => pkey.private_key_to_pkcs8().map_err(e)?,
        KeyMaterial::EcPrivate { key, .. } => PKey::from_ec_key(key.clone())
            .map_err(e)?
            .private_key_to_pkcs8()
            .map_err(e)?,
        KeyMaterial::EdPrivate { pkey, .. } => pkey.private_key_to_pkcs8().map_err(e)?,
        _ => return Err(ckr::KEY_NOT_WRAPPABLE),
    };
    Ok(Zeroizing::new(der))
}

/// The key type and material attributes (canonical, as a `C_CreateObject`
/// template would give them) of a PKCS#8 private key (for unwrapping).
pub fn private_from_pkcs8(der: &[u8]) -> Result<(u64, MaterialAttrs), Rv> {
    let bad = |_| ckr::WRAPPED_KEY_INVALID;
    let pkey = PKey::private_key_from_pkcs8(der).map_err(bad)?;
    let z = |v: Vec<u8>| Zeroizing::new(v);
    match pkey.id() {
        openssl::pkey::Id::RSA => {
            let rsa = pkey.rsa().map_err(bad)?;
            let mut out = vec![
                (cka::MODULUS, z(be(rsa.n()))),
                (cka::PUBLIC_EXPONENT, z(be(rsa.e()))),
                (cka::PRIVATE_EXPONENT, z(be(rsa.d()))),
            ];
            let parts = [
                (cka::PRIME_1, rsa.p()),
                (cka::PRIME_2, rsa.q()),
                (cka::EXPONENT_1, rsa.dmp1()),
                (cka::EXPONENT_2, rsa.dmq1()),
                (cka::COEFFICIENT, rsa.iqmp()),
            ];
            for (ty, v) in parts {
                if let Some(v) = v {
                    out.push((ty, z(be(v))));
                }
            }
            Ok((ckk::RSA, out))
        }
        openssl::pkey::Id::EC => {
            let ec = pkey.ec_key().map_err(bad)?;
            let curve = ec
                .group()
                .curve_name()
                .and_then(Curve::from_nid)
                .ok_or(ckr::CURVE_NOT_SUPPORTED)?;
            Ok((
                ckk::EC,
                vec![
                    (cka::EC_PARAMS, z(curve.oid_der().to_vec())),
                    (cka::VALUE, z(padded(ec.private_key(), curve.bytes())?)),
                ],
            ))
        }
        id @ (openssl::pkey::Id::ED25519 | openssl::pkey::Id::ED448) => {
            let curve = if id == openssl::pkey::Id::ED25519 {
                EdCurve::Ed25519
            } else {
                EdCurve::Ed448
            };
            let raw = pkey.raw_private_key().map_err(bad)?;
            Ok((
                ckk::EC_EDWARDS,
                vec![
                    (cka::EC_PARAMS, z(curve.oid_der().to_vec())),
                    (cka::VALUE, z(raw)),
                ],
            ))
        }
        _ => Err(ckr::WRAPPED_KEY_INVALID),
    }
}

fn uncompressed(key_group: &EcGroup, p: &openssl::ec::EcPointRef) -> Result<Vec<u8>, Rv> {
    let mut ctx = BigNumContext::new().map_err(|_| ckr::GENERAL_ERROR)?;
    p.to_bytes(key_group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .map_err(|_| ckr::GENERAL_ERROR)
}

fn be(b: &BigNumRef) -> Vec<u8> {
    b.to_vec()
}

fn padded(b: &BigNumRef, len: usize) -> Result<Vec<u8>, Rv> {
    b.to_vec_padded(len as i32).map_err(|_| ckr::GENERAL_ERROR)
}

/// Validate and normalise the material of an imported key (`C_CreateObject`).
pub fn import(class: u64, kt: u64, t: &BTreeMap<u64, &[u8]>, a: &mut Attrs) -> Result<(), Rv> {
    match (class, kt) {
        (cko::PUBLIC_KEY, ckk::RSA) => {
            let n = bn(t.get(&cka::MODULUS).ok_or(ckr::TEMPLATE_INCOMPLETE)?)?;
            let e = bn(t
                .get(&cka::PUBLIC_EXPONENT)
                .ok_or(ckr::TEMPLATE_INCOMPLETE)?)?;
            check_rsa_public(&n, &e)?;
            rsa_public_attrs(a, &n, &e, t)
        }
        (cko::PRIVATE_KEY, ckk::RSA) => {
            if !t.contains_key(&cka::MODULUS)
                || !t.contains_key(&cka::PRIVATE_EXPONENT)
                || !t.contains_key(&cka::PUBLIC_EXPONENT)
            {
                return Err(ckr::TEMPLATE_INCOMPLETE);
            }
            // Bound every part before OpenSSL works on it (check_key tests
            // primality: a huge "prime" would stall the connection).
            let n = bn(t.get(&cka::MODULUS).copied().unwrap_or_default())?;
            let e = bn(t.get(&cka::PUBLIC_EXPONENT).copied().unwrap_or_default())?;
            check_rsa_public(&n, &e)?;
            for ty in [
                cka::PRIVATE_EXPONENT,
                cka::PRIME_1,
                cka::PRIME_2,
                cka::EXPONENT_1,
                cka::EXPONENT_2,
                cka::COEFFICIENT,
            ] {
                if let Some(v) = t.get(&ty) {
                    if bn(v)?.num_bytes() > n.num_bytes() {
                        return Err(ckr::ATTRIBUTE_VALUE_INVALID);
                    }
                }
            }
            let rsa = rsa_private(a)?;
            if rsa.p().is_some() && !rsa.check_key().unwrap_or(false) {
                return Err(ckr::ATTRIBUTE_VALUE_INVALID);
            }
            rsa_private_attrs(a, &rsa, t)
        }
        (cko::PUBLIC_KEY, ckk::EC) => {
            let params = t.get(&cka::EC_PARAMS).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let point = t.get(&cka::EC_POINT).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let curve = Curve::from_params(params).map_err(|e| {
                if e == ckr::DOMAIN_PARAMS_INVALID {
                    ckr::ATTRIBUTE_VALUE_INVALID
                } else {
                    e
                }
            })?;
            let group = curve.group()?;
            let raw = ec_point_raw(point, curve)?;
            let mut ctx = BigNumContext::new().map_err(|_| ckr::GENERAL_ERROR)?;
            let p = EcPoint::from_bytes(&group, &raw, &mut ctx)
                .map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)?;
            a.insert(cka::EC_PARAMS, curve.oid_der().to_vec());
            a.insert(cka::EC_POINT, der_octet_string(&uncompressed(&group, &p)?));
            Ok(())
        }
        (cko::PRIVATE_KEY, ckk::EC) => {
            let params = t.get(&cka::EC_PARAMS).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let value = t.get(&cka::VALUE).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let curve = Curve::from_params(params)?;
            let key = ec_private(curve, value)?;
            a.insert(cka::EC_PARAMS, curve.oid_der().to_vec());
            a.insert(cka::VALUE, padded(key.private_key(), curve.bytes())?);
            Ok(())
        }
        (cko::PUBLIC_KEY, ckk::EC_EDWARDS) => {
            let params = t.get(&cka::EC_PARAMS).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let point = t.get(&cka::EC_POINT).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let curve = EdCurve::from_params(params).map_err(|e| {
                if e == ckr::DOMAIN_PARAMS_INVALID {
                    ckr::ATTRIBUTE_VALUE_INVALID
                } else {
                    e
                }
            })?;
            let raw = ed_point_raw(point, curve)?;
            PKey::public_key_from_raw_bytes(&raw, curve.id())
                .map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)?;
            // CKA_EC_PARAMS is kept as given (OID or name).
            a.insert(cka::EC_POINT, der_octet_string(&raw));
            Ok(())
        }
        (cko::PRIVATE_KEY, ckk::EC_EDWARDS) => {
            let params = t.get(&cka::EC_PARAMS).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let value = t.get(&cka::VALUE).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let curve = EdCurve::from_params(params)?;
            ed_private(curve, value)?;
            Ok(())
        }
        (cko::SECRET_KEY, _) => {
            let v = t.get(&cka::VALUE).ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            check_secret_len(kt, v.len())?;
            // v2.40 §4.7.2 (footnote 2): not given to C_CreateObject.
            if t.contains_key(&cka::VALUE_LEN) {
                return Err(ckr::TEMPLATE_INCONSISTENT);
            }
            set_ulong(a, cka::VALUE_LEN, v.len() as u64);
            Ok(())
        }
        _ => Err(ckr::TEMPLATE_INCONSISTENT),
    }
}

/// Longest generic secret (bytes).
pub const MAX_SECRET: usize = 512;

/// Shortest generic secret or HMAC key (bytes): 112 bits, the least NIST
/// SP 800-131A and SP 800-107 allow for an HMAC key. A shorter key can be
/// tried exhaustively against its MACs.
pub const MIN_SECRET: usize = 14;

/// Whether a secret key of type `kt` may be `len` bytes long, however it is
/// made (imported, generated, derived, unwrapped).
pub fn check_secret_len(kt: u64, len: usize) -> Result<(), Rv> {
    let ok = match kt {
        ckk::AES => matches!(len, 16 | 24 | 32),
        _ => (MIN_SECRET..=MAX_SECRET).contains(&len),
    };
    if ok {
        Ok(())
    } else {
        Err(ckr::ATTRIBUTE_VALUE_INVALID)
    }
}

fn check_rsa_public(n: &BigNumRef, e: &BigNumRef) -> Result<(), Rv> {
    // Imported moduli up to 8192 bits; public exponents up to 64 bits (as
    // OpenSSL itself requires for large moduli).
    let bits = n.num_bits();
    if !(512..=8192).contains(&bits)
        || !n.is_bit_set(0)
        || !e.is_bit_set(0)
        || !(2..=64).contains(&e.num_bits())
    {
        return Err(ckr::ATTRIBUTE_VALUE_INVALID);
    }
    Ok(())
}

fn modulus_bits(a: &mut Attrs, n: &BigNumRef, t: &BTreeMap<u64, &[u8]>) -> Result<(), Rv> {
    let bits = n.num_bits() as u64;
    // v2.40 §4.8 (footnote 2): not given to C_CreateObject.
    if t.contains_key(&cka::MODULUS_BITS) {
        return Err(ckr::TEMPLATE_INCONSISTENT);
    }
    set_ulong(a, cka::MODULUS_BITS, bits);
    Ok(())
}

fn rsa_public_attrs(
    a: &mut Attrs,
    n: &BigNumRef,
    e: &BigNumRef,
    t: &BTreeMap<u64, &[u8]>,
) -> Result<(), Rv> {
    a.insert(cka::MODULUS, be(n));
    a.insert(cka::PUBLIC_EXPONENT, be(e));
    modulus_bits(a, n, t)
}

fn rsa_private_attrs(
    a: &mut Attrs,
    rsa: &Rsa<Private>,
    t: &BTreeMap<u64, &[u8]>,
) -> Result<(), Rv> {
    rsa_public_attrs(a, rsa.n(), rsa.e(), t)?;
    a.insert(cka::PRIVATE_EXPONENT, be(rsa.d()));
    let parts = [
        (cka::PRIME_1, rsa.p()),
        (cka::PRIME_2, rsa.q()),
        (cka::EXPONENT_1, rsa.dmp1()),
        (cka::EXPONENT_2, rsa.dmq1()),
        (cka::COEFFICIENT, rsa.iqmp()),
    ];
    for (ty, v) in parts {
        if let Some(v) = v {
            a.insert(ty, be(v));
        }
    }
    Ok(())
}

/// Generate a secret key's value for `GenerateKey`; `template` is the
/// application's template, `a` the attributes built from it.
pub fn generate_secret(mech: u64, a: &mut Attrs, template: &[Attribute<'_>]) -> Result<(), Rv> {
    let len = attr::find_ulong(template, cka::VALUE_LEN)?.ok_or(ckr::TEMPLATE_INCOMPLETE)?;
    let kt = a
        .get(&cka::KEY_TYPE)
        .and_then(|v| attr::read_ulong(v).ok())
        .unwrap_or(ckk::GENERIC_SECRET);
    let len = usize::try_from(len).map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)?;
    check_secret_len(kt, len)?;
    let _ = mech;
    let mut v = Zeroizing::new(vec![0u8; len]);
    openssl::rand::rand_bytes(&mut v).map_err(|_| ckr::GENERAL_ERROR)?;
    a.insert(cka::VALUE, v.to_vec());
    set_ulong(a, cka::VALUE_LEN, len as u64);
    Ok(())
}

/// Smallest and largest RSA modulus generated.
pub const RSA_MIN_BITS: u64 = 1024;
pub const RSA_MAX_BITS: u64 = 4096;

/// Generate a key pair into the attribute sets of the public and private key.
pub fn generate_pair(
    mech: u64,
    public: &mut Attrs,
    private: &mut Attrs,
    pub_t: &[Attribute<'_>],
    priv_t: &[Attribute<'_>],
) -> Result<(), Rv> {
    match mech {
        ckm::RSA_PKCS_KEY_PAIR_GEN => {
            let bits =
                attr::find_ulong(pub_t, cka::MODULUS_BITS)?.ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                return Err(ckr::KEY_SIZE_RANGE);
            }
            let e = match attr::find(pub_t, cka::PUBLIC_EXPONENT) {
                Some(e) => bn(e)?,
                None => BigNum::from_u32(65537).map_err(|_| ckr::GENERAL_ERROR)?,
            };
            if !e.is_bit_set(0) || e.num_bits() < 2 || e.num_bits() > 64 {
                return Err(ckr::ATTRIBUTE_VALUE_INVALID);
            }
            let rsa = Rsa::generate_with_e(bits as u32, &e).map_err(|_| ckr::GENERAL_ERROR)?;
            for (attrs, given) in [(&mut *public, pub_t), (&mut *private, priv_t)] {
                add_generated(attrs, given, cka::MODULUS, be(rsa.n()))?;
                add_generated(attrs, given, cka::PUBLIC_EXPONENT, be(rsa.e()))?;
                add_generated(
                    attrs,
                    given,
                    cka::MODULUS_BITS,
                    attr::ulong(rsa.n().num_bits() as u64).to_vec(),
                )?;
            }
            let empty = BTreeMap::new();
            rsa_private_attrs(private, &rsa, &empty)
        }
        ckm::EC_KEY_PAIR_GEN => {
            let params = attr::find(pub_t, cka::EC_PARAMS)
                .or_else(|| attr::find(priv_t, cka::EC_PARAMS))
                .ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            let curve = Curve::from_params(params)?;
            if let (Some(a), Some(b)) = (
                attr::find(pub_t, cka::EC_PARAMS),
                attr::find(priv_t, cka::EC_PARAMS),
            ) {
                if a != b {
                    return Err(ckr::TEMPLATE_INCONSISTENT);
                }
            }
            let group = curve.group()?;
            let key = EcKey::generate(&group).map_err(|_| ckr::GENERAL_ERROR)?;
            let point = der_octet_string(&uncompressed(&group, key.public_key())?);
            public.insert(cka::EC_PARAMS, curve.oid_der().to_vec());
            private.insert(cka::EC_PARAMS, curve.oid_der().to_vec());
            public.insert(cka::EC_POINT, point);
            private.insert(cka::VALUE, padded(key.private_key(), curve.bytes())?);
            Ok(())
        }
        ckm::EC_EDWARDS_KEY_PAIR_GEN => {
            let params = attr::find(pub_t, cka::EC_PARAMS)
                .or_else(|| attr::find(priv_t, cka::EC_PARAMS))
                .ok_or(ckr::TEMPLATE_INCOMPLETE)?;
            if let (Some(a), Some(b)) = (
                attr::find(pub_t, cka::EC_PARAMS),
                attr::find(priv_t, cka::EC_PARAMS),
            ) {
                if a != b {
                    return Err(ckr::TEMPLATE_INCONSISTENT);
                }
            }
            let curve = EdCurve::from_params(params)?;
            let e = |_| ckr::GENERAL_ERROR;
            let pkey = match curve {
                EdCurve::Ed25519 => PKey::generate_ed25519().map_err(e)?,
                EdCurve::Ed448 => PKey::generate_ed448().map_err(e)?,
            };
            let raw_pub = pkey.raw_public_key().map_err(e)?;
            let raw_priv = Zeroizing::new(pkey.raw_private_key().map_err(e)?);
            public.insert(cka::EC_PARAMS, params.to_vec());
            private.insert(cka::EC_PARAMS, params.to_vec());
            public.insert(cka::EC_POINT, der_octet_string(&raw_pub));
            private.insert(cka::VALUE, raw_priv.to_vec());
            Ok(())
        }
        _ => Err(ckr::MECHANISM_INVALID),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_by_oid_and_name() {
        assert_eq!(Curve::from_params(Curve::P384.oid_der()), Ok(Curve::P384));
        let mut name = vec![0x13, 10];
        name.extend(b"prime256v1");
        assert_eq!(Curve::from_params(&name), Ok(Curve::P256));
        assert_eq!(
            Curve::from_params(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a]),
            Ok(Curve::Secp256k1)
        );
        // secp224r1: a valid OID, not supported.
        assert_eq!(
            Curve::from_params(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21]),
            Err(ckr::CURVE_NOT_SUPPORTED)
        );
        let mut name = vec![0x13, 12];
        name.extend(b"edwards25519");
        assert_eq!(EdCurve::from_params(&name), Ok(EdCurve::Ed25519));
        assert_eq!(
            EdCurve::from_params(&[0x06, 0x03, 0x2b, 0x65, 0x71]),
            Ok(EdCurve::Ed448)
        );
        assert_eq!(
            Curve::from_params(&[1, 2, 3]),
            Err(ckr::DOMAIN_PARAMS_INVALID)
        );
        assert_eq!(Curve::from_params(&[]), Err(ckr::DOMAIN_PARAMS_INVALID));
    }

    #[test]
    fn der_helpers() {
        let long = vec![4u8; 133];
        let d = der_octet_string(&long);
        assert_eq!(&d[..3], &[0x04, 0x81, 133]);
        assert_eq!(der_content(&d, 0x04), Some(&long[..]));
        assert_eq!(der_content(&d[..10], 0x04), None);
        assert_eq!(der_content(&[0x04, 0x85], 0x04), None);
    }
}
