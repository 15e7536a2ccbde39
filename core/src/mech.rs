//! The mechanism table: what the token offers, with flags and key sizes, the
//! local hashing of hash-then-sign mechanisms, and output sizes computed
//! without a round trip.

use crate::ck::{ckf, ckg, ckk, ckm, ckr, Rv};
use crate::wire::{KeyInfo, MechParam, Mechanism, Op};

/// Hash functions the core computes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// Digest length in bytes.
    pub const fn size(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha224 => 28,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The digest mechanism (`CKM_SHA256`...).
    pub const fn mechanism(self) -> u64 {
        match self {
            Hash::Sha1 => ckm::SHA_1,
            Hash::Sha224 => ckm::SHA224,
            Hash::Sha256 => ckm::SHA256,
            Hash::Sha384 => ckm::SHA384,
            Hash::Sha512 => ckm::SHA512,
        }
    }

    /// The hash of a digest mechanism type.
    pub const fn from_mechanism(m: u64) -> Option<Hash> {
        match m {
            ckm::SHA_1 => Some(Hash::Sha1),
            ckm::SHA224 => Some(Hash::Sha224),
            ckm::SHA256 => Some(Hash::Sha256),
            ckm::SHA384 => Some(Hash::Sha384),
            ckm::SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// The MGF1 generator of the same hash.
    pub const fn mgf1(self) -> u64 {
        match self {
            Hash::Sha1 => ckg::MGF1_SHA1,
            Hash::Sha224 => ckg::MGF1_SHA224,
            Hash::Sha256 => ckg::MGF1_SHA256,
            Hash::Sha384 => ckg::MGF1_SHA384,
            Hash::Sha512 => ckg::MGF1_SHA512,
        }
    }

    /// DER prefix of the PKCS#1 v1.5 `DigestInfo` for this hash (RFC 8017 §9.2).
    pub const fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Hash::Sha224 => &[
                0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x04, 0x05, 0x00, 0x04, 0x1c,
            ],
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// Longest digest the core computes.
pub const MAX_DIGEST: usize = 64;
/// Longest `DigestInfo` (SHA-512).
pub const MAX_DIGEST_INFO: usize = 19 + 64;

/// A running hash.
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(h: Hash) -> Self {
        use sha2::Digest;
        match h {
            Hash::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Hash::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            Hash::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Hash::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Hash::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn hash(&self) -> Hash {
        match self {
            Hasher::Sha1(_) => Hash::Sha1,
            Hasher::Sha224(_) => Hash::Sha224,
            Hasher::Sha256(_) => Hash::Sha256,
            Hasher::Sha384(_) => Hash::Sha384,
            Hasher::Sha512(_) => Hash::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// Write the digest into `out` (at least [`MAX_DIGEST`] bytes is always
    /// enough) and return its length.
    pub fn finish(self, out: &mut [u8; MAX_DIGEST]) -> usize {
        use sha2::Digest;
        let n = self.hash().size();
        match self {
            Hasher::Sha1(h) => out[..n].copy_from_slice(&h.finalize()),
            Hasher::Sha224(h) => out[..n].copy_from_slice(&h.finalize()),
            Hasher::Sha256(h) => out[..n].copy_from_slice(&h.finalize()),
            Hasher::Sha384(h) => out[..n].copy_from_slice(&h.finalize()),
            Hasher::Sha512(h) => out[..n].copy_from_slice(&h.finalize()),
        }
        n
    }
}

/// How the module carries out a sign/verify mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignPlan {
    /// The mechanism goes to the HSM as it is, with the data.
    Direct,
    /// Hash locally, then send the digest with the raw mechanism `inner`;
    /// `digest_info` says the digest is wrapped in a PKCS#1 `DigestInfo`.
    Prehash {
        hash: Hash,
        inner: u64,
        digest_info: bool,
    },
}

/// One row of the mechanism table.
#[derive(Clone, Copy, Debug)]
pub struct MechInfo {
    pub ty: u64,
    /// Key sizes in bits (bytes for generic secrets and AES, as v2.40 says).
    pub min_key: u64,
    pub max_key: u64,
    pub flags: u64,
    /// The key type it works with (`None` for digests).
    pub key_type: Option<u64>,
}

const EC_FLAGS: u64 = ckf::EC_F_P | ckf::EC_NAMEDCURVE | ckf::EC_UNCOMPRESS;
// Everything but the digests runs in the HSM: `CKF_HW`.
const SV: u64 = ckf::HW | ckf::SIGN | ckf::VERIFY;
const ED: u64 = ckf::HW | ckf::ENCRYPT | ckf::DECRYPT;
const GEN: u64 = ckf::HW | ckf::GENERATE;
const GEN_PAIR: u64 = ckf::HW | ckf::GENERATE_KEY_PAIR;
const WRAP: u64 = ckf::HW | ckf::WRAP | ckf::UNWRAP;
const DERIVE: u64 = ckf::HW | ckf::DERIVE;

const fn row(ty: u64, min_key: u64, max_key: u64, flags: u64, key_type: Option<u64>) -> MechInfo {
    MechInfo {
        ty,
        min_key,
        max_key,
        flags,
        key_type,
    }
}

/// Every mechanism the token offers, as `C_GetMechanismList` reports it.
pub const MECHANISMS: &[MechInfo] = &[
    row(
        ckm::RSA_PKCS_KEY_PAIR_GEN,
        1024,
        4096,
        GEN_PAIR,
        Some(ckk::RSA),
    ),
    row(ckm::RSA_PKCS, 1024, 4096, SV | ED | WRAP, Some(ckk::RSA)),
    row(ckm::RSA_X_509, 1024, 4096, SV | ED, Some(ckk::RSA)),
    row(ckm::RSA_PKCS_OAEP, 1024, 4096, ED | WRAP, Some(ckk::RSA)),
    row(ckm::SHA1_RSA_PKCS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA224_RSA_PKCS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA256_RSA_PKCS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA384_RSA_PKCS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA512_RSA_PKCS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::RSA_PKCS_PSS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA1_RSA_PKCS_PSS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA224_RSA_PKCS_PSS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA256_RSA_PKCS_PSS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA384_RSA_PKCS_PSS, 1024, 4096, SV, Some(ckk::RSA)),
    row(ckm::SHA512_RSA_PKCS_PSS, 1024, 4096, SV, Some(ckk::RSA)),
    row(
        ckm::EC_KEY_PAIR_GEN,
        256,
        521,
        GEN_PAIR | EC_FLAGS,
        Some(ckk::EC),
    ),
    row(ckm::ECDSA, 256, 521, SV | EC_FLAGS, Some(ckk::EC)),
    row(ckm::ECDSA_SHA1, 256, 521, SV | EC_FLAGS, Some(ckk::EC)),
    row(ckm::ECDSA_SHA224, 256, 521, SV | EC_FLAGS, Some(ckk::EC)),
    row(ckm::ECDSA_SHA256, 256, 521, SV | EC_FLAGS, Some(ckk::EC)),
    row(ckm::ECDSA_SHA384, 256, 521, SV | EC_FLAGS, Some(ckk::EC)),
    row(ckm::ECDSA_SHA512, 256, 521, SV | EC_FLAGS, Some(ckk::EC)),
    row(
        ckm::ECDH1_DERIVE,
        256,
        521,
        DERIVE | EC_FLAGS,
        Some(ckk::EC),
    ),
    row(
        ckm::ECDH1_COFACTOR_DERIVE,
        256,
        521,
        DERIVE | EC_FLAGS,
        Some(ckk::EC),
    ),
    // Ed25519 and Ed448: sizes are the field sizes, 255 and 448 bits.
    row(
        ckm::EC_EDWARDS_KEY_PAIR_GEN,
        255,
        448,
        GEN_PAIR,
        Some(ckk::EC_EDWARDS),
    ),
    row(ckm::EDDSA, 255, 448, SV, Some(ckk::EC_EDWARDS)),
    // Derivation from secret keys (v2.40 §2.x "Miscellaneous simple key
    // derivation mechanisms"; sizes in bytes, as generic secrets).
    row(
        ckm::CONCATENATE_BASE_AND_KEY,
        1,
        512,
        DERIVE,
        Some(ckk::GENERIC_SECRET),
    ),
    row(
        ckm::CONCATENATE_BASE_AND_DATA,
        1,
        512,
        DERIVE,
        Some(ckk::GENERIC_SECRET),
    ),
    row(
        ckm::CONCATENATE_DATA_AND_BASE,
        1,
        512,
        DERIVE,
        Some(ckk::GENERIC_SECRET),
    ),
    row(
        ckm::XOR_BASE_AND_DATA,
        1,
        512,
        DERIVE,
        Some(ckk::GENERIC_SECRET),
    ),
    row(
        ckm::EXTRACT_KEY_FROM_KEY,
        1,
        512,
        DERIVE,
        Some(ckk::GENERIC_SECRET),
    ),
    row(ckm::AES_ECB_ENCRYPT_DATA, 16, 32, DERIVE, Some(ckk::AES)),
    row(ckm::AES_CBC_ENCRYPT_DATA, 16, 32, DERIVE, Some(ckk::AES)),
    row(ckm::AES_KEY_GEN, 16, 32, GEN, Some(ckk::AES)),
    row(ckm::AES_ECB, 16, 32, ED, Some(ckk::AES)),
    row(ckm::AES_CBC, 16, 32, ED, Some(ckk::AES)),
    row(ckm::AES_CBC_PAD, 16, 32, ED, Some(ckk::AES)),
    row(ckm::AES_CTR, 16, 32, ED, Some(ckk::AES)),
    row(ckm::AES_GCM, 16, 32, ED, Some(ckk::AES)),
    row(
        ckm::GENERIC_SECRET_KEY_GEN,
        1,
        512,
        GEN,
        Some(ckk::GENERIC_SECRET),
    ),
    row(ckm::AES_CMAC, 16, 32, SV, Some(ckk::AES)),
    row(ckm::AES_CMAC_GENERAL, 16, 32, SV, Some(ckk::AES)),
    row(ckm::AES_KEY_WRAP, 16, 32, WRAP, Some(ckk::AES)),
    row(ckm::AES_KEY_WRAP_PAD, 16, 32, WRAP, Some(ckk::AES)),
    // PKCS#11 3.0 names for generic secret generation with an HMAC key type.
    row(ckm::SHA_1_KEY_GEN, 1, 512, GEN, Some(ckk::SHA_1_HMAC)),
    row(ckm::SHA224_KEY_GEN, 1, 512, GEN, Some(ckk::SHA224_HMAC)),
    row(ckm::SHA256_KEY_GEN, 1, 512, GEN, Some(ckk::SHA256_HMAC)),
    row(ckm::SHA384_KEY_GEN, 1, 512, GEN, Some(ckk::SHA384_HMAC)),
    row(ckm::SHA512_KEY_GEN, 1, 512, GEN, Some(ckk::SHA512_HMAC)),
    row(ckm::SHA_1_HMAC, 1, 512, SV, Some(ckk::GENERIC_SECRET)),
    row(ckm::SHA224_HMAC, 1, 512, SV, Some(ckk::GENERIC_SECRET)),
    row(ckm::SHA256_HMAC, 1, 512, SV, Some(ckk::GENERIC_SECRET)),
    row(ckm::SHA384_HMAC, 1, 512, SV, Some(ckk::GENERIC_SECRET)),
    row(ckm::SHA512_HMAC, 1, 512, SV, Some(ckk::GENERIC_SECRET)),
    row(ckm::SHA_1, 0, 0, ckf::DIGEST, None),
    row(ckm::SHA224, 0, 0, ckf::DIGEST, None),
    row(ckm::SHA256, 0, 0, ckf::DIGEST, None),
    row(ckm::SHA384, 0, 0, ckf::DIGEST, None),
    row(ckm::SHA512, 0, 0, ckf::DIGEST, None),
];

/// The table row of mechanism `ty`.
pub fn info(ty: u64) -> Option<&'static MechInfo> {
    MECHANISMS.iter().find(|m| m.ty == ty)
}

/// The HMAC output length of an HMAC mechanism.
pub const fn hmac_len(ty: u64) -> Option<usize> {
    match ty {
        ckm::SHA_1_HMAC => Some(20),
        ckm::SHA224_HMAC => Some(28),
        ckm::SHA256_HMAC => Some(32),
        ckm::SHA384_HMAC => Some(48),
        ckm::SHA512_HMAC => Some(64),
        _ => None,
    }
}

/// Whether `key_type` may be used with a mechanism that wants `wanted`.
pub const fn key_type_fits(wanted: u64, key_type: u64) -> bool {
    if wanted == ckk::GENERIC_SECRET {
        // HMAC accepts generic secrets and the per-hash HMAC key types.
        matches!(
            key_type,
            ckk::GENERIC_SECRET
                | ckk::SHA_1_HMAC
                | ckk::SHA224_HMAC
                | ckk::SHA256_HMAC
                | ckk::SHA384_HMAC
                | ckk::SHA512_HMAC
        )
    } else {
        wanted == key_type
    }
}

/// How to carry out sign/verify mechanism `m`.
pub fn sign_plan(m: &Mechanism<'_>) -> SignPlan {
    let (hash, inner, digest_info) = match m.ty {
        ckm::SHA1_RSA_PKCS => (Hash::Sha1, ckm::RSA_PKCS, true),
        ckm::SHA224_RSA_PKCS => (Hash::Sha224, ckm::RSA_PKCS, true),
        ckm::SHA256_RSA_PKCS => (Hash::Sha256, ckm::RSA_PKCS, true),
        ckm::SHA384_RSA_PKCS => (Hash::Sha384, ckm::RSA_PKCS, true),
        ckm::SHA512_RSA_PKCS => (Hash::Sha512, ckm::RSA_PKCS, true),
        ckm::SHA1_RSA_PKCS_PSS => (Hash::Sha1, ckm::RSA_PKCS_PSS, false),
        ckm::SHA224_RSA_PKCS_PSS => (Hash::Sha224, ckm::RSA_PKCS_PSS, false),
        ckm::SHA256_RSA_PKCS_PSS => (Hash::Sha256, ckm::RSA_PKCS_PSS, false),
        ckm::SHA384_RSA_PKCS_PSS => (Hash::Sha384, ckm::RSA_PKCS_PSS, false),
        ckm::SHA512_RSA_PKCS_PSS => (Hash::Sha512, ckm::RSA_PKCS_PSS, false),
        ckm::ECDSA_SHA1 => (Hash::Sha1, ckm::ECDSA, false),
        ckm::ECDSA_SHA224 => (Hash::Sha224, ckm::ECDSA, false),
        ckm::ECDSA_SHA256 => (Hash::Sha256, ckm::ECDSA, false),
        ckm::ECDSA_SHA384 => (Hash::Sha384, ckm::ECDSA, false),
        ckm::ECDSA_SHA512 => (Hash::Sha512, ckm::ECDSA, false),
        _ => return SignPlan::Direct,
    };
    SignPlan::Prehash {
        hash,
        inner,
        digest_info,
    }
}

/// Check a mechanism's parameters against what it requires (the PSS hash of
/// a `SHAx_RSA_PKCS_PSS` mechanism must be that hash, IV lengths, tag
/// sizes...). Returns `CKR_MECHANISM_PARAM_INVALID` when they do not fit.
pub fn check_params(m: &Mechanism<'_>) -> Result<(), Rv> {
    let bad = Err(ckr::MECHANISM_PARAM_INVALID);
    match (m.ty, &m.param) {
        (ckm::AES_CBC | ckm::AES_CBC_PAD, MechParam::Iv(iv)) if iv.len() == 16 => Ok(()),
        (ckm::AES_CBC | ckm::AES_CBC_PAD, _) => bad,
        (ckm::AES_GCM, MechParam::Gcm { iv, tag_bits, .. }) => {
            if iv.is_empty() || iv.len() > 256 || !matches!(tag_bits, 96 | 104 | 112 | 120 | 128) {
                bad
            } else {
                Ok(())
            }
        }
        (ckm::AES_GCM, _) => bad,
        (ckm::AES_CTR, MechParam::Ctr { counter_bits, .. }) => {
            if *counter_bits == 0 || *counter_bits > 128 {
                bad
            } else {
                Ok(())
            }
        }
        (ckm::AES_CTR, _) => bad,
        (ckm::RSA_PKCS_PSS, MechParam::Pss { hash, mgf, .. }) => {
            match Hash::from_mechanism(*hash) {
                Some(h) if h.mgf1() == *mgf || is_mgf1(*mgf) => Ok(()),
                _ => bad,
            }
        }
        (ckm::RSA_PKCS_PSS, _) => bad,
        (ckm::RSA_PKCS_OAEP, MechParam::Oaep { hash, mgf, .. }) => {
            if Hash::from_mechanism(*hash).is_some() && is_mgf1(*mgf) {
                Ok(())
            } else {
                bad
            }
        }
        (ckm::RSA_PKCS_OAEP, _) => bad,
        (ckm::AES_KEY_WRAP, MechParam::None) => Ok(()),
        (ckm::AES_KEY_WRAP, MechParam::Bytes(iv)) if iv.len() == 8 => Ok(()),
        (ckm::AES_KEY_WRAP_PAD, MechParam::None) => Ok(()),
        (ckm::AES_KEY_WRAP_PAD, MechParam::Bytes(iv)) if iv.len() == 4 => Ok(()),
        (ckm::AES_CMAC_GENERAL, MechParam::Ulong(n)) if (1..=16).contains(n) => Ok(()),
        (ckm::AES_CMAC_GENERAL, _) => bad,
        (ckm::EDDSA, MechParam::None | MechParam::Eddsa { .. }) => Ok(()),
        (
            ckm::ECDH1_DERIVE | ckm::ECDH1_COFACTOR_DERIVE,
            MechParam::Ecdh {
                kdf,
                shared_data,
                public_data,
            },
        ) => match (*kdf, shared_data.is_empty(), public_data.is_empty()) {
            (_, _, true) => bad,
            (crate::ck::ckd::NULL, true, _) => Ok(()),
            (crate::ck::ckd::NULL, false, _) => bad,
            (k, _, _) if ecdh_kdf_hash(k).is_some() => Ok(()),
            _ => bad,
        },
        (ckm::ECDH1_DERIVE | ckm::ECDH1_COFACTOR_DERIVE, _) => bad,
        (_, MechParam::Pss { hash, mgf, .. }) => match sign_plan(m) {
            SignPlan::Prehash { hash: h, inner, .. }
                if inner == ckm::RSA_PKCS_PSS && h.mechanism() == *hash && is_mgf1(*mgf) =>
            {
                Ok(())
            }
            _ => bad,
        },
        (
            ckm::SHA1_RSA_PKCS_PSS
            | ckm::SHA224_RSA_PKCS_PSS
            | ckm::SHA256_RSA_PKCS_PSS
            | ckm::SHA384_RSA_PKCS_PSS
            | ckm::SHA512_RSA_PKCS_PSS,
            _,
        ) => bad,
        (_, MechParam::None) => Ok(()),
        _ => bad,
    }
}

/// Checks of a mechanism's parameters that depend on the key (known from
/// `KeyInfo`, so that `C_SignInit` and the like answer them even when the
/// operation starts without a round trip): the EdDSA variant must be one
/// the curve offers, the PSS salt must fit the modulus, OAEP the key.
pub fn check_for_key(m: &Mechanism<'_>, key: &KeyInfo) -> Result<(), Rv> {
    let bad = Err(ckr::MECHANISM_PARAM_INVALID);
    let em = (key.bits as usize).saturating_sub(1).div_ceil(8);
    match (m.ty, &m.param) {
        // Pure Ed25519 has no parameters; pure Ed448 none or phFlag false
        // without context. Ed25519ctx/ph and Ed448ph are not offered.
        (ckm::EDDSA, MechParam::Eddsa { .. }) if key.bits <= 256 => bad,
        (ckm::EDDSA, MechParam::Eddsa { prehash, context }) if *prehash || !context.is_empty() => {
            bad
        }
        (_, MechParam::Pss { hash, salt_len, .. }) => match Hash::from_mechanism(*hash) {
            Some(h) if (em as u64) >= h.size() as u64 + salt_len.saturating_add(2) => Ok(()),
            _ => bad,
        },
        _ => Ok(()),
    }
}

/// The hash of an ANSI X9.63 key derivation function (`CKD_SHAx_KDF`).
pub const fn ecdh_kdf_hash(kdf: u64) -> Option<Hash> {
    use crate::ck::ckd;
    match kdf {
        ckd::SHA1_KDF => Some(Hash::Sha1),
        ckd::SHA224_KDF => Some(Hash::Sha224),
        ckd::SHA256_KDF => Some(Hash::Sha256),
        ckd::SHA384_KDF => Some(Hash::Sha384),
        ckd::SHA512_KDF => Some(Hash::Sha512),
        _ => None,
    }
}

const fn is_mgf1(g: u64) -> bool {
    matches!(g, 1..=5)
}

/// Bytes of output operation `op` with mechanism `mech` produces for `input`
/// bytes of input on `key` (an upper bound where padding is not yet known),
/// computed without a round trip. `None` when the mechanism has no fixed rule.
pub fn output_len(op: Op, mech: u64, key: &KeyInfo, input: usize) -> Option<usize> {
    let modulus = (key.bits as usize).div_ceil(8);
    match (op, mech) {
        (Op::Sign, m) if is_rsa_sign(m) => Some(modulus),
        (Op::Sign, m) if is_ecdsa(m) => Some(2 * (key.bits as usize).div_ceil(8)),
        // Ed25519 signatures are 64 bytes, Ed448 ones 114.
        (Op::Sign, ckm::EDDSA) if key.bits <= 256 => Some(64),
        (Op::Sign, ckm::EDDSA) => Some(114),
        (Op::Sign, ckm::AES_CMAC) => Some(16),
        // CMAC_GENERAL: the length is a parameter; the HSM's answer says it.
        (Op::Sign, ckm::AES_CMAC_GENERAL) => None,
        (Op::Sign, m) => hmac_len(m),
        (Op::Encrypt | Op::Decrypt, ckm::RSA_PKCS | ckm::RSA_X_509 | ckm::RSA_PKCS_OAEP) => {
            Some(modulus)
        }
        // GCM: the tag (at most 16 bytes) is appended; decryption removes it.
        (Op::Encrypt, ckm::AES_GCM) => Some(input + 16),
        (Op::Decrypt, ckm::AES_GCM) => Some(input),
        (Op::Encrypt, ckm::AES_ECB | ckm::AES_CBC | ckm::AES_CTR) => Some(input),
        (Op::Decrypt, ckm::AES_ECB | ckm::AES_CBC | ckm::AES_CTR) => Some(input),
        (Op::Encrypt, ckm::AES_CBC_PAD) => Some((input / 16 + 1) * 16),
        (Op::Decrypt, ckm::AES_CBC_PAD) => Some(input),
        _ => None,
    }
}

/// RSA signature mechanisms.
pub const fn is_rsa_sign(m: u64) -> bool {
    matches!(
        m,
        ckm::RSA_PKCS
            | ckm::RSA_X_509
            | ckm::RSA_PKCS_PSS
            | ckm::SHA1_RSA_PKCS
            | ckm::SHA224_RSA_PKCS
            | ckm::SHA256_RSA_PKCS
            | ckm::SHA384_RSA_PKCS
            | ckm::SHA512_RSA_PKCS
            | ckm::SHA1_RSA_PKCS_PSS
            | ckm::SHA224_RSA_PKCS_PSS
            | ckm::SHA256_RSA_PKCS_PSS
            | ckm::SHA384_RSA_PKCS_PSS
            | ckm::SHA512_RSA_PKCS_PSS
    )
}

/// ECDSA mechanisms.
pub const fn is_ecdsa(m: u64) -> bool {
    matches!(
        m,
        ckm::ECDSA
            | ckm::ECDSA_SHA1
            | ckm::ECDSA_SHA224
            | ckm::ECDSA_SHA256
            | ckm::ECDSA_SHA384
            | ckm::ECDSA_SHA512
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc() {
        let mut h = Hasher::new(Hash::Sha256);
        h.update(b"abc");
        let mut out = [0u8; MAX_DIGEST];
        let n = h.finish(&mut out);
        assert_eq!(n, 32);
        assert_eq!(
            out[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "FIPS 180-2 test vector for SHA-256(\"abc\")"
        );
    }

    #[test]
    fn sizes_without_round_trip() {
        let rsa = KeyInfo {
            class: crate::ck::cko::PRIVATE_KEY,
            key_type: ckk::RSA,
            bits: 2048,
        };
        assert_eq!(
            output_len(Op::Sign, ckm::SHA256_RSA_PKCS, &rsa, 5),
            Some(256)
        );
        let ec = KeyInfo {
            class: crate::ck::cko::PRIVATE_KEY,
            key_type: ckk::EC,
            bits: 521,
        };
        assert_eq!(output_len(Op::Sign, ckm::ECDSA, &ec, 32), Some(132));
        assert_eq!(
            output_len(Op::Encrypt, ckm::AES_CBC_PAD, &rsa, 16),
            Some(32)
        );
    }

    #[test]
    fn pss_params_must_match_the_mechanism_hash() {
        let ok = Mechanism {
            ty: ckm::SHA256_RSA_PKCS_PSS,
            param: MechParam::Pss {
                hash: ckm::SHA256,
                mgf: ckg::MGF1_SHA256,
                salt_len: 32,
            },
        };
        assert!(check_params(&ok).is_ok());
        let bad = Mechanism {
            ty: ckm::SHA256_RSA_PKCS_PSS,
            param: MechParam::Pss {
                hash: ckm::SHA_1,
                mgf: ckg::MGF1_SHA256,
                salt_len: 32,
            },
        };
        assert_eq!(check_params(&bad), Err(ckr::MECHANISM_PARAM_INVALID));
    }
}
