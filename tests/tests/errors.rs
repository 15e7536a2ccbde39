//! Error paths: bad handles, operation order, the length-query convention
//! and CKR_BUFFER_TOO_SMALL, bad arguments.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsmlink_tests::keys::{self, pattern};
use hsmlink_tests::raw::{self, rv_name, CKR_BUFFER_TOO_SMALL, CKR_OK};
use hsmlink_tests::verify;
use hsmlink_tests::{assert_rv, rv_of, token, unique_label, PIN};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;

#[test]
fn bad_session_handles_are_session_handle_invalid() {
    let t = token();
    for bogus in [0u64, 0xdead_beef, u32::MAX as u64] {
        let (rv, _) = t.raw.get_session_info(bogus);
        assert_eq!(
            rv,
            raw::CKR_SESSION_HANDLE_INVALID,
            "C_GetSessionInfo({bogus:#x}): {}",
            rv_name(rv)
        );
        assert_eq!(
            t.raw.close_session(bogus),
            raw::CKR_SESSION_HANDLE_INVALID,
            "C_CloseSession({bogus:#x})"
        );
        assert_eq!(
            t.raw.login(bogus, raw::CKU_USER, PIN.as_bytes()),
            raw::CKR_SESSION_HANDLE_INVALID,
            "C_Login({bogus:#x})"
        );
    }
    // A closed session's handle is invalid, and not reused by the next session.
    let session = t.rw_session();
    let old = session.handle();
    session.close().expect("C_CloseSession");
    let (rv, _) = t.raw.get_session_info(old);
    assert_eq!(
        rv,
        raw::CKR_SESSION_HANDLE_INVALID,
        "closed session: {}",
        rv_name(rv)
    );
    assert_eq!(
        t.raw.close_session(old),
        raw::CKR_SESSION_HANDLE_INVALID,
        "closing twice"
    );
    let next = t.rw_session();
    assert_ne!(
        next.handle(),
        old,
        "a closed session's handle was reused at once"
    );
    assert_ne!(next.handle(), 0, "CK_INVALID_HANDLE handed out");
}

#[test]
fn bad_object_and_key_handles() {
    let t = token();
    let session = t.user_session();
    let aes = keys::aes(&session, 16, false);
    let destroyed = keys::aes(&session, 16, false);
    session.destroy_object(destroyed).expect("destroy");
    for bogus in [
        raw::object_handle(0),
        raw::object_handle(0xdead_beef),
        destroyed,
    ] {
        assert_rv(
            session.get_attributes(bogus, &[AttributeType::Class]),
            RvError::ObjectHandleInvalid,
        );
        assert_rv(session.destroy_object(bogus), RvError::ObjectHandleInvalid);
        assert_rv(
            session.copy_object(bogus, &[]),
            RvError::ObjectHandleInvalid,
        );
        assert_rv(
            session.sign_init(&Mechanism::Sha256Hmac, bogus),
            RvError::KeyHandleInvalid,
        );
        assert_rv(
            session.verify_init(&Mechanism::EcdsaSha256, bogus),
            RvError::KeyHandleInvalid,
        );
        assert_rv(
            session.encrypt_init(&Mechanism::AesEcb, bogus),
            RvError::KeyHandleInvalid,
        );
        assert_rv(
            session.decrypt_init(&Mechanism::AesEcb, bogus),
            RvError::KeyHandleInvalid,
        );
    }
    // A data object is not a key.
    let data = session
        .create_object(&[Attribute::Class(ObjectClass::DATA), Attribute::Token(false)])
        .expect("data");
    let rv = rv_of(session.encrypt_init(&Mechanism::AesEcb, data));
    assert!(
        matches!(rv, RvError::KeyHandleInvalid | RvError::KeyTypeInconsistent),
        "C_EncryptInit with a data object: got {rv:?}"
    );
    // Handles are not reused: a new object never gets the destroyed one's handle.
    let fresh = keys::aes(&session, 16, false);
    assert_ne!(fresh, destroyed);
    assert_ne!(fresh, aes);
}

#[test]
fn operations_in_the_wrong_order() {
    let t = token();
    let session = t.user_session();
    let key = keys::import_aes(&session, &[1u8; 16]);
    let hmac = keys::import_generic_secret(&session, &[2u8; 32]);

    // Update/final/single-part without init.
    assert_rv(session.sign_update(b"x"), RvError::OperationNotInitialized);
    assert_rv(session.sign_final(), RvError::OperationNotInitialized);
    assert_rv(
        session.verify_update(b"x"),
        RvError::OperationNotInitialized,
    );
    assert_rv(
        session.verify_final(&[0; 32]),
        RvError::OperationNotInitialized,
    );
    assert_rv(
        session.encrypt_update(&[0; 16]),
        RvError::OperationNotInitialized,
    );
    assert_rv(session.encrypt_final(), RvError::OperationNotInitialized);
    assert_rv(
        session.decrypt_update(&[0; 16]),
        RvError::OperationNotInitialized,
    );
    assert_rv(session.decrypt_final(), RvError::OperationNotInitialized);
    assert_rv(
        session.digest_update(b"x"),
        RvError::OperationNotInitialized,
    );
    assert_rv(session.digest_final(), RvError::OperationNotInitialized);
    let h = session.handle();
    for (name, out) in [
        ("C_Sign", t.raw.sign(h, b"x", Some(64))),
        ("C_Encrypt", t.raw.encrypt(h, &[0; 16], Some(64))),
        ("C_Decrypt", t.raw.decrypt(h, &[0; 16], Some(64))),
        ("C_Digest", t.raw.digest(h, b"x", Some(64))),
    ] {
        assert_eq!(
            out.rv,
            raw::CKR_OPERATION_NOT_INITIALIZED,
            "{name} without init: {}",
            out.rv_name()
        );
    }
    assert_eq!(
        t.raw.verify(h, b"x", &[0; 32]),
        raw::CKR_OPERATION_NOT_INITIALIZED,
        "C_Verify without init"
    );

    // Init twice.
    session
        .sign_init(&Mechanism::Sha256Hmac, hmac)
        .expect("C_SignInit");
    assert_rv(
        session.sign_init(&Mechanism::Sha256Hmac, hmac),
        RvError::OperationActive,
    );
    session
        .sign_update(b"abc")
        .expect("update after a refused init");
    let mac = session.sign_final().expect("final after a refused init");
    assert_eq!(
        mac,
        verify::hmac(MessageDigest::sha256(), &[2u8; 32], b"abc"),
        "the first operation was kept"
    );
    // A finished operation is gone.
    assert_rv(session.sign_update(b"x"), RvError::OperationNotInitialized);

    session
        .encrypt_init(&Mechanism::AesEcb, key)
        .expect("C_EncryptInit");
    assert_rv(
        session.encrypt_init(&Mechanism::AesEcb, key),
        RvError::OperationActive,
    );
    let ct = session.encrypt(&Mechanism::AesEcb, key, &[0; 16]);
    // cryptoki's encrypt() calls EncryptInit again: refused while active.
    assert_rv(ct, RvError::OperationActive);
    let out = t.raw.encrypt(h, &[0; 16], Some(16));
    assert_eq!(
        out.rv,
        CKR_OK,
        "C_Encrypt on the active operation: {}",
        out.rv_name()
    );

    session
        .digest_init(&Mechanism::Sha256)
        .expect("C_DigestInit");
    assert_rv(
        session.digest_init(&Mechanism::Sha256),
        RvError::OperationActive,
    );
    session.digest_final().expect("C_DigestFinal");

    session
        .verify_init(&Mechanism::Sha256Hmac, hmac)
        .expect("C_VerifyInit");
    assert_rv(
        session.verify_init(&Mechanism::Sha256Hmac, hmac),
        RvError::OperationActive,
    );
    session.verify_update(b"abc").expect("C_VerifyUpdate");
    session.verify_final(&mac).expect("C_VerifyFinal");

    // A failed single-part call ends the operation (other than the
    // length query and CKR_BUFFER_TOO_SMALL).
    session
        .decrypt_init(&Mechanism::AesEcb, key)
        .expect("C_DecryptInit");
    let out = t.raw.decrypt(h, &[0; 15], Some(64));
    assert_eq!(
        out.rv,
        raw::CKR_ENCRYPTED_DATA_LEN_RANGE,
        "{}",
        out.rv_name()
    );
    let out = t.raw.decrypt(h, &[0; 16], Some(64));
    assert_eq!(
        out.rv,
        raw::CKR_OPERATION_NOT_INITIALIZED,
        "after an error: {}",
        out.rv_name()
    );
}

#[test]
fn length_query_and_buffer_too_small_keep_the_operation() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();

    // Sign (ECDSA P-256: 64 bytes).
    let pair = keys::ec(&session, Nid::X9_62_PRIME256V1, &unique_label("lenq"));
    let public = verify::ec_public_key(&session, pair.public);
    session
        .sign_init(&Mechanism::EcdsaSha256, pair.private)
        .expect("C_SignInit");
    let query = t.raw.sign(h, b"message", None);
    assert_eq!(query.rv, CKR_OK, "C_Sign length query: {}", query.rv_name());
    assert_eq!(query.len, 64, "C_Sign length query");
    let small = t.raw.sign(h, b"message", Some(10));
    assert_eq!(
        small.rv,
        CKR_BUFFER_TOO_SMALL,
        "C_Sign 10-byte buffer: {}",
        small.rv_name()
    );
    assert_eq!(
        small.len, 64,
        "CKR_BUFFER_TOO_SMALL reports the size needed"
    );
    let full = t.raw.sign(h, b"message", Some(64));
    assert_eq!(
        full.rv,
        CKR_OK,
        "C_Sign after a length query: {}",
        full.rv_name()
    );
    assert_eq!(full.len, 64);
    assert!(verify::ecdsa_verifies(
        &public,
        Some(MessageDigest::sha256()),
        b"message",
        &full.data
    ));
    let after = t.raw.sign(h, b"message", Some(64));
    assert_eq!(
        after.rv,
        raw::CKR_OPERATION_NOT_INITIALIZED,
        "the operation ended: {}",
        after.rv_name()
    );

    // SignFinal.
    session
        .sign_init(&Mechanism::EcdsaSha256, pair.private)
        .expect("C_SignInit");
    session.sign_update(b"message").expect("C_SignUpdate");
    let query = t.raw.sign_final(h, None);
    assert_eq!(
        (query.rv, query.len),
        (CKR_OK, 64),
        "C_SignFinal length query: {}",
        query.rv_name()
    );
    let small = t.raw.sign_final(h, Some(1));
    assert_eq!(
        (small.rv, small.len),
        (CKR_BUFFER_TOO_SMALL, 64),
        "{}",
        small.rv_name()
    );
    let full = t.raw.sign_final(h, Some(200));
    assert_eq!(full.rv, CKR_OK, "{}", full.rv_name());
    assert_eq!(full.data.len(), 64, "ulSignatureLen set to the real length");
    assert!(verify::ecdsa_verifies(
        &public,
        Some(MessageDigest::sha256()),
        b"message",
        &full.data
    ));

    // RSA-2048: 256 bytes.
    let rsa = keys::rsa(&session, 2048, &unique_label("lenq"));
    session
        .sign_init(&Mechanism::Sha256RsaPkcs, rsa.private)
        .expect("C_SignInit");
    let query = t.raw.sign(h, b"message", None);
    assert_eq!(
        (query.rv, query.len),
        (CKR_OK, 256),
        "RSA length query: {}",
        query.rv_name()
    );
    let small = t.raw.sign(h, b"message", Some(255));
    assert_eq!(
        (small.rv, small.len),
        (CKR_BUFFER_TOO_SMALL, 256),
        "{}",
        small.rv_name()
    );
    assert_eq!(t.raw.sign(h, b"message", Some(256)).rv, CKR_OK);

    // Digest.
    session
        .digest_init(&Mechanism::Sha384)
        .expect("C_DigestInit");
    let query = t.raw.digest(h, b"abc", None);
    assert_eq!(
        (query.rv, query.len),
        (CKR_OK, 48),
        "C_Digest length query: {}",
        query.rv_name()
    );
    let small = t.raw.digest(h, b"abc", Some(47));
    assert_eq!(
        (small.rv, small.len),
        (CKR_BUFFER_TOO_SMALL, 48),
        "{}",
        small.rv_name()
    );
    let full = t.raw.digest(h, b"abc", Some(48));
    assert_eq!(full.rv, CKR_OK);
    assert_eq!(full.data, verify::hash(MessageDigest::sha384(), b"abc"));
    session.digest_init(&Mechanism::Sha1).expect("C_DigestInit");
    session.digest_update(b"abc").expect("C_DigestUpdate");
    let small = t.raw.digest_final(h, Some(0));
    assert_eq!(
        (small.rv, small.len),
        (CKR_BUFFER_TOO_SMALL, 20),
        "{}",
        small.rv_name()
    );
    let full = t.raw.digest_final(h, Some(20));
    assert_eq!(full.data, verify::hash(MessageDigest::sha1(), b"abc"));

    // Encrypt / Decrypt (CBC_PAD: 33 bytes -> 48).
    let bytes = [5u8; 32];
    let key = keys::import_aes(&session, &bytes);
    let iv = [9u8; 16];
    let data = pattern(33);
    session
        .encrypt_init(&Mechanism::AesCbcPad(iv), key)
        .expect("C_EncryptInit");
    let query = t.raw.encrypt(h, &data, None);
    assert_eq!(
        query.rv,
        CKR_OK,
        "C_Encrypt length query: {}",
        query.rv_name()
    );
    assert!(query.len >= 48, "C_Encrypt length query {} < 48", query.len);
    let small = t.raw.encrypt(h, &data, Some(16));
    assert_eq!(small.rv, CKR_BUFFER_TOO_SMALL, "{}", small.rv_name());
    assert!(small.len >= 48);
    let full = t.raw.encrypt(h, &data, Some(query.len as usize));
    assert_eq!(full.rv, CKR_OK, "{}", full.rv_name());
    assert_eq!(full.data.len(), 48, "the real ciphertext length");
    let expected = verify::aes_encrypt(
        openssl::symm::Cipher::aes_256_cbc(),
        &bytes,
        Some(&iv),
        true,
        &data,
    );
    assert_eq!(full.data, expected);

    session
        .decrypt_init(&Mechanism::AesCbcPad(iv), key)
        .expect("C_DecryptInit");
    let query = t.raw.decrypt(h, &expected, None);
    assert_eq!(
        query.rv,
        CKR_OK,
        "C_Decrypt length query: {}",
        query.rv_name()
    );
    assert!(
        query.len >= 33,
        "a C_Decrypt length query may over-estimate, not under: {}",
        query.len
    );
    let small = t.raw.decrypt(h, &expected, Some(8));
    assert_eq!(small.rv, CKR_BUFFER_TOO_SMALL, "{}", small.rv_name());
    let full = t.raw.decrypt(h, &expected, Some(64));
    assert_eq!(full.rv, CKR_OK, "{}", full.rv_name());
    assert_eq!(full.data, data);

    // EncryptUpdate with a too-small buffer keeps the operation.
    session
        .encrypt_init(&Mechanism::AesEcb, key)
        .expect("C_EncryptInit");
    let small = t.raw.encrypt_update(h, &[0u8; 32], Some(16));
    assert_eq!(
        (small.rv, small.len),
        (CKR_BUFFER_TOO_SMALL, 32),
        "{}",
        small.rv_name()
    );
    let full = t.raw.encrypt_update(h, &[0u8; 32], Some(32));
    assert_eq!((full.rv, full.len), (CKR_OK, 32), "{}", full.rv_name());
    let fin = t.raw.encrypt_final(h, Some(16));
    assert_eq!((fin.rv, fin.len), (CKR_OK, 0), "{}", fin.rv_name());
}

#[test]
fn mechanism_list_length_query() {
    let t = token();
    let query = t.raw.mechanism_list(1, None);
    assert_eq!(query.rv, CKR_OK, "{}", query.rv_name());
    assert!(query.len >= 30, "only {} mechanisms", query.len);
    let small = t.raw.mechanism_list(1, Some(2));
    assert_eq!(small.rv, CKR_BUFFER_TOO_SMALL, "{}", small.rv_name());
    assert_eq!(small.len, query.len);
    let full = t.raw.mechanism_list(1, Some(query.len as usize));
    assert_eq!(full.rv, CKR_OK);
    assert_eq!(full.data.len() as u64, query.len);
}

#[test]
fn bad_arguments() {
    let t = token();
    let session = t.rw_session();
    assert_eq!(
        t.raw.get_session_info_null(session.handle()),
        raw::CKR_ARGUMENTS_BAD,
        "C_GetSessionInfo(NULL)"
    );
    assert_eq!(
        t.raw.login(session.handle(), 7, PIN.as_bytes()),
        raw::CKR_USER_TYPE_INVALID,
        "C_Login with user type 7"
    );
    // CKU_CONTEXT_SPECIFIC outside an operation that needs it.
    let rv = t
        .raw
        .login(session.handle(), raw::CKU_CONTEXT_SPECIFIC, PIN.as_bytes());
    assert!(
        rv == raw::CKR_OPERATION_NOT_INITIALIZED
            || rv == raw::CKR_USER_TYPE_INVALID
            || rv == raw::CKR_USER_NOT_LOGGED_IN,
        "C_Login(CKU_CONTEXT_SPECIFIC) with no operation: {}",
        rv_name(rv)
    );
    // An empty PIN is not the password.
    let rv = rv_of(session.login(UserType::User, Some(&AuthPin::new(String::new().into()))));
    assert!(
        matches!(
            rv,
            RvError::PinIncorrect | RvError::PinLenRange | RvError::ArgumentsBad
        ),
        "empty PIN: {rv:?}"
    );
    // An unknown mechanism.
    let key_session = t.user_session();
    let key = keys::import_aes(&key_session, &[1u8; 16]);
    let bogus = cryptoki::mechanism::vendor_defined::VendorDefinedMechanism::new::<()>(
        cryptoki::mechanism::MechanismType::new_vendor_defined(
            cryptoki_sys::CKM_VENDOR_DEFINED | 0x1234,
        )
        .expect("vendor mechanism"),
        None,
    );
    assert_rv(
        key_session.encrypt_init(&Mechanism::VendorDefined(bogus), key),
        RvError::MechanismInvalid,
    );
    assert_rv(
        key_session.digest_init(&Mechanism::VendorDefined(bogus)),
        RvError::MechanismInvalid,
    );
    assert_rv(
        t.pkcs11.get_mechanism_info(
            t.slot,
            cryptoki::mechanism::MechanismType::new_vendor_defined(
                cryptoki_sys::CKM_VENDOR_DEFINED | 0x1234,
            )
            .expect("vendor"),
        ),
        RvError::MechanismInvalid,
    );
}
