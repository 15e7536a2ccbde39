//! Key generation and import helpers shared by the test files.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use openssl::nid::Nid;

use crate::verify::params_of_curve;

/// A generated key pair.
#[derive(Debug, Clone, Copy)]
pub struct KeyPair {
    /// `CKO_PUBLIC_KEY` handle.
    pub public: ObjectHandle,
    /// `CKO_PRIVATE_KEY` handle.
    pub private: ObjectHandle,
}

/// `C_GenerateKeyPair(CKM_RSA_PKCS_KEY_PAIR_GEN)`, session objects, e = 65537.
pub fn rsa(session: &Session, bits: u64, label: &str) -> KeyPair {
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::ModulusBits(bits.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                Attribute::Verify(true),
                Attribute::Encrypt(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(label.as_bytes().to_vec()),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::Decrypt(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(label.as_bytes().to_vec()),
            ],
        )
        .unwrap_or_else(|e| panic!("C_GenerateKeyPair(RSA-{bits}): {e}"));
    KeyPair { public, private }
}

/// `C_GenerateKeyPair(CKM_EC_KEY_PAIR_GEN)` on a named curve, session objects.
pub fn ec(session: &Session, curve: Nid, label: &str) -> KeyPair {
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(params_of_curve(curve)),
                Attribute::Verify(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(label.as_bytes().to_vec()),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(label.as_bytes().to_vec()),
            ],
        )
        .unwrap_or_else(|e| panic!("C_GenerateKeyPair(EC {curve:?}): {e}"));
    KeyPair { public, private }
}

/// `C_GenerateKey(CKM_AES_KEY_GEN)`, a session key for encrypt/decrypt.
pub fn aes(session: &Session, len: u64, exportable: bool) -> ObjectHandle {
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(len.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Extractable(exportable),
                Attribute::Sensitive(!exportable),
            ],
        )
        .unwrap_or_else(|e| panic!("C_GenerateKey(AES, {len} bytes): {e}"))
}

/// `C_CreateObject` of an exportable AES key with a known value.
pub fn import_aes(session: &Session, value: &[u8]) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Extractable(true),
            Attribute::Sensitive(false),
        ])
        .unwrap_or_else(|e| panic!("C_CreateObject(AES key, {} bytes): {e}", value.len()))
}

/// `C_CreateObject` of an exportable generic secret (HMAC) key.
pub fn import_generic_secret(session: &Session, value: &[u8]) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Extractable(true),
            Attribute::Sensitive(false),
        ])
        .unwrap_or_else(|e| panic!("C_CreateObject(generic secret, {} bytes): {e}", value.len()))
}

/// A byte pattern of `len` bytes (deterministic, not all equal).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}
