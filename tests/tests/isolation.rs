//! Isolation: a second user, logged in at the same time on the same server
//! (from another process), cannot see, read, use, change, copy, wrap or
//! destroy the first user's objects, token or session, whatever handle it
//! guesses.
//!
//! The test binary plays both parts: run normally it is bob, the attacker;
//! it starts itself again (same test, `HSMLINK_ISOLATION_ALICE` set) as
//! alice, who makes objects, prints their handles and keeps her session
//! open until bob is done.

mod hsm_service;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use hsm_service::*;
use hsmlink_tests::{raw, rv_of, token, TempDir};

const ROLE: &str = "HSMLINK_ISOLATION_ALICE";
const ROLE_DIR: &str = "HSMLINK_ISOLATION_DIR";
const TEST_NAME: &str = "isolation_by_handle_guessing_across_users";

/// Alice's part: make objects, publish their handles in `dir/handles`,
/// wait for `dir/done`, check her objects, write `dir/ok`.
fn alice(addr: &str, dir: &Path) {
    let t = token();
    let s = login_at(&t, addr, "alice", "alice-pw");
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(true),
                Attribute::Extractable(true),
                Attribute::Label(b"alice-aes".to_vec()),
            ],
        )
        .expect("alice's AES key");
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
                Attribute::Verify(true),
                Attribute::Label(b"alice-ec".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Label(b"alice-ec".to_vec()),
            ],
        )
        .expect("alice's EC pair");
    let data = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"alice-data".to_vec()),
            Attribute::Value(b"alice's data".to_vec()),
        ])
        .expect("alice's data object");
    let session_key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(16.into()),
                Attribute::Encrypt(true),
                Attribute::Label(b"alice-session".to_vec()),
            ],
        )
        .expect("alice's session key");
    let hs: Vec<String> = [aes, public, private, data, session_key]
        .iter()
        .map(|h| h.handle().to_string())
        .collect();
    let tmp = dir.join("handles.tmp");
    std::fs::write(&tmp, hs.join(" ")).expect("write handles");
    std::fs::rename(&tmp, dir.join("handles")).expect("publish handles");
    wait_for(&dir.join("done"));
    // After bob's attempts: everything is still there and works.
    for h in [aes, public, private, data, session_key] {
        s.get_attributes(h, &[AttributeType::Label])
            .expect("alice's object survived bob");
    }
    let sig = s
        .sign(&Mechanism::EcdsaSha256, private, b"still mine")
        .expect("alice signs");
    s.verify(&Mechanism::EcdsaSha256, public, b"still mine", &sig)
        .expect("alice verifies");
    std::fs::write(dir.join("ok"), "ok").expect("write ok");
}

/// Wait (up to two minutes) for a file to appear.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never came", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn isolation_by_handle_guessing_across_users() {
    if let (Ok(addr), Some(dir)) = (std::env::var(ROLE), std::env::var_os(ROLE_DIR)) {
        alice(&addr, Path::new(&dir));
        return;
    }
    let t = token();
    let data = TempDir::new("isolation");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "alice", "alice-pw");
    add_user(&["--data", d], "bob", "bob-pw");
    let hsm = serve(data.path(), &secrets, &[]);
    let addr = hsm.addr().to_string();

    // Alice, in another process, logged in for the whole test.
    let meeting = TempDir::new("isolation-meeting");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(ROLE, &addr)
        .env(ROLE_DIR, meeting.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start alice's process");
    wait_for(&meeting.path().join("handles"));
    let alice_handles: Vec<u64> = std::fs::read_to_string(meeting.path().join("handles"))
        .expect("read handles")
        .split(' ')
        .map(|h| h.parse().expect("a handle"))
        .collect();
    assert_eq!(alice_handles.len(), 5);
    let (alice_aes, alice_private) = (alice_handles[0], alice_handles[2]);

    // Bob, logged in at the same time, with keys of his own.
    let s = login_at(&t, &addr, "bob", "bob-pw");
    let bob_key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
                Attribute::Label(b"bob-aes".to_vec()),
            ],
        )
        .expect("bob's key");
    let bob_handles = [bob_key.handle()];
    let max = alice_handles
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(bob_key.handle());

    // Search: bob finds only his own objects.
    let found: Vec<u64> = s
        .find_objects(&[])
        .expect("find all")
        .iter()
        .map(|h| h.handle())
        .collect();
    assert_eq!(found, bob_handles, "bob's search");
    for label in ["alice-aes", "alice-ec", "alice-data", "alice-session"] {
        assert!(s
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .expect("find")
            .is_empty());
    }

    // Every handle from 1 to well past the largest: nothing but his own.
    let mut probed = 0;
    for h in 1..=max + 512 {
        if bob_handles.contains(&h) {
            continue;
        }
        let o: ObjectHandle = raw::object_handle(h);
        probed += 1;
        let mut q = [raw::AttrQuery::value(raw::CKA_LABEL, 64)];
        let rv = t.raw.get_attribute_value(s.handle(), o, &mut q);
        assert_eq!(
            rv,
            raw::CKR_OBJECT_HANDLE_INVALID,
            "GetAttributeValue({h}): {}",
            raw::rv_name(rv)
        );
        let (rv, _) = t.raw.object_size(s.handle(), o);
        assert_eq!(rv, raw::CKR_OBJECT_HANDLE_INVALID, "GetObjectSize({h})");
        assert_eq!(
            rv_of(s.update_attributes(o, &[Attribute::Label(b"pwned".to_vec())])),
            RvError::ObjectHandleInvalid,
            "SetAttributeValue({h})"
        );
        assert_eq!(
            rv_of(s.copy_object(o, &[Attribute::Token(true)])),
            RvError::ObjectHandleInvalid,
            "CopyObject({h})"
        );
        assert_eq!(
            rv_of(s.encrypt(&Mechanism::AesEcb, o, &[0u8; 16])),
            RvError::KeyHandleInvalid,
            "EncryptInit({h})"
        );
        assert_eq!(
            rv_of(s.sign(&Mechanism::Ecdsa, o, &[0u8; 32])),
            RvError::KeyHandleInvalid,
            "SignInit({h})"
        );
        assert_eq!(
            rv_of(s.wrap_key(&Mechanism::AesKeyWrap, bob_key, o)),
            RvError::KeyHandleInvalid,
            "WrapKey(bob's key, {h})"
        );
        assert_eq!(
            rv_of(s.destroy_object(o)),
            RvError::ObjectHandleInvalid,
            "DestroyObject({h})"
        );
    }
    // Alice's keys as wrapping key, and her private key in a digest.
    assert_eq!(
        rv_of(s.wrap_key(
            &Mechanism::AesKeyWrap,
            raw::object_handle(alice_aes),
            bob_key
        )),
        RvError::WrappingKeyHandleInvalid
    );
    assert_eq!(
        rv_of(s.sign(
            &Mechanism::EcdsaSha256,
            raw::object_handle(alice_private),
            b"x"
        )),
        RvError::KeyHandleInvalid
    );
    drop(s);

    // Alice still has all of hers, and they still work.
    std::fs::write(meeting.path().join("done"), "done").expect("tell alice");
    let status = child.wait().expect("alice's process");
    assert!(
        status.success() && meeting.path().join("ok").exists(),
        "alice's process: {status}"
    );
    eprintln!(
        "isolation: bob probed {probed} handles (1..={}) with 8 calls each; all refused",
        max + 512
    );
    t.reinitialize(&[]).expect("back to the defaults");
}
