//! A stalled HSM (accepts, then never answers) costs a call no more than the
//! configured timeout: the call fails with `CKR_DEVICE_ERROR` and the
//! application goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsmlink_tests::{module_path, relay, slot_one, Hsm, PIN, USER};

const TIMEOUT_MS: u64 = 1500;

/// A TCP proxy in front of the real server that stops forwarding (holding
/// every connection open, reading and dropping bytes) once `stall` is set.
fn stalling_proxy(upstream: String, stall: Arc<AtomicBool>) -> String {
    relay(upstream, |_| {}, move |_, _| !stall.load(Ordering::SeqCst))
}

#[test]
fn stall_of_the_hsm_costs_no_more_than_the_configured_timeout() {
    let hsm = Hsm::start_dev(USER, PIN);
    let stall = Arc::new(AtomicBool::new(false));
    let proxy = stalling_proxy(hsm.addr().to_string(), stall.clone());
    std::env::set_var("HSMLINK_ADDR", &proxy);
    std::env::set_var("HSMLINK_USER", USER);
    std::env::set_var("HSMLINK_TIMEOUT_MS", TIMEOUT_MS.to_string());
    std::env::set_var("HSMLINK_CONNECT_TIMEOUT_MS", TIMEOUT_MS.to_string());
    let p = Pkcs11::new(module_path()).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let session = p.open_rw_session(slot_one()).expect("open session");
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .expect("login through the proxy");
    let (_, private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .expect("EC key pair");
    session
        .sign(&Mechanism::Ecdsa, private, &[7u8; 32])
        .expect("sign while the HSM answers");

    // The HSM stalls: every call fails within the bound.
    stall.store(true, Ordering::SeqCst);
    let bound = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(2);
    let started = Instant::now();
    let r = session.sign(&Mechanism::Ecdsa, private, &[7u8; 32]);
    let took = started.elapsed();
    assert!(
        matches!(r, Err(Error::Pkcs11(RvError::DeviceError, _))),
        "{r:?}"
    );
    assert!(
        took < bound,
        "a stalled sign took {took:?}, bound {bound:?}"
    );
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS / 2),
        "it failed before the HSM had time to answer ({took:?}): not a timeout"
    );

    let started = Instant::now();
    let r = session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]);
    assert!(r.is_err(), "{r:?}");
    assert!(
        started.elapsed() < bound,
        "a stalled find took {:?}",
        started.elapsed()
    );

    // Once the HSM answers again, a new session works.
    stall.store(false, Ordering::SeqCst);
    let again = p.open_rw_session(slot_one()).expect("open session");
    again
        .generate_random_vec(16)
        .expect("the module recovers once the HSM answers");
    drop(again);
    drop(session);
    p.finalize().expect("C_Finalize");
}
