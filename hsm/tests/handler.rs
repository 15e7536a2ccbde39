//! The request handler driven in-process through real frames.

mod common;

use common::*;
use hsmlink_core::ck::{cka, ckc, ckg, ckk, ckm, cko, ckr};
use hsmlink_core::wire::{self, MechParam, Mechanism, Op, Request, PROTOCOL_VERSION};
use hsmlink_hsm::conn::{OwnedAttr, Reply};
use hsmlink_hsm::Connection;

#[test]
fn hello_must_come_first_with_the_right_version() {
    let h = hsm();
    let mut c = Client {
        conn: Connection::new(h.clone()),
    };
    assert_eq!(c.req(&Request::Ping), Reply::Error(ckr::DEVICE_ERROR));
    assert!(c.conn.closing());

    let mut c = Client {
        conn: Connection::new(h.clone()),
    };
    let r = c.req(&Request::Hello {
        version: PROTOCOL_VERSION + 1,
        max_frame: 65536,
        app: APP,
    });
    assert!(matches!(r, Reply::Error(_)));
    assert!(c.conn.closing());

    let mut c = Client::hello(&h, APP);
    assert_eq!(c.req(&Request::Ping), Reply::Ok);
    assert!(!c.conn.closing());
}

#[test]
fn login_and_logout() {
    let h = hsm();
    let mut c = Client::hello(&h, APP);
    let login = |user, pw| Request::Login {
        user,
        password: wire::Secret(pw),
    };
    assert_eq!(
        c.req(&Request::CreateObject {
            template: tpl(&data_object("x"))
        }),
        Reply::Error(ckr::USER_NOT_LOGGED_IN)
    );
    assert_eq!(
        c.req(&Request::FindObjects {
            template: tpl(&[]),
            max: 10
        }),
        Reply::Error(ckr::USER_NOT_LOGGED_IN)
    );
    assert_eq!(
        c.req(&login("alice", b"wrong")),
        Reply::Error(ckr::PIN_INCORRECT)
    );
    assert_eq!(
        c.req(&login("nobody", b"alice-pw")),
        Reply::Error(ckr::PIN_INCORRECT)
    );
    assert_eq!(c.req(&login("alice", b"alice-pw")), Reply::Ok);
    // A cached login answers the same.
    assert_eq!(c.req(&login("alice", b"alice-pw")), Reply::Ok);
    assert_eq!(
        c.req(&login("bob", b"bob-pw")),
        Reply::Error(ckr::USER_ANOTHER_ALREADY_LOGGED_IN)
    );
    let obj = c.create(&data_object("logout")).unwrap();
    assert_eq!(c.req(&Request::Logout), Reply::Ok);
    assert_eq!(
        c.req(&Request::GetObjectSize { object: obj }),
        Reply::Error(ckr::USER_NOT_LOGGED_IN)
    );
    // Logout destroyed the connection's session objects.
    assert_eq!(c.req(&login("alice", b"alice-pw")), Reply::Ok);
    assert_eq!(
        c.req(&Request::GetObjectSize { object: obj }),
        Reply::Error(ckr::OBJECT_HANDLE_INVALID)
    );
    assert!(matches!(
        c.req(&Request::GenerateRandom { len: 32 }),
        Reply::Data(d) if d.len() == 32
    ));
    assert_eq!(
        c.req(&Request::GenerateRandom { len: 1 << 20 }),
        Reply::Error(ckr::DATA_LEN_RANGE)
    );
    assert_eq!(c.req(&Request::SeedRandom { seed: b"abc" }), Reply::Ok);
}

#[test]
fn users_are_isolated_whatever_handle_they_guess() {
    let mut a = Client::alice();
    let mut bo = Client::bob();
    let mut t = data_object("alice-secret");
    t.push((cka::TOKEN, b(true)));
    let ha = a.create(&t).unwrap();
    let (pubk, privk) = a.ec(P256);
    let hb = bo.create(&data_object("bob-own")).unwrap();
    for h in 0..=hb + 10 {
        if h == hb {
            continue;
        }
        assert_eq!(
            bo.req(&Request::GetObjectSize { object: h }),
            Reply::Error(ckr::OBJECT_HANDLE_INVALID),
            "handle {h}"
        );
        assert_eq!(
            bo.req(&Request::DestroyObject { object: h }),
            Reply::Error(ckr::OBJECT_HANDLE_INVALID)
        );
    }
    assert_eq!(
        bo.one_shot(Op::Sign, Mechanism::plain(ckm::ECDSA), privk, &[1; 32], &[]),
        Err(ckr::KEY_HANDLE_INVALID)
    );
    assert_eq!(
        bo.req(&Request::CopyObject {
            object: pubk,
            template: tpl(&[])
        }),
        Reply::Error(ckr::OBJECT_HANDLE_INVALID)
    );
    assert!(bo
        .find(&[(cka::LABEL, b"alice-secret".to_vec())])
        .is_empty());
    assert!(!bo.find(&[]).contains(&ha));
    assert_eq!(bo.find(&[(cka::LABEL, b"bob-own".to_vec())]), vec![hb]);
    // Alice still has everything.
    assert_eq!(a.value(ha, cka::LABEL), b"alice-secret");
    assert_eq!(a.req(&Request::DestroyObject { object: ha }), Reply::Ok);
}

#[test]
fn session_objects_follow_user_app_and_connection() {
    let h = hsm();
    let mut a1 = Client::alice();
    let mut a2 = Client::alice();
    let mut other_app = Client::hello(&h, [9; 16]);
    assert_eq!(
        other_app.req(&Request::Login {
            user: "alice",
            password: wire::Secret(b"alice-pw")
        }),
        Reply::Ok
    );
    let obj = a1.create(&data_object("session-shared")).unwrap();
    assert_eq!(a2.value(obj, cka::LABEL), b"session-shared");
    assert_eq!(
        other_app.req(&Request::GetObjectSize { object: obj }),
        Reply::Error(ckr::OBJECT_HANDLE_INVALID)
    );
    drop(a1);
    assert_eq!(
        a2.req(&Request::GetObjectSize { object: obj }),
        Reply::Error(ckr::OBJECT_HANDLE_INVALID)
    );
}

#[test]
fn create_find_get_set_copy_destroy() {
    let mut c = Client::alice();
    let label = b"cfg-test".to_vec();
    let mut t = data_object("cfg-test");
    t.push((cka::APPLICATION, b"app".to_vec()));
    t.push((cka::PRIVATE, b(false)));
    let h = c.create(&t).unwrap();
    let attrs = c
        .attrs(
            h,
            &[
                cka::CLASS,
                cka::PRIVATE,
                cka::VALUE,
                cka::MODULUS,
                cka::TOKEN,
            ],
        )
        .unwrap();
    assert_eq!(
        attrs,
        vec![
            OwnedAttr::Value(ul(cko::DATA)),
            OwnedAttr::Value(vec![1]),
            OwnedAttr::Value(b"payload".to_vec()),
            OwnedAttr::Invalid,
            OwnedAttr::Value(vec![0]),
        ]
    );
    assert_eq!(c.find(&[(cka::LABEL, label.clone())]), vec![h]);
    assert_eq!(
        c.find(&[
            (cka::LABEL, label.clone()),
            (cka::VALUE, b"payload".to_vec())
        ]),
        vec![h]
    );
    assert!(c
        .find(&[(cka::LABEL, label.clone()), (cka::VALUE, b"other".to_vec())])
        .is_empty());
    assert!(c
        .find(&[(cka::LABEL, label.clone()), (cka::PRIVATE, b(false))])
        .is_empty());
    assert_eq!(
        c.find(&[(cka::LABEL, label.clone()), (cka::PRIVATE, b(true))]),
        vec![h]
    );
    assert!(c.find(&[(cka::CLASS, ul(cko::DATA))]).contains(&h));

    // Set and copy.
    assert_eq!(
        c.req(&Request::SetAttributes {
            object: h,
            template: tpl(&[(cka::LABEL, b"cfg-renamed".to_vec())])
        }),
        Reply::Ok
    );
    assert!(c.find(&[(cka::LABEL, label.clone())]).is_empty());
    assert_eq!(c.find(&[(cka::LABEL, b"cfg-renamed".to_vec())]), vec![h]);
    assert_eq!(
        c.req(&Request::SetAttributes {
            object: h,
            template: tpl(&[(cka::CLASS, ul(cko::CERTIFICATE))])
        }),
        Reply::Error(ckr::ATTRIBUTE_READ_ONLY)
    );
    assert_eq!(
        c.req(&Request::SetAttributes {
            object: h,
            template: tpl(&[(cka::MODULUS, vec![1])])
        }),
        Reply::Error(ckr::ATTRIBUTE_TYPE_INVALID)
    );
    let copy = match c.req(&Request::CopyObject {
        object: h,
        template: tpl(&[
            (cka::LABEL, b"cfg-copy".to_vec()),
            (cka::MODIFIABLE, b(false)),
        ]),
    }) {
        Reply::Object(x) => x,
        r => panic!("{r:?}"),
    };
    assert_ne!(copy, h);
    assert_eq!(c.value(copy, cka::VALUE), b"payload");
    assert_eq!(
        c.req(&Request::SetAttributes {
            object: copy,
            template: tpl(&[(cka::LABEL, b"z".to_vec())])
        }),
        Reply::Error(ckr::ACTION_PROHIBITED)
    );
    match c.req(&Request::GetObjectSize { object: copy }) {
        Reply::Size(s) => assert!(s > 0),
        r => panic!("{r:?}"),
    }

    // Not copyable / not destroyable.
    let mut t = data_object("cfg-locked");
    t.push((cka::COPYABLE, b(false)));
    t.push((cka::DESTROYABLE, b(false)));
    let locked = c.create(&t).unwrap();
    assert_eq!(
        c.req(&Request::CopyObject {
            object: locked,
            template: tpl(&[])
        }),
        Reply::Error(ckr::ACTION_PROHIBITED)
    );
    assert_eq!(
        c.req(&Request::DestroyObject { object: locked }),
        Reply::Error(ckr::ACTION_PROHIBITED)
    );

    assert_eq!(c.req(&Request::DestroyObject { object: h }), Reply::Ok);
    assert_eq!(
        c.req(&Request::DestroyObject { object: h }),
        Reply::Error(ckr::OBJECT_HANDLE_INVALID)
    );
    assert_eq!(c.attrs(h, &[cka::LABEL]), Err(ckr::OBJECT_HANDLE_INVALID));
    // Handles are never reused.
    let h2 = c.create(&data_object("cfg-after")).unwrap();
    assert!(h2 > locked && h2 < (1 << 31));
}

#[test]
fn create_template_errors() {
    let mut c = Client::alice();
    let cases: Vec<(Tpl, u64)> = vec![
        (vec![(cka::LABEL, b"x".to_vec())], ckr::TEMPLATE_INCOMPLETE),
        (vec![(cka::CLASS, vec![0; 4])], ckr::ATTRIBUTE_VALUE_INVALID),
        (vec![(cka::CLASS, ul(0x1234))], ckr::ATTRIBUTE_VALUE_INVALID),
        (
            vec![(cka::CLASS, ul(cko::DATA)), (cka::TOKEN, vec![1, 1])],
            ckr::ATTRIBUTE_VALUE_INVALID,
        ),
        (
            vec![(cka::CLASS, ul(cko::DATA)), (cka::SIGN, b(true))],
            ckr::ATTRIBUTE_TYPE_INVALID,
        ),
        (
            vec![(cka::CLASS, ul(cko::SECRET_KEY)), (cka::VALUE, vec![0; 16])],
            ckr::TEMPLATE_INCOMPLETE,
        ),
        (aes_object(&[0; 17], &[]), ckr::ATTRIBUTE_VALUE_INVALID),
        (
            aes_object(&[0; 16], &[(cka::LOCAL, b(true))]),
            ckr::ATTRIBUTE_READ_ONLY,
        ),
        (
            aes_object(&[0; 16], &[(cka::NEVER_EXTRACTABLE, b(true))]),
            ckr::ATTRIBUTE_READ_ONLY,
        ),
        (
            aes_object(&[0; 16], &[(cka::VALUE_LEN, ul(32))]),
            ckr::TEMPLATE_INCONSISTENT,
        ),
        (
            vec![
                (cka::CLASS, ul(cko::SECRET_KEY)),
                (cka::KEY_TYPE, ul(0x7777)),
                (cka::VALUE, vec![0; 16]),
            ],
            ckr::ATTRIBUTE_VALUE_INVALID,
        ),
        (
            vec![
                (cka::CLASS, ul(cko::CERTIFICATE)),
                (cka::SUBJECT, b"s".to_vec()),
                (cka::VALUE, b"v".to_vec()),
            ],
            ckr::TEMPLATE_INCOMPLETE,
        ),
        (
            vec![
                (cka::CLASS, ul(cko::CERTIFICATE)),
                (cka::CERTIFICATE_TYPE, ul(ckc::X_509)),
                (cka::VALUE, b"v".to_vec()),
            ],
            ckr::TEMPLATE_INCOMPLETE,
        ),
        (
            vec![
                (cka::CLASS, ul(cko::PUBLIC_KEY)),
                (cka::KEY_TYPE, ul(ckk::RSA)),
                (cka::MODULUS, vec![0xc3; 128]),
            ],
            ckr::TEMPLATE_INCOMPLETE,
        ),
        (
            vec![
                (cka::CLASS, ul(cko::PUBLIC_KEY)),
                (cka::KEY_TYPE, ul(ckk::EC)),
                (cka::EC_PARAMS, P256.to_vec()),
                (cka::EC_POINT, vec![4; 65]),
            ],
            ckr::ATTRIBUTE_VALUE_INVALID,
        ),
    ];
    for (t, want) in cases {
        assert_eq!(c.create(&t), Err(want), "{t:?}");
    }
}

#[test]
fn certificate_defaults() {
    let mut c = Client::alice();
    let h = c
        .create(&[
            (cka::CLASS, ul(cko::CERTIFICATE)),
            (cka::CERTIFICATE_TYPE, ul(ckc::X_509)),
            (cka::SUBJECT, b"subject".to_vec()),
            (cka::VALUE, b"der".to_vec()),
            (cka::ID, vec![1, 2]),
        ])
        .unwrap();
    assert_eq!(c.value(h, cka::CERTIFICATE_CATEGORY), ul(0));
    assert_eq!(c.value(h, cka::TRUSTED), b(false));
    assert_eq!(c.value(h, cka::ISSUER), b"");
    assert_eq!(c.value(h, cka::VALUE), b"der");
    assert_eq!(
        c.find(&[(cka::CLASS, ul(cko::CERTIFICATE)), (cka::ID, vec![1, 2])]),
        vec![h]
    );
}

#[test]
fn exportable_rule() {
    let mut c = Client::alice();
    let value = [0x42u8; 32];
    // Default: not exportable.
    let k = c.create(&aes_object(&value, &[])).unwrap();
    assert_eq!(
        c.attrs(k, &[cka::VALUE]).unwrap(),
        vec![OwnedAttr::Sensitive]
    );
    // Extractable and not sensitive: exportable.
    let e = c
        .create(&aes_object(&value, &[(cka::EXTRACTABLE, b(true))]))
        .unwrap();
    assert_eq!(c.value(e, cka::VALUE), value);
    assert_eq!(c.value(e, cka::VALUE_LEN), ul(32));
    assert_eq!(c.value(e, cka::ALWAYS_SENSITIVE), b(false));
    // Sensitive and extractable: not exportable (the profile).
    let s = c
        .create(&aes_object(
            &value,
            &[(cka::EXTRACTABLE, b(true)), (cka::SENSITIVE, b(true))],
        ))
        .unwrap();
    assert_eq!(
        c.attrs(s, &[cka::VALUE]).unwrap(),
        vec![OwnedAttr::Sensitive]
    );
    assert!(c.find(&[(cka::VALUE, value.to_vec())]).contains(&e));
    assert!(!c.find(&[(cka::VALUE, value.to_vec())]).contains(&s));

    // Monotonic changes.
    let set = |c: &mut Client, h, t: &[(u64, Vec<u8>)]| {
        c.req(&Request::SetAttributes {
            object: h,
            template: tpl(t),
        })
    };
    assert_eq!(
        set(&mut c, s, &[(cka::SENSITIVE, b(false))]),
        Reply::Error(ckr::ATTRIBUTE_READ_ONLY)
    );
    assert_eq!(
        set(&mut c, k, &[(cka::EXTRACTABLE, b(true))]),
        Reply::Error(ckr::ATTRIBUTE_READ_ONLY)
    );
    assert_eq!(set(&mut c, e, &[(cka::SENSITIVE, b(true))]), Reply::Ok);
    assert_eq!(
        c.attrs(e, &[cka::VALUE]).unwrap(),
        vec![OwnedAttr::Sensitive]
    );

    // Wrapping: a non-exportable key cannot leave, even encrypted.
    let kek = c.aes(32, &[]);
    let wrap = |c: &mut Client, key| {
        c.req(&Request::WrapKey {
            mechanism: Mechanism::plain(ckm::AES_KEY_WRAP),
            wrapping_key: kek,
            key,
        })
    };
    assert_eq!(wrap(&mut c, k), Reply::Error(ckr::KEY_UNEXTRACTABLE));
    assert_eq!(wrap(&mut c, s), Reply::Error(ckr::KEY_UNEXTRACTABLE));
    let x = c
        .create(&aes_object(&value, &[(cka::EXTRACTABLE, b(true))]))
        .unwrap();
    let wrapped = match wrap(&mut c, x) {
        Reply::Data(d) => d,
        r => panic!("{r:?}"),
    };
    assert_eq!(wrapped.len(), 40);
    let tv = [(cka::KEY_TYPE, ul(ckk::AES)), (cka::EXTRACTABLE, b(true))];
    let t = tpl(&tv);
    let u = match c.req(&Request::UnwrapKey {
        mechanism: Mechanism::plain(ckm::AES_KEY_WRAP),
        unwrapping_key: kek,
        wrapped: &wrapped,
        template: t,
    }) {
        Reply::Object(h) => h,
        r => panic!("{r:?}"),
    };
    assert_eq!(c.value(u, cka::VALUE), value);

    // RSA private key parts follow the same rule.
    let (_, p) = c.rsa(1024, &[(cka::EXTRACTABLE, b(true))]);
    assert!(!c.value(p, cka::PRIVATE_EXPONENT).is_empty());
    assert_eq!(c.value(p, cka::NEVER_EXTRACTABLE), b(false));
    let (_, q) = c.rsa(1024, &[]);
    assert_eq!(
        c.attrs(q, &[cka::PRIVATE_EXPONENT, cka::PRIME_1, cka::MODULUS])
            .unwrap()[..2],
        [OwnedAttr::Sensitive, OwnedAttr::Sensitive]
    );
    assert_eq!(c.value(q, cka::NEVER_EXTRACTABLE), b(true));
}

#[test]
fn generated_key_attributes() {
    let mut c = Client::alice();
    let (pubk, privk) = c.rsa(2048, &[(cka::SENSITIVE, b(true))]);
    let n = c.value(pubk, cka::MODULUS);
    assert_eq!(n.len(), 256);
    assert_eq!(c.value(privk, cka::MODULUS), n);
    assert_eq!(c.value(pubk, cka::MODULUS_BITS), ul(2048));
    assert_eq!(c.value(privk, cka::MODULUS_BITS), ul(2048));
    assert_eq!(c.value(pubk, cka::PUBLIC_EXPONENT), vec![1, 0, 1]);
    assert_eq!(c.value(privk, cka::LOCAL), b(true));
    assert_eq!(c.value(pubk, cka::LOCAL), b(true));
    assert_eq!(
        c.value(privk, cka::KEY_GEN_MECHANISM),
        ul(ckm::RSA_PKCS_KEY_PAIR_GEN)
    );
    assert_eq!(c.value(privk, cka::ALWAYS_SENSITIVE), b(true));
    assert_eq!(c.value(privk, cka::NEVER_EXTRACTABLE), b(true));
    assert_eq!(c.value(privk, cka::PRIVATE), b(true));

    for (params, len) in [(P256, 65), (P384, 97), (P521, 133)] {
        let (p, k) = c.ec(params);
        assert_eq!(c.value(p, cka::EC_PARAMS), params);
        assert_eq!(c.value(k, cka::EC_PARAMS), params);
        let point = c.value(p, cka::EC_POINT);
        assert_eq!(point[0], 0x04);
        assert_eq!(point[point.len() - len], 0x04);
        assert_eq!(
            c.attrs(k, &[cka::VALUE]).unwrap(),
            vec![OwnedAttr::Sensitive]
        );
    }
    let a = c.aes(24, &[]);
    assert_eq!(c.value(a, cka::VALUE_LEN), ul(24));
    assert_eq!(c.value(a, cka::KEY_TYPE), ul(ckk::AES));
    assert_eq!(c.value(a, cka::KEY_GEN_MECHANISM), ul(ckm::AES_KEY_GEN));
    let g = c
        .gen_key(ckm::GENERIC_SECRET_KEY_GEN, &[(cka::VALUE_LEN, ul(40))])
        .unwrap();
    assert_eq!(c.value(g, cka::KEY_TYPE), ul(ckk::GENERIC_SECRET));

    // Errors.
    assert_eq!(
        c.gen_key(ckm::AES_KEY_GEN, &[]),
        Err(ckr::TEMPLATE_INCOMPLETE)
    );
    assert_eq!(
        c.gen_key(ckm::AES_KEY_GEN, &[(cka::VALUE_LEN, ul(20))]),
        Err(ckr::ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        c.gen_key(ckm::RSA_PKCS_KEY_PAIR_GEN, &[]),
        Err(ckr::MECHANISM_INVALID)
    );
    assert_eq!(
        c.gen_pair(ckm::AES_KEY_GEN, &[], &[]),
        Err(ckr::MECHANISM_INVALID)
    );
    assert_eq!(
        c.gen_pair(ckm::RSA_PKCS_KEY_PAIR_GEN, &[], &[]),
        Err(ckr::TEMPLATE_INCOMPLETE)
    );
    assert_eq!(
        c.gen_pair(
            ckm::RSA_PKCS_KEY_PAIR_GEN,
            &[(cka::MODULUS_BITS, ul(512))],
            &[]
        ),
        Err(ckr::KEY_SIZE_RANGE)
    );
    assert_eq!(
        c.gen_pair(ckm::EC_KEY_PAIR_GEN, &[], &[]),
        Err(ckr::TEMPLATE_INCOMPLETE)
    );
    // secp224r1 is a real curve we do not offer.
    assert_eq!(
        c.gen_pair(
            ckm::EC_KEY_PAIR_GEN,
            &[(
                cka::EC_PARAMS,
                vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21]
            )],
            &[]
        ),
        Err(ckr::CURVE_NOT_SUPPORTED)
    );
    assert_eq!(
        c.gen_pair(
            ckm::EC_KEY_PAIR_GEN,
            &[(cka::EC_PARAMS, P256.to_vec()), (cka::EC_POINT, vec![4])],
            &[]
        ),
        Err(ckr::TEMPLATE_INCONSISTENT)
    );
}

#[test]
fn garbage_frames_never_panic() {
    let h = hsm();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3000 {
        let mut c = Client::alice();
        let len = (next() % 200) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && !body.is_empty() {
            // Valid variant tags make deeper decoding likely.
            body[0] %= 30;
        }
        let out = c.conn.handle_body(&body);
        assert!(out.len() >= 5);
    }
    // Before hello, garbage closes the connection.
    let mut c = Connection::new(h);
    let _ = c.handle_body(&[0xff, 0xff, 0xff]);
    assert!(c.closing());
}

#[test]
fn thousand_objects_are_found_fast() {
    let mut c = Client::alice();
    for i in 0..1000 {
        c.create(&data_object(&format!("bulk-{i}"))).unwrap();
    }
    let t = std::time::Instant::now();
    for i in (0..1000).step_by(7) {
        let found = c.find(&[(cka::LABEL, format!("bulk-{i}").into_bytes())]);
        assert_eq!(found.len(), 1);
    }
    let all = c.find(&[(cka::CLASS, ul(cko::DATA))]);
    assert!(all.len() >= 1000);
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    // Batches and cursor.
    match c.req(&Request::FindObjects {
        template: tpl(&[(cka::CLASS, ul(cko::DATA))]),
        max: 10,
    }) {
        Reply::Objects { handles, more } => {
            assert_eq!(handles.len(), 10);
            assert!(more);
        }
        r => panic!("{r:?}"),
    }
    match c.req(&Request::FindNext { max: 1000 }) {
        Reply::Objects { handles, more } => {
            assert_eq!(handles.len(), wire::MAX_FIND);
            assert!(more);
        }
        r => panic!("{r:?}"),
    }
}

/// Searches by CKA_ID (how OpenSSL, Java and EJBCA find a key's
/// certificate) use an index like labels do: right answers among many, and
/// after an ID changes.
#[test]
fn objects_are_found_by_id_among_many_and_after_a_change() {
    let cert = |label: &str, id: Vec<u8>| {
        vec![
            (cka::CLASS, ul(cko::CERTIFICATE)),
            (cka::CERTIFICATE_TYPE, ul(ckc::X_509)),
            (cka::SUBJECT, b"subject".to_vec()),
            (cka::VALUE, b"der".to_vec()),
            (cka::LABEL, label.as_bytes().to_vec()),
            (cka::ID, id),
        ]
    };
    let mut c = Client::alice();
    let mut handles = Vec::new();
    for i in 0..300u32 {
        let t = cert(&format!("by-id-{}", i % 3), i.to_be_bytes().to_vec());
        handles.push(c.create(&t).unwrap());
    }
    // A data object has no CKA_ID at all; a certificate may have an empty one.
    let bare = c.create(&data_object("by-id-bare")).unwrap();
    let empty = c.create(&cert("by-id-empty", Vec::new())).unwrap();
    for i in [0u32, 1, 150, 299] {
        assert_eq!(
            c.find(&[(cka::ID, i.to_be_bytes().to_vec())]),
            vec![handles[i as usize]]
        );
        // With a label too: the smaller set is searched, the answer is the same.
        let label = format!("by-id-{}", i % 3).into_bytes();
        assert_eq!(
            c.find(&[(cka::LABEL, label), (cka::ID, i.to_be_bytes().to_vec())]),
            vec![handles[i as usize]]
        );
        assert!(c
            .find(&[
                (cka::LABEL, b"by-id-x".to_vec()),
                (cka::ID, i.to_be_bytes().to_vec())
            ])
            .is_empty());
    }
    assert!(c
        .find(&[(cka::ID, 300u32.to_be_bytes().to_vec())])
        .is_empty());
    let found = c.find(&[(cka::ID, Vec::new())]);
    assert!(found.contains(&empty), "{found:?}");
    assert!(
        !found.contains(&bare),
        "an object without CKA_ID has no empty ID"
    );
    // A changed ID is found under the new value only.
    assert_eq!(
        c.req(&Request::SetAttributes {
            object: handles[7],
            template: tpl(&[(cka::ID, b"renamed".to_vec())])
        }),
        Reply::Ok
    );
    assert!(c.find(&[(cka::ID, 7u32.to_be_bytes().to_vec())]).is_empty());
    assert_eq!(c.find(&[(cka::ID, b"renamed".to_vec())]), vec![handles[7]]);
    // Destroyed: gone from the index.
    assert_eq!(
        c.req(&Request::DestroyObject { object: handles[8] }),
        Reply::Ok
    );
    assert!(c.find(&[(cka::ID, 8u32.to_be_bytes().to_vec())]).is_empty());
}

#[test]
fn replies_respect_the_client_frame_limit() {
    let h = hsm();
    let mut c = Client {
        conn: Connection::new(h),
    };
    assert!(matches!(
        c.req(&Request::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 1024,
            app: APP
        }),
        Reply::Hello { .. }
    ));
    assert_eq!(
        c.req(&Request::Login {
            user: "alice",
            password: wire::Secret(b"alice-pw")
        }),
        Reply::Ok
    );
    assert_eq!(
        c.req(&Request::GenerateRandom { len: 4096 }),
        Reply::Error(ckr::DATA_LEN_RANGE)
    );
    assert!(matches!(
        c.req(&Request::GenerateRandom { len: 512 }),
        Reply::Data(d) if d.len() == 512
    ));
}

#[test]
fn crypto_init_checks() {
    let mut c = Client::alice();
    let (pubk, privk) = c.rsa(1024, &[(cka::SIGN, b(false))]);
    let aes = c.aes(16, &[]);
    let data = c.create(&data_object("not-a-key")).unwrap();
    let init = |c: &mut Client, op, m: Mechanism<'_>, key| match c.req(&Request::CryptoInit {
        op,
        mechanism: m,
        key,
    }) {
        Reply::KeyInfo(k) => Ok(k),
        Reply::Error(e) => Err(e),
        r => panic!("{r:?}"),
    };
    let pkcs = Mechanism::plain(ckm::RSA_PKCS);
    assert_eq!(
        init(&mut c, Op::Sign, pkcs, 999_999),
        Err(ckr::KEY_HANDLE_INVALID)
    );
    assert_eq!(
        init(&mut c, Op::Sign, pkcs, data),
        Err(ckr::KEY_HANDLE_INVALID)
    );
    assert_eq!(
        init(&mut c, Op::Sign, pkcs, pubk),
        Err(ckr::KEY_TYPE_INCONSISTENT)
    );
    assert_eq!(
        init(&mut c, Op::Sign, pkcs, aes),
        Err(ckr::KEY_TYPE_INCONSISTENT)
    );
    assert_eq!(
        init(&mut c, Op::Sign, pkcs, privk),
        Err(ckr::KEY_FUNCTION_NOT_PERMITTED)
    );
    assert_eq!(
        init(&mut c, Op::Sign, Mechanism::plain(0x7fff_0000), privk),
        Err(ckr::MECHANISM_INVALID)
    );
    assert_eq!(
        init(&mut c, Op::Encrypt, Mechanism::plain(ckm::AES_CBC), aes),
        Err(ckr::MECHANISM_PARAM_INVALID)
    );
    let k = init(&mut c, Op::Encrypt, pkcs, pubk).unwrap();
    assert_eq!(
        (k.class, k.key_type, k.bits),
        (cko::PUBLIC_KEY, ckk::RSA, 1024)
    );
    let k = init(&mut c, Op::Encrypt, Mechanism::plain(ckm::AES_ECB), aes).unwrap();
    assert_eq!(
        (k.class, k.key_type, k.bits),
        (cko::SECRET_KEY, ckk::AES, 128)
    );
    assert_eq!(
        c.req(&Request::CryptoUpdate {
            op: Op::Verify,
            data: b"x"
        }),
        Reply::Error(ckr::OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(
        c.req(&Request::CryptoFinal {
            op: Op::Decrypt,
            data: b"",
            signature: b""
        }),
        Reply::Error(ckr::OPERATION_NOT_INITIALIZED)
    );
    // Final ends the operation even on error.
    assert_eq!(
        c.req(&Request::CryptoFinal {
            op: Op::Encrypt,
            data: &[0; 15],
            signature: b""
        }),
        Reply::Error(ckr::DATA_LEN_RANGE)
    );
    assert_eq!(
        c.req(&Request::CryptoFinal {
            op: Op::Encrypt,
            data: &[0; 16],
            signature: b""
        }),
        Reply::Error(ckr::OPERATION_NOT_INITIALIZED)
    );
    init(&mut c, Op::Encrypt, Mechanism::plain(ckm::AES_ECB), aes).unwrap();
    assert_eq!(c.req(&Request::CryptoCancel { op: Op::Encrypt }), Reply::Ok);
    assert_eq!(
        c.req(&Request::CryptoUpdate {
            op: Op::Encrypt,
            data: &[0; 16]
        }),
        Reply::Error(ckr::OPERATION_NOT_INITIALIZED)
    );
    let _ = ckg::MGF1_SHA256;
    let _ = MechParam::None;
}
