//! A firewall that silently drops an idle connection: the module checks a
//! connection idle longer than `HSMLINK_IDLE_TIMEOUT_MS` before using it,
//! finds it dead within the connect timeout, and carries on over a new one
//! (the same HSM, so the session and its token-object handles stay valid).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsmlink_tests::{module_path, relay, slot_one, Hsm, PIN, USER};

const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A relay whose connections numbered below `cut` go silent (bytes are
/// swallowed both ways); later ones are relayed. `accepted` counts them.
fn firewall(upstream: String, cut: Arc<AtomicUsize>, accepted: Arc<AtomicUsize>) -> String {
    relay(
        upstream,
        move |n| accepted.store(n + 1, Ordering::SeqCst),
        move |n, _| n >= cut.load(Ordering::SeqCst),
    )
}

#[test]
fn stall_of_an_idle_connection_dropped_by_a_firewall_costs_a_short_probe() {
    let hsm = Hsm::start_dev(USER, PIN);
    let cut = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let relay = firewall(hsm.addr().to_string(), cut.clone(), accepted.clone());
    std::env::set_var("HSMLINK_ADDR", &relay);
    std::env::set_var("HSMLINK_USER", USER);
    std::env::set_var("HSMLINK_IDLE_TIMEOUT_MS", "300");
    std::env::set_var("HSMLINK_CONNECT_TIMEOUT_MS", "700");
    std::env::set_var("HSMLINK_TIMEOUT_MS", "20000");
    let p = Pkcs11::new(module_path()).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let s = p.open_rw_session(slot_one()).expect("session");
    s.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .expect("login");
    let (_, key) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(P256.to_vec())],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .expect("token key pair");
    s.sign(&Mechanism::Ecdsa, key, &[1u8; 32]).expect("sign");

    // Idle past the limit, and the firewall forgets every connection so far
    // (new ones pass).
    std::thread::sleep(Duration::from_millis(500));
    cut.store(accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    let started = Instant::now();
    s.sign(&Mechanism::Ecdsa, key, &[2u8; 32])
        .expect("the same session signs over a new connection");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: it waited for the 20 s read timeout instead of probing"
    );
    assert!(
        took >= Duration::from_millis(300),
        "took {took:?}: the dead connection was not even tried"
    );
    drop(s);
    p.finalize().expect("C_Finalize");
}
