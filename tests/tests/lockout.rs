//! Login protection: a brute-force attempt is slowed down, then locked out
//! (`CKR_PIN_LOCKED`, even for the right password); the lock lasts
//! `--lock-secs` (60 s), doubling for each failure after it lapsed, or until
//! an admin unlocks the user (`--permanent-lock`: only then); the lock
//! survives a restart; other users are not locked; an unknown user name
//! locks like a real one; strangers cannot lock a user out of an address it
//! logs in from; a NULL PIN is `CKR_ARGUMENTS_BAD` and counts nothing, an
//! empty one is a wrong PIN counted once.

mod hsm_service;

use std::time::{Duration, Instant};

use cryptoki::error::RvError;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsm_service::*;
use hsmlink_pkcs11::ffi::testing as raw;
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
    assert!(
        users.contains("alice\tlocked\tfailures=5\tlocked_for="),
        "{users}"
    );
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

#[test]
fn lockout_expires_and_doubles_with_each_relock() {
    let t = token();
    let data = TempDir::new("lockout3");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "dave", "dave-pw");
    let hsm = serve(
        data.path(),
        &secrets,
        &[
            "--max-login-failures",
            "3",
            "--login-delay-ms",
            "20",
            "--lock-secs",
            "1",
            "--max-lock-secs",
            "2",
        ],
    );
    let addr = hsm.addr().to_string();
    let s = session_at(&t, &addr, "dave");
    for i in 0..3 {
        assert_eq!(attempt(&s, &format!("g{i}")), Err(RvError::PinIncorrect));
    }
    let locked_at = Instant::now();
    assert_eq!(attempt(&s, "dave-pw"), Err(RvError::PinLocked));
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(
        users.contains("dave\tlocked\tfailures=3\tlocked_for="),
        "{users}"
    );

    // The first lock (1 s) lapses; one more failure locks again, for 2 s.
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(locked_at.elapsed()));
    assert_eq!(attempt(&s, "g3"), Err(RvError::PinIncorrect));
    let relocked_at = Instant::now();
    assert_eq!(attempt(&s, "dave-pw"), Err(RvError::PinLocked));
    std::thread::sleep(Duration::from_millis(1300).saturating_sub(relocked_at.elapsed()));
    assert_eq!(
        attempt(&s, "dave-pw"),
        Err(RvError::PinLocked),
        "the second lock lasts twice as long"
    );
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(relocked_at.elapsed()));
    attempt(&s, "dave-pw").expect("the lock lapsed: the right password logs in");
    drop(s);
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(users.contains("dave\tactive\tfailures=0\tid="), "{users}");
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn lockout_by_strangers_does_not_lock_the_owner_out_of_its_usual_address() {
    let t = token();
    let data = TempDir::new("lockout4");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "erin", "erin-pw");
    let hsm = serve(data.path(), &secrets, &["--login-delay-ms", "20"]);
    let addr = hsm.addr().to_string();
    // Erin works from 127.0.0.1 (the module's address).
    drop(login_at(&t, &addr, "erin", "erin-pw"));

    // A stranger at 127.0.0.2 guesses until erin is locked.
    for i in 0..5 {
        assert_eq!(
            login_from(&addr, "127.0.0.2", "erin", &format!("x{i}")),
            CKR_PIN_INCORRECT
        );
    }
    assert_eq!(
        login_from(&addr, "127.0.0.2", "erin", "erin-pw"),
        CKR_PIN_LOCKED
    );
    // The lock holds for every other address, right password or not...
    assert_eq!(
        login_from(&addr, "127.0.0.3", "erin", "erin-pw"),
        CKR_PIN_LOCKED
    );
    // ... but erin still gets in from where she logged in before.
    let start = Instant::now();
    drop(login_at(&t, &addr, "erin", "erin-pw"));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "erin waited {:?} behind the stranger's failures",
        start.elapsed()
    );
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(users.contains("erin\tlocked"), "{users}");
    assert_eq!(
        login_from(&addr, "127.0.0.3", "erin", "erin-pw"),
        CKR_PIN_LOCKED
    );
    // A wrong guess from erin's own address is a failure like any other,
    // and ends that address's privilege.
    let s = session_at(&t, &addr, "erin");
    assert_eq!(attempt(&s, "oops"), Err(RvError::PinIncorrect));
    assert_eq!(attempt(&s, "erin-pw"), Err(RvError::PinLocked));
    drop(s);
    drop(hsm);

    // With --permanent-lock a lock is for everyone, until unlocked.
    let hsm = serve(
        data.path(),
        &secrets,
        &["--login-delay-ms", "20", "--permanent-lock"],
    );
    let addr = hsm.addr().to_string();
    cli_ok(&["user", "unlock", "--data", d, "erin"], &[]);
    drop(login_at(&t, &addr, "erin", "erin-pw"));
    for i in 0..5 {
        assert_eq!(
            login_from(&addr, "127.0.0.2", "erin", &format!("y{i}")),
            CKR_PIN_INCORRECT
        );
    }
    let s = session_at(&t, &addr, "erin");
    assert_eq!(attempt(&s, "erin-pw"), Err(RvError::PinLocked));
    drop(s);
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(users.contains("erin\tlocked\tfailures=5\tid="), "{users}");
    cli_ok(&["user", "unlock", "--data", d, "erin"], &[]);
    assert_eq!(login_from(&addr, "127.0.0.2", "erin", "erin-pw"), CKR_OK);
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn lockout_counts_an_empty_pin_once_and_a_null_pin_not_at_all() {
    let t = token();
    let data = TempDir::new("lockout5");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "frank", "frank-pw");
    let hsm = serve(data.path(), &secrets, &["--max-login-failures", "3"]);
    let addr = hsm.addr().to_string();
    let s = session_at(&t, &addr, "frank");
    let h = s.handle();
    // NULL pPin: this token has no protected authentication path (v2.40
    // §5.6), so it is an argument error, whatever the length; not counted.
    for len in [0, 8] {
        assert_eq!(
            t.raw.login_null_pin(h, raw::CKU_USER, len),
            raw::CKR_ARGUMENTS_BAD,
            "NULL pPin, length {len}"
        );
    }
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(users.contains("frank\tactive\tfailures=0"), "{users}");
    // An empty PIN is a PIN: wrong, and counted once per attempt.
    for n in 1..=2 {
        assert_eq!(t.raw.login(h, raw::CKU_USER, b""), raw::CKR_PIN_INCORRECT);
        let users = cli_ok(&["user", "list", "--data", d], &[]);
        assert!(
            users.contains(&format!("frank\tactive\tfailures={n}\tid=")),
            "{users}"
        );
    }
    assert_eq!(t.raw.login(h, raw::CKU_USER, b""), raw::CKR_PIN_INCORRECT);
    assert_eq!(
        t.raw.login(h, raw::CKU_USER, b"frank-pw"),
        raw::CKR_PIN_LOCKED
    );
    drop(s);
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn lockout_a_pin_retried_after_the_login_deadline_closed_the_connection() {
    let t = token();
    let data = TempDir::new("lockout6");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "gina", "gina-pw");
    let hsm = serve(data.path(), &secrets, &["--login-timeout-ms", "500"]);
    let addr = hsm.addr().to_string();
    let s = session_at(&t, &addr, "gina");
    // A wrong PIN, then the user takes her time: the server closes the
    // connection that has not logged in; the next C_Login gets through on
    // a new one, and the wrong one was counted once.
    assert_eq!(attempt(&s, "typo"), Err(RvError::PinIncorrect));
    std::thread::sleep(Duration::from_millis(1200));
    attempt(&s, "gina-pw").expect("C_Login after the server closed the first connection");
    let log = hsm.stderr();
    assert_eq!(
        log.matches("event=login_failed user=\"gina\"").count(),
        1,
        "{log}"
    );
    assert!(log.contains("reason=login_timeout"), "{log}");
    drop(s);
    t.reinitialize(&[]).expect("back to the defaults");
}
