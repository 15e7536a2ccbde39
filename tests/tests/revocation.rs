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

const PIN_INCORRECT: u64 = 0xA0;
const PIN_LOCKED: u64 = 0xA4;

/// One login over a raw plain-TCP connection of the wire protocol (another
/// client than this process's module): `None` for success, else the CKR.
fn raw_login(addr: &str, user: &str, password: &str) -> Option<u64> {
    use hsmlink_core::wire::{self, Request, Response, Secret, HEADER_LEN, PROTOCOL_VERSION};
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut exchange = |req: &Request<'_>| -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = wire::encode_frame(req, &mut buf).expect("encode");
        c.write_all(&buf[..n]).expect("send");
        let mut header = [0u8; HEADER_LEN];
        c.read_exact(&mut header).expect("reply header");
        let len = wire::frame_len(header, 1 << 20).expect("reply length");
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).expect("reply body");
        body
    };
    let hello = exchange(&Request::Hello {
        version: PROTOCOL_VERSION,
        max_frame: 65_536,
        app: [7; 16],
    });
    assert!(matches!(
        wire::decode::<Response<'_>>(&hello),
        Ok(Response::Hello { .. })
    ));
    let reply = exchange(&Request::Login {
        user,
        password: Secret(password.as_bytes()),
    });
    let answer = match wire::decode::<Response<'_>>(&reply).expect("reply") {
        Response::Ok => None,
        Response::Error(rv) => Some(rv),
        other => panic!("unexpected reply {other:?}"),
    };
    answer
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
        Some(PIN_INCORRECT)
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
        Some(PIN_INCORRECT)
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
    assert_eq!(raw_login(hsm.addr(), "bob", "bob-pw-2"), Some(PIN_LOCKED));
    drop(s);
    let users = cli_ok(&["user", "list", "--data", d], &[]);
    assert!(users.contains("bob\tlocked"), "{users}");
    assert!(users.contains("carol\tactive"), "{users}");
    cli_ok(&["user", "unlock", "--data", d, "bob"], &[]);
    drop(login_at(&t, hsm.addr(), "bob", "bob-pw-2"));

    // A lockout by failed logins (from another client) ends the live
    // session as well.
    let s = login_at(&t, hsm.addr(), "carol", "carol-pw");
    data_object(&s, "carol-session", false).expect("session object");
    for i in 0..5 {
        assert_eq!(
            raw_login(hsm.addr(), "carol", &format!("guess {i}")),
            Some(PIN_INCORRECT)
        );
    }
    assert_eq!(raw_login(hsm.addr(), "carol", "carol-pw"), Some(PIN_LOCKED));
    assert_eq!(rv_of(s.find_objects(&[])), RvError::UserNotLoggedIn);
    drop(s);
    cli_ok(&["user", "unlock", "--data", d, "carol"], &[]);
    let s = login_at(&t, hsm.addr(), "carol", "carol-pw");
    assert!(
        handle_of(&s, "carol-session").is_empty(),
        "session objects die with the revoked login"
    );
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
