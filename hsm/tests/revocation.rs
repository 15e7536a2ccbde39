//! Revocation in-process (the end-to-end tests are `tests/tests/revocation.rs`
//! and the fleet case in `tests/tests/postgres.rs`): a removed, re-keyed or
//! locked user's connections answer their next request logged out, their
//! session objects are gone at once, and a new user of the same name owns
//! nothing of the old one's.

mod common;

use std::sync::Arc;

use common::*;
use hsmlink_core::ck::{cka, cko, ckr};
use hsmlink_core::wire::Request;
use hsmlink_hsm::Hsm;

/// A fresh HSM per test (these tests remove and change users).
fn own_hsm() -> Arc<Hsm> {
    let h = Hsm::dev("alice", b"alice-pw").unwrap();
    h.put_user("carol", b"carol-pw").unwrap();
    Arc::new(h)
}

/// The error a search answers (it must fail).
fn find_rv(c: &mut Client) -> hsmlink_core::ck::Rv {
    match c.req(&Request::FindObjects {
        template: tpl(&[]),
        max: 64,
    }) {
        hsmlink_hsm::Reply::Error(e) => e,
        r => panic!("{r:?}"),
    }
}

fn data(token: bool, label: &str) -> Vec<(u64, Vec<u8>)> {
    vec![
        (cka::CLASS, ul(cko::DATA)),
        (cka::TOKEN, b(token)),
        (cka::LABEL, label.as_bytes().to_vec()),
    ]
}

#[test]
fn a_removed_user_is_logged_out_at_once_and_its_name_inherits_nothing() {
    let hsm = own_hsm();
    let mut a1 = Client::login(&hsm, "alice", b"alice-pw");
    let mut a2 = Client::login(&hsm, "alice", b"alice-pw");
    let mut carol = Client::login(&hsm, "carol", b"carol-pw");
    let token = a1.create(&data(true, "t")).unwrap();
    let session = a2.create(&data(false, "s")).unwrap();
    assert_eq!(a1.find(&[]).len(), 2);
    let old_id = hsm.store().user("alice").unwrap().unwrap().id;
    let old_owner = hsmlink_hsm::users::owner_key("alice", old_id);
    assert_eq!(hsm.object_count(&old_owner), 2);

    assert!(hsm.remove_user("alice").unwrap());
    // Both connections: the next request is logged out.
    for c in [&mut a1, &mut a2] {
        assert_eq!(c.create(&data(true, "late")), Err(ckr::USER_NOT_LOGGED_IN));
        assert_eq!(c.attrs(token, &[cka::LABEL]), Err(ckr::USER_NOT_LOGGED_IN));
    }
    // The session object died with the login (not with the connection).
    assert_eq!(hsm.object_count(&old_owner), 0);
    // Carol is untouched.
    assert_eq!(carol.create(&data(true, "c")).map(|_| ()), Ok(()));

    // A new alice: a new id, nothing of the old one's.
    hsm.put_user("alice", b"new-pw").unwrap();
    let new_id = hsm.store().user("alice").unwrap().unwrap().id;
    assert!(new_id > old_id);
    // The old connection logs in as the new alice: still nothing.
    assert_eq!(
        a1.req(&Request::Login {
            user: "alice",
            password: hsmlink_core::wire::Secret(b"alice-pw")
        }),
        hsmlink_hsm::Reply::Error(ckr::PIN_INCORRECT)
    );
    assert_eq!(
        a1.req(&Request::Login {
            user: "alice",
            password: hsmlink_core::wire::Secret(b"new-pw")
        }),
        hsmlink_hsm::Reply::Ok
    );
    assert!(a1.find(&[]).is_empty());
    assert_eq!(
        a1.attrs(token, &[cka::LABEL]),
        Err(ckr::OBJECT_HANDLE_INVALID)
    );
    assert_eq!(
        a1.attrs(session, &[cka::LABEL]),
        Err(ckr::OBJECT_HANDLE_INVALID)
    );
}

#[test]
fn passwd_and_lock_log_out_live_connections_unlock_does_not() {
    let hsm = own_hsm();
    let mut a = Client::login(&hsm, "alice", b"alice-pw");
    let kept = a.create(&data(true, "kept")).unwrap();
    // unlock (nothing to unlock) changes nothing for a live login.
    hsm.unlock_user("alice").unwrap();
    assert_eq!(a.find(&[]), vec![kept]);

    hsm.put_user("alice", b"pw-2").unwrap();
    assert_eq!(find_rv(&mut a), ckr::USER_NOT_LOGGED_IN);
    assert_eq!(
        a.req(&Request::Login {
            user: "alice",
            password: hsmlink_core::wire::Secret(b"pw-2")
        }),
        hsmlink_hsm::Reply::Ok
    );
    assert_eq!(a.find(&[]), vec![kept], "passwd keeps the user's objects");

    assert!(hsm.lock_user("alice").unwrap());
    assert_eq!(find_rv(&mut a), ckr::USER_NOT_LOGGED_IN);
    assert_eq!(
        a.req(&Request::Login {
            user: "alice",
            password: hsmlink_core::wire::Secret(b"pw-2")
        }),
        hsmlink_hsm::Reply::Error(ckr::PIN_LOCKED)
    );
    assert_eq!(hsm.revoke_user("nobody", "test"), 0);
}

/// Logins of a user race its removal, then its password change: once the
/// admin command has returned, every login granted before or during it is
/// revoked (none slips in between the password check and the registration),
/// and none is granted after.
#[test]
fn revocation_logins_racing_remove_or_passwd_never_outlive_them() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for round in 0..8 {
        let hsm = own_hsm();
        let granted = Arc::new(AtomicUsize::new(0));
        let racer = {
            let (hsm, granted) = (hsm.clone(), granted.clone());
            std::thread::spawn(move || {
                let mut flags = Vec::new();
                for conn in 1_000_000u64.. {
                    match hsm.login_session("alice", b"alice-pw", None, conn, None) {
                        Ok(g) => {
                            flags.push(g.revoked);
                            granted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break,
                    }
                }
                flags
            })
        };
        while granted.load(Ordering::SeqCst) < 2 + round {
            std::thread::yield_now();
        }
        if round % 2 == 0 {
            assert!(hsm.remove_user("alice").unwrap());
        } else {
            hsm.put_user("alice", b"alice-new-pw").unwrap();
        }
        let flags = racer.join().unwrap();
        assert!(flags.len() >= 2);
        let live = flags.iter().filter(|f| !f.load(Ordering::SeqCst)).count();
        assert_eq!(
            live, 0,
            "round {round}: {live} login(s) outlived the change"
        );
    }
}
