//! Login protection: a brute-force attempt is slowed down, then locked out
//! (`CKR_PIN_LOCKED`, even for the right password) until an admin unlocks
//! the user; the lock survives a restart; other users are not locked; an
//! unknown user name locks like a real one.

mod hsm_service;

use std::time::{Duration, Instant};

use cryptoki::error::RvError;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsm_service::*;
use hsmlink_tests::{rv_of, token, TempDir};

fn attempt(s: &Session, pin: &str) -> Result<(), RvError> {
    match s.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(()) => Ok(()),
        Err(e) => Err(rv_of::<()>(Err(e))),
    }
}

#[test]
fn lockout_after_five_failures_until_admin_unlock_and_across_restart() {
    let t = token();
    let data = TempDir::new("lockout");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "alice", "alice-pw");
    add_user(&["--data", d], "bob", "bob-pw");
    let mut hsm = serve(data.path(), &secrets, &[]);
    let addr = hsm.addr().to_string();

    // A brute force: wrong passwords in a row.
    let s = session_at(&t, &addr, "alice");
    let mut timings = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        assert_eq!(
            attempt(&s, &format!("guess-{i}")),
            Err(RvError::PinIncorrect),
            "attempt {i}"
        );
        timings.push(start.elapsed());
    }
    // Locked: even the right password is refused.
    let start = Instant::now();
    assert_eq!(attempt(&s, "alice-pw"), Err(RvError::PinLocked));
    timings.push(start.elapsed());
    assert_eq!(attempt(&s, "guess-5"), Err(RvError::PinLocked));
    // Past three failures the attempts are spaced out (250 ms, then doubling).
    assert!(
        timings[3] >= Duration::from_millis(200) && timings[4] >= Duration::from_millis(400),
        "no rate limit: {timings:?}"
    );
    eprintln!("lockout: attempt durations {timings:?}");
    let log = hsm.stderr();
    assert!(
        log.contains("event=login_failed user=\"alice\"") && log.contains("locked=true"),
        "failed logins are logged:\n{log}"
    );
    assert!(!log.contains("guess-"), "a tried password reached the log");
    // Structured lines, one per connection event.
    assert!(
        log.lines()
            .any(|l| l.contains("event=connected peer=127.0.0.1:")),
        "{log}"
    );
    assert!(
        log.lines()
            .all(|l| l.starts_with("ts=") && l.contains(" level=")),
        "every log line is key=value:\n{log}"
    );
    drop(s);

    // Bob is not locked (his first attempt from this address may wait for
    // the address's turn, but succeeds).
    let start = Instant::now();
    let b = login_at(&t, &addr, "bob", "bob-pw");
    eprintln!(
        "lockout: bob's login from the same address took {:?}",
        start.elapsed()
    );
    drop(b);

    // The admin sees the lock (through the running server's admin socket).
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(users.contains("alice\tlocked\tfailures=5"), "{users}");
    assert!(users.contains("bob\tactive\tfailures=0"), "{users}");

    // The lock is persisted: still locked after a restart.
    hsm.kill();
    let hsm = serve(data.path(), &secrets, &[]);
    let addr = hsm.addr().to_string();
    let s = session_at(&t, &addr, "alice");
    assert_eq!(attempt(&s, "alice-pw"), Err(RvError::PinLocked));
    drop(s);

    // Unlocked by the admin while the server runs.
    let out = cli_ok(&["user", "unlock", "--data", d, "alice"], &[]);
    assert!(out.contains("unlocked"), "{out}");
    let s = login_at(&t, &addr, "alice", "alice-pw");
    drop(s);
    assert!(cli_err(&["user", "unlock", "--data", d, "nobody"], &[]).contains("no user nobody"));

    // A success resets the count: four failures do not lock.
    let s = session_at(&t, &addr, "alice");
    for i in 0..4 {
        assert_eq!(
            attempt(&s, &format!("again-{i}")),
            Err(RvError::PinIncorrect)
        );
    }
    attempt(&s, "alice-pw").expect("the fifth attempt, right, logs in");
    drop(s);
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn lockout_of_unknown_names_and_a_configurable_threshold() {
    let t = token();
    let data = TempDir::new("lockout2");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "carol", "carol-pw");
    let hsm = serve(
        data.path(),
        &secrets,
        &["--max-login-failures", "3", "--login-delay-ms", "20"],
    );
    let addr = hsm.addr().to_string();

    // Three failures lock carol.
    let s = session_at(&t, &addr, "carol");
    for i in 0..3 {
        assert_eq!(attempt(&s, &format!("x{i}")), Err(RvError::PinIncorrect));
    }
    assert_eq!(attempt(&s, "carol-pw"), Err(RvError::PinLocked));
    drop(s);

    // An unknown name behaves the same way: locking tells nothing about
    // which names exist.
    let s = session_at(&t, &addr, "mallory");
    for i in 0..3 {
        assert_eq!(attempt(&s, &format!("y{i}")), Err(RvError::PinIncorrect));
    }
    assert_eq!(attempt(&s, "anything"), Err(RvError::PinLocked));
    drop(s);

    // `user passwd` sets a new password and unlocks.
    let out = cli_ok(
        &[
            "user",
            "passwd",
            "--data",
            d,
            "--password-env",
            "NEWPW",
            "carol",
        ],
        &[("NEWPW", "carol-new")],
    );
    assert!(out.contains("changed"), "{out}");
    let s = login_at(&t, &addr, "carol", "carol-new");
    drop(s);
    let status = cli_ok(&["status", "--data", d], &[]);
    assert!(status.contains("lockouts=2"), "{status}");
    t.reinitialize(&[]).expect("back to the defaults");
}
