//! Encryption at rest.
//!
//! Every token object is stored sealed: its secret attributes (the key
//! material of private and secret keys, the value of data objects) are
//! encrypted with AES-256-GCM under the **master key**, and its other
//! attributes, owner and handle are bound to that ciphertext as associated
//! data, so that a record cannot be altered (made exportable, moved to
//! another user or handle) without the server refusing it.
//!
//! The master key is 32 random bytes made when a store is first served. It
//! is kept in the store wrapped (AES-256-GCM) by a key-encrypting key that
//! comes from one of:
//! - an operator **passphrase**, through argon2id (64 MiB, 3 passes);
//! - a **key file** of at least 32 bytes of randomness, through SHA-256;
//! - nothing (**unprotected**): the master key is stored as is, a mode for
//!   development only that the server warns about at every start.
//!
//! A wrong passphrase or key file fails the GCM tag of the wrapped master
//! key, so the server refuses to start with a clear message instead of
//! serving garbage.

use std::fmt;

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::store::ObjectRecord;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Smallest key file accepted (bytes).
pub const MIN_KEY_FILE: usize = 32;

/// Argon2id cost of a new passphrase-protected keyring.
const KDF_M_KIB: u32 = 64 * 1024;
const KDF_T: u32 = 3;
const KDF_P: u32 = 1;

/// A failure to open or use the vault. The text never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultError(pub String);

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VaultError {}

fn verr(s: impl Into<String>) -> VaultError {
    VaultError(s.into())
}

/// What the operator gave to unlock the master key.
pub enum Unlock {
    /// A passphrase (its bytes).
    Passphrase(Zeroizing<Vec<u8>>),
    /// The content of a key file.
    KeyFile(Zeroizing<Vec<u8>>),
    /// Nothing: an unprotected keyring only.
    Nothing,
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unlock::Passphrase(_) => "Unlock::Passphrase(..)",
            Unlock::KeyFile(_) => "Unlock::KeyFile(..)",
            Unlock::Nothing => "Unlock::Nothing",
        })
    }
}

impl Unlock {
    /// A short name for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Unlock::Passphrase(_) => "a passphrase",
            Unlock::KeyFile(_) => "a key file",
            Unlock::Nothing => "no passphrase",
        }
    }
}

/// The master key (32 bytes, zeroed on drop, never printed).
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).map_err(|e| verr(format!("random: {e}")))?;
    Ok(b)
}

fn gcm_seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
    let nonce: [u8; NONCE_LEN] = random()?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&nonce),
        aad,
        plain,
        &mut tag,
    )
    .map_err(|e| verr(format!("encrypt: {e}")))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

fn gcm_open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), key, Some(nonce), aad, ct, tag)
        .ok()
        .map(Zeroizing::new)
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Result<MasterKey, VaultError> {
        Ok(MasterKey(Zeroizing::new(random()?)))
    }

    /// Encrypt `plain` with associated data `aad`: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        gcm_seal(&self.0, aad, plain)
    }

    /// Decrypt what [`MasterKey::seal`] made with the same `aad`; `None` if
    /// the key, the data or the associated data differ.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        gcm_open(&self.0, aad, sealed)
    }
}

/// The key that authenticates user records (password hash, lock state,
/// id, and whatever fields a record has): HKDF-SHA256 of the master key, so
/// that whoever can write the database but has no master key cannot forge
/// or edit one. Zeroed on drop, never printed.
pub struct RecordKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

/// Length of a user record's tag.
pub const RECORD_TAG_LEN: usize = 32;

impl RecordKey {
    fn mac(&self, name: &str, body: &[u8]) -> Option<hmac::Hmac<sha2::Sha256>> {
        use hmac::Mac;
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.as_slice()).ok()?;
        m.update(b"hsmlink user record v1\0");
        m.update(&(name.len() as u64).to_le_bytes());
        m.update(name.as_bytes());
        m.update(body);
        Some(m)
    }

    /// The tag of user `name`'s encoded record `body` (the name is bound:
    /// a record copied onto another user is refused).
    pub fn tag(&self, name: &str, body: &[u8]) -> Result<[u8; RECORD_TAG_LEN], VaultError> {
        use hmac::Mac;
        let m = self.mac(name, body).ok_or_else(|| verr("record key"))?;
        Ok(m.finalize().into_bytes().into())
    }

    /// Whether `tag` is user `name`'s record `body`'s (constant time).
    pub fn verify(&self, name: &str, body: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        self.mac(name, body)
            .is_some_and(|m| m.verify_slice(tag).is_ok())
    }
}

impl MasterKey {
    /// The key of user records (see [`RecordKey`]).
    pub fn record_key(&self) -> Result<RecordKey, VaultError> {
        let mut out = Zeroizing::new([0u8; 32]);
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"hsmlink records"), self.0.as_slice());
        hk.expand(b"hsmlink user record key v1", out.as_mut_slice())
            .map_err(|_| verr("record key derivation"))?;
        Ok(RecordKey(out))
    }

    /// A value that identifies this master key without revealing it (kept
    /// in the data folder, to notice a keyring replaced in the store).
    pub fn check_value(&self) -> Result<[u8; 32], VaultError> {
        let mut out = [0u8; 32];
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"hsmlink records"), self.0.as_slice());
        hk.expand(b"hsmlink master key check v1", &mut out)
            .map_err(|_| verr("check value derivation"))?;
        Ok(out)
    }
}

/// How the master key is protected in a stored keyring.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Protection {
    Passphrase {
        salt: [u8; 16],
        m_kib: u32,
        t: u32,
        p: u32,
    },
    KeyFile {
        salt: [u8; 16],
    },
    Unprotected,
}

impl Protection {
    pub fn describe(&self) -> &'static str {
        match self {
            Protection::Passphrase { .. } => "a passphrase",
            Protection::KeyFile { .. } => "a key file",
            Protection::Unprotected => "nothing (unprotected)",
        }
    }
}

/// The stored keyring: the master key, wrapped.
#[derive(Clone, Serialize, Deserialize)]
pub struct Keyring {
    pub protection: Protection,
    /// nonce ‖ ciphertext ‖ tag of the master key (or the key itself when
    /// unprotected).
    wrapped: Vec<u8>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({:?})", self.protection)
    }
}

const KEYRING_FORMAT: u8 = 1;
const KEYRING_AAD: &[u8] = b"hsmlink keyring v1";

fn kek(protection: &Protection, unlock: &Unlock) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut out = Zeroizing::new([0u8; 32]);
    match (protection, unlock) {
        (Protection::Passphrase { salt, m_kib, t, p }, Unlock::Passphrase(pw)) => {
            let params = argon2::Params::new(*m_kib, *t, *p, Some(32))
                .map_err(|e| verr(format!("keyring parameters: {e}")))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(pw, salt, out.as_mut_slice())
                .map_err(|e| verr(format!("passphrase derivation: {e}")))?;
        }
        (Protection::KeyFile { salt }, Unlock::KeyFile(content)) => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(b"hsmlink key file v1\0");
            h.update(salt);
            h.update(content.as_slice());
            out.copy_from_slice(&h.finalize());
        }
        (Protection::Unprotected, Unlock::Nothing) => {}
        (have, given) => {
            return Err(verr(format!(
                "the master key is protected by {}, but {} was given{}",
                have.describe(),
                given.describe(),
                match have {
                    Protection::Passphrase { .. } =>
                        ": give --passphrase-env VAR or --passphrase-file FILE (or set HSMLINK_PASSPHRASE)",
                    Protection::KeyFile { .. } => ": give --key-file FILE",
                    Protection::Unprotected =>
                        " (this store was first served without one; protect it with `hsmlink-hsm keyring change --new-passphrase-env VAR`)",
                }
            )))
        }
    }
    Ok(out)
}

impl Keyring {
    /// A new keyring for `master`, protected as `unlock` says.
    pub fn wrap(master: &MasterKey, unlock: &Unlock) -> Result<Keyring, VaultError> {
        let protection = match unlock {
            Unlock::Passphrase(pw) => {
                if pw.is_empty() {
                    return Err(verr("empty passphrase"));
                }
                Protection::Passphrase {
                    salt: random()?,
                    m_kib: KDF_M_KIB,
                    t: KDF_T,
                    p: KDF_P,
                }
            }
            Unlock::KeyFile(content) => {
                if content.len() < MIN_KEY_FILE {
                    return Err(verr(format!(
                        "the key file holds {} bytes; it needs at least {MIN_KEY_FILE} random bytes \
                         (make one with `head -c 32 /dev/urandom > FILE`)",
                        content.len()
                    )));
                }
                Protection::KeyFile { salt: random()? }
            }
            Unlock::Nothing => Protection::Unprotected,
        };
        let wrapped = match protection {
            Protection::Unprotected => master.0.to_vec(),
            _ => {
                let k = kek(&protection, unlock)?;
                gcm_seal(&k, KEYRING_AAD, master.0.as_slice())?
            }
        };
        Ok(Keyring {
            protection,
            wrapped,
        })
    }

    /// The master key, if `unlock` is the right passphrase or key file.
    pub fn unwrap(&self, unlock: &Unlock) -> Result<MasterKey, VaultError> {
        let k = kek(&self.protection, unlock)?;
        let plain = match self.protection {
            Protection::Unprotected => Zeroizing::new(self.wrapped.clone()),
            _ => gcm_open(&k, KEYRING_AAD, &self.wrapped).ok_or_else(|| {
                verr(match self.protection {
                    Protection::KeyFile { .. } => {
                        "wrong key file: it does not unlock this store's master key"
                    }
                    _ => "wrong passphrase: it does not unlock this store's master key",
                })
            })?,
        };
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(verr("the stored master key is damaged"));
        }
        key.copy_from_slice(&plain);
        Ok(MasterKey(key))
    }

    pub fn encode(&self) -> Result<Vec<u8>, VaultError> {
        let mut out = vec![KEYRING_FORMAT];
        out.extend(postcard::to_stdvec(self).map_err(|e| verr(format!("encode keyring: {e}")))?);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Keyring, VaultError> {
        match bytes.split_first() {
            Some((&KEYRING_FORMAT, rest)) => {
                postcard::from_bytes(rest).map_err(|_| verr("the stored keyring is damaged"))
            }
            _ => Err(verr("the stored keyring has an unknown format")),
        }
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        self.wrapped.zeroize();
    }
}

// ---------------------------------------------------------------------------
// Sealed objects
// ---------------------------------------------------------------------------

/// Format tag of a sealed object record.
pub const FORMAT_SEALED: u8 = 2;

/// An object record as stored: owner and public attributes readable (for
/// listings and searches), the secret attributes sealed, all of it bound to
/// the handle by the AEAD tag.
#[derive(Serialize, Deserialize)]
pub struct SealedObject {
    pub owner: String,
    pub public: Vec<(u64, Vec<u8>)>,
    /// nonce ‖ ciphertext ‖ tag of the postcard-encoded secret attributes.
    sealed: Vec<u8>,
}

fn object_aad(handle: u64, owner: &str, public: &[(u64, Vec<u8>)]) -> Result<Vec<u8>, VaultError> {
    let mut aad = b"hsmlink object v2\0".to_vec();
    aad.extend_from_slice(&handle.to_le_bytes());
    let body = postcard::to_stdvec(&(owner, public)).map_err(|e| verr(format!("encode: {e}")))?;
    aad.extend_from_slice(&body);
    Ok(aad)
}

/// Seal object `handle`'s record into the bytes stored.
pub fn seal_object(
    master: &MasterKey,
    handle: u64,
    rec: &ObjectRecord,
) -> Result<Vec<u8>, VaultError> {
    let aad = object_aad(handle, &rec.owner, &rec.public)?;
    let plain =
        Zeroizing::new(postcard::to_stdvec(&rec.secret).map_err(|e| verr(format!("encode: {e}")))?);
    let sealed = master.seal(&aad, &plain)?;
    let so = SealedObject {
        owner: rec.owner.clone(),
        public: rec.public.clone(),
        sealed,
    };
    let mut out = vec![FORMAT_SEALED];
    out.extend(postcard::to_stdvec(&so).map_err(|e| verr(format!("encode: {e}")))?);
    Ok(out)
}

/// The readable part of a stored object (no key needed): owner and public
/// attributes. Not authenticated: for listings only.
pub fn peek_object(bytes: &[u8]) -> Result<SealedObject, VaultError> {
    match bytes.split_first() {
        Some((&FORMAT_SEALED, rest)) => {
            postcard::from_bytes(rest).map_err(|_| verr("damaged object record"))
        }
        Some((&crate::store::FORMAT_PLAIN, _)) => {
            let rec: ObjectRecord =
                crate::store::decode_plain(bytes).map_err(|_| verr("damaged object record"))?;
            Ok(SealedObject {
                owner: rec.owner.clone(),
                public: rec.public.clone(),
                sealed: Vec::new(),
            })
        }
        _ => Err(verr("unknown object record format")),
    }
}

/// Open a stored object record: checks that it belongs to `handle` and was
/// not altered. A record of the old clear format is refused: anyone who can
/// write the database could plant one (only `hsmlink-hsm migrate` reads
/// them, through [`open_legacy_object`]).
pub fn open_object(
    master: &MasterKey,
    handle: u64,
    bytes: &[u8],
) -> Result<ObjectRecord, VaultError> {
    match bytes.split_first() {
        Some((&FORMAT_SEALED, rest)) => {
            let so: SealedObject =
                postcard::from_bytes(rest).map_err(|_| verr("damaged object record"))?;
            let aad = object_aad(handle, &so.owner, &so.public)?;
            let plain = master.open(&aad, &so.sealed).ok_or_else(|| {
                verr(format!(
                    "object {handle} fails its integrity check (altered, or sealed under another master key)"
                ))
            })?;
            let secret: Vec<(u64, Vec<u8>)> =
                postcard::from_bytes(&plain).map_err(|_| verr("damaged object record"))?;
            Ok(ObjectRecord {
                owner: so.owner.clone(),
                public: so.public.clone(),
                secret,
            })
        }
        Some((&crate::store::FORMAT_PLAIN, _)) => Err(verr(format!(
            "object {handle} is a clear record: refused (records of the format before encryption \
             at rest are read only by `hsmlink-hsm migrate`)"
        ))),
        _ => Err(verr("unknown object record format")),
    }
}

/// Open a stored object record, a clear one of the earlier format included
/// (`hsmlink-hsm migrate` only).
pub fn open_legacy_object(
    master: &MasterKey,
    handle: u64,
    bytes: &[u8],
) -> Result<ObjectRecord, VaultError> {
    if is_plain(bytes) {
        crate::store::decode_plain(bytes).map_err(|e| verr(e.0))
    } else {
        open_object(master, handle, bytes)
    }
}

/// Whether stored bytes are of the old clear format.
pub fn is_plain(bytes: &[u8]) -> bool {
    bytes.first() == Some(&crate::store::FORMAT_PLAIN)
}

/// Seal a file's content (the TLS private key) with a purpose label.
pub fn seal_blob(master: &MasterKey, purpose: &str, plain: &[u8]) -> Result<Vec<u8>, VaultError> {
    let aad = format!("hsmlink blob v1\0{purpose}");
    master.seal(aad.as_bytes(), plain)
}

/// Open what [`seal_blob`] made.
pub fn open_blob(
    master: &MasterKey,
    purpose: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let aad = format!("hsmlink blob v1\0{purpose}");
    master.open(aad.as_bytes(), sealed).ok_or_else(|| {
        verr(format!(
            "the sealed {purpose} does not open under this master key"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Unlock {
        Unlock::Passphrase(Zeroizing::new(s.as_bytes().to_vec()))
    }

    #[test]
    fn keyring_passphrase() {
        let m = MasterKey::generate().unwrap();
        let k = Keyring::wrap(&m, &pw("open sesame")).unwrap();
        let bytes = k.encode().unwrap();
        assert!(!bytes.windows(32).any(|w| w == m.0.as_slice()));
        let k = Keyring::decode(&bytes).unwrap();
        let m2 = k.unwrap(&pw("open sesame")).unwrap();
        assert_eq!(m.0.as_slice(), m2.0.as_slice());
        let e = k.unwrap(&pw("open sesamE")).unwrap_err();
        assert!(e.0.contains("wrong passphrase"), "{e}");
        let e = k.unwrap(&Unlock::Nothing).unwrap_err();
        assert!(e.0.contains("--passphrase-env"), "{e}");
        assert!(format!("{m:?}{k:?}").find("open").is_none());
    }

    #[test]
    fn keyring_key_file_and_unprotected() {
        let m = MasterKey::generate().unwrap();
        let short = Unlock::KeyFile(Zeroizing::new(vec![1; 8]));
        assert!(Keyring::wrap(&m, &short).is_err());
        let kf = Unlock::KeyFile(Zeroizing::new(vec![7; 32]));
        let k = Keyring::wrap(&m, &kf).unwrap();
        assert!(k.unwrap(&kf).is_ok());
        let other = Unlock::KeyFile(Zeroizing::new(vec![8; 32]));
        assert!(k.unwrap(&other).unwrap_err().0.contains("wrong key file"));
        let u = Keyring::wrap(&m, &Unlock::Nothing).unwrap();
        assert!(u.unwrap(&Unlock::Nothing).is_ok());
        assert!(u.unwrap(&pw("x")).unwrap_err().0.contains("keyring change"));
    }

    #[test]
    fn sealed_objects_are_bound_to_handle_owner_and_attributes() {
        let m = MasterKey::generate().unwrap();
        let rec = ObjectRecord {
            owner: "alice".into(),
            public: vec![(3, b"label".to_vec()), (0x162, vec![0])],
            secret: vec![(0x11, b"SECRETSECRETSECRET".to_vec())],
        };
        let bytes = seal_object(&m, 42, &rec).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"SECRET"));
        let back = open_object(&m, 42, &bytes).unwrap();
        assert_eq!(back.secret, rec.secret);
        assert_eq!(back.public, rec.public);
        assert!(
            open_object(&m, 43, &bytes).is_err(),
            "moved to another handle"
        );
        let other = MasterKey::generate().unwrap();
        assert!(open_object(&other, 42, &bytes).is_err());
        // Flip CKA_EXTRACTABLE-like public byte: refused.
        let mut so = peek_object(&bytes).unwrap();
        so.public[1].1[0] = 1;
        let mut altered = vec![FORMAT_SEALED];
        altered.extend(postcard::to_stdvec(&so).unwrap());
        assert!(open_object(&m, 42, &altered).is_err(), "altered attributes");
        so.public[1].1[0] = 0;
        so.owner = "bob".into();
        let mut moved = vec![FORMAT_SEALED];
        moved.extend(postcard::to_stdvec(&so).unwrap());
        assert!(
            open_object(&m, 42, &moved).is_err(),
            "moved to another user"
        );
    }
}
