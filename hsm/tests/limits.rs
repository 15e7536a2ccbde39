//! Per-connection limits: bytes buffered by running operations, session
//! objects.

mod common;

use std::sync::Arc;

use common::*;
use hsmlink_core::ck::{cka, ckm, cko, ckr};
use hsmlink_core::wire::{MechParam, Mechanism, Op, Request};
use hsmlink_hsm::conn::Reply;
use hsmlink_hsm::Hsm;

#[test]
fn in_flight_bytes_and_session_objects_are_capped_per_connection() {
    let mut h = Hsm::dev("carol", b"carol-pw").unwrap();
    h.limits.max_inflight_bytes = 10_000;
    h.limits.max_session_objects = 3;
    let hsm = Arc::new(h);
    let mut c = Client::login(&hsm, "carol", b"carol-pw");
    let k = c
        .gen_key(
            ckm::AES_KEY_GEN,
            &[(cka::VALUE_LEN, ul(32)), (cka::DECRYPT, b(true))],
        )
        .unwrap();
    let gcm = Mechanism {
        ty: ckm::AES_GCM,
        param: MechParam::Gcm {
            iv: &[1u8; 12],
            aad: b"",
            tag_bits: 128,
        },
    };
    // A GCM decryption buffers everything until the tag.
    assert!(matches!(
        c.req(&Request::CryptoInit {
            op: Op::Decrypt,
            mechanism: gcm,
            key: k,
        }),
        Reply::KeyInfo(_)
    ));
    let chunk = vec![0u8; 4000];
    for _ in 0..2 {
        assert_eq!(
            c.req(&Request::CryptoUpdate {
                op: Op::Decrypt,
                data: &chunk
            }),
            Reply::Data(vec![])
        );
    }
    // 8,000 buffered: 4,000 more passes the connection's 10,000.
    assert_eq!(
        c.req(&Request::CryptoUpdate {
            op: Op::Decrypt,
            data: &chunk
        }),
        Reply::Error(ckr::DEVICE_MEMORY)
    );
    // The operation ended with the error.
    assert_eq!(
        c.req(&Request::CryptoUpdate {
            op: Op::Decrypt,
            data: &chunk
        }),
        Reply::Error(ckr::OPERATION_NOT_INITIALIZED)
    );
    // Session objects: three (the key is one), then no more.
    let data = [(cka::CLASS, ul(cko::DATA))];
    c.create(&data).unwrap();
    c.create(&data).unwrap();
    assert_eq!(c.create(&data), Err(ckr::DEVICE_MEMORY));
    // Token objects are not session objects.
    let mut token = data.to_vec();
    token.push((cka::TOKEN, b(true)));
    assert!(c.create(&token).is_ok());
}

#[test]
fn a_user_cannot_grow_the_store_past_its_object_quota() {
    let mut h = Hsm::dev("dave", b"dave-pw").unwrap();
    h.limits.max_objects_per_user = 5;
    let hsm = Arc::new(h);
    let mut c = Client::login(&hsm, "dave", b"dave-pw");
    let token = [(cka::CLASS, ul(cko::DATA)), (cka::TOKEN, b(true))];
    for _ in 0..5 {
        c.create(&token).unwrap();
    }
    assert_eq!(c.create(&token), Err(ckr::DEVICE_MEMORY));
    // A new connection of the same user is refused too.
    drop(c);
    let mut other = Client::login(&hsm, "dave", b"dave-pw");
    assert_eq!(
        other.create(&token),
        Err(ckr::DEVICE_MEMORY),
        "the quota is the user's, not the connection's"
    );
}
