//! Three HSMs behind one `HSMLINK_ADDR`: one is killed and restarted under a
//! multi-threaded signing load. Only sessions that were on the killed HSM
//! fail (promptly, with a clear code); new sessions go to the others, and to
//! the restarted one once its back-off has passed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsmlink_tests::{free_port, module_path, slot_one, Hsm, PIN, USER};

const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const THREADS: usize = 4;

fn start(port: u16) -> Hsm {
    let listen = format!("127.0.0.1:{port}");
    Hsm::start(&[
        "dev",
        "--listen",
        &listen,
        "--user",
        USER,
        "--password",
        PIN,
    ])
}

/// A new session, logged in (the login is shared by the application, so
/// "already logged in" is fine), with a fresh session key pair.
fn session_with_key(
    p: &Pkcs11,
) -> cryptoki::error::Result<(Session, cryptoki::object::ObjectHandle)> {
    let s = p.open_rw_session(slot_one())?;
    match s.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(e),
    }
    let (_, private) = s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[Attribute::Token(false), Attribute::EcParams(P256.to_vec())],
        &[Attribute::Token(false), Attribute::Sign(true)],
    )?;
    Ok((s, private))
}

/// The codes a session whose HSM died may see.
fn lost_session(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::DeviceError
                | RvError::SessionClosed
                | RvError::SessionHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

#[test]
fn failover_across_three_hsms_while_one_is_killed_and_restarted() {
    let ports = [free_port(), free_port(), free_port()];
    let mut hsms: Vec<Option<Hsm>> = ports.iter().map(|&p| Some(start(p))).collect();
    let list = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    std::env::set_var("HSMLINK_ADDR", &list);
    std::env::set_var("HSMLINK_USER", USER);
    std::env::set_var("HSMLINK_TIMEOUT_MS", "5000");
    std::env::set_var("HSMLINK_CONNECT_TIMEOUT_MS", "1000");
    std::env::set_var("HSMLINK_RETRY_MS", "300");
    let p = Arc::new(Pkcs11::new(module_path()).expect("load module"));
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");

    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (p, stop, signed, failures, slowest) = (
                p.clone(),
                stop.clone(),
                signed.clone(),
                failures.clone(),
                slowest.clone(),
            );
            std::thread::spawn(move || {
                let mut current = None;
                while !stop.load(Ordering::SeqCst) {
                    let (s, key) = match current.take() {
                        Some(c) => c,
                        None => match session_with_key(&p) {
                            Ok(c) => c,
                            Err(e) => {
                                failures.lock().unwrap().push(format!("new session: {e}"));
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        },
                    };
                    let started = Instant::now();
                    let r = s.sign(&Mechanism::Ecdsa, key, &[1u8; 32]);
                    let took = started.elapsed();
                    let mut slow = slowest.lock().unwrap();
                    *slow = (*slow).max(took);
                    drop(slow);
                    match r {
                        Ok(_) => {
                            signed.fetch_add(1, Ordering::SeqCst);
                            current = Some((s, key));
                        }
                        Err(e) => {
                            assert!(lost_session(&e), "unexpected failure: {e}");
                            failures.lock().unwrap().push(format!("sign: {e}"));
                            // The session is lost; the next one goes elsewhere.
                        }
                    }
                }
            })
        })
        .collect();

    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let start = signed.load(Ordering::SeqCst);
        while signed.load(Ordering::SeqCst) < start + n {
            assert!(Instant::now() < deadline, "the signing load stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(200);
    // Kill the second HSM under load.
    if let Some(mut h) = hsms[1].take() {
        h.kill();
    }
    wait_for(400);
    let after_kill = failures.lock().unwrap().len();
    // Restart it on the same port; after its back-off, sessions reach it again.
    hsms[1] = Some(start(ports[1]));
    std::thread::sleep(Duration::from_millis(500));
    wait_for(200);
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("a signing thread panicked");
    }

    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "signed {} times; failures: {failures:?}",
        signed.load(Ordering::SeqCst)
    );
    assert!(
        after_kill <= THREADS,
        "only sessions that were on the killed HSM may fail (at most one per thread), got {failures:?}"
    );
    assert_eq!(
        failures.len(),
        after_kill,
        "no failure after the restart: {failures:?}"
    );
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest < Duration::from_secs(5),
        "a sign took {slowest:?}: a hang"
    );

    // New sessions are spread over all three again, the restarted one included.
    let sessions: Vec<_> = (0..9)
        .map(|_| session_with_key(&p).expect("new session"))
        .collect();
    for (s, k) in &sessions {
        s.sign(&Mechanism::Ecdsa, *k, &[2u8; 32]).expect("sign");
    }
    let log = hsms[1].as_ref().map(|h| h.stderr()).unwrap_or_default();
    assert!(
        log.contains("event=login "),
        "the restarted HSM got no session; its log:\n{log}"
    );
    drop(sessions);
    Arc::into_inner(p)
        .expect("every thread is done")
        .finalize()
        .expect("C_Finalize");
}
