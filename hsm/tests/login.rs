//! Login protection in-process: the lockout threshold holds against a burst
//! of parallel guesses, a lock is `CKR_PIN_LOCKED` even for the right
//! password, and unlocking restores the user.

use std::sync::Arc;

use hsmlink_core::ck::ckr;
use hsmlink_hsm::Hsm;

#[test]
fn lockout_holds_against_a_parallel_burst() {
    let hsm = Arc::new(Hsm::dev("victim", b"right password").unwrap());
    let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let hsm = hsm.clone();
            std::thread::spawn(move || {
                hsm.login("victim", format!("guess {i}").as_bytes(), Some(ip))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(results.iter().all(|r| r.is_err()));
    let rec = hsm.store().user("victim").unwrap().unwrap();
    assert!(rec.locked);
    assert_eq!(
        rec.failures, 5,
        "20 parallel guesses: exactly the threshold checked, the rest refused"
    );
    assert!(
        results
            .iter()
            .filter(|r| **r == Err(ckr::PIN_LOCKED))
            .count()
            >= 15,
        "{results:?}"
    );
    // Locked: the right password is refused too, from any address.
    assert_eq!(
        hsm.login("victim", b"right password", None),
        Err(ckr::PIN_LOCKED)
    );
    assert!(hsm.unlock_user("victim").unwrap());
    assert_eq!(hsm.login("victim", b"right password", None), Ok(()));
    assert_eq!(hsm.store().user("victim").unwrap().unwrap().failures, 0);
}
