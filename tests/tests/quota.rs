//! Byte quotas: a client filling session objects (or token objects) gets
//! `CKR_DEVICE_MEMORY` once its bytes are spent, whatever the count, and
//! the server's memory stays bounded. The real server over real TCP, the
//! real module.

mod hsm_service;

use cryptoki::error::RvError;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::Session;
use hsm_service::login_at;
use hsmlink_tests::{rv_of, token, Hsm, PIN, USER};

const MIB: u64 = 1 << 20;

fn data_object(token: bool, value: Vec<u8>) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token),
        Attribute::Label(b"quota".to_vec()),
        Attribute::Value(value),
    ]
}

/// Create 16 KiB objects until the first error: (objects made, the error).
fn fill(s: &Session, token: bool, max: usize) -> (usize, Option<RvError>) {
    for n in 0..max {
        if let Err(e) = s.create_object(&data_object(token, vec![n as u8; 16 * 1024])) {
            return (n, Some(rv_of::<()>(Err(e))));
        }
    }
    (max, None)
}

fn dev(extra: &[&str]) -> Hsm {
    let mut args = vec![
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
    ];
    args.extend_from_slice(extra);
    Hsm::start(&args)
}

#[test]
fn quota_session_objects_are_capped_in_bytes_per_connection_with_rss_bounded() {
    let t = token();
    // The default quota: 4 MiB of session objects per connection (the
    // count cap, 4096, would let 64 MiB of 16 KiB objects through).
    let hsm = dev(&[]);
    let first = login_at(&t, hsm.addr(), USER, PIN);
    let rss_before = hsm.status_field("VmRSS");
    // Eight connections (a session each) fill their quota.
    let sessions: Vec<Session> = (0..8)
        .map(|_| t.pkcs11.open_rw_session(t.slot).expect("session"))
        .collect();
    for (i, s) in sessions.iter().enumerate() {
        let (made, err) = fill(s, false, 4096);
        assert_eq!(
            err,
            Some(RvError::DeviceMemory),
            "session {i}: {made} objects, then {err:?}"
        );
        // 4 MiB / (16 KiB + attributes + 512 overhead): about 250.
        assert!((200..=256).contains(&made), "session {i}: {made} objects");
        // Past the quota, every further attempt is refused and costs nothing.
        for _ in 0..50 {
            assert_eq!(fill(s, false, 1), (0, Some(RvError::DeviceMemory)));
        }
    }
    let rss_full = hsm.status_field("VmRSS");
    let grew = rss_full.saturating_sub(rss_before) * 1024;
    eprintln!(
        "quota: server RSS {} KiB before, {} KiB with 8 full connections (+{} MiB)",
        rss_before,
        rss_full,
        grew / MIB
    );
    assert!(
        grew < 8 * 4 * MIB * 2 + 16 * MIB,
        "RSS grew by {} MiB for 8 x 4 MiB of session objects",
        grew / MIB
    );

    // Objects that grow through C_SetAttributeValue count too: 500 small
    // ones fit, 500 with 12 KiB labels would not.
    let small = t.pkcs11.open_rw_session(t.slot).expect("session");
    let handles: Vec<_> = (0..500)
        .map(|_| {
            small
                .create_object(&data_object(false, vec![1; 16]))
                .expect("a small object")
        })
        .collect();
    let mut grown = 0;
    let last = loop {
        let Some(h) = handles.get(grown) else {
            break None;
        };
        match small.update_attributes(*h, &[Attribute::Label(vec![b'x'; 12 * 1024])]) {
            Ok(()) => grown += 1,
            Err(e) => break Some(rv_of::<()>(Err(e))),
        }
    };
    assert_eq!(last, Some(RvError::DeviceMemory), "after {grown} labels");
    assert!((250..=340).contains(&grown), "{grown} objects grew");
    drop(small);

    // A closed connection gives its bytes back.
    drop(sessions);
    let again = t.pkcs11.open_rw_session(t.slot).expect("session");
    let (made, err) = fill(&again, false, 20);
    assert_eq!(
        (made, err),
        (20, None),
        "a new connection has its own quota"
    );
    drop(again);
    drop(first);
    let log = hsm.stderr();
    assert!(log.contains("event=quota"), "{log}");
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn quota_token_objects_are_capped_in_bytes_per_user() {
    let t = token();
    let hsm = dev(&["--max-user-bytes", "1048576"]);
    let s = login_at(&t, hsm.addr(), USER, PIN);
    let (made, err) = fill(&s, true, 1000);
    assert_eq!(err, Some(RvError::DeviceMemory), "{made} objects");
    assert!((50..=64).contains(&made), "1 MiB of 16 KiB objects: {made}");
    // The quota is the user's, not the connection's.
    let other = t.pkcs11.open_rw_session(t.slot).expect("session");
    assert_eq!(fill(&other, true, 1), (0, Some(RvError::DeviceMemory)));
    // Session objects have their own (per connection) quota.
    assert_eq!(fill(&other, false, 3), (3, None));
    // Destroying a token object makes room for one.
    let found = s
        .find_objects(&[Attribute::Token(true), Attribute::Label(b"quota".to_vec())])
        .expect("find");
    assert_eq!(found.len(), made);
    s.destroy_object(found[0]).expect("destroy");
    assert_eq!(fill(&other, true, 2), (1, Some(RvError::DeviceMemory)));
    drop(other);
    drop(s);
    t.reinitialize(&[]).expect("back to the defaults");
}
