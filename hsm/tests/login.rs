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

#[test]
fn lockout_lapses_and_the_owners_known_address_is_heard_meanwhile() {
    let mut limits = hsmlink_hsm::Limits::default();
    limits.login.lock = std::time::Duration::from_millis(300);
    limits.login.max_lock = std::time::Duration::from_millis(600);
    limits.login.base_delay = std::time::Duration::from_millis(1);
    limits.login.max_delay = std::time::Duration::from_millis(5);
    let store = hsmlink_hsm::store::Store::in_memory().unwrap();
    let mut hsm = Hsm::open(store, &hsmlink_hsm::vault::Unlock::Nothing, limits).unwrap();
    hsm.put_user("owner", b"right password").unwrap();
    let home: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let stranger: std::net::IpAddr = "198.51.100.9".parse().unwrap();
    let elsewhere: std::net::IpAddr = "203.0.113.5".parse().unwrap();
    assert_eq!(hsm.login("owner", b"right password", Some(home)), Ok(()));
    for i in 0..5 {
        let guess = format!("guess {i}");
        assert_eq!(
            hsm.login("owner", guess.as_bytes(), Some(stranger)),
            Err(ckr::PIN_INCORRECT)
        );
    }
    let r = b"right password";
    assert_eq!(hsm.login("owner", r, Some(stranger)), Err(ckr::PIN_LOCKED));
    assert_eq!(hsm.login("owner", r, Some(elsewhere)), Err(ckr::PIN_LOCKED));
    assert_eq!(hsm.login("owner", r, None), Err(ckr::PIN_LOCKED));
    // The owner's usual address is still heard, and the lock stays for
    // the others.
    assert_eq!(hsm.login("owner", r, Some(home)), Ok(()));
    assert_eq!(hsm.login("owner", r, Some(elsewhere)), Err(ckr::PIN_LOCKED));
    // The lock lapses by itself.
    std::thread::sleep(std::time::Duration::from_millis(350));
    assert_eq!(hsm.login("owner", r, Some(elsewhere)), Ok(()));
    let rec = hsm.store().user("owner").unwrap().unwrap();
    assert_eq!((rec.failures, rec.locked), (0, false));
    // Permanent locks (lock = 0): the known address is not heard either.
    hsm.limits.login.lock = std::time::Duration::ZERO;
    for i in 0..5 {
        let guess = format!("again {i}");
        let _ = hsm.login("owner", guess.as_bytes(), Some(stranger));
    }
    std::thread::sleep(std::time::Duration::from_millis(350));
    assert_eq!(hsm.login("owner", r, Some(home)), Err(ckr::PIN_LOCKED));
    assert!(hsm.unlock_user("owner").unwrap());
    assert_eq!(hsm.login("owner", r, Some(home)), Ok(()));
}
