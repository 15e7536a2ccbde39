//! Configuration at `C_Initialize` (HSMLINK_* and the vendor's DFENCE_*
//! names, the special PIN) and the general-purpose life cycle.

use std::time::{Duration, Instant};

use cryptoki::error::RvError;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsmlink_tests::raw::{self, rv_name, CKR_OK};
use hsmlink_tests::{assert_rv, rv_of, token, unique_label, PIN, SLOT_ID, USER};

fn pin(text: &str) -> AuthPin {
    AuthPin::new(text.into())
}

/// Logs in with `login_pin` and proves the session reaches the HSM by
/// creating, finding and destroying a session object.
fn login_and_use(t: &hsmlink_tests::Token, login_pin: &str) {
    let session = t.rw_session();
    session
        .login(UserType::User, Some(&pin(login_pin)))
        .unwrap_or_else(|e| panic!("C_Login with {login_pin:?}: {e}"));
    let label = unique_label("config");
    let object = session
        .create_object(&[
            Attribute::Class(cryptoki::object::ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(label.clone().into_bytes()),
        ])
        .expect("C_CreateObject after login");
    assert_eq!(
        session
            .find_objects(&[Attribute::Label(label.into_bytes())])
            .expect("find"),
        vec![object]
    );
    session.destroy_object(object).expect("destroy");
}

#[test]
fn hsmlink_addr_and_user_configure_the_module() {
    let t = token();
    // The harness default: HSMLINK_ADDR + HSMLINK_USER.
    login_and_use(&t, PIN);
}

#[test]
fn vendor_aliases_configure_the_module() {
    let t = token();
    let addr = t.addr().to_string();
    t.reinitialize(&[
        ("HSMLINK_ADDR", None),
        ("HSMLINK_USER", None),
        ("DFENCE_PKCS11_IP", Some(&addr)),
        ("DFENCE_PKCS11_USER", Some(USER)),
    ])
    .expect("C_Initialize with DFENCE_PKCS11_IP and DFENCE_PKCS11_USER");
    login_and_use(&t, PIN);
    let session = t.rw_session();
    assert_rv(
        session.login(UserType::User, Some(&pin("wrong"))),
        RvError::PinIncorrect,
    );
    drop(session);
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn hsmlink_names_win_over_vendor_names() {
    let t = token();
    let addr = t.addr().to_string();
    t.reinitialize(&[
        ("DFENCE_PKCS11_IP", Some("127.0.0.1:1")),
        ("DFENCE_PKCS11_USER", Some("somebody-else")),
        ("HSMLINK_ADDR", Some(&addr)),
        ("HSMLINK_USER", Some(USER)),
    ])
    .expect("C_Initialize with both names");
    login_and_use(&t, PIN);
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn special_pin_carries_user_password_and_address() {
    let t = token();
    // No user and no (useful) address in the environment: all in the PIN.
    t.reinitialize(&[
        ("HSMLINK_ADDR", None),
        ("HSMLINK_USER", None),
        ("HSMLINK_SPECIAL_PIN", Some("1")),
    ])
    .expect("C_Initialize with HSMLINK_SPECIAL_PIN=1");
    let special = format!("{USER}:{PIN}@{}", t.addr());
    login_and_use(&t, &special);

    let session = t.rw_session();
    let wrong = format!("{USER}:not-the-password@{}", t.addr());
    assert_rv(
        session.login(UserType::User, Some(&pin(&wrong))),
        RvError::PinIncorrect,
    );
    // The plain password is not a special PIN.
    let rv = rv_of(session.login(UserType::User, Some(&pin(PIN))));
    assert!(
        matches!(rv, RvError::PinIncorrect | RvError::PinInvalid),
        "a PIN without user@host under HSMLINK_SPECIAL_PIN=1: got {rv:?}"
    );
    // CKU_SO takes the same special PIN.
    session
        .login(UserType::So, Some(&pin(&special)))
        .expect("C_Login(CKU_SO) with the special PIN");
    drop(session);
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn special_pin_with_host_only_uses_the_default_port() {
    // user:password@host without a port means the default port 4433; our
    // server is elsewhere, so the login must fail cleanly (not hang, not
    // crash) rather than reach it.
    let t = token();
    t.reinitialize(&[
        ("HSMLINK_ADDR", None),
        ("HSMLINK_USER", None),
        ("HSMLINK_SPECIAL_PIN", Some("1")),
        ("HSMLINK_CONNECT_TIMEOUT_MS", Some("2000")),
    ])
    .expect("C_Initialize");
    let session = t.rw_session();
    let started = Instant::now();
    let result = session.login(
        UserType::User,
        Some(&pin(&format!("{USER}:{PIN}@127.0.0.2"))),
    );
    assert!(
        result.is_err(),
        "login to 127.0.0.2:4433 (nothing listens) must fail"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    drop(session);
    std::env::remove_var("HSMLINK_CONNECT_TIMEOUT_MS");
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn vendor_special_pwd_alias_enables_the_special_pin() {
    let t = token();
    t.reinitialize(&[
        ("HSMLINK_ADDR", None),
        ("HSMLINK_USER", None),
        ("DFENCE_PKCS11_SPECIAL_PWD", Some("1")),
    ])
    .expect("C_Initialize with DFENCE_PKCS11_SPECIAL_PWD=1");
    login_and_use(&t, &format!("{USER}:{PIN}@{}", t.addr()));
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn bad_configuration_is_an_initialize_error_not_a_crash() {
    let t = token();
    for (var, value) in [
        ("HSMLINK_SPECIAL_PIN", "maybe"),
        ("HSMLINK_ADDR", ""),
        ("HSMLINK_USER", ""),
    ] {
        let result = t.reinitialize(&[(var, Some(value))]);
        assert!(
            result.is_err(),
            "C_Initialize with {var}={value:?} must fail, got {result:?}"
        );
        // The library is not initialized after a failed C_Initialize.
        assert_eq!(
            t.raw.close_all_sessions(SLOT_ID),
            raw::CKR_CRYPTOKI_NOT_INITIALIZED,
            "after a failed C_Initialize ({var}={value:?})"
        );
    }
    t.reinitialize(&[])
        .expect("a good configuration initializes again");
    login_and_use(&t, PIN);
}

#[test]
fn unreachable_hsm_fails_login_cleanly() {
    let t = token();
    let dead = format!("127.0.0.1:{}", hsmlink_tests::free_port());
    t.reinitialize(&[("HSMLINK_ADDR", Some(&dead))])
        .expect("C_Initialize does not need the HSM to be up");
    // Slot and token information are local.
    let info = t.pkcs11.get_token_info(t.slot);
    assert!(info.is_ok(), "C_GetTokenInfo with the HSM down: {info:?}");
    let session = t.pkcs11.open_rw_session(t.slot);
    if let Ok(session) = session {
        let started = Instant::now();
        let rv = rv_of(session.login(UserType::User, Some(&pin(PIN))));
        assert!(
            matches!(
                rv,
                RvError::DeviceError
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::FunctionFailed
            ),
            "C_Login with nothing listening at {dead}: got {rv:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
    } else {
        let rv = rv_of(session);
        assert!(
            matches!(
                rv,
                RvError::DeviceError | RvError::DeviceRemoved | RvError::TokenNotPresent
            ),
            "C_OpenSession with nothing listening: got {rv:?}"
        );
    }
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn initialize_finalize_life_cycle() {
    let t = token();
    assert_eq!(
        t.raw.initialize(),
        raw::CKR_CRYPTOKI_ALREADY_INITIALIZED,
        "second C_Initialize"
    );
    assert_eq!(t.raw.finalize(), CKR_OK, "C_Finalize");
    assert_eq!(
        t.raw.finalize(),
        raw::CKR_CRYPTOKI_NOT_INITIALIZED,
        "C_Finalize twice"
    );
    let (rv, _) = t.raw.info();
    assert_eq!(
        rv,
        raw::CKR_CRYPTOKI_NOT_INITIALIZED,
        "C_GetInfo before C_Initialize"
    );
    let out = t.raw.slot_list(false, None);
    assert_eq!(
        out.rv,
        raw::CKR_CRYPTOKI_NOT_INITIALIZED,
        "C_GetSlotList: {}",
        out.rv_name()
    );

    // C_Initialize(NULL) is valid.
    hsmlink_tests::Token::configure_env(&t, &[]);
    let rv = t.raw.initialize_with(None);
    assert_eq!(rv, CKR_OK, "C_Initialize(NULL): {}", rv_name(rv));
    assert_eq!(t.raw.finalize(), CKR_OK);

    // pReserved must be NULL.
    let mut reserved = 0u8;
    let args = raw::CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: raw::CKF_OS_LOCKING_OK,
        pReserved: (&mut reserved as *mut u8).cast(),
    };
    let rv = t.raw.initialize_with(Some(args));
    assert_eq!(
        rv,
        raw::CKR_ARGUMENTS_BAD,
        "C_Initialize with pReserved set: {}",
        rv_name(rv)
    );

    t.reinitialize(&[]).expect("C_Initialize");
    login_and_use(&t, PIN);
}

#[test]
fn finalize_then_initialize_gives_a_clean_library() {
    let t = token();
    let session = t.user_session();
    let handle = session.handle();
    std::mem::forget(session);
    t.reinitialize(&[]).expect("C_Finalize + C_Initialize");
    let (rv, _) = t.raw.get_session_info(handle);
    assert_eq!(
        rv,
        raw::CKR_SESSION_HANDLE_INVALID,
        "a session from before C_Finalize: {}",
        rv_name(rv)
    );
    // Logged out: a new session starts public.
    let session = t.rw_session();
    assert_rv(session.find_objects(&[]), RvError::UserNotLoggedIn);
}
