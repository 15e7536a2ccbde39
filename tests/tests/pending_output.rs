//! Output kept for the application after `CKR_BUFFER_TOO_SMALL` belongs to
//! its operation: other calls on the same session between the short call
//! and its retry (`C_GetAttributeValue`, `C_GenerateRandom`, `C_WrapKey`,
//! `C_FindObjects*`, `C_Digest*`) must not change it. Every retried output
//! is checked against OpenSSL.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsmlink_tests::keys::pattern;
use hsmlink_tests::raw::{self, rv_name, AttrQuery, CKR_BUFFER_TOO_SMALL, CKR_OK};
use hsmlink_tests::{token, unique_label, verify, Token};
use openssl::symm::Cipher;

const KEY: [u8; 32] = [0x42; 32];
const IV: [u8; 16] = [0x24; 16];

/// What the test calls between the short call and the retry.
#[derive(Debug, Clone, Copy)]
enum Between {
    GetAttributeValue,
    GenerateRandom,
    WrapKey,
    FindObjects,
    Digest,
    Everything,
}

const ALL: [Between; 6] = [
    Between::GetAttributeValue,
    Between::GenerateRandom,
    Between::WrapKey,
    Between::FindObjects,
    Between::Digest,
    Between::Everything,
];

struct Fixture {
    key: ObjectHandle,
    /// A data object with a long value, and a long label: replies that
    /// would overwrite a pending output entirely.
    data: ObjectHandle,
    wrapping: ObjectHandle,
    exportable: ObjectHandle,
}

fn fixture(session: &Session) -> Fixture {
    let key = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(KEY.to_vec()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Extractable(true),
            Attribute::Sensitive(false),
            Attribute::Label(b"LABEL-LABEL-LABEL-LABEL-LABEL-LABEL-LABEL-LABEL-".to_vec()),
        ])
        .expect("C_CreateObject(AES key)");
    let data = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(unique_label("pending").into_bytes()),
            Attribute::Value(vec![0xEE; 4096]),
        ])
        .expect("C_CreateObject(data)");
    let wrapping = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![0x17; 16]),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Extractable(true),
            Attribute::Sensitive(false),
        ])
        .expect("C_CreateObject(wrapping key)");
    let exportable = hsmlink_tests::keys::import_aes(session, &[0x33; 32]);
    Fixture {
        key,
        data,
        wrapping,
        exportable,
    }
}

/// The calls between: each must work (or fail cleanly) without touching
/// the pending output.
fn interleave(t: &Token, session: &Session, f: &Fixture, what: Between) {
    let h = session.handle();
    let get_attributes = || {
        let mut q = [
            AttrQuery::value(raw::CKA_LABEL, 256),
            AttrQuery::value(raw::CKA_VALUE, 32),
        ];
        let rv = t.raw.get_attribute_value(h, f.key, &mut q);
        assert_eq!(rv, CKR_OK, "C_GetAttributeValue between: {}", rv_name(rv));
        assert_eq!(q[1].value, KEY);
        let mut q = [AttrQuery::value(raw::CKA_VALUE, 8192)];
        let rv = t.raw.get_attribute_value(h, f.data, &mut q);
        assert_eq!(rv, CKR_OK, "{}", rv_name(rv));
        assert_eq!(q[0].value.len(), 4096);
    };
    let random = || {
        let (rv, r) = t.raw.generate_random(h, 4096);
        assert_eq!(rv, CKR_OK, "C_GenerateRandom between: {}", rv_name(rv));
        assert!(r.iter().any(|&b| b != 0));
    };
    let wrap = || {
        let w = t.raw.wrap_key(
            h,
            raw::CKM_AES_KEY_WRAP,
            f.wrapping.handle(),
            f.exportable.handle(),
            Some(64),
        );
        assert_eq!(w.rv, CKR_OK, "C_WrapKey between: {}", w.rv_name());
        assert_eq!(w.data.len(), 40);
    };
    let find = || {
        // Another operation on the session: refused or done, either way
        // the pending output stays.
        let rv = t.raw.find_objects_init_all(h);
        if rv == CKR_OK {
            let _ = t.raw.find_objects(h, 64);
            assert_eq!(t.raw.find_objects_final(h), CKR_OK);
        } else {
            assert_eq!(rv, raw::CKR_OPERATION_ACTIVE, "{}", rv_name(rv));
        }
        let _ = t.raw.find_objects(h, 64);
    };
    let digest = || {
        match session.digest_init(&Mechanism::Sha256) {
            Ok(()) => {
                let _ = t.raw.digest(h, b"abc", Some(64));
            }
            Err(e) => assert_eq!(
                hsmlink_tests::rv_of::<()>(Err(e)),
                cryptoki::error::RvError::OperationActive
            ),
        }
        let _ = t.raw.digest(h, b"abc", Some(64));
    };
    match what {
        Between::GetAttributeValue => get_attributes(),
        Between::GenerateRandom => random(),
        Between::WrapKey => wrap(),
        Between::FindObjects => find(),
        Between::Digest => digest(),
        Between::Everything => {
            get_attributes();
            random();
            wrap();
            find();
            digest();
            get_attributes();
        }
    }
    // The object size too (one more exchange).
    let _ = t.raw.object_size(h, f.data);
}

/// The scenario: `C_Encrypt` answers `CKR_BUFFER_TOO_SMALL`, other
/// calls follow on the session, the retried `C_Encrypt` must return the
/// ciphertext (not the label the interleaved call fetched).
#[test]
fn pending_output_of_encrypt_survives_other_calls() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();
    let f = fixture(&session);
    let data = pattern(1000);
    let expected = verify::aes_encrypt(Cipher::aes_256_cbc(), &KEY, Some(&IV), true, &data);
    for what in ALL {
        session
            .encrypt_init(&Mechanism::AesCbcPad(IV), f.key)
            .expect("C_EncryptInit");
        let small = t.raw.encrypt(h, &data, Some(16));
        assert_eq!(small.rv, CKR_BUFFER_TOO_SMALL, "{}", small.rv_name());
        interleave(&t, &session, &f, what);
        let full = t.raw.encrypt(h, &data, Some(2048));
        assert_eq!(
            full.rv,
            CKR_OK,
            "{what:?}: retried C_Encrypt: {}",
            full.rv_name()
        );
        assert!(
            full.data == expected,
            "{what:?} between: the retried C_Encrypt returned other bytes (CKR_OK)"
        );
    }
}

#[test]
fn pending_output_of_decrypt_survives_other_calls() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();
    let f = fixture(&session);
    let data = pattern(3000);
    let ct = verify::aes_encrypt(Cipher::aes_256_cbc(), &KEY, Some(&IV), true, &data);
    for what in ALL {
        session
            .decrypt_init(&Mechanism::AesCbcPad(IV), f.key)
            .expect("C_DecryptInit");
        let small = t.raw.decrypt(h, &ct, Some(8));
        assert_eq!(small.rv, CKR_BUFFER_TOO_SMALL, "{}", small.rv_name());
        interleave(&t, &session, &f, what);
        let full = t.raw.decrypt(h, &ct, Some(4096));
        assert_eq!(
            full.rv,
            CKR_OK,
            "{what:?}: retried C_Decrypt: {}",
            full.rv_name()
        );
        assert!(
            full.data == data,
            "{what:?} between: wrong plaintext with CKR_OK"
        );
    }
}

/// Multi-part: an update's output kept after a short buffer, then the
/// final's, with other calls in between each time.
#[test]
fn pending_output_of_updates_and_finals_survives_other_calls() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();
    let f = fixture(&session);
    let data = pattern(64);
    let expected = verify::aes_encrypt(Cipher::aes_256_cbc(), &KEY, Some(&IV), true, &data);
    for what in ALL {
        session
            .encrypt_init(&Mechanism::AesCbcPad(IV), f.key)
            .expect("C_EncryptInit");
        let small = t.raw.encrypt_update(h, &data, Some(4));
        assert_eq!(small.rv, CKR_BUFFER_TOO_SMALL, "{}", small.rv_name());
        interleave(&t, &session, &f, what);
        let part = t.raw.encrypt_update(h, &data, Some(256));
        assert_eq!(
            part.rv,
            CKR_OK,
            "{what:?}: retried update: {}",
            part.rv_name()
        );
        let small = t.raw.encrypt_final(h, Some(1));
        let mut out = part.data.clone();
        if small.rv == CKR_BUFFER_TOO_SMALL {
            interleave(&t, &session, &f, what);
            let last = t.raw.encrypt_final(h, Some(64));
            assert_eq!(
                last.rv,
                CKR_OK,
                "{what:?}: retried final: {}",
                last.rv_name()
            );
            out.extend_from_slice(&last.data);
        } else {
            assert_eq!(small.rv, CKR_OK, "{}", small.rv_name());
            out.extend_from_slice(&small.data);
        }
        assert!(
            out == expected,
            "{what:?} between: wrong ciphertext with CKR_OK"
        );
    }
}

/// A pending output that is never taken does not leak into the next
/// operation, and a closed session's pending output is gone.
#[test]
fn pending_output_is_dropped_with_its_operation() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();
    let f = fixture(&session);
    session
        .encrypt_init(&Mechanism::AesEcb, f.key)
        .expect("C_EncryptInit");
    let small = t.raw.encrypt(h, &[1u8; 64], Some(16));
    assert_eq!(small.rv, CKR_BUFFER_TOO_SMALL);
    // Start over with another operation: v2.40 lets C_EncryptInit fail
    // while one is active; end it by asking with a big enough buffer.
    let full = t.raw.encrypt(h, &[1u8; 64], Some(64));
    assert_eq!(full.rv, CKR_OK);
    session
        .encrypt_init(&Mechanism::AesEcb, f.key)
        .expect("C_EncryptInit again");
    let other = t.raw.encrypt(h, &[2u8; 16], Some(16));
    assert_eq!(other.rv, CKR_OK, "{}", other.rv_name());
    let expected = verify::aes_encrypt(Cipher::aes_256_ecb(), &KEY, None, false, &[2u8; 16]);
    assert_eq!(other.data, expected, "the new operation's own output");
}
