//! Cryptographic operations: sign, verify, encrypt, decrypt, single-part and
//! multi-part, with the state of a running operation owned by the connection.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use hsmlink_core::ck::{cka, ckk, ckm, cko, ckr, Rv};
use hsmlink_core::mech::{Hash, Hasher, MAX_DIGEST};
use hsmlink_core::wire::{KeyInfo, MechParam, Mechanism, Op};
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::md::{Md, MdRef};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::RsaPssSaltlen;
use openssl::symm::{Cipher, Crypter, Mode};

mod aes;
use aes::AesCtx;
use zeroize::Zeroizing;

use crate::keys::KeyMaterial;
use crate::object::Object;

/// Most data a GCM decryption buffers (it releases nothing before the tag
/// is checked; the plaintext must also fit the client's reply frame).
pub const MAX_BUFFER: usize = 1 << 20;
/// Most data the other buffered operations (RSA, ECDSA: their input is at
/// most a modulus or a digest) hold.
pub const MAX_SMALL_BUFFER: usize = 64 * 1024;

/// What the mechanism does, decoded.
#[derive(Clone, Debug)]
enum Kind {
    /// PKCS#1 v1.5; `hash` set for `SHAx_RSA_PKCS` done here (DigestInfo).
    RsaPkcs,
    RsaX509,
    RsaPss {
        hash: Hash,
        mgf: Hash,
        salt: usize,
    },
    RsaOaep {
        hash: Hash,
        mgf: Hash,
        label: Vec<u8>,
    },
    Ecdsa,
    /// EdDSA; `Some((prehash, context))` when `CK_EDDSA_PARAMS` were given.
    Eddsa(Option<(bool, Vec<u8>)>),
    Hmac(Hash),
    /// AES-CMAC with this many bytes of output.
    Cmac(usize),
    Aes(AesMode),
}

#[derive(Clone, Debug)]
enum AesMode {
    Ecb,
    Cbc(Vec<u8>),
    CbcPad(Vec<u8>),
    /// Initial counter block and the blocks left before the counter
    /// (its low `counter_bits`) would wrap.
    Ctr([u8; 16], u128),
    Gcm {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag: usize,
    },
}

enum HmacState {
    Sha1(Hmac<sha1::Sha1>),
    Sha224(Hmac<sha2::Sha224>),
    Sha256(Hmac<sha2::Sha256>),
    Sha384(Hmac<sha2::Sha384>),
    Sha512(Hmac<sha2::Sha512>),
}

impl HmacState {
    fn new(h: Hash, key: &[u8]) -> Result<Self, Rv> {
        let bad = |_| ckr::KEY_SIZE_RANGE;
        Ok(match h {
            Hash::Sha1 => HmacState::Sha1(Hmac::new_from_slice(key).map_err(bad)?),
            Hash::Sha224 => HmacState::Sha224(Hmac::new_from_slice(key).map_err(bad)?),
            Hash::Sha256 => HmacState::Sha256(Hmac::new_from_slice(key).map_err(bad)?),
            Hash::Sha384 => HmacState::Sha384(Hmac::new_from_slice(key).map_err(bad)?),
            Hash::Sha512 => HmacState::Sha512(Hmac::new_from_slice(key).map_err(bad)?),
        })
    }

    fn update(&mut self, d: &[u8]) {
        match self {
            HmacState::Sha1(m) => m.update(d),
            HmacState::Sha224(m) => m.update(d),
            HmacState::Sha256(m) => m.update(d),
            HmacState::Sha384(m) => m.update(d),
            HmacState::Sha512(m) => m.update(d),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            HmacState::Sha1(m) => m.finalize().into_bytes().to_vec(),
            HmacState::Sha224(m) => m.finalize().into_bytes().to_vec(),
            HmacState::Sha256(m) => m.finalize().into_bytes().to_vec(),
            HmacState::Sha384(m) => m.finalize().into_bytes().to_vec(),
            HmacState::Sha512(m) => m.finalize().into_bytes().to_vec(),
        }
    }
}

/// A running operation.
pub struct Running {
    op: Op,
    kind: Kind,
    key: Arc<Object>,
    /// Buffered input (RSA, ECDSA, GCM decryption).
    buf: Zeroizing<Vec<u8>>,
    /// Hash-then-sign mechanisms received unhashed.
    hasher: Option<Hasher>,
    /// DigestInfo wrapping of the hash (`SHAx_RSA_PKCS`).
    digest_info: bool,
    hmac: Option<HmacState>,
    cmac: Option<Cmac>,
    crypter: Option<AesCtx>,
    /// `CKA_ALLOWED_MECHANISMS` lets this raw signature mechanism sign only
    /// digests of these hashes (with a PKCS#1 `DigestInfo` or not).
    digest_only: Option<Vec<(Hash, bool)>>,
    /// Bytes fed so far (block-mode length checks).
    fed: usize,
}

fn md(h: Hash) -> &'static MdRef {
    match h {
        Hash::Sha1 => Md::sha1(),
        Hash::Sha224 => Md::sha224(),
        Hash::Sha256 => Md::sha256(),
        Hash::Sha384 => Md::sha384(),
        Hash::Sha512 => Md::sha512(),
    }
}

fn mgf_hash(g: u64) -> Result<Hash, Rv> {
    use hsmlink_core::ck::ckg;
    Ok(match g {
        ckg::MGF1_SHA1 => Hash::Sha1,
        ckg::MGF1_SHA224 => Hash::Sha224,
        ckg::MGF1_SHA256 => Hash::Sha256,
        ckg::MGF1_SHA384 => Hash::Sha384,
        ckg::MGF1_SHA512 => Hash::Sha512,
        _ => return Err(ckr::MECHANISM_PARAM_INVALID),
    })
}

/// The key type a mechanism wants and whether it serves `op`; hashed
/// variants (`SHAx_RSA_PKCS`, `ECDSA_SHAx`, `SHAx_RSA_PKCS_PSS`) give the
/// hash computed on the server.
/// A decoded mechanism: what it does, the key type it wants, and the hash
/// (with DigestInfo wrapping or not) the server computes first.
type Decoded = (Kind, u64, Option<(Hash, bool)>);

fn decode(op: Op, m: &Mechanism<'_>) -> Result<Decoded, Rv> {
    let sv = matches!(op, Op::Sign | Op::Verify);
    let ed = !sv;
    let bad_param = Err(ckr::MECHANISM_PARAM_INVALID);
    let none = |k: Kind, kt: u64, pre: Option<(Hash, bool)>| match m.param {
        MechParam::None => Ok((k, kt, pre)),
        _ => Err(ckr::MECHANISM_PARAM_INVALID),
    };
    let hashed = |h: Hash| match m.ty {
        ckm::SHA1_RSA_PKCS
        | ckm::SHA224_RSA_PKCS
        | ckm::SHA256_RSA_PKCS
        | ckm::SHA384_RSA_PKCS
        | ckm::SHA512_RSA_PKCS => Some((h, true)),
        _ => Some((h, false)),
    };
    let pss = |pre: Option<(Hash, bool)>| match m.param {
        MechParam::Pss {
            hash,
            mgf,
            salt_len,
        } => {
            let h = Hash::from_mechanism(hash).ok_or(ckr::MECHANISM_PARAM_INVALID)?;
            if let Some((ph, _)) = pre {
                if ph != h {
                    return Err(ckr::MECHANISM_PARAM_INVALID);
                }
            }
            let salt = usize::try_from(salt_len).map_err(|_| ckr::MECHANISM_PARAM_INVALID)?;
            Ok((
                Kind::RsaPss {
                    hash: h,
                    mgf: mgf_hash(mgf)?,
                    salt,
                },
                ckk::RSA,
                pre,
            ))
        }
        _ => Err(ckr::MECHANISM_PARAM_INVALID),
    };
    match m.ty {
        ckm::RSA_PKCS => none(Kind::RsaPkcs, ckk::RSA, None),
        ckm::RSA_X_509 => none(Kind::RsaX509, ckk::RSA, None),
        ckm::SHA1_RSA_PKCS if sv => none(Kind::RsaPkcs, ckk::RSA, hashed(Hash::Sha1)),
        ckm::SHA224_RSA_PKCS if sv => none(Kind::RsaPkcs, ckk::RSA, hashed(Hash::Sha224)),
        ckm::SHA256_RSA_PKCS if sv => none(Kind::RsaPkcs, ckk::RSA, hashed(Hash::Sha256)),
        ckm::SHA384_RSA_PKCS if sv => none(Kind::RsaPkcs, ckk::RSA, hashed(Hash::Sha384)),
        ckm::SHA512_RSA_PKCS if sv => none(Kind::RsaPkcs, ckk::RSA, hashed(Hash::Sha512)),
        ckm::RSA_PKCS_PSS if sv => pss(None),
        ckm::SHA1_RSA_PKCS_PSS if sv => pss(hashed(Hash::Sha1)),
        ckm::SHA224_RSA_PKCS_PSS if sv => pss(hashed(Hash::Sha224)),
        ckm::SHA256_RSA_PKCS_PSS if sv => pss(hashed(Hash::Sha256)),
        ckm::SHA384_RSA_PKCS_PSS if sv => pss(hashed(Hash::Sha384)),
        ckm::SHA512_RSA_PKCS_PSS if sv => pss(hashed(Hash::Sha512)),
        ckm::RSA_PKCS_OAEP if ed => match m.param {
            MechParam::Oaep { hash, mgf, label } => Ok((
                Kind::RsaOaep {
                    hash: Hash::from_mechanism(hash).ok_or(ckr::MECHANISM_PARAM_INVALID)?,
                    mgf: mgf_hash(mgf)?,
                    label: label.to_vec(),
                },
                ckk::RSA,
                None,
            )),
            _ => bad_param,
        },
        ckm::ECDSA if sv => none(Kind::Ecdsa, ckk::EC, None),
        ckm::ECDSA_SHA1 if sv => none(Kind::Ecdsa, ckk::EC, hashed(Hash::Sha1)),
        ckm::ECDSA_SHA224 if sv => none(Kind::Ecdsa, ckk::EC, hashed(Hash::Sha224)),
        ckm::ECDSA_SHA256 if sv => none(Kind::Ecdsa, ckk::EC, hashed(Hash::Sha256)),
        ckm::ECDSA_SHA384 if sv => none(Kind::Ecdsa, ckk::EC, hashed(Hash::Sha384)),
        ckm::ECDSA_SHA512 if sv => none(Kind::Ecdsa, ckk::EC, hashed(Hash::Sha512)),
        ckm::EDDSA if sv => match m.param {
            MechParam::None => Ok((Kind::Eddsa(None), ckk::EC_EDWARDS, None)),
            MechParam::Eddsa { prehash, context } => Ok((
                Kind::Eddsa(Some((prehash, context.to_vec()))),
                ckk::EC_EDWARDS,
                None,
            )),
            _ => bad_param,
        },
        ckm::AES_CMAC if sv => none(Kind::Cmac(16), ckk::AES, None),
        ckm::AES_CMAC_GENERAL if sv => match m.param {
            // The key policy (docs/security.md): a tag shorter than
            // MIN_VERIFIED_TAG is not verified, or C_Verify would tell a
            // tag a byte at a time (256 tries a byte) to a caller who may
            // not sign.
            MechParam::Ulong(n @ 1..=16) if op == Op::Sign || n >= MIN_VERIFIED_TAG => {
                Ok((Kind::Cmac(n as usize), ckk::AES, None))
            }
            _ => bad_param,
        },
        ckm::SHA_1_HMAC if sv => none(Kind::Hmac(Hash::Sha1), ckk::GENERIC_SECRET, None),
        ckm::SHA224_HMAC if sv => none(Kind::Hmac(Hash::Sha224), ckk::GENERIC_SECRET, None),
        ckm::SHA256_HMAC if sv => none(Kind::Hmac(Hash::Sha256), ckk::GENERIC_SECRET, None),
        ckm::SHA384_HMAC if sv => none(Kind::Hmac(Hash::Sha384), ckk::GENERIC_SECRET, None),
        ckm::SHA512_HMAC if sv => none(Kind::Hmac(Hash::Sha512), ckk::GENERIC_SECRET, None),
        ckm::AES_ECB if ed => none(Kind::Aes(AesMode::Ecb), ckk::AES, None),
        ckm::AES_CBC | ckm::AES_CBC_PAD if ed => match m.param {
            MechParam::Iv(iv) if iv.len() == 16 => {
                let mode = if m.ty == ckm::AES_CBC {
                    AesMode::Cbc(iv.to_vec())
                } else {
                    AesMode::CbcPad(iv.to_vec())
                };
                Ok((Kind::Aes(mode), ckk::AES, None))
            }
            _ => bad_param,
        },
        ckm::AES_CTR if ed => match m.param {
            MechParam::Ctr {
                counter_bits,
                block,
            } if (1..=128).contains(&counter_bits) => {
                let value = u128::from_be_bytes(block);
                let left = if counter_bits == 128 {
                    u128::MAX
                } else {
                    let mask = (1u128 << counter_bits) - 1;
                    (1u128 << counter_bits) - (value & mask)
                };
                Ok((Kind::Aes(AesMode::Ctr(block, left)), ckk::AES, None))
            }
            _ => bad_param,
        },
        ckm::AES_GCM if ed => match m.param {
            MechParam::Gcm { iv, aad, tag_bits }
                if !iv.is_empty()
                    && iv.len() <= 256
                    && aad.len() <= MAX_BUFFER
                    && matches!(tag_bits, 32 | 64 | 96 | 104 | 112 | 120 | 128) =>
            {
                Ok((
                    Kind::Aes(AesMode::Gcm {
                        iv: iv.to_vec(),
                        aad: aad.to_vec(),
                        tag: tag_bits as usize / 8,
                    }),
                    ckk::AES,
                    None,
                ))
            }
            _ => bad_param,
        },
        _ => Err(ckr::MECHANISM_INVALID),
    }
}

/// The shortest `CKM_AES_CMAC_GENERAL` tag verified (64 bits, as NIST SP
/// 800-38B advises); shorter tags may still be made by a key that signs.
pub const MIN_VERIFIED_TAG: u64 = 8;

fn usage_attr(op: Op) -> u64 {
    match op {
        Op::Sign => cka::SIGN,
        Op::Verify => cka::VERIFY,
        Op::Encrypt => cka::ENCRYPT,
        Op::Decrypt => cka::DECRYPT,
    }
}

fn key_type_fits(wanted: u64, kt: u64) -> bool {
    hsmlink_core::mech::key_type_fits(wanted, kt)
}

/// Start operation `op` with `mech` on `key`, checking everything
/// `CryptoInit` must check.
pub fn init(op: Op, mech: &Mechanism<'_>, key: Arc<Object>) -> Result<(Running, KeyInfo), Rv> {
    start(op, mech, key, usage_attr(op))
}

/// Start an encryption (`C_WrapKey`, usage `CKA_WRAP`) or decryption
/// (`C_UnwrapKey`, usage `CKA_UNWRAP`) that wraps or unwraps a key.
pub fn init_wrap(op: Op, mech: &Mechanism<'_>, key: Arc<Object>) -> Result<Running, Rv> {
    let usage = if op == Op::Encrypt {
        cka::WRAP
    } else {
        cka::UNWRAP
    };
    start(op, mech, key, usage).map(|(r, _)| r)
}

fn start(
    op: Op,
    mech: &Mechanism<'_>,
    key: Arc<Object>,
    usage: u64,
) -> Result<(Running, KeyInfo), Rv> {
    let (kind, wanted, pre) = decode(op, mech)?;
    let class = key.class().ok_or(ckr::KEY_HANDLE_INVALID)?;
    let kt = key.key_type().ok_or(ckr::KEY_TYPE_INCONSISTENT)?;
    let class_ok = match op {
        Op::Sign | Op::Decrypt => matches!(class, cko::PRIVATE_KEY | cko::SECRET_KEY),
        Op::Verify | Op::Encrypt => matches!(class, cko::PUBLIC_KEY | cko::SECRET_KEY),
    };
    if !class_ok || !key_type_fits(wanted, kt) {
        return Err(ckr::KEY_TYPE_INCONSISTENT);
    }
    if !key.flag(usage) {
        return Err(ckr::KEY_FUNCTION_NOT_PERMITTED);
    }
    let digest_only = allowed(&key, op, mech)?;
    let material = key.material()?;
    let bits = material.bits();
    let info = KeyInfo {
        class,
        key_type: kt,
        bits,
    };
    let mut hmac = None;
    let mut cmac = None;
    let mut crypter = None;
    match &kind {
        Kind::RsaPss { hash, salt, .. } => {
            // emLen = ceil((modBits - 1) / 8) >= hLen + sLen + 2.
            let em = (bits as usize).saturating_sub(1).div_ceil(8);
            if em < hash.size() + salt + 2 {
                return Err(ckr::MECHANISM_PARAM_INVALID);
            }
        }
        Kind::RsaOaep { hash, .. } if (bits as usize).div_ceil(8) < 2 * hash.size() + 2 => {
            return Err(ckr::KEY_SIZE_RANGE);
        }
        Kind::Hmac(h) => {
            let KeyMaterial::Secret(v) = material else {
                return Err(ckr::KEY_TYPE_INCONSISTENT);
            };
            hmac = Some(HmacState::new(*h, v)?);
        }
        Kind::Cmac(_) => {
            let KeyMaterial::Secret(v) = material else {
                return Err(ckr::KEY_TYPE_INCONSISTENT);
            };
            cmac = Some(Cmac::new(v)?);
        }
        Kind::Eddsa(params) => {
            let curve = match material {
                KeyMaterial::EdPrivate { curve, .. } | KeyMaterial::EdPublic { curve, .. } => {
                    *curve
                }
                _ => return Err(ckr::KEY_TYPE_INCONSISTENT),
            };
            // Pure Ed25519 takes no parameters (with them it would be
            // Ed25519ctx or Ed25519ph); pure Ed448 takes none or phFlag
            // false with no context. The pre-hash and context variants are
            // not offered.
            let pure = match (curve, params) {
                (_, None) => true,
                (crate::keys::EdCurve::Ed448, Some((false, ctx))) => ctx.is_empty(),
                _ => false,
            };
            if !pure {
                return Err(ckr::MECHANISM_PARAM_INVALID);
            }
        }
        Kind::Aes(mode) => {
            let KeyMaterial::Secret(v) = material else {
                return Err(ckr::KEY_TYPE_INCONSISTENT);
            };
            let c = AesCtx::start(mode, op == Op::Encrypt, &key, v)?;
            crypter = Some(c);
        }
        _ => {}
    }
    let hasher = pre.map(|(h, _)| Hasher::new(h));
    let digest_info = pre.is_some_and(|(_, d)| d);
    Ok((
        Running {
            op,
            kind,
            key,
            buf: Zeroizing::new(Vec::new()),
            hasher,
            digest_info,
            hmac,
            cmac,
            crypter,
            digest_only,
            fed: 0,
        },
        info,
    ))
}

/// The error for data of bad length on this operation.
fn len_err(op: Op) -> Rv {
    if op == Op::Decrypt {
        ckr::ENCRYPTED_DATA_LEN_RANGE
    } else {
        ckr::DATA_LEN_RANGE
    }
}

impl Running {
    pub fn op(&self) -> Op {
        self.op
    }

    /// Bytes this operation holds buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feed data; returns the output ready now.
    pub fn update(&mut self, data: &[u8]) -> Result<Vec<u8>, Rv> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
            return Ok(Vec::new());
        }
        if let Some(m) = self.hmac.as_mut() {
            m.update(data);
            return Ok(Vec::new());
        }
        if let Some(m) = self.cmac.as_mut() {
            m.update(data)?;
            return Ok(Vec::new());
        }
        let gcm_dec = matches!(self.kind, Kind::Aes(AesMode::Gcm { .. })) && self.op == Op::Decrypt;
        if let (Some(c), false) = (self.crypter.as_mut(), gcm_dec) {
            self.fed = self.fed.saturating_add(data.len());
            if let Kind::Aes(AesMode::Ctr(_, left)) = self.kind {
                // PKCS#11 counts in the low `counter_bits` only: refuse to
                // let that counter wrap rather than carry into the nonce.
                if self.fed.div_ceil(16) as u128 > left {
                    return Err(len_err(self.op));
                }
            }
            let mut out = vec![0u8; data.len() + 32];
            let n = c.update(data, &mut out).map_err(|_| len_err(self.op))?;
            out.truncate(n);
            return Ok(out);
        }
        let limit = if gcm_dec {
            MAX_BUFFER
        } else {
            MAX_SMALL_BUFFER
        };
        if self.buf.len() + data.len() > limit {
            return Err(len_err(self.op));
        }
        self.buf.extend_from_slice(data);
        Ok(Vec::new())
    }

    /// Finish: the output (signature, ciphertext, plaintext), or for verify
    /// an empty vector when `signature` is valid.
    pub fn finish(mut self, data: &[u8], signature: &[u8]) -> Result<Vec<u8>, Rv> {
        let mut out = self.update(data)?;
        let input: Zeroizing<Vec<u8>> = match self.hasher.take() {
            Some(h) => {
                let hash = h.hash();
                let mut d = [0u8; MAX_DIGEST];
                let n = h.finish(&mut d);
                let mut v = Vec::with_capacity(83);
                if self.digest_info {
                    v.extend_from_slice(hash.digest_info_prefix());
                }
                v.extend_from_slice(d.get(..n).unwrap_or(&[]));
                Zeroizing::new(v)
            }
            None => std::mem::take(&mut self.buf),
        };
        if let Some(digests) = &self.digest_only {
            let fits = digests.iter().any(|(h, info)| {
                let prefix = if *info { h.digest_info_prefix() } else { &[] };
                input.len() == prefix.len() + h.size() && input.starts_with(prefix)
            });
            if !fits {
                return Err(ckr::MECHANISM_INVALID);
            }
        }
        if let (Some(m), Kind::Cmac(len)) = (self.cmac.take(), &self.kind) {
            let mut mac = m.finish()?;
            mac.truncate(*len);
            return match self.op {
                Op::Sign => Ok(mac),
                _ if signature.len() != mac.len() => Err(ckr::SIGNATURE_LEN_RANGE),
                _ if openssl::memcmp::eq(&mac, signature) => Ok(Vec::new()),
                _ => Err(ckr::SIGNATURE_INVALID),
            };
        }
        if let Some(m) = self.hmac.take() {
            let mac = m.finish();
            return match self.op {
                Op::Sign => Ok(mac),
                _ => {
                    if signature.len() != mac.len() {
                        Err(ckr::SIGNATURE_LEN_RANGE)
                    } else if openssl::memcmp::eq(&mac, signature) {
                        Ok(Vec::new())
                    } else {
                        Err(ckr::SIGNATURE_INVALID)
                    }
                }
            };
        }
        if let Kind::Aes(mode) = &self.kind {
            let Some(mut c) = self.crypter.take() else {
                return Err(ckr::GENERAL_ERROR);
            };
            let done = aes_finish(&mut c, mode, self.op, self.fed, &input, out);
            if done.is_ok() {
                c.keep(&self.key);
            }
            return done;
        }
        let key = self.key.clone();
        let material = key.material()?;
        match (&self.kind, self.op, material) {
            (Kind::RsaPkcs | Kind::RsaX509, Op::Sign, KeyMaterial::RsaPrivate { rsa, .. }) => {
                let k = rsa.size() as usize;
                let (pad, from) = rsa_input(&self.kind, k, &input)?;
                let mut sig = vec![0u8; k];
                let n = rsa
                    .private_encrypt(&from, &mut sig, pad)
                    .map_err(|_| ckr::DATA_INVALID)?;
                sig.truncate(n);
                Ok(sig)
            }
            (Kind::RsaPkcs | Kind::RsaX509, Op::Verify, KeyMaterial::RsaPublic { rsa, .. }) => {
                let k = rsa.size() as usize;
                if signature.len() != k {
                    return Err(ckr::SIGNATURE_LEN_RANGE);
                }
                let (pad, expect) = rsa_input(&self.kind, k, &input)?;
                let mut dec = Zeroizing::new(vec![0u8; k]);
                let n = rsa
                    .public_decrypt(signature, &mut dec, pad)
                    .map_err(|_| ckr::SIGNATURE_INVALID)?;
                if dec.get(..n) == Some(&expect[..]) {
                    Ok(Vec::new())
                } else {
                    Err(ckr::SIGNATURE_INVALID)
                }
            }
            (Kind::RsaPkcs | Kind::RsaX509, Op::Encrypt, KeyMaterial::RsaPublic { rsa, .. }) => {
                let k = rsa.size() as usize;
                let (pad, from) = rsa_input(&self.kind, k, &input)?;
                let mut c = vec![0u8; k];
                let n = rsa
                    .public_encrypt(&from, &mut c, pad)
                    .map_err(|_| ckr::DATA_INVALID)?;
                c.truncate(n);
                out.extend(c);
                Ok(out)
            }
            (Kind::RsaPkcs | Kind::RsaX509, Op::Decrypt, KeyMaterial::RsaPrivate { rsa, .. }) => {
                let k = rsa.size() as usize;
                if input.len() != k {
                    return Err(ckr::ENCRYPTED_DATA_LEN_RANGE);
                }
                let pad = if matches!(self.kind, Kind::RsaPkcs) {
                    Padding::PKCS1
                } else {
                    Padding::NONE
                };
                let mut p = vec![0u8; k];
                let n = rsa
                    .private_decrypt(&input, &mut p, pad)
                    .map_err(|_| ckr::ENCRYPTED_DATA_INVALID)?;
                p.truncate(n);
                Ok(p)
            }
            (Kind::RsaPss { hash, mgf, salt }, Op::Sign, KeyMaterial::RsaPrivate { pkey, .. }) => {
                if input.len() != hash.size() {
                    return Err(ckr::DATA_LEN_RANGE);
                }
                let e = |_| ckr::FUNCTION_FAILED;
                let mut ctx = PkeyCtx::new(pkey).map_err(e)?;
                ctx.sign_init().map_err(e)?;
                pss_setup(&mut ctx, *hash, *mgf, *salt)?;
                let mut sig = Vec::new();
                ctx.sign_to_vec(&input, &mut sig).map_err(e)?;
                Ok(sig)
            }
            (
                Kind::RsaPss { hash, mgf, salt },
                Op::Verify,
                KeyMaterial::RsaPublic { pkey, rsa, .. },
            ) => {
                if input.len() != hash.size() {
                    return Err(ckr::DATA_LEN_RANGE);
                }
                if signature.len() != rsa.size() as usize {
                    return Err(ckr::SIGNATURE_LEN_RANGE);
                }
                let e = |_| ckr::FUNCTION_FAILED;
                let mut ctx = PkeyCtx::new(pkey).map_err(e)?;
                ctx.verify_init().map_err(e)?;
                pss_setup(&mut ctx, *hash, *mgf, *salt)?;
                match ctx.verify(&input, signature) {
                    Ok(true) => Ok(Vec::new()),
                    _ => Err(ckr::SIGNATURE_INVALID),
                }
            }
            (
                Kind::RsaOaep { hash, mgf, label },
                Op::Encrypt,
                KeyMaterial::RsaPublic { pkey, rsa, .. },
            ) => {
                let k = rsa.size() as usize;
                if input.len() + 2 * hash.size() + 2 > k {
                    return Err(ckr::DATA_LEN_RANGE);
                }
                if !label.is_empty() {
                    return oaep_label::encrypt(rsa, *hash, *mgf, label, &input);
                }
                let e = |_| ckr::FUNCTION_FAILED;
                let mut ctx = PkeyCtx::new(pkey).map_err(e)?;
                ctx.encrypt_init().map_err(e)?;
                oaep_setup(&mut ctx, *hash, *mgf, label)?;
                let mut c = Vec::new();
                ctx.encrypt_to_vec(&input, &mut c).map_err(e)?;
                Ok(c)
            }
            (
                Kind::RsaOaep { hash, mgf, label },
                Op::Decrypt,
                KeyMaterial::RsaPrivate { pkey, rsa, .. },
            ) => {
                if input.len() != rsa.size() as usize {
                    return Err(ckr::ENCRYPTED_DATA_LEN_RANGE);
                }
                if !label.is_empty() {
                    return oaep_label::decrypt(rsa, *hash, *mgf, label, &input);
                }
                let e = |_| ckr::FUNCTION_FAILED;
                let mut ctx = PkeyCtx::new(pkey).map_err(e)?;
                ctx.decrypt_init().map_err(e)?;
                oaep_setup(&mut ctx, *hash, *mgf, label)?;
                let mut p = Vec::new();
                ctx.decrypt_to_vec(&input, &mut p)
                    .map_err(|_| ckr::ENCRYPTED_DATA_INVALID)?;
                Ok(p)
            }
            (Kind::Ecdsa, Op::Sign, KeyMaterial::EcPrivate { key, curve }) => {
                if input.is_empty() {
                    return Err(ckr::DATA_LEN_RANGE);
                }
                let sig = EcdsaSig::sign(&input, key).map_err(|_| ckr::FUNCTION_FAILED)?;
                let n = curve.bytes() as i32;
                let e = |_| ckr::FUNCTION_FAILED;
                let mut out = sig.r().to_vec_padded(n).map_err(e)?;
                out.extend(sig.s().to_vec_padded(n).map_err(e)?);
                Ok(out)
            }
            (Kind::Eddsa(_), Op::Sign, KeyMaterial::EdPrivate { pkey, .. }) => {
                let e = |_| ckr::FUNCTION_FAILED;
                let mut signer = openssl::sign::Signer::new_without_digest(pkey).map_err(e)?;
                signer.sign_oneshot_to_vec(&input).map_err(e)
            }
            (Kind::Eddsa(_), Op::Verify, KeyMaterial::EdPublic { pkey, curve }) => {
                let expect = 2 * curve.key_len();
                if signature.len() != expect {
                    return Err(ckr::SIGNATURE_LEN_RANGE);
                }
                let e = |_| ckr::FUNCTION_FAILED;
                let mut verifier = openssl::sign::Verifier::new_without_digest(pkey).map_err(e)?;
                match verifier.verify_oneshot(signature, &input) {
                    Ok(true) => Ok(Vec::new()),
                    _ => Err(ckr::SIGNATURE_INVALID),
                }
            }
            (Kind::Ecdsa, Op::Verify, KeyMaterial::EcPublic { key, curve }) => {
                let n = curve.bytes();
                if signature.len() != 2 * n {
                    return Err(ckr::SIGNATURE_LEN_RANGE);
                }
                let (r, s) = signature.split_at(n);
                let e = |_| ckr::SIGNATURE_INVALID;
                let sig = EcdsaSig::from_private_components(
                    BigNum::from_slice(r).map_err(e)?,
                    BigNum::from_slice(s).map_err(e)?,
                )
                .map_err(e)?;
                match sig.verify(&input, key) {
                    Ok(true) => Ok(Vec::new()),
                    _ => Err(ckr::SIGNATURE_INVALID),
                }
            }
            _ => Err(ckr::KEY_TYPE_INCONSISTENT),
        }
    }
}

/// `CKA_ALLOWED_MECHANISMS`: whether `m` may be used with `key`. The
/// module hashes hash-and-sign mechanisms itself and sends the raw
/// mechanism (`CKM_RSA_PKCS` over a `DigestInfo`, `CKM_RSA_PKCS_PSS` or
/// `CKM_ECDSA` over a digest): a key restricted to, say,
/// `CKM_SHA256_RSA_PKCS` accepts `CKM_RSA_PKCS` but then signs or verifies
/// only input shaped as a SHA-256 `DigestInfo` (the returned list), so the
/// restriction holds whoever computed the digest.
fn allowed(key: &Object, op: Op, m: &Mechanism<'_>) -> Result<Option<Vec<(Hash, bool)>>, Rv> {
    use hsmlink_core::mech::{sign_plan, SignPlan};
    let list = key.allowed_mechanisms();
    if list.is_empty() || list.contains(&m.ty) {
        return Ok(None);
    }
    if matches!(op, Op::Sign | Op::Verify) {
        let pss_hash = match m.param {
            MechParam::Pss { hash, .. } => Some(hash),
            _ => None,
        };
        let digests: Vec<(Hash, bool)> = list
            .iter()
            .filter_map(|l| match sign_plan(&Mechanism::plain(*l)) {
                SignPlan::Prehash {
                    hash,
                    inner,
                    digest_info,
                } if inner == m.ty && pss_hash.is_none_or(|h| h == hash.mechanism()) => {
                    Some((hash, digest_info))
                }
                _ => None,
            })
            .collect();
        if !digests.is_empty() {
            return Ok(Some(digests));
        }
    }
    Err(ckr::MECHANISM_INVALID)
}

/// AES-CMAC (NIST SP 800-38B, RFC 4493), multi-part.
struct Cmac {
    block: Crypter,
    k1: [u8; 16],
    k2: [u8; 16],
    /// The running chaining value.
    x: Zeroizing<[u8; 16]>,
    /// Input not yet processed: the last block is treated apart.
    pending: Zeroizing<Vec<u8>>,
}

impl Cmac {
    fn new(key: &[u8]) -> Result<Cmac, Rv> {
        let cipher = match key.len() {
            16 => Cipher::aes_128_ecb(),
            24 => Cipher::aes_192_ecb(),
            32 => Cipher::aes_256_ecb(),
            _ => return Err(ckr::KEY_SIZE_RANGE),
        };
        let mut block =
            Crypter::new(cipher, Mode::Encrypt, key, None).map_err(|_| ckr::GENERAL_ERROR)?;
        block.pad(false);
        let mut c = Cmac {
            block,
            k1: [0; 16],
            k2: [0; 16],
            x: Zeroizing::new([0; 16]),
            pending: Zeroizing::new(Vec::new()),
        };
        let mut l = [0u8; 16];
        c.encrypt(&mut l)?;
        let dbl = |b: &[u8; 16]| {
            let v = u128::from_be_bytes(*b);
            let r = (v << 1) ^ if v >> 127 == 1 { 0x87 } else { 0 };
            r.to_be_bytes()
        };
        c.k1 = dbl(&l);
        c.k2 = dbl(&c.k1);
        Ok(c)
    }

    fn encrypt(&mut self, b: &mut [u8; 16]) -> Result<(), Rv> {
        let mut out = [0u8; 32];
        let n = self
            .block
            .update(&b[..], &mut out)
            .map_err(|_| ckr::GENERAL_ERROR)?;
        if n != 16 {
            return Err(ckr::GENERAL_ERROR);
        }
        b.copy_from_slice(&out[..16]);
        Ok(())
    }

    fn update(&mut self, data: &[u8]) -> Result<(), Rv> {
        self.pending.extend_from_slice(data);
        // Keep at least one byte back: the last block is special.
        let full = (self.pending.len().saturating_sub(1) / 16) * 16;
        let mut x = *self.x;
        for i in (0..full).step_by(16) {
            for (a, b) in x.iter_mut().zip(&self.pending[i..i + 16]) {
                *a ^= b;
            }
            self.encrypt(&mut x)?;
        }
        *self.x = x;
        self.pending.drain(..full);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, Rv> {
        let mut last = [0u8; 16];
        if self.pending.len() == 16 {
            for (i, b) in last.iter_mut().enumerate() {
                *b = self.pending[i] ^ self.k1[i];
            }
        } else {
            last[..self.pending.len()].copy_from_slice(&self.pending);
            last[self.pending.len()] = 0x80;
            for (b, k) in last.iter_mut().zip(self.k2) {
                *b ^= k;
            }
        }
        let mut x = *self.x;
        for (a, b) in x.iter_mut().zip(last) {
            *a ^= b;
        }
        self.encrypt(&mut x)?;
        Ok(x.to_vec())
    }
}

/// Padding and input of a raw RSA operation (`CKM_RSA_PKCS` or
/// `CKM_RSA_X_509`), with the length checks of PKCS#11.
fn rsa_input(kind: &Kind, k: usize, input: &[u8]) -> Result<(Padding, Zeroizing<Vec<u8>>), Rv> {
    match kind {
        Kind::RsaPkcs => {
            if input.len() + 11 > k {
                return Err(ckr::DATA_LEN_RANGE);
            }
            Ok((Padding::PKCS1, Zeroizing::new(input.to_vec())))
        }
        _ => {
            if input.len() > k {
                return Err(ckr::DATA_LEN_RANGE);
            }
            // Raw RSA works on a k-byte block: left-pad with zeros.
            let mut v = Zeroizing::new(vec![0u8; k - input.len()]);
            v.extend_from_slice(input);
            Ok((Padding::NONE, v))
        }
    }
}

fn pss_setup<T>(ctx: &mut PkeyCtx<T>, hash: Hash, mgf: Hash, salt: usize) -> Result<(), Rv> {
    let e = |_| ckr::MECHANISM_PARAM_INVALID;
    ctx.set_rsa_padding(Padding::PKCS1_PSS).map_err(e)?;
    ctx.set_signature_md(md(hash)).map_err(e)?;
    ctx.set_rsa_mgf1_md(md(mgf)).map_err(e)?;
    let salt = i32::try_from(salt).map_err(|_| ckr::MECHANISM_PARAM_INVALID)?;
    ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt))
        .map_err(e)
}

/// RSA-OAEP with a label, padded here (RFC 8017 §7.1) around OpenSSL's raw
/// RSA. OpenSSL 3.0 leaks the label given to
/// `EVP_PKEY_CTX_set0_rsa_oaep_label`: every OAEP operation with a label
/// lost the label's bytes, so a client could grow the server without bound
/// (found by the `template` fuzz target under LeakSanitizer). Decoding does
/// not branch on the decrypted bytes until its one valid/invalid answer.
mod oaep_label {
    use hsmlink_core::ck::{ckr, Rv};
    use hsmlink_core::mech::Hash;
    use openssl::hash::{Hasher, MessageDigest};
    use openssl::pkey::{Private, Public};
    use openssl::rsa::{Padding, Rsa};
    use zeroize::Zeroizing;

    fn md(h: Hash) -> MessageDigest {
        match h {
            Hash::Sha1 => MessageDigest::sha1(),
            Hash::Sha224 => MessageDigest::sha224(),
            Hash::Sha256 => MessageDigest::sha256(),
            Hash::Sha384 => MessageDigest::sha384(),
            Hash::Sha512 => MessageDigest::sha512(),
        }
    }

    fn hash(h: Hash, parts: &[&[u8]]) -> Result<Vec<u8>, Rv> {
        let e = |_| ckr::FUNCTION_FAILED;
        let mut x = Hasher::new(md(h)).map_err(e)?;
        for p in parts {
            x.update(p).map_err(e)?;
        }
        Ok(x.finish().map_err(e)?.to_vec())
    }

    /// MGF1 (RFC 8017 §B.2.1) with hash `h`: `len` bytes from `seed`.
    fn mgf1(h: Hash, seed: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>, Rv> {
        let mut out = Zeroizing::new(Vec::with_capacity(len + h.size()));
        let mut counter: u32 = 0;
        while out.len() < len {
            out.extend_from_slice(&hash(h, &[seed, &counter.to_be_bytes()])?);
            counter = counter.wrapping_add(1);
        }
        out.truncate(len);
        Ok(out)
    }

    fn xor_into(dst: &mut [u8], mask: &[u8]) {
        for (d, m) in dst.iter_mut().zip(mask) {
            *d ^= m;
        }
    }

    /// 0xff if `a == b`, else 0, without a branch.
    fn eq_mask(a: u8, b: u8) -> u8 {
        let x = u16::from(a ^ b);
        (x.wrapping_sub(1) >> 8) as u8
    }

    pub fn encrypt(
        rsa: &Rsa<Public>,
        hash_alg: Hash,
        mgf: Hash,
        label: &[u8],
        msg: &[u8],
    ) -> Result<Vec<u8>, Rv> {
        let k = rsa.size() as usize;
        let h = hash_alg.size();
        if msg.len() + 2 * h + 2 > k {
            return Err(ckr::DATA_LEN_RANGE);
        }
        // EM = 0x00 || maskedSeed || maskedDB, DB = lHash || PS || 0x01 || M.
        let mut em = Zeroizing::new(vec![0u8; k]);
        let (seed, db) = em[1..].split_at_mut(h);
        db[..h].copy_from_slice(&hash(hash_alg, &[label])?);
        let m_at = db.len() - msg.len();
        db[m_at - 1] = 1;
        db[m_at..].copy_from_slice(msg);
        openssl::rand::rand_bytes(seed).map_err(|_| ckr::FUNCTION_FAILED)?;
        xor_into(db, &mgf1(mgf, seed, db.len())?);
        xor_into(seed, &mgf1(mgf, db, h)?);
        let mut out = vec![0u8; k];
        let n = rsa
            .public_encrypt(&em, &mut out, Padding::NONE)
            .map_err(|_| ckr::FUNCTION_FAILED)?;
        out.truncate(n);
        Ok(out)
    }

    pub fn decrypt(
        rsa: &Rsa<Private>,
        hash_alg: Hash,
        mgf: Hash,
        label: &[u8],
        c: &[u8],
    ) -> Result<Vec<u8>, Rv> {
        let k = rsa.size() as usize;
        let h = hash_alg.size();
        if c.len() != k {
            return Err(ckr::ENCRYPTED_DATA_LEN_RANGE);
        }
        if k < 2 * h + 2 {
            return Err(ckr::KEY_SIZE_RANGE);
        }
        let mut em = Zeroizing::new(vec![0u8; k]);
        let n = rsa
            .private_decrypt(c, &mut em, Padding::NONE)
            .map_err(|_| ckr::ENCRYPTED_DATA_INVALID)?;
        if n != k {
            return Err(ckr::ENCRYPTED_DATA_INVALID);
        }
        let (y, rest) = em.split_at_mut(1);
        let (seed, db) = rest.split_at_mut(h);
        xor_into(seed, &mgf1(mgf, db, h)?);
        xor_into(db, &mgf1(mgf, seed, db.len())?);
        let l_hash = hash(hash_alg, &[label])?;
        let mut bad = y[0];
        for (d, l) in db.iter().zip(&l_hash) {
            bad |= d ^ l;
        }
        // The first 0x01 after the zeros of PS, found without branching.
        let mut looking = 0xffu8;
        let mut at = 0usize;
        for (i, b) in db.iter().enumerate().skip(h) {
            let one = eq_mask(*b, 1);
            let zero = eq_mask(*b, 0);
            let found = looking & one;
            let m = usize::from(found & 1).wrapping_neg();
            at = (i & m) | (at & !m);
            bad |= looking & !zero & !one;
            looking &= !one;
        }
        bad |= looking;
        if bad != 0 {
            return Err(ckr::ENCRYPTED_DATA_INVALID);
        }
        Ok(db[at + 1..].to_vec())
    }
}

fn oaep_setup<T>(ctx: &mut PkeyCtx<T>, hash: Hash, mgf: Hash, label: &[u8]) -> Result<(), Rv> {
    let e = |_| ckr::MECHANISM_PARAM_INVALID;
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).map_err(e)?;
    ctx.set_rsa_oaep_md(md(hash)).map_err(e)?;
    ctx.set_rsa_mgf1_md(md(mgf)).map_err(e)?;
    if !label.is_empty() {
        ctx.set_rsa_oaep_label(label).map_err(e)?;
    }
    Ok(())
}

fn aes_finish(
    c: &mut AesCtx,
    mode: &AesMode,
    op: Op,
    fed: usize,
    buffered: &[u8],
    mut out: Vec<u8>,
) -> Result<Vec<u8>, Rv> {
    match mode {
        AesMode::Ecb | AesMode::Cbc(_) if !fed.is_multiple_of(16) => Err(len_err(op)),
        AesMode::CbcPad(_) if op == Op::Decrypt && !fed.is_multiple_of(16) => {
            Err(ckr::ENCRYPTED_DATA_LEN_RANGE)
        }
        AesMode::Gcm { tag, .. } if op == Op::Decrypt => {
            let Some(split) = buffered.len().checked_sub(*tag) else {
                return Err(ckr::ENCRYPTED_DATA_LEN_RANGE);
            };
            let (ct, t) = buffered.split_at(split);
            let mut p = vec![0u8; ct.len() + 32];
            let n = c.update(ct, &mut p).map_err(|_| ckr::FUNCTION_FAILED)?;
            c.set_tag(t).map_err(|_| ckr::ENCRYPTED_DATA_INVALID)?;
            let mut rest = [0u8; 32];
            let m = c
                .finish(&mut rest)
                .map_err(|_| ckr::ENCRYPTED_DATA_INVALID)?;
            p.truncate(n);
            p.extend_from_slice(rest.get(..m).unwrap_or(&[]));
            Ok(p)
        }
        AesMode::Gcm { tag, .. } => {
            let mut rest = [0u8; 32];
            let m = c.finish(&mut rest).map_err(|_| ckr::FUNCTION_FAILED)?;
            out.extend_from_slice(rest.get(..m).unwrap_or(&[]));
            let at = out.len();
            out.resize(at + *tag, 0);
            c.tag(&mut out[at..]).map_err(|_| ckr::FUNCTION_FAILED)?;
            Ok(out)
        }
        _ => {
            let mut rest = [0u8; 32];
            let m = c.finish(&mut rest).map_err(|_| {
                if op == Op::Decrypt {
                    ckr::ENCRYPTED_DATA_INVALID
                } else {
                    ckr::DATA_LEN_RANGE
                }
            })?;
            out.extend_from_slice(rest.get(..m).unwrap_or(&[]));
            Ok(out)
        }
    }
}

/// Hash `data` with digest mechanism `mech` (for `DigestKey` and tests).
pub fn digest(mech: u64, data: &[u8]) -> Result<Vec<u8>, Rv> {
    let md = match Hash::from_mechanism(mech).ok_or(ckr::MECHANISM_INVALID)? {
        Hash::Sha1 => MessageDigest::sha1(),
        Hash::Sha224 => MessageDigest::sha224(),
        Hash::Sha256 => MessageDigest::sha256(),
        Hash::Sha384 => MessageDigest::sha384(),
        Hash::Sha512 => MessageDigest::sha512(),
    };
    openssl::hash::hash(md, data)
        .map(|d| d.to_vec())
        .map_err(|_| ckr::FUNCTION_FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oaep_with_a_label_matches_openssl_both_ways() {
        // Regression for the OpenSSL 3.0 label leak (found by the template
        // fuzz target): labelled OAEP is padded here; OpenSSL must agree.
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        let rsa = Rsa::generate(1024).unwrap();
        let public =
            Rsa::from_public_components(rsa.n().to_owned().unwrap(), rsa.e().to_owned().unwrap())
                .unwrap();
        let pkey = PKey::from_rsa(rsa.clone()).unwrap();
        for (hash, mgf) in [
            (Hash::Sha256, Hash::Sha256),
            (Hash::Sha1, Hash::Sha384),
            (Hash::Sha384, Hash::Sha1),
        ] {
            for msg in [&b""[..], b"m", &[0u8; 20][..], &[1u8; 128 - 2 * 48 - 2][..]] {
                let label = b"a label";
                let c = oaep_label::encrypt(&public, hash, mgf, label, msg).unwrap();
                let mut ctx = PkeyCtx::new(&pkey).unwrap();
                ctx.decrypt_init().unwrap();
                oaep_setup(&mut ctx, hash, mgf, label).unwrap();
                let mut p = Vec::new();
                ctx.decrypt_to_vec(&c, &mut p).unwrap();
                assert_eq!(p, msg);
                let mut ctx = PkeyCtx::new(&pkey).unwrap();
                ctx.encrypt_init().unwrap();
                oaep_setup(&mut ctx, hash, mgf, label).unwrap();
                let mut c = Vec::new();
                ctx.encrypt_to_vec(msg, &mut c).unwrap();
                assert_eq!(
                    oaep_label::decrypt(&rsa, hash, mgf, label, &c).unwrap(),
                    msg
                );
                assert_eq!(
                    oaep_label::decrypt(&rsa, hash, mgf, b"another", &c),
                    Err(ckr::ENCRYPTED_DATA_INVALID)
                );
                let mut bent = c.clone();
                bent[5] ^= 1;
                assert_eq!(
                    oaep_label::decrypt(&rsa, hash, mgf, label, &bent),
                    Err(ckr::ENCRYPTED_DATA_INVALID)
                );
            }
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn cmac_rfc4493_vectors_in_one_and_many_parts() {
        let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
        let msg = hex(
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
             30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
        );
        let cases = [
            (0, "bb1d6929e95937287fa37d129b756746"),
            (16, "070a16b46b4d4144f79bdd9dd04a287c"),
            (40, "dfa66747de9ae63030ca32611497c827"),
            (64, "51f0bebf7e3b9d92fc49741779363cfe"),
        ];
        for (n, want) in cases {
            let mut one = Cmac::new(&key).unwrap();
            one.update(&msg[..n]).unwrap();
            assert_eq!(one.finish().unwrap(), hex(want), "{n} bytes");
            let mut many = Cmac::new(&key).unwrap();
            for c in msg[..n].chunks(5) {
                many.update(c).unwrap();
            }
            assert_eq!(many.finish().unwrap(), hex(want), "{n} bytes in parts");
        }
    }
}
