//! Revocation, as the admin who removes a user, changes a password or locks
//! one relies on it: the user's live sessions stop working at once (their
//! next call is `CKR_USER_NOT_LOGGED_IN`, PKCS#11 v2.40 §5.1: the login they
//! rested on is void), their session objects are gone, and a new user
//! given the old name owns nothing of the removed one's (objects belong to
//! a user id that is never reused). The fleet case (two servers on one
//! PostgreSQL) is in `postgres.rs`.

mod hsm_service;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsm_service::*;
use hsmlink_tests::{rv_of, token, TempDir};

fn data_object(s: &Session, label: &str, token: bool) -> cryptoki::error::Result<u64> {
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(b"revocation value".to_vec()),
    ])
    .map(|h| h.handle())
}

fn handle_of(s: &Session, label: &str) -> Vec<cryptoki::object::ObjectHandle> {
    s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .expect("find")
}

#[test]
fn revocation_removed_user_live_session_fails_and_a_new_user_of_the_name_sees_nothing() {
    let t = token();
    let data = TempDir::new("revocation-remove");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "alice", "alice-old-pw");
    let hsm = serve(data.path(), &secrets, &[]);

    let s = login_at(&t, hsm.addr(), "alice", "alice-old-pw");
    data_object(&s, "alice-token", true).expect("token object");
    data_object(&s, "alice-session", false).expect("session object");
    let old = handle_of(&s, "alice-token")[0];

    // A second session of the same login keeps creating token objects while
    // the admin removes the user: none may outlive the removal.
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let writer = {
        let pkcs11 = t.pkcs11.clone();
        let slot = t.slot;
        let (stop, made) = (stop.clone(), made.clone());
        std::thread::spawn(move || {
            let s = pkcs11.open_rw_session(slot).expect("C_OpenSession");
            let mut last = Ok(0);
            while !stop.load(Ordering::SeqCst) {
                last = data_object(&s, "alice-racing", true);
                if last.is_err() {
                    break;
                }
                made.fetch_add(1, Ordering::SeqCst);
            }
            rv_of(last.map(|_| ()))
        })
    };
    while made.load(Ordering::SeqCst) < 3 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = cli_ok(&["user", "remove", "--data", d, "alice"], &[]);
    assert!(out.contains("removed"), "{out}");

    // The very next call of the live session fails: no grace period.
    assert_eq!(
        rv_of(data_object(&s, "after-removal", true)),
        RvError::UserNotLoggedIn,
        "a removed user's live session still creates objects"
    );
    assert_eq!(
        rv_of(s.get_attributes(old, &[AttributeType::Label])),
        RvError::UserNotLoggedIn
    );
    assert_eq!(rv_of(s.find_objects(&[])), RvError::UserNotLoggedIn);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(
        writer.join().expect("writer"),
        RvError::UserNotLoggedIn,
        "the racing session ends with the removal"
    );
    // The old password no longer logs in (from another client).
    assert_eq!(
        raw_login(hsm.addr(), "alice", "alice-old-pw"),
        Some(CKR_PIN_INCORRECT)
    );
    drop(s);

    // A new alice (another password): nothing of the old one's, not by
    // search, not by the old handle.
    add_user(&["--data", d], "alice", "alice-new-pw");
    let s = login_at(&t, hsm.addr(), "alice", "alice-new-pw");
    assert_eq!(s.find_objects(&[]).expect("find"), vec![]);
    assert_eq!(
        rv_of(s.get_attributes(old, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    drop(s);
    // Nor does any racing object linger in the store for anyone.
    let list = cli_ok(&["objects", "list", "--data", d], &[]);
    assert_eq!(list.lines().count(), 1, "objects left behind:\n{list}");
    let log = hsm.stderr();
    assert!(
        log.contains("event=login_revoked") && log.contains("reason=removed"),
        "{log}"
    );
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn revocation_password_change_and_lock_end_live_sessions() {
    let t = token();
    let data = TempDir::new("revocation-passwd");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "bob", "bob-pw-1");
    add_user(&["--data", d], "carol", "carol-pw");
    let hsm = serve(data.path(), &secrets, &[]);

    let s = login_at(&t, hsm.addr(), "bob", "bob-pw-1");
    let kept = data_object(&s, "bob-token", true).expect("token object");
    // The password changes (say, it leaked): the live session ends.
    cli_ok(
        &[
            "user",
            "passwd",
            "--data",
            d,
            "--password-env",
            "NEWPW",
            "bob",
        ],
        &[("NEWPW", "bob-pw-2")],
    );
    assert_eq!(
        rv_of(data_object(&s, "after-passwd", false)),
        RvError::UserNotLoggedIn,
        "a session logged in with the old password still works"
    );
    assert_eq!(
        raw_login(hsm.addr(), "bob", "bob-pw-1"),
        Some(CKR_PIN_INCORRECT)
    );
    // The module forgot the void login: the application logs in again with
    // the new password (no C_Logout needed); the user keeps its objects
    // (same id).
    assert_eq!(
        rv_of(s.login(UserType::User, Some(&AuthPin::new("bob-pw-1".into())))),
        RvError::PinIncorrect
    );
    s.login(UserType::User, Some(&AuthPin::new("bob-pw-2".into())))
        .expect("C_Login with the new password");
    assert_eq!(handle_of(&s, "bob-token").len(), 1);
    assert_eq!(
        handle_of(&s, "bob-token")[0].handle(),
        kept,
        "passwd keeps the user's objects"
    );

    // An admin lock ends the session too, and holds until unlock.
    cli_ok(&["user", "lock", "--data", d, "bob"], &[]);
    assert_eq!(rv_of(s.find_objects(&[])), RvError::UserNotLoggedIn);
    assert_eq!(
        raw_login(hsm.addr(), "bob", "bob-pw-2"),
        Some(CKR_PIN_LOCKED)
    );
    drop(s);
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(users.contains("bob\tlocked"), "{users}");
    assert!(users.contains("carol\tactive"), "{users}");
    cli_ok(&["user", "unlock", "--data", d, "bob"], &[]);
    drop(login_at(&t, hsm.addr(), "bob", "bob-pw-2"));

    t.reinitialize(&[]).expect("back to the defaults");
}

/// A lockout by failed logins is the one change that must NOT end live
/// sessions: anyone who can reach the server can send five wrong PINs for
/// a user name, and that must not kick the logged-in user out (a denial of
/// service). New logins are refused (`CKR_PIN_LOCKED`) until an admin
/// unlocks; the admin's own `user lock` of the locked-out user does end the
/// sessions.
#[test]
fn revocation_lockout_by_wrong_pins_refuses_new_logins_but_keeps_live_sessions() {
    let t = token();
    let data = TempDir::new("revocation-lockout");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "carol", "carol-pw");
    let hsm = serve(data.path(), &secrets, &[]);

    let s = login_at(&t, hsm.addr(), "carol", "carol-pw");
    data_object(&s, "carol-session", false).expect("session object");
    data_object(&s, "carol-token", true).expect("token object");
    // The attacker: another client, wrong PINs until the lock.
    for i in 0..5 {
        assert_eq!(
            raw_login(hsm.addr(), "carol", &format!("guess {i}")),
            Some(CKR_PIN_INCORRECT)
        );
    }
    assert_eq!(
        raw_login(hsm.addr(), "carol", "carol-pw"),
        Some(CKR_PIN_LOCKED)
    );
    // Carol's live session goes on: reads, creates, keeps its objects.
    assert_eq!(handle_of(&s, "carol-session").len(), 1);
    assert_eq!(handle_of(&s, "carol-token").len(), 1);
    data_object(&s, "carol-after-lockout", false)
        .expect("the live session still creates objects after a lockout");
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(users.contains("carol\tlocked"), "{users}");
    assert!(
        !hsm.stderr().contains("event=login_revoked"),
        "{}",
        hsm.stderr()
    );
    // The admin locks the locked-out user on purpose: now the session ends.
    cli_ok(&["user", "lock", "--data", d, "carol"], &[]);
    assert_eq!(rv_of(s.find_objects(&[])), RvError::UserNotLoggedIn);
    drop(s);
    cli_ok(&["user", "unlock", "--data", d, "carol"], &[]);
    let s = login_at(&t, hsm.addr(), "carol", "carol-pw");
    assert!(
        handle_of(&s, "carol-session").is_empty(),
        "session objects die with the revoked login"
    );
    assert_eq!(handle_of(&s, "carol-token").len(), 1);
    drop(s);
    t.reinitialize(&[]).expect("back to the defaults");
}

/// A revoked login keeps nothing running: a multi-part MAC begun before
/// `user passwd` cannot be continued or finished after it, and a search
/// cursor opened before cannot be read on.
#[test]
fn revocation_ends_running_operations_and_search_cursors() {
    use cryptoki::mechanism::Mechanism;
    let t = token();
    let data = TempDir::new("revocation-ops");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "dave", "dave-pw-1");
    let hsm = serve(data.path(), &secrets, &[]);
    let passwd = |pw: &str| {
        cli_ok(
            &[
                "user",
                "passwd",
                "--data",
                d,
                "--password-env",
                "NEWPW",
                "dave",
            ],
            &[("NEWPW", pw)],
        );
    };

    let s = login_at(&t, hsm.addr(), "dave", "dave-pw-1");
    let key = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Sign(true),
            ],
        )
        .expect("C_GenerateKey");
    s.sign_init(&Mechanism::Sha256Hmac, key)
        .expect("C_SignInit");
    s.sign_update(b"first part").expect("C_SignUpdate");
    passwd("dave-pw-2");
    assert_eq!(
        rv_of(s.sign_update(b"second part")),
        RvError::UserNotLoggedIn
    );
    assert!(
        s.sign_final().is_err(),
        "a MAC finished after the revocation"
    );
    // The module forgot the login the HSM voided: nothing to log out of.
    assert_eq!(rv_of(s.logout()), RvError::UserNotLoggedIn);
    s.login(UserType::User, Some(&AuthPin::new("dave-pw-2".into())))
        .expect("C_Login with the new password");
    // The operation did not survive into the new login either.
    assert!(s.sign_final().is_err(), "the old operation carried over");

    // More objects than one answer carries (the module fetches
    // `MAX_FIND` handles per round trip): reading past the first answer
    // needs the server's cursor.
    let batch = hsmlink_core::wire::MAX_FIND;
    for i in 0..batch + 6 {
        data_object(&s, &format!("dave-{i}"), false).expect("session object");
    }
    {
        let mut it = s
            .iter_objects_with_cache_size(&[], std::num::NonZeroUsize::new(1).expect("1"))
            .expect("C_FindObjectsInit");
        it.next().expect("one").expect("first object");
        passwd("dave-pw-3");
        let rest: Vec<_> = it.collect();
        // What the first answer brought before the revocation, then the
        // end of the search: nothing more from the server.
        let delivered = rest.iter().take_while(|r| r.is_ok()).count();
        assert!(
            delivered < batch,
            "the search cursor went on after the revocation ({delivered} more handles)"
        );
        assert_eq!(
            rest.into_iter()
                .nth(delivered)
                .map(|r| rv_of(r.map(|_| ()))),
            Some(RvError::UserNotLoggedIn)
        );
    }
    drop(s);
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn revocation_passwd_voids_the_login_of_every_session_and_c_login_works_again() {
    let t = token();
    let data = TempDir::new("revocation-relogin");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "dave", "dave-pw-1");
    let hsm = serve(data.path(), &secrets, &[]);

    // Two sessions of one application share one login.
    let a = login_at(&t, hsm.addr(), "dave", "dave-pw-1");
    let b = t.pkcs11.open_rw_session(t.slot).expect("C_OpenSession");
    data_object(&a, "dave-token", true).expect("token object");
    assert_eq!(handle_of(&b, "dave-token").len(), 1, "b shares a's login");

    cli_ok(
        &[
            "user",
            "passwd",
            "--data",
            d,
            "--password-env",
            "NEWPW",
            "dave",
        ],
        &[("NEWPW", "dave-pw-2")],
    );
    // The next call learns the login is void, and so does the module: every
    // session of the application is public from then on.
    assert_eq!(rv_of(a.find_objects(&[])), RvError::UserNotLoggedIn);
    for s in [&a, &b] {
        let info = s.get_session_info().expect("C_GetSessionInfo");
        assert_eq!(
            info.session_state(),
            cryptoki::session::SessionState::RwPublic,
            "the module still believes the void login holds"
        );
        assert_eq!(rv_of(s.find_objects(&[])), RvError::UserNotLoggedIn);
    }
    // The old password is refused by the HSM (not by a stale state of the
    // module: CKR_PIN_INCORRECT, not CKR_USER_ALREADY_LOGGED_IN) ...
    assert_eq!(
        rv_of(b.login(UserType::User, Some(&AuthPin::new("dave-pw-1".into())))),
        RvError::PinIncorrect
    );
    // ... and the new one logs in without C_Logout, on another session
    // than the one that saw the revocation; both work again.
    b.login(UserType::User, Some(&AuthPin::new("dave-pw-2".into())))
        .expect("C_Login with the new password, without C_Logout");
    assert_eq!(handle_of(&a, "dave-token").len(), 1);
    assert_eq!(handle_of(&b, "dave-token").len(), 1);
    // C_Logout ends the new login as usual.
    a.logout().expect("C_Logout of the new login");
    assert_eq!(rv_of(a.logout()), RvError::UserNotLoggedIn);
    drop((a, b));
    t.reinitialize(&[]).expect("back to the defaults");
}
