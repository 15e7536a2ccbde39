//! The Dinamo profile of DESIGN.md, row by row, plus the general-purpose,
//! slot and token functions.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsmlink_tests::raw::{self, CKR_BUFFER_TOO_SMALL, CKR_OK};
use hsmlink_tests::{assert_rv, login_user, token, unique_label, PIN, SLOT_ID};

fn pin() -> AuthPin {
    AuthPin::new(PIN.into())
}

fn data_object(label: &str, token_object: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token_object),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Application(b"hsmlink-tests".to_vec()),
        Attribute::Value(b"profile test data".to_vec()),
    ]
}

fn find_by_label(
    session: &cryptoki::session::Session,
    label: &str,
) -> Vec<cryptoki::object::ObjectHandle> {
    session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .expect("C_FindObjects by label")
}

// Row: "Compatible with PKCS#11 v2.40"
#[test]
fn get_info_reports_cryptoki_2_40() {
    let t = token();
    let info = t.pkcs11.get_library_info().expect("C_GetInfo");
    let v = info.cryptoki_version();
    assert_eq!((v.major(), v.minor()), (2, 40), "C_GetInfo cryptokiVersion");
    let (rv, raw_info) = t.raw.info();
    assert_eq!(rv, CKR_OK);
    assert_eq!(raw_info.flags, 0, "CK_INFO.flags must be 0 in v2.40");
    // manufacturerID and libraryDescription are blank padded, not NUL padded.
    assert!(
        !raw_info.manufacturerID.contains(&0),
        "manufacturerID has NUL bytes"
    );
    assert!(
        !raw_info.libraryDescription.contains(&0),
        "libraryDescription has NUL bytes"
    );
}

#[test]
fn function_list_is_complete_v2_40() {
    let t = token();
    assert_eq!(t.raw.list_version(), (2, 40), "CK_FUNCTION_LIST.version");
    let missing: Vec<_> = t
        .raw
        .functions()
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| name)
        .collect();
    assert!(
        missing.is_empty(),
        "null entries in the function list: {missing:?}"
    );
    assert_eq!(t.raw.functions().len(), 68);
}

#[test]
fn interface_functions_give_the_v2_40_list() {
    let t = token();
    let list = t.raw.function_list_ptr();
    let (rv, interfaces) = t
        .raw
        .interface_list()
        .expect("C_GetInterfaceList is not exported");
    assert_eq!(rv, CKR_OK, "C_GetInterfaceList: {}", raw::rv_name(rv));
    assert!(
        !interfaces.is_empty(),
        "C_GetInterfaceList returned no interface"
    );
    let pkcs11: Vec<_> = interfaces.iter().filter(|i| i.name == "PKCS 11").collect();
    assert!(
        !pkcs11.is_empty(),
        "no \"PKCS 11\" interface in {interfaces:?}"
    );
    for interface in &pkcs11 {
        let (version, functions) = (interface.version, interface.functions);
        assert!(!functions.is_null());
        if version == (2, 40) {
            assert_eq!(
                functions, list,
                "the 2.40 interface is the C_GetFunctionList table"
            );
        } else {
            assert!(version.0 >= 3, "interface version {version:?}");
        }
    }
    let (rv, default) = t
        .raw
        .get_interface(None)
        .expect("C_GetInterface is not exported");
    assert_eq!(rv, CKR_OK, "C_GetInterface(NULL): {}", raw::rv_name(rv));
    let default = default.expect("an interface");
    assert_eq!(default.name, "PKCS 11");
    assert!(!default.functions.is_null());
    let (rv, named) = t
        .raw
        .get_interface(Some(c"PKCS 11"))
        .expect("C_GetInterface");
    assert_eq!(
        rv,
        CKR_OK,
        "C_GetInterface(\"PKCS 11\"): {}",
        raw::rv_name(rv)
    );
    assert!(named.is_some());
    let (rv, _) = t
        .raw
        .get_interface(Some(c"Vendor XYZ"))
        .expect("C_GetInterface");
    assert_ne!(
        rv, CKR_OK,
        "C_GetInterface(\"Vendor XYZ\") found an interface"
    );
}

// Row: "Only one slot, number 1"
#[test]
fn slot_list_is_exactly_slot_1() {
    let t = token();
    let all: Vec<u64> = t
        .pkcs11
        .get_all_slots()
        .expect("C_GetSlotList(FALSE)")
        .iter()
        .map(Slot::id)
        .collect();
    assert_eq!(all, vec![1]);
    let present: Vec<u64> = t
        .pkcs11
        .get_slots_with_token()
        .expect("C_GetSlotList(TRUE)")
        .iter()
        .map(Slot::id)
        .collect();
    assert_eq!(present, vec![1]);
    let initialized: Vec<u64> = t
        .pkcs11
        .get_slots_with_initialized_token()
        .expect("C_GetSlotList + C_GetTokenInfo")
        .iter()
        .map(Slot::id)
        .collect();
    assert_eq!(initialized, vec![1]);
}

#[test]
fn slot_list_length_query_and_too_small_buffer() {
    let t = token();
    let query = t.raw.slot_list(true, None);
    assert_eq!(query.rv, CKR_OK, "length query: {}", query.rv_name());
    assert_eq!(query.len, 1, "length query returns the slot count");

    let small = t.raw.slot_list(true, Some(0));
    assert_eq!(
        small.rv,
        CKR_BUFFER_TOO_SMALL,
        "0-entry buffer: {}",
        small.rv_name()
    );
    assert_eq!(small.len, 1, "CKR_BUFFER_TOO_SMALL sets the needed count");

    let full = t.raw.slot_list(false, Some(4));
    assert_eq!(full.rv, CKR_OK, "{}", full.rv_name());
    assert_eq!(full.data, vec![1]);

    assert_eq!(
        t.raw.slot_list_null_count(),
        raw::CKR_ARGUMENTS_BAD,
        "C_GetSlotList with a null pulCount"
    );
}

#[test]
fn every_other_slot_id_is_invalid() {
    let t = token();
    for id in [0u64, 2, 3, 42, u32::MAX as u64] {
        let slot = Slot::try_from(id).expect("slot");
        assert_rv(t.pkcs11.get_slot_info(slot), RvError::SlotIdInvalid);
        assert_rv(t.pkcs11.get_token_info(slot), RvError::SlotIdInvalid);
        assert_rv(t.pkcs11.get_mechanism_list(slot), RvError::SlotIdInvalid);
        assert_rv(
            t.pkcs11
                .get_mechanism_info(slot, cryptoki::mechanism::MechanismType::SHA256),
            RvError::SlotIdInvalid,
        );
        assert_rv(t.pkcs11.open_rw_session(slot), RvError::SlotIdInvalid);
        assert_rv(t.pkcs11.open_ro_session(slot), RvError::SlotIdInvalid);
        assert_eq!(
            t.raw.close_all_sessions(id),
            raw::CKR_SLOT_ID_INVALID,
            "C_CloseAllSessions({id})"
        );
    }
}

#[test]
fn slot_info_has_a_token_present() {
    let t = token();
    let info = t.pkcs11.get_slot_info(t.slot).expect("C_GetSlotInfo(1)");
    assert!(info.token_present(), "CKF_TOKEN_PRESENT");
    assert!(!info.removable_device(), "the network HSM is not removable");
}

// Row: "Fixed token label 'Dinamo HSM'"
#[test]
fn token_label_is_dinamo_hsm_blank_padded() {
    let t = token();
    let (rv, info) = t.raw.token_info(SLOT_ID);
    assert_eq!(rv, CKR_OK);
    let mut expected = [b' '; 32];
    expected[..10].copy_from_slice(b"Dinamo HSM");
    assert_eq!(
        info.label,
        expected,
        "label is {:?}",
        String::from_utf8_lossy(&info.label)
    );
    for (name, field) in [
        ("manufacturerID", &info.manufacturerID[..]),
        ("model", &info.model[..]),
        ("serialNumber", &info.serialNumber[..]),
    ] {
        assert!(
            !field.contains(&0),
            "{name} must be blank padded, has NUL bytes"
        );
    }
    let info = t.pkcs11.get_token_info(t.slot).expect("C_GetTokenInfo");
    assert_eq!(info.label(), "Dinamo HSM");
}

// Row: "Token initialization and PIN setting are done on the device"
#[test]
fn token_reports_initialized() {
    let t = token();
    let info = t.pkcs11.get_token_info(t.slot).expect("C_GetTokenInfo");
    assert!(info.token_initialized(), "CKF_TOKEN_INITIALIZED");
    assert!(info.user_pin_initialized(), "CKF_USER_PIN_INITIALIZED");
    assert!(info.login_required(), "CKF_LOGIN_REQUIRED");
    assert!(info.rng(), "CKF_RNG: C_GenerateRandom is offered");
    assert!(!info.write_protected(), "objects can be created");
    assert!(
        !info.protected_authentication_path(),
        "the PIN comes from the application"
    );
    assert!(!info.user_pin_locked() && !info.so_pin_locked());
}

#[test]
fn init_token_init_pin_set_pin_are_not_supported() {
    let t = token();
    assert_rv(
        t.pkcs11.init_token(t.slot, &pin(), "anything"),
        RvError::FunctionNotSupported,
    );

    let session = t.rw_session();
    // Before login...
    assert_rv(
        session.set_pin(&pin(), &AuthPin::new("new-pin".into())),
        RvError::FunctionNotSupported,
    );
    // ...and logged in as SO (C_InitPIN's state) and as user (C_SetPIN's).
    session
        .login(UserType::So, Some(&pin()))
        .expect("C_Login(CKU_SO)");
    assert_rv(
        session.init_pin(&AuthPin::new("new-pin".into())),
        RvError::FunctionNotSupported,
    );
    assert_rv(
        session.set_pin(&pin(), &AuthPin::new("new-pin".into())),
        RvError::FunctionNotSupported,
    );
    session.logout().expect("C_Logout");
    login_user(&session);
    assert_rv(
        session.set_pin(&pin(), &AuthPin::new("new-pin".into())),
        RvError::FunctionNotSupported,
    );
    // And the PIN is unchanged.
    session.logout().expect("C_Logout");
    session
        .login(UserType::User, Some(&pin()))
        .expect("C_Login with the original PIN");
}

// Row: "The user comes from configuration, or from the PIN" (the
// configuration variants are in config.rs).
#[test]
fn user_login_with_password_as_pin() {
    let t = token();
    let session = t.rw_session();
    session
        .login(UserType::User, Some(&pin()))
        .expect("C_Login(CKU_USER, password)");
    let info = session.get_session_info().expect("C_GetSessionInfo");
    assert_eq!(
        info.session_state(),
        cryptoki::session::SessionState::RwUser,
        "a RW session after user login"
    );
    assert_rv(
        session.login(UserType::User, Some(&pin())),
        RvError::UserAlreadyLoggedIn,
    );
    session.logout().expect("C_Logout");
    assert_rv(session.logout(), RvError::UserNotLoggedIn);
}

#[test]
fn wrong_pin_is_pin_incorrect() {
    let t = token();
    let session = t.rw_session();
    assert_rv(
        session.login(
            UserType::User,
            Some(&AuthPin::new("not the password".into())),
        ),
        RvError::PinIncorrect,
    );
    assert_rv(
        session.login(UserType::So, Some(&AuthPin::new("not the password".into()))),
        RvError::PinIncorrect,
    );
    // Still logged out, and the right PIN still works afterwards.
    assert_rv(session.find_objects(&[]), RvError::UserNotLoggedIn);
    session
        .login(UserType::User, Some(&pin()))
        .expect("C_Login after a wrong PIN");
}

// Row: "Security Officer and user are the same"
#[test]
fn so_and_user_log_in_as_the_same_hsm_user() {
    let t = token();
    let label = unique_label("so-made");
    let session = t.rw_session();
    session
        .login(UserType::So, Some(&pin()))
        .expect("C_Login(CKU_SO, password)");
    let info = session.get_session_info().expect("C_GetSessionInfo");
    assert_eq!(
        info.session_state(),
        cryptoki::session::SessionState::RwSecurityOfficer
    );
    let made = session
        .create_object(&data_object(&label, true))
        .expect("SO creates a token object");
    assert_rv(
        session.login(UserType::User, Some(&pin())),
        RvError::UserAnotherAlreadyLoggedIn,
    );
    session.logout().expect("C_Logout");

    session
        .login(UserType::User, Some(&pin()))
        .expect("C_Login(CKU_USER)");
    let found = find_by_label(&session, &label);
    assert_eq!(found, vec![made], "the user sees the object the SO created");
    session.destroy_object(made).expect("the user destroys it");
    assert!(find_by_label(&session, &label).is_empty());
}

// Row: "Only authenticated sessions reach objects; all objects private"
#[test]
fn object_and_crypto_functions_need_login() {
    let t = token();
    let session = t.rw_session();
    login_user(&session);
    let label = unique_label("pre-login");
    let key = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(16.into()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .expect("C_GenerateKey(AES-128)");
    let data = session
        .create_object(&data_object(&label, true))
        .expect("C_CreateObject");
    session.logout().expect("C_Logout");

    assert_rv(
        session.create_object(&data_object(&label, true)),
        RvError::UserNotLoggedIn,
    );
    assert_rv(session.find_objects(&[]), RvError::UserNotLoggedIn);
    assert_rv(
        session.get_attributes(data, &[AttributeType::Label]),
        RvError::UserNotLoggedIn,
    );
    assert_rv(
        session.update_attributes(data, &[Attribute::Label(b"x".to_vec())]),
        RvError::UserNotLoggedIn,
    );
    assert_rv(session.copy_object(data, &[]), RvError::UserNotLoggedIn);
    assert_rv(session.destroy_object(data), RvError::UserNotLoggedIn);
    assert_rv(
        session.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into())]),
        RvError::UserNotLoggedIn,
    );
    assert_rv(
        session.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(hsmlink_tests::verify::params_of_curve(
                openssl::nid::Nid::X9_62_PRIME256V1,
            ))],
            &[Attribute::Sign(true)],
        ),
        RvError::UserNotLoggedIn,
    );
    assert_rv(
        session.encrypt_init(&Mechanism::AesEcb, key),
        RvError::UserNotLoggedIn,
    );
    assert_rv(
        session.decrypt_init(&Mechanism::AesEcb, key),
        RvError::UserNotLoggedIn,
    );
    assert_rv(
        session.sign_init(&Mechanism::Sha256Hmac, key),
        RvError::UserNotLoggedIn,
    );
    assert_rv(
        session.verify_init(&Mechanism::Sha256Hmac, key),
        RvError::UserNotLoggedIn,
    );
    let (rv, _) = t.raw.object_size(session.handle(), data);
    assert_eq!(
        rv,
        raw::CKR_USER_NOT_LOGGED_IN,
        "C_GetObjectSize: {}",
        raw::rv_name(rv)
    );

    login_user(&session);
    session.destroy_object(key).expect("destroy");
    session.destroy_object(data).expect("destroy");
}

#[test]
fn every_object_reads_cka_private_true() {
    let t = token();
    let session = t.user_session();
    let label = unique_label("private");
    let data = session
        .create_object(&data_object(&label, false))
        .expect("data object");
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(hsmlink_tests::verify::params_of_curve(
                    openssl::nid::Nid::X9_62_PRIME256V1,
                )),
                Attribute::Verify(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
        )
        .expect("C_GenerateKeyPair(P-256)");
    let secret = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(32.into())],
        )
        .expect("C_GenerateKey(AES-256)");
    // Even an object the application asked to be public reads private.
    let asked_public = session.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]);
    let mut objects = vec![data, public, private, secret];
    match asked_public {
        Ok(handle) => objects.push(handle),
        Err(e) => {
            let rv = hsmlink_tests::rv_of::<()>(Err(e));
            assert!(
                matches!(rv, RvError::AttributeValueInvalid | RvError::TemplateInconsistent),
                "CKA_PRIVATE=false: either accepted (and read back true) or refused as invalid, got {rv:?}"
            );
        }
    }
    for object in objects {
        let attrs = session
            .get_attributes(object, &[AttributeType::Private])
            .expect("C_GetAttributeValue(CKA_PRIVATE)");
        assert!(
            matches!(attrs.as_slice(), [Attribute::Private(true)]),
            "object {object}: CKA_PRIVATE is {attrs:?}"
        );
    }
}

// Row: "No R/O vs R/W distinction"
#[test]
fn read_only_session_can_create_and_destroy_token_objects() {
    let t = token();
    let session = t.ro_session();
    login_user(&session);
    let label = unique_label("ro-made");
    let object = session
        .create_object(&data_object(&label, true))
        .expect("C_CreateObject(CKA_TOKEN=true) in a session without CKF_RW_SESSION");
    let key = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(16.into()),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
        )
        .expect("C_GenerateKey(CKA_TOKEN=true) in a R/O session");
    assert_eq!(find_by_label(&session, &label).len(), 2);
    session
        .update_attributes(
            object,
            &[Attribute::Label(format!("{label}-renamed").into_bytes())],
        )
        .expect("C_SetAttributeValue on a token object in a R/O session");
    session
        .destroy_object(object)
        .expect("C_DestroyObject in a R/O session");
    session
        .destroy_object(key)
        .expect("C_DestroyObject in a R/O session");
    assert!(find_by_label(&session, &label).is_empty());
}

#[test]
fn so_login_is_allowed_with_a_read_only_session_open() {
    // In v2.40 C_Login(CKU_SO) fails with CKR_SESSION_READ_ONLY_EXISTS; the
    // profile has no R/O distinction, so SO login works from a R/O session.
    let t = token();
    let ro = t.ro_session();
    ro.login(UserType::So, Some(&pin()))
        .expect("C_Login(CKU_SO) on a R/O session");
    let _ = ro.logout();
}

// Row: "Token objects persist; session objects die with their session"
#[test]
fn session_objects_vanish_when_their_session_closes() {
    let t = token();
    let keeper = t.user_session(); // keeps the application logged in
    let label = unique_label("ephemeral");
    let session = t.rw_session();
    let session_object = session
        .create_object(&data_object(&label, false))
        .expect("session object");
    let token_object = session
        .create_object(&data_object(&label, true))
        .expect("token object");
    assert_eq!(
        find_by_label(&keeper, &label).len(),
        2,
        "both visible from another session"
    );
    session.close().expect("C_CloseSession");

    assert_eq!(
        find_by_label(&keeper, &label),
        vec![token_object],
        "only the token object survives"
    );
    assert_rv(
        keeper.get_attributes(session_object, &[AttributeType::Label]),
        RvError::ObjectHandleInvalid,
    );
    keeper.destroy_object(token_object).expect("destroy");
}

#[test]
fn session_objects_vanish_on_close_all_sessions() {
    let t = token();
    let label = unique_label("close-all");
    let session = t.user_session();
    let session_object = session
        .create_object(&data_object(&label, false))
        .expect("session object");
    let token_object = session
        .create_object(&data_object(&label, true))
        .expect("token object");
    assert_eq!(t.raw.close_all_sessions(SLOT_ID), CKR_OK);
    assert_rv(session.get_session_info(), RvError::SessionHandleInvalid);
    std::mem::forget(session); // its handle is gone; don't close it again

    let session = t.user_session();
    assert_eq!(find_by_label(&session, &label), vec![token_object]);
    assert_rv(
        session.get_attributes(session_object, &[AttributeType::Label]),
        RvError::ObjectHandleInvalid,
    );
    session.destroy_object(token_object).expect("destroy");
}

#[test]
fn session_objects_vanish_on_finalize_token_objects_persist() {
    let t = token();
    let label = unique_label("finalize");
    let session = t.user_session();
    session
        .create_object(&data_object(&label, false))
        .expect("session object");
    session
        .create_object(&data_object(&label, true))
        .expect("token object");
    std::mem::forget(session); // C_Finalize closes it
    t.reinitialize(&[]).expect("C_Finalize + C_Initialize");

    let session = t.user_session();
    let found = find_by_label(&session, &label);
    assert_eq!(
        found.len(),
        1,
        "exactly the token object survives C_Finalize"
    );
    let attrs = session
        .get_attributes(found[0], &[AttributeType::Token])
        .expect("CKA_TOKEN");
    assert!(
        matches!(attrs.as_slice(), [Attribute::Token(true)]),
        "{attrs:?}"
    );
    session.destroy_object(found[0]).expect("destroy");
}

#[test]
fn logout_destroys_private_session_objects() {
    // v2.40 C_Logout: "all private session objects from sessions belonging
    // to the application are destroyed", and every object is private here.
    // Token objects stay.
    let t = token();
    let label = unique_label("logout");
    let session = t.user_session();
    let session_object = session
        .create_object(&data_object(&label, false))
        .expect("session object");
    let token_object = session
        .create_object(&data_object(&label, true))
        .expect("token object");
    session.logout().expect("C_Logout");
    login_user(&session);
    assert_eq!(find_by_label(&session, &label), vec![token_object]);
    assert_rv(
        session.get_attributes(session_object, &[AttributeType::Label]),
        RvError::ObjectHandleInvalid,
    );
    session.destroy_object(token_object).expect("destroy");
}

// Row: "Keys are only exportable or not"
#[test]
fn non_exportable_secret_key_value_is_sensitive() {
    let t = token();
    let session = t.user_session();
    for (extractable, sensitive) in [(false, false), (true, true), (false, true)] {
        let key = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(16.into()),
                    Attribute::Extractable(extractable),
                    Attribute::Sensitive(sensitive),
                ],
            )
            .expect("C_GenerateKey(AES)");
        let mut q = [raw::AttrQuery::value(cryptoki_sys::CKA_VALUE, 64)];
        let rv = t.raw.get_attribute_value(session.handle(), key, &mut q);
        assert_eq!(
            rv,
            raw::CKR_ATTRIBUTE_SENSITIVE,
            "EXTRACTABLE={extractable} SENSITIVE={sensitive}: CKA_VALUE gave {}",
            raw::rv_name(rv)
        );
        assert!(
            q[0].unavailable(),
            "ulValueLen must be CK_UNAVAILABLE_INFORMATION"
        );
    }
    let key = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(16.into()),
                Attribute::Extractable(true),
                Attribute::Sensitive(false),
            ],
        )
        .expect("C_GenerateKey(exportable AES)");
    let value = hsmlink_tests::verify::attribute_bytes(&session, key, AttributeType::Value);
    assert_eq!(value.len(), 16, "an exportable key's CKA_VALUE is readable");
}

#[test]
fn non_exportable_key_cannot_be_wrapped() {
    let t = token();
    let session = t.user_session();
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
            ],
        )
        .expect("wrapping key");
    let target = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(16.into()),
                Attribute::Extractable(false),
            ],
        )
        .expect("non-exportable key");
    for mechanism in [
        Mechanism::AesKeyWrap,
        Mechanism::AesKeyWrapPad,
        Mechanism::AesCbcPad([7; 16]),
    ] {
        let result = session.wrap_key(&mechanism, wrapping, target);
        let rv = hsmlink_tests::rv_of(result);
        assert!(
            matches!(
                rv,
                RvError::KeyUnextractable
                    | RvError::MechanismInvalid
                    | RvError::FunctionNotSupported
            ),
            "C_WrapKey({mechanism:?}) of a non-exportable key: expected CKR_KEY_UNEXTRACTABLE \
             (or the mechanism refused), got {rv:?}"
        );
    }
}

#[test]
fn exportable_flags_read_back_consistently() {
    // exportable = CKA_EXTRACTABLE and not CKA_SENSITIVE: the attributes
    // must read back as one of the two states, and a sensitive key can never
    // read CKA_EXTRACTABLE true with its value readable.
    let t = token();
    let session = t.user_session();
    let key = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(16.into()),
                Attribute::Sensitive(true),
            ],
        )
        .expect("sensitive key");
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .expect("flags");
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(
        attrs.contains(&Attribute::AlwaysSensitive(true)),
        "{attrs:?}"
    );
    let kt = session
        .get_attributes(key, &[AttributeType::KeyType])
        .expect("key type");
    assert_eq!(kt, vec![Attribute::KeyType(KeyType::AES)]);
}
