//! Threads, each with its own session, working at the same time: the library
//! is thread-safe by itself and sessions run in parallel.

use std::sync::Barrier;
use std::thread;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use hsmlink_tests::keys;
use hsmlink_tests::verify;
use hsmlink_tests::{login_user, token, unique_label};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;

const ROUNDS: usize = 40;

#[test]
fn two_threads_sign_concurrently_in_their_own_sessions() {
    let t = token();
    let setup = t.user_session(); // keeps the application logged in
    let ec = keys::ec(&setup, Nid::X9_62_PRIME256V1, &unique_label("conc-ec"));
    let rsa = keys::rsa(&setup, 2048, &unique_label("conc-rsa"));
    let ec_public = verify::ec_public_key(&setup, ec.public);
    let rsa_public = verify::rsa_public_key(&setup, rsa.public);
    let barrier = Barrier::new(2);

    thread::scope(|scope| {
        let ec_thread = scope.spawn(|| {
            let session = t.rw_session();
            barrier.wait();
            let mut signatures = Vec::new();
            for i in 0..ROUNDS {
                let message = format!("ec message {i}");
                let sig = session
                    .sign(&Mechanism::EcdsaSha256, ec.private, message.as_bytes())
                    .unwrap_or_else(|e| panic!("EC thread, round {i}: {e}"));
                signatures.push((message, sig));
            }
            signatures
        });
        let rsa_thread = scope.spawn(|| {
            let session = t.rw_session();
            barrier.wait();
            let mut signatures = Vec::new();
            for i in 0..ROUNDS {
                let message = format!("rsa message {i}");
                // Multi-part, so that the two sessions interleave state.
                session
                    .sign_init(&Mechanism::Sha256RsaPkcs, rsa.private)
                    .expect("C_SignInit");
                session
                    .sign_update(message.as_bytes())
                    .expect("C_SignUpdate");
                let sig = session
                    .sign_final()
                    .unwrap_or_else(|e| panic!("RSA thread, round {i}: {e}"));
                signatures.push((message, sig));
            }
            signatures
        });
        for (message, sig) in ec_thread.join().expect("EC thread panicked") {
            assert!(
                verify::ecdsa_verifies(
                    &ec_public,
                    Some(MessageDigest::sha256()),
                    message.as_bytes(),
                    &sig
                ),
                "OpenSSL rejects the concurrent ECDSA signature of {message:?}"
            );
        }
        for (message, sig) in rsa_thread.join().expect("RSA thread panicked") {
            assert!(
                verify::rsa_pkcs1_verifies(
                    &rsa_public,
                    MessageDigest::sha256(),
                    message.as_bytes(),
                    &sig
                ),
                "OpenSSL rejects the concurrent RSA signature of {message:?}"
            );
        }
    });
}

#[test]
fn many_threads_open_work_and_close_sessions() {
    let t = token();
    let setup = t.user_session();
    let key = keys::import_aes(&setup, &[0x2a; 32]);
    let label = unique_label("conc-objects");
    thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|n| {
                let label = label.clone();
                let t = &t;
                scope.spawn(move || {
                    for round in 0..10 {
                        let session = t.rw_session();
                        login_user(&session);
                        let data = format!("thread {n} round {round}").into_bytes();
                        let object = session
                            .create_object(&[
                                Attribute::Class(ObjectClass::DATA),
                                Attribute::Token(false),
                                Attribute::Label(label.as_bytes().to_vec()),
                                Attribute::Value(data.clone()),
                            ])
                            .expect("C_CreateObject");
                        let digest = session.digest(&Mechanism::Sha256, &data).expect("C_Digest");
                        assert_eq!(digest, verify::hash(MessageDigest::sha256(), &data));
                        let mut block = [0u8; 16];
                        block[..data.len().min(16)].copy_from_slice(&data[..data.len().min(16)]);
                        let ct = session
                            .encrypt(&Mechanism::AesEcb, key, &block)
                            .expect("C_Encrypt");
                        assert_eq!(
                            session
                                .decrypt(&Mechanism::AesEcb, key, &ct)
                                .expect("C_Decrypt"),
                            block
                        );
                        session.destroy_object(object).expect("C_DestroyObject");
                        session.close().expect("C_CloseSession");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("worker thread panicked");
        }
    });
    assert!(
        setup
            .find_objects(&[Attribute::Label(label.into_bytes())])
            .expect("find")
            .is_empty(),
        "every thread's object was destroyed"
    );
}
