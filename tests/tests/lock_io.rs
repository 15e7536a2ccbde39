//! No lock shared between sessions is held across network I/O: while one
//! thread's session connects and logs in to an HSM endpoint that accepts
//! but never answers (its call waits for the I/O timeout), another thread
//! keeps signing (and reading the token info) at its usual pace.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use hsmlink_tests::raw::{rv_name, CKR_OK};
use hsmlink_tests::{keys, login_user, token, unique_label, verify};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;

/// How long the stalling endpoint keeps a caller waiting (the module's
/// I/O timeout, `HSMLINK_TIMEOUT_MS`).
const STALL: Duration = Duration::from_millis(3000);

/// A listener that accepts connections and never answers (nor closes):
/// returns its address and how many connections it accepted.
fn silent_listener() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, accepted)
}

#[test]
fn lock_io_a_session_stuck_on_a_silent_hsm_does_not_stall_a_signer() {
    let t = token();
    let (silent, accepted) = silent_listener();
    // Sessions are spread over both endpoints, round robin: every other
    // new connection goes to the silent one first.
    t.reinitialize(&[
        ("HSMLINK_ADDR", Some(&format!("{},{silent}", t.addr()))),
        ("HSMLINK_TIMEOUT_MS", Some(&STALL.as_millis().to_string())),
    ])
    .expect("C_Initialize with a live and a silent endpoint");

    // The signer: logged in, its connection made (to the live HSM) before
    // the other thread starts.
    let signer = t.rw_session();
    login_user(&signer);
    let key = keys::ec(&signer, Nid::X9_62_PRIME256V1, &unique_label("lock-io"));
    let public = verify::ec_public_key(&signer, key.public);
    signer
        .sign(&Mechanism::EcdsaSha256, key.private, b"warm-up")
        .expect("C_Sign before the other thread starts");

    let done = AtomicBool::new(false);
    let opener_slowest = Mutex::new(Duration::ZERO);
    let (signatures, slowest_sign, slowest_info) = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Open a session, use it (connect + login on first use), close.
            let deadline = Instant::now() + STALL * 2 + Duration::from_millis(500);
            while Instant::now() < deadline {
                let started = Instant::now();
                let session = t
                    .pkcs11
                    .open_ro_session(t.slot)
                    .expect("C_OpenSession in the opener thread");
                let _ = session.generate_random_vec(16);
                drop(session);
                let took = started.elapsed();
                let mut slowest = opener_slowest.lock().unwrap();
                *slowest = (*slowest).max(took);
            }
            done.store(true, Ordering::SeqCst);
        });
        // C_GetTokenInfo (which counts sessions) from a thread of its own.
        let info = scope.spawn(|| {
            let mut slowest_info = Duration::ZERO;
            while !done.load(Ordering::SeqCst) {
                let started = Instant::now();
                let (rv, _) = t.raw.token_info(1);
                assert_eq!(rv, CKR_OK, "C_GetTokenInfo: {}", rv_name(rv));
                slowest_info = slowest_info.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(5));
            }
            slowest_info
        });
        let mut signatures = 0usize;
        let mut slowest_sign = Duration::ZERO;
        while !done.load(Ordering::SeqCst) {
            let message = format!("message {signatures}");
            let started = Instant::now();
            let sig = signer
                .sign(&Mechanism::EcdsaSha256, key.private, message.as_bytes())
                .unwrap_or_else(|e| {
                    panic!("C_Sign {signatures} while the other thread connects: {e}")
                });
            slowest_sign = slowest_sign.max(started.elapsed());
            assert!(verify::ecdsa_verifies(
                &public,
                Some(MessageDigest::sha256()),
                message.as_bytes(),
                &sig
            ));
            signatures += 1;
        }
        let slowest_info = info.join().expect("the C_GetTokenInfo thread");
        (signatures, slowest_sign, slowest_info)
    });
    let opener_slowest = *opener_slowest.lock().unwrap();
    drop(signer);
    t.reinitialize(&[]).expect("back to the defaults");

    // The other thread really was stuck on the silent endpoint...
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "no connection reached the silent endpoint: the test proved nothing"
    );
    assert!(
        opener_slowest >= STALL - Duration::from_millis(200),
        "the opener never waited for the silent endpoint ({opener_slowest:?})"
    );
    // ...while the signer went on: no call waited for that stall.
    assert!(
        signatures > 10,
        "only {signatures} signatures in {:?}",
        STALL * 2
    );
    assert!(
        slowest_sign < STALL / 3,
        "a C_Sign took {slowest_sign:?} while another session waited {STALL:?} for a silent HSM"
    );
    assert!(
        slowest_info < STALL / 3,
        "C_GetTokenInfo took {slowest_info:?} while another session waited for a silent HSM"
    );
}
