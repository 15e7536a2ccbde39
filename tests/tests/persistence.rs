//! The persistent server (`hsmlink-hsm serve` with users from
//! `hsmlink-hsm user add`): each user sees only their own objects, and token
//! objects survive a server restart while session objects do not.

use std::process::Command;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsmlink_tests::verify;
use hsmlink_tests::{assert_rv, hsm_binary, raw, token, Hsm, TempDir, Token};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;

const ALICE: (&str, &str) = ("alice", "alice-password");
const BOB: (&str, &str) = ("bob", "bob-password");

fn add_user(data: &TempDir, (name, password): (&str, &str)) {
    let output = Command::new(hsm_binary())
        .args(["user", "add", "--data"])
        .arg(data.path())
        .arg(name)
        .args(["--password-env", "HSMLINK_TEST_NEW_PASSWORD"])
        .env("HSMLINK_TEST_NEW_PASSWORD", password)
        .output()
        .expect("run hsmlink-hsm user add");
    assert!(
        output.status.success(),
        "hsmlink-hsm user add {name}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Points the module at `hsm` as `user` and logs in with `password`.
fn session_as(t: &Token, hsm: &Hsm, (user, password): (&str, &str)) -> Session {
    t.reinitialize(&[
        ("HSMLINK_ADDR", Some(hsm.addr())),
        ("HSMLINK_USER", Some(user)),
    ])
    .expect("C_Initialize");
    let session = t.rw_session();
    session
        .login(UserType::User, Some(&AuthPin::new(password.into())))
        .unwrap_or_else(|e| panic!("C_Login as {user}: {e}\nserver log:\n{}", hsm.stderr()));
    session
}

fn by_label(session: &Session, label: &str) -> Vec<cryptoki::object::ObjectHandle> {
    session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .expect("C_FindObjects")
}

#[test]
fn each_user_sees_only_their_own_objects() {
    let t = token();
    let data = TempDir::new("users");
    add_user(&data, ALICE);
    add_user(&data, BOB);
    let hsm = Hsm::start_serve(data.path());

    let alice = session_as(&t, &hsm, ALICE);
    let token_object = alice
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"alice-only".to_vec()),
            Attribute::Value(b"alice's secret".to_vec()),
        ])
        .expect("alice creates a token object");
    let key = hsmlink_tests::keys::aes(&alice, 16, false);
    assert_eq!(by_label(&alice, "alice-only"), vec![token_object]);
    drop(alice);

    let bob = session_as(&t, &hsm, BOB);
    assert!(
        by_label(&bob, "alice-only").is_empty(),
        "bob finds alice's object"
    );
    assert!(
        !bob.find_objects(&[])
            .expect("find all")
            .contains(&token_object),
        "bob's empty-template search returns alice's object"
    );
    assert_rv(
        bob.get_attributes(token_object, &[AttributeType::Value]),
        RvError::ObjectHandleInvalid,
    );
    assert_rv(
        bob.destroy_object(token_object),
        RvError::ObjectHandleInvalid,
    );
    assert_rv(
        bob.encrypt_init(&Mechanism::AesEcb, key),
        RvError::KeyHandleInvalid,
    );
    bob.logout().expect("logout");
    // Alice's password is not bob's.
    assert_rv(
        bob.login(UserType::User, Some(&AuthPin::new(ALICE.1.into()))),
        RvError::PinIncorrect,
    );
    drop(bob);

    // The special PIN picks the user too.
    t.reinitialize(&[
        ("HSMLINK_ADDR", None),
        ("HSMLINK_USER", None),
        ("HSMLINK_SPECIAL_PIN", Some("1")),
    ])
    .expect("C_Initialize");
    let session = t.rw_session();
    let pin = format!("{}:{}@{}", ALICE.0, ALICE.1, hsm.addr());
    session
        .login(UserType::User, Some(&AuthPin::new(pin.into())))
        .expect("special PIN login");
    assert_eq!(by_label(&session, "alice-only"), vec![token_object]);
    drop(session);
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn token_objects_survive_a_server_restart_session_objects_do_not() {
    let t = token();
    let data = TempDir::new("restart");
    add_user(&data, ALICE);
    let mut hsm = Hsm::start_serve(data.path());

    let session = session_as(&t, &hsm, ALICE);
    let (public, _) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(verify::params_of_curve(Nid::X9_62_PRIME256V1)),
                Attribute::Verify(true),
                Attribute::Label(b"persistent-ec".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Label(b"persistent-ec".to_vec()),
            ],
        )
        .expect("token key pair");
    let public_key = verify::ec_public_key(&session, public);
    let aes = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"persistent-aes".to_vec()),
            ],
        )
        .expect("token AES key");
    let ciphertext = session
        .encrypt(&Mechanism::AesCbcPad([4; 16]), aes, b"kept across restarts")
        .expect("encrypt");
    session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"ephemeral".to_vec()),
        ])
        .expect("session object");
    std::mem::forget(session);

    // A hard kill: committed objects must survive it.
    hsm.kill();
    let listing = Command::new(hsm_binary())
        .args(["objects", "list", "--data"])
        .arg(data.path())
        .args(["--user", ALICE.0])
        .output()
        .expect("hsmlink-hsm objects list");
    let listing_text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.status.success(),
        "objects list: {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    assert!(
        listing_text.contains("persistent-aes"),
        "objects list:\n{listing_text}"
    );
    assert!(
        !listing_text.contains("ephemeral"),
        "a session object was persisted:\n{listing_text}"
    );

    let hsm = Hsm::start_serve(data.path());
    let session = session_as(&t, &hsm, ALICE);
    let keys = by_label(&session, "persistent-ec");
    assert_eq!(keys.len(), 2, "the EC key pair survived the restart");
    assert!(
        by_label(&session, "ephemeral").is_empty(),
        "the session object survived the restart"
    );
    let private = session
        .find_objects(&[
            Attribute::Label(b"persistent-ec".to_vec()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .expect("find")[0];
    let sig = session
        .sign(&Mechanism::EcdsaSha256, private, b"after restart")
        .expect("sign after restart");
    assert!(
        verify::ecdsa_verifies(
            &public_key,
            Some(MessageDigest::sha256()),
            b"after restart",
            &sig
        ),
        "the restored private key matches the public key read before the restart"
    );
    let aes = by_label(&session, "persistent-aes");
    assert_eq!(aes.len(), 1);
    let plain = session
        .decrypt(&Mechanism::AesCbcPad([4; 16]), aes[0], &ciphertext)
        .expect("decrypt");
    assert_eq!(plain, b"kept across restarts");
    // Still not exportable.
    let mut q = [raw::AttrQuery::value(raw::CKA_VALUE, 64)];
    let rv = t.raw.get_attribute_value(session.handle(), aes[0], &mut q);
    assert_eq!(rv, raw::CKR_ATTRIBUTE_SENSITIVE, "{}", raw::rv_name(rv));
    drop(session);
    t.reinitialize(&[]).expect("back to the defaults");
}
