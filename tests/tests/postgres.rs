//! A fleet sharing one PostgreSQL store: two `serve` processes on one
//! database; a key generated through the first signs through the second,
//! a key destroyed through one is gone through the other, handles never
//! collide, a lockout holds on both, and the database holds no secret in
//! clear.
//!
//! Starts its own throwaway PostgreSQL (Debian's `postgresql` package).

mod hsm_service;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm_service::*;
use hsmlink_tests::pg::Postgres;
use hsmlink_tests::{rv_of, token, verify, Hsm, TempDir};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;

const AES_VALUE: [u8; 32] = *b"PGSECRET-aes-key-32-bytes-long!!";

fn serve_pg(data: &TempDir, secrets: &Secrets, pg: &Postgres) -> Hsm {
    let url = pg.url();
    serve(
        data.path(),
        secrets,
        &["--postgres", &url, "--postgres-ca", path_str(pg.ca())],
    )
}

#[test]
fn postgres_two_servers_share_keys_handles_and_lockouts() {
    let t = token();
    let pg = Postgres::start();
    let url = pg.url();
    let ca = path_str(pg.ca()).to_string();
    let secrets = Secrets::new();
    add_user(
        &["--postgres", &url, "--postgres-ca", &ca],
        "alice",
        "alice-pw",
    );
    add_user(&["--postgres", &url, "--postgres-ca", &ca], "bob", "bob-pw");
    let (data_a, data_b) = (TempDir::new("pg-a"), TempDir::new("pg-b"));
    let a = serve_pg(&data_a, &secrets, &pg);
    let b = serve_pg(&data_b, &secrets, &pg);

    // Generate through A.
    let s = login_at(&t, a.addr(), "alice", "alice-pw");
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(verify::params_of_curve(Nid::X9_62_PRIME256V1)),
                Attribute::Verify(true),
                Attribute::Label(b"fleet-ec".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Label(b"fleet-ec".to_vec()),
            ],
        )
        .expect("key pair through A");
    let public_key = verify::ec_public_key(&s, public);
    let imported = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Token(true),
            Attribute::Value(AES_VALUE.to_vec()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(b"fleet-aes".to_vec()),
        ])
        .expect("AES key imported through A");
    let doomed = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"fleet-doomed".to_vec()),
        ])
        .expect("data object through A");
    let ct = s
        .encrypt(&Mechanism::AesEcb, imported, &[5u8; 16])
        .expect("encrypt through A");
    drop(s);

    // Sign through B with the key generated through A.
    let s = login_at(&t, b.addr(), "alice", "alice-pw");
    let found = s
        .find_objects(&[
            Attribute::Label(b"fleet-ec".to_vec()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .expect("find through B");
    assert_eq!(
        found,
        vec![private],
        "B finds A's key under the same handle"
    );
    let sig = s
        .sign(&Mechanism::EcdsaSha256, private, b"signed through B")
        .expect("sign through B");
    assert!(
        verify::ecdsa_verifies(
            &public_key,
            Some(MessageDigest::sha256()),
            b"signed through B",
            &sig
        ),
        "the signature made through B verifies with the key generated through A"
    );
    let aes = s
        .find_objects(&[Attribute::Label(b"fleet-aes".to_vec())])
        .expect("find")[0];
    assert_eq!(
        s.decrypt(&Mechanism::AesEcb, aes, &ct)
            .expect("decrypt through B"),
        [5u8; 16]
    );
    // Destroyed through B: gone through A at once.
    s.destroy_object(doomed).expect("destroy through B");
    // New objects through B never take a handle A handed out.
    let through_b = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"fleet-b".to_vec()),
        ])
        .expect("create through B");
    assert!(![public, private, imported, doomed].contains(&through_b));
    // A change of label through B is seen through A.
    s.update_attributes(through_b, &[Attribute::Label(b"fleet-b2".to_vec())])
        .expect("relabel through B");
    drop(s);

    let s = login_at(&t, a.addr(), "alice", "alice-pw");
    assert_eq!(
        rv_of(s.get_attributes(doomed, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid,
        "A still serves an object destroyed through B"
    );
    assert!(s
        .find_objects(&[Attribute::Label(b"fleet-doomed".to_vec())])
        .expect("find")
        .is_empty());
    assert_eq!(
        s.find_objects(&[Attribute::Label(b"fleet-b2".to_vec())])
            .expect("find"),
        vec![through_b],
        "A sees B's new object and its new label"
    );
    assert!(s
        .find_objects(&[Attribute::Label(b"fleet-b".to_vec())])
        .expect("find")
        .is_empty());
    drop(s);

    // Bob sees none of it, through either server.
    for hsm in [&a, &b] {
        let s = login_at(&t, hsm.addr(), "bob", "bob-pw");
        assert!(s.find_objects(&[]).expect("find").is_empty());
        assert_eq!(
            rv_of(s.sign(&Mechanism::EcdsaSha256, private, b"x")),
            RvError::KeyHandleInvalid
        );
    }

    // A lockout through A holds through B.
    let s = session_at(&t, a.addr(), "bob");
    for i in 0..5 {
        let r = s.login(UserType::User, Some(&AuthPin::new(format!("no{i}").into())));
        assert_eq!(rv_of(r), RvError::PinIncorrect);
    }
    drop(s);
    // (Asked from an address that never logged in as bob: B still hears
    // 127.0.0.1, where bob logged in through B and that failed nothing on
    // B; see hsm/README.md.)
    assert_eq!(
        login_from(b.addr(), "127.0.0.2", "bob", "bob-pw"),
        CKR_PIN_LOCKED
    );
    // Directly on the database, a user record is written with the
    // passphrase only (the record key comes from the master key).
    let err = cli_err(
        &[
            "user",
            "unlock",
            "--postgres",
            &url,
            "--postgres-ca",
            &ca,
            "bob",
        ],
        &[],
    );
    assert!(err.contains("passphrase"), "{err}");
    cli_ok(
        &[
            "user",
            "unlock",
            "--postgres",
            &url,
            "--postgres-ca",
            &ca,
            "--passphrase-file",
            path_str(&secrets.passphrase_file()),
            "bob",
        ],
        &[],
    );
    drop(login_at(&t, b.addr(), "bob", "bob-pw"));

    // The database holds no secret in clear: not the AES value, not the EC
    // private value, not a password.
    let dump = pg.dump();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert!(!contains(&dump, &AES_VALUE) && !contains(&dump, hex(&AES_VALUE).as_bytes()));
    assert!(!contains(&dump, b"alice-pw") && !contains(&dump, hex(b"alice-pw").as_bytes()));
    assert!(!contains(&dump, PASSPHRASE.as_bytes()));
    let rows = pg.psql("SELECT count(*) FROM hsmlink_objects");
    assert_eq!(rows.trim(), "4", "objects in the database: {rows}");

    // Admin commands given a fleet server's data folder go through that
    // server to the database.
    add_user(&["--data", path_str(data_a.path())], "carol", "carol-pw");
    let users = cli_ok(
        &["user", "list", "--postgres", &url, "--postgres-ca", &ca],
        &[],
    );
    assert!(users.contains("carol\tactive"), "{users}");
    drop(login_at(&t, b.addr(), "carol", "carol-pw"));

    // Admin listing through the database.
    let list = cli_ok(
        &[
            "objects",
            "list",
            "--postgres",
            &url,
            "--postgres-ca",
            &ca,
            "--user",
            "alice",
        ],
        &[],
    );
    assert!(
        list.contains("fleet-aes") && list.contains("private-key"),
        "{list}"
    );

    // The module balanced over both servers: threads sign at once, and
    // every signature verifies.
    let both = format!("{},{}", a.addr(), b.addr());
    let s = login_at(&t, &both, "alice", "alice-pw");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let pkcs11 = t.pkcs11.clone();
            let slot = t.slot;
            std::thread::spawn(move || {
                let s = pkcs11.open_rw_session(slot).expect("C_OpenSession");
                (0..25)
                    .map(|i| {
                        let msg = format!("worker {w} message {i}").into_bytes();
                        let sig = s
                            .sign(&Mechanism::EcdsaSha256, private, &msg)
                            .expect("sign through the fleet");
                        (msg, sig)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for w in workers {
        for (msg, sig) in w.join().expect("worker") {
            assert!(verify::ecdsa_verifies(
                &public_key,
                Some(MessageDigest::sha256()),
                &msg,
                &sig
            ));
        }
    }
    drop(s);
    // Both servers report their work.
    for d in [&data_a, &data_b] {
        let st = cli_ok(&["status", "--data", path_str(d.path())], &[]);
        assert!(st.contains("store=postgres"), "{st}");
        let ops: u64 = st
            .lines()
            .find_map(|l| l.strip_prefix("operations="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(ops > 0, "{st}");
    }

    // A fleet server's data folder is not mistaken for an embedded store.
    drop(a);
    let err = cli_err(&["user", "list", "--data", path_str(data_a.path())], &[]);
    assert!(err.contains("--postgres URL"), "{err}");
    assert!(!data_a.path().join("hsmlink.redb").exists());

    // A server with a wrong passphrase is refused.
    let data_c = TempDir::new("pg-c");
    let err = cli_err(
        &[
            "serve",
            "--data",
            path_str(data_c.path()),
            "--listen",
            "127.0.0.1:0",
            "--postgres",
            &url,
            "--postgres-ca",
            &ca,
            "--passphrase-file",
            path_str(&secrets.wrong_file()),
        ],
        &[],
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn postgres_private_key_value_not_in_the_database() {
    let t = token();
    let pg = Postgres::start();
    let url = pg.url();
    let ca = path_str(pg.ca()).to_string();
    let secrets = Secrets::new();
    add_user(
        &["--postgres", &url, "--postgres-ca", &ca],
        "alice",
        "alice-pw",
    );
    let data = TempDir::new("pg-one");
    let a = serve_pg(&data, &secrets, &pg);
    let s = login_at(&t, a.addr(), "alice", "alice-pw");
    // An extractable EC key: its private value can be read, then searched for.
    let (_, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(verify::params_of_curve(Nid::X9_62_PRIME256V1)),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Extractable(true),
                Attribute::Sensitive(false),
            ],
        )
        .expect("extractable pair");
    let value = match s
        .get_attributes(private, &[AttributeType::Value])
        .expect("read")[0]
        .clone()
    {
        Attribute::Value(v) => v,
        other => panic!("{other:?}"),
    };
    assert!(value.len() >= 32);
    drop(s);
    let dump = pg.dump();
    let hex: String = value.iter().map(|x| format!("{x:02x}")).collect();
    assert!(
        !contains(&dump, &value) && !contains(&dump, hex.as_bytes()),
        "EC private value in the database"
    );
    // Nor in the server's own data folder (TLS key sealed).
    for (p, bytes) in all_files(data.path()) {
        assert!(
            !contains(&bytes, &value),
            "{} holds the private value",
            p.display()
        );
    }
    t.reinitialize(&[]).expect("back to the defaults");
}

/// Waits up to `limit` for `s` to answer `CKR_USER_NOT_LOGGED_IN`: how long it took.
#[track_caller]
fn revoked_within(
    s: &cryptoki::session::Session,
    limit: std::time::Duration,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    loop {
        match s.find_objects(&[]) {
            Err(e) => {
                assert_eq!(rv_of::<()>(Err(e)), RvError::UserNotLoggedIn);
                return start.elapsed();
            }
            Ok(_) => {
                assert!(
                    start.elapsed() < limit,
                    "the session still works {limit:?} after the revocation"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn revocation_across_a_postgres_fleet() {
    let t = token();
    let pg = Postgres::start();
    let url = pg.url();
    let ca = path_str(pg.ca()).to_string();
    let secrets = Secrets::new();
    add_user(
        &["--postgres", &url, "--postgres-ca", &ca],
        "alice",
        "alice-pw",
    );
    add_user(&["--postgres", &url, "--postgres-ca", &ca], "bob", "bob-pw");
    add_user(
        &["--postgres", &url, "--postgres-ca", &ca],
        "carol",
        "carol-pw",
    );
    let (data_a, data_b) = (TempDir::new("pg-rev-a"), TempDir::new("pg-rev-b"));
    let a = serve_pg(&data_a, &secrets, &pg);
    let b = serve_pg(&data_b, &secrets, &pg);
    let through_a = ["--data", path_str(data_a.path())];

    // Alice works through B; the admin removes her through A.
    let s = login_at(&t, b.addr(), "alice", "alice-pw");
    let old = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"alice-fleet".to_vec()),
        ])
        .expect("token object through B");
    let mut args = vec!["user", "remove"];
    args.extend_from_slice(&through_a);
    args.push("alice");
    cli_ok(&args, &[]);
    let took = revoked_within(&s, std::time::Duration::from_secs(5));
    eprintln!("revocation: removal through A seen by B's session after {took:?}");
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    drop(s);
    // A new alice (through A) sees nothing of the old one's through B.
    add_user(&through_a, "alice", "alice-new-pw");
    let s = login_at(&t, b.addr(), "alice", "alice-new-pw");
    assert!(s.find_objects(&[]).expect("find").is_empty());
    assert_eq!(
        rv_of(s.get_attributes(old, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    drop(s);

    // Bob's password changes through A: his session through B ends.
    let s = login_at(&t, b.addr(), "bob", "bob-pw");
    let mut args = vec!["user", "passwd"];
    args.extend_from_slice(&through_a);
    args.extend_from_slice(&["--password-env", "NEWPW", "bob"]);
    cli_ok(&args, &[("NEWPW", "bob-new-pw")]);
    let took = revoked_within(&s, std::time::Duration::from_secs(5));
    eprintln!("revocation: passwd through A seen by B's session after {took:?}");
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    drop(s);
    // And a lock through A.
    let s = login_at(&t, b.addr(), "bob", "bob-new-pw");
    let mut args = vec!["user", "lock"];
    args.extend_from_slice(&through_a);
    args.push("bob");
    cli_ok(&args, &[]);
    let took = revoked_within(&s, std::time::Duration::from_secs(5));
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    drop(s);

    // A lockout of carol by wrong PINs sent to A refuses new logins on
    // both servers, but her live session through B goes on: B's poll sees
    // the locked record and must not end it (only an admin's lock does).
    let s = login_at(&t, b.addr(), "carol", "carol-pw");
    for i in 0..5 {
        assert_eq!(
            raw_login(a.addr(), "carol", &format!("guess {i}")),
            Some(CKR_PIN_INCORRECT)
        );
    }
    // (Asked from an address that never logged in as carol: B still hears
    // 127.0.0.1, where carol logged in through B and that failed nothing on
    // B; see hsm/README.md.)
    assert_eq!(
        login_from(b.addr(), "127.0.0.2", "carol", "carol-pw"),
        CKR_PIN_LOCKED
    );
    // Three polls of B.
    std::thread::sleep(std::time::Duration::from_secs(3));
    s.find_objects(&[])
        .expect("a lockout by wrong PINs through A ended the live session through B");
    // The admin's lock through A does end it.
    let mut args = vec!["user", "lock"];
    args.extend_from_slice(&through_a);
    args.push("carol");
    cli_ok(&args, &[]);
    let took = revoked_within(&s, std::time::Duration::from_secs(5));
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    drop(s);
    let log = b.stderr();
    assert!(
        log.contains("reason=removed")
            && log.contains("reason=changed")
            && log.contains("reason=locked"),
        "{log}"
    );
    drop(a);
    t.reinitialize(&[]).expect("back to the defaults");
}

/// A database written by an earlier version: users in the unauthenticated
/// `hsmlink_users` table, an object record in clear. A server refuses it
/// until `migrate` converts it, once; then the user logs in and reads its
/// object.
#[test]
fn postgres_migrate_converts_a_store_of_an_earlier_version() {
    use hsmlink_core::attr;
    use hsmlink_core::ck::{cka, cko};
    let t = token();
    let pg = Postgres::start();
    let url = pg.url();
    let ca = path_str(pg.ca()).to_string();
    let secrets = Secrets::new();
    let pass_file = path_str(&secrets.passphrase_file()).to_string();
    // Make the tables (a listing is enough), then write as the old version.
    cli_ok(
        &["user", "list", "--postgres", &url, "--postgres-ca", &ca],
        &[],
    );
    let phc = hsmlink_hsm::users::hash_password(b"old-pw").expect("hash");
    pg.psql(&format!(
        "INSERT INTO hsmlink_users (name, phc, failures, locked) VALUES ('olduser', '{phc}', 0, false)"
    ));
    let mut attrs = hsmlink_hsm::object::Attrs::new();
    attrs.insert(cka::CLASS, attr::ulong(cko::DATA).to_vec());
    attrs.insert(cka::TOKEN, vec![1]);
    attrs.insert(cka::LABEL, b"old-object".to_vec());
    attrs.insert(cka::VALUE, b"old value".to_vec());
    let rec = hsmlink_hsm::object::Object::new(77, "olduser".into(), None, attrs).to_record();
    let bytes = hsmlink_hsm::store::encode_plain(&rec).expect("encode");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    pg.psql(&format!(
        "INSERT INTO hsmlink_objects (handle, owner, label, record) \
         VALUES (77, 'olduser', 'old-object'::bytea, '\\x{hex}')"
    ));
    let data = TempDir::new("pg-migrate");
    let pg_args = [
        "--postgres",
        url.as_str(),
        "--postgres-ca",
        ca.as_str(),
        "--passphrase-file",
        pass_file.as_str(),
    ];
    let mut serve_args = vec![
        "serve",
        "--data",
        path_str(data.path()),
        "--listen",
        "127.0.0.1:0",
    ];
    serve_args.extend_from_slice(&pg_args);
    let err = cli_err(&serve_args, &[]);
    assert!(
        err.contains("no keyring") || err.contains("migrate"),
        "{err}"
    );
    let mut args = vec!["migrate"];
    args.extend_from_slice(&pg_args);
    let out = cli_ok(&args, &[]);
    assert!(
        out.contains("1 user records") && out.contains("1 clear object records sealed"),
        "{out}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM hsmlink_users").trim(), "0");
    let dump = pg.dump();
    assert!(!contains(&dump, b"old value"));
    let hsm = serve(data.path(), &secrets, &pg_args[..4]);
    let s = login_at(&t, hsm.addr(), "olduser", "old-pw");
    let found = s
        .find_objects(&[Attribute::Label(b"old-object".to_vec())])
        .expect("find");
    assert_eq!(found.len(), 1);
    assert_eq!(
        s.get_attributes(found[0], &[AttributeType::Value])
            .expect("read")[0],
        Attribute::Value(b"old value".to_vec())
    );
    drop(s);
    t.reinitialize(&[]).expect("back to the defaults");
}
