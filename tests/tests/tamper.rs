//! A store that whoever can write the database cannot subvert, checked as
//! that attacker would try it, against a real `serve` (redb: the data
//! folder of a stopped server; PostgreSQL: the tables of a running fleet):
//! - a keyring replaced by an unprotected one (the attacker's master key,
//!   which a server would otherwise use, or re-wrap under the operator's
//!   passphrase) is refused at start;
//! - a planted object record of the clear format (an "extractable" key
//!   whose value the attacker chose, or knows) is never served;
//! - a user row edited (another user's record copied onto it, a password
//!   hash of the attacker's, a cleared lock) is refused.
//!
//! Plus: `--postgres` needs a passphrase, and the link to PostgreSQL is TLS
//! with the server's certificate verified.

mod hsm_service;

use cryptoki::error::RvError;
use cryptoki::object::{Attribute, ObjectClass};
use hsm_service::*;
use hsmlink_core::attr;
use hsmlink_core::ck::{cka, cko};
use hsmlink_hsm::object::{Attrs, Object};
use hsmlink_hsm::store::{encode_plain, encode_user, ObjectRow, Store, UserRecord};
use hsmlink_hsm::users::{hash_password, owner_key};
use hsmlink_hsm::vault::{Keyring, MasterKey, Unlock};
use hsmlink_tests::pg::Postgres;
use hsmlink_tests::{rv_of, token, TempDir};

const PLANTED: &[u8] = b"PLANTED-VALUE-THE-ATTACKER-KNOWS";

/// A data object of `owner` in the clear record format of earlier versions.
fn planted_record(handle: u64, owner: &str) -> Vec<u8> {
    let mut attrs = Attrs::new();
    attrs.insert(cka::CLASS, attr::ulong(cko::DATA).to_vec());
    attrs.insert(cka::TOKEN, vec![1]);
    attrs.insert(cka::LABEL, b"planted".to_vec());
    attrs.insert(cka::VALUE, PLANTED.to_vec());
    encode_plain(&Object::new(handle, owner.into(), None, attrs).to_record()).expect("encode")
}

/// An unprotected keyring of a master key of the attacker's.
fn attackers_keyring() -> Vec<u8> {
    let theirs = MasterKey::generate().expect("master key");
    Keyring::wrap(&theirs, &Unlock::Nothing)
        .expect("wrap")
        .encode()
        .expect("encode")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn serve_err(d: &str, extra: &[&str]) -> String {
    let mut args = vec!["serve", "--data", d, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    cli_err(&args, &[])
}

#[test]
fn tamper_redb_keyring_clear_record_and_user_rows_are_refused() {
    let t = token();
    let data = TempDir::new("tamper-redb");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    let pass_file = path_str(&secrets.passphrase_file()).to_string();
    add_user(&["--data", d], "alice", "alice-pw");
    add_user(&["--data", d], "bob", "bob-pw");
    let mut hsm = serve(data.path(), &secrets, &[]);
    let s = login_at(&t, hsm.addr(), "alice", "alice-pw");
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(b"real".to_vec()),
    ])
    .expect("token object");
    drop(s);
    hsm.kill();

    // 1. A clear object record planted for alice: the server starts, but
    //    never serves it.
    let (alice_bytes, bob_bytes, ring) = {
        let st = Store::open(data.path()).expect("open the stopped server's store");
        let id = st.user("alice").expect("read").expect("alice").id;
        let owner = owner_key("alice", id);
        let rec = planted_record(1_000_000, &owner);
        st.put_objects(&[ObjectRow {
            handle: 1_000_000,
            owner: &owner,
            label: b"planted",
            bytes: &rec,
        }])
        .expect("plant");
        (
            st.raw_user("alice").expect("read").expect("alice"),
            st.raw_user("bob").expect("read").expect("bob"),
            st.keyring().expect("read").expect("keyring"),
        )
    };
    let mut hsm = serve(data.path(), &secrets, &[]);
    let s = login_at(&t, hsm.addr(), "alice", "alice-pw");
    assert!(
        s.find_objects(&[Attribute::Label(b"planted".to_vec())])
            .expect("find")
            .is_empty(),
        "a planted clear record is served"
    );
    assert_eq!(
        s.find_objects(&[Attribute::Label(b"real".to_vec())])
            .expect("find")
            .len(),
        1
    );
    drop(s);
    let log = hsm.stderr();
    assert!(
        log.contains("event=object_refused handle=1000000") && log.contains("clear record"),
        "{log}"
    );
    hsm.kill();

    // 2. User rows: bob's record copied onto alice, then a record with a
    //    password hash of the attacker's in the unauthenticated format.
    let forged_hash = encode_user(
        "alice",
        &UserRecord {
            id: 1,
            phc: hash_password(b"attacker-pw").expect("hash"),
            ..UserRecord::default()
        },
        None,
    )
    .expect("encode");
    for (what, bytes) in [
        ("bob's record on alice", &bob_bytes),
        ("an unauthenticated record", &forged_hash),
    ] {
        Store::open(data.path())
            .expect("open")
            .put_raw_user("alice", bytes)
            .expect("plant");
        let err = serve_err(d, &["--passphrase-file", &pass_file]);
        assert!(
            err.contains("refusing to start") && err.contains("user alice"),
            "{what}: {err}"
        );
    }
    Store::open(data.path())
        .expect("open")
        .put_raw_user("alice", &alice_bytes)
        .expect("put back");

    // 3. The keyring replaced by an unprotected one: refused with the
    //    passphrase (not re-wrapped under it), and without.
    Store::open(data.path())
        .expect("open")
        .replace_keyring(&attackers_keyring())
        .expect("plant");
    let err = serve_err(d, &["--passphrase-file", &pass_file]);
    assert!(
        err.contains("unprotected") && err.contains("refusing"),
        "{err}"
    );
    let err = serve_err(d, &[]);
    assert!(err.contains("refusing to start"), "{err}");
    // Even with no user left to give it away, this data folder remembers
    // the master key it served (DATA/master.check).
    {
        let st = Store::open(data.path()).expect("open");
        st.remove_user("alice", None).expect("remove");
        st.remove_user("bob", None).expect("remove");
    }
    let err = serve_err(d, &[]);
    assert!(err.contains("keyring in the store was replaced"), "{err}");
    // And a deleted keyring is not made anew over sealed records.
    {
        let st = Store::open(data.path()).expect("open");
        st.put_raw_user("alice", &alice_bytes).expect("put back");
        st.put_raw_user("bob", &bob_bytes).expect("put back");
        st.replace_keyring(&ring).expect("put back");
    }
    // Put back as it was: it serves again.
    let hsm = serve(data.path(), &secrets, &[]);
    drop(login_at(&t, hsm.addr(), "alice", "alice-pw"));
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn tamper_postgres_keyring_clear_record_user_row_and_tls_are_refused() {
    let t = token();
    let pg = Postgres::start();
    let url = pg.url();
    let ca = path_str(pg.ca()).to_string();
    let secrets = Secrets::new();
    let pass_file = path_str(&secrets.passphrase_file()).to_string();
    let pg_args = ["--postgres", url.as_str(), "--postgres-ca", ca.as_str()];
    add_user(&pg_args, "alice", "alice-pw");
    add_user(&pg_args, "bob", "bob-pw");
    let data_a = TempDir::new("tamper-pg-a");
    let a = serve(data_a.path(), &secrets, &pg_args);

    // `--postgres` without a passphrase: refused (the master key would sit
    // unprotected in the database).
    let data_c = TempDir::new("tamper-pg-c");
    let c = path_str(data_c.path()).to_string();
    let err = serve_err(&c, &pg_args);
    assert!(err.contains("--postgres needs a passphrase"), "{err}");

    // TLS: a server certificate from another CA, or checked against the
    // system's trust store, is refused.
    let other = TempDir::new("tamper-pg-ca");
    let other_ca = other.path().join("other-ca.pem");
    std::fs::write(&other_ca, hsmlink_tests::pg::make_certificates("other").0).expect("write");
    let err = serve_err(
        &c,
        &[
            "--postgres",
            &url,
            "--postgres-ca",
            path_str(&other_ca),
            "--passphrase-file",
            &pass_file,
        ],
    );
    assert!(err.contains("certificate verify failed"), "{err}");
    let err = serve_err(&c, &["--postgres", &url, "--passphrase-file", &pass_file]);
    assert!(err.contains("certificate verify failed"), "{err}");
    // Even if the URL asks for no TLS.
    let plain_url = format!("{url}?sslmode=disable");
    let err = serve_err(
        &c,
        &["--postgres", &plain_url, "--passphrase-file", &pass_file],
    );
    assert!(err.contains("certificate verify failed"), "{err}");

    // A live session of alice, and her id (the owner of her objects).
    let s = login_at(&t, a.addr(), "alice", "alice-pw");
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(b"real".to_vec()),
    ])
    .expect("token object");
    let list = cli_ok(
        &["user", "list", "--postgres", &url, "--postgres-ca", &ca],
        &[],
    );
    let id: u64 = list
        .lines()
        .find(|l| l.starts_with("alice\t"))
        .and_then(|l| l.split("id=").nth(1))
        .and_then(|v| v.split('\t').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no id of alice in {list}"));
    assert!(
        list.contains("unverified"),
        "a listing without the passphrase says its records are unchecked: {list}"
    );

    // 1. A clear record planted for alice in the table: never served.
    let owner = owner_key("alice", id);
    pg.psql(&format!(
        "INSERT INTO hsmlink_objects (handle, owner, label, record) \
         VALUES (1000000, '{owner}', 'planted'::bytea, '\\x{}')",
        hex(&planted_record(1_000_000, &owner))
    ));
    assert!(s
        .find_objects(&[Attribute::Label(b"planted".to_vec())])
        .expect("find")
        .is_empty());

    // 2. Bob's row copied onto alice's while the fleet runs: her logins are
    //    refused (bob's password and hers alike), and her live session ends.
    let saved = pg.psql("SELECT encode(record, 'hex') FROM hsmlink_accounts WHERE name = 'alice'");
    pg.psql(
        "UPDATE hsmlink_accounts SET record = \
         (SELECT record FROM hsmlink_accounts WHERE name = 'bob') WHERE name = 'alice'",
    );
    let start = std::time::Instant::now();
    loop {
        match s.find_objects(&[]) {
            Err(e) => {
                assert_eq!(rv_of::<()>(Err(e)), RvError::UserNotLoggedIn);
                break;
            }
            Ok(_) => {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(5),
                    "alice's session outlives her refused record"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    drop(s);
    for pw in ["bob-pw", "alice-pw"] {
        let s = session_at(&t, a.addr(), "alice");
        assert_eq!(
            rv_of(s.login(
                cryptoki::session::UserType::User,
                Some(&cryptoki::types::AuthPin::new(pw.into()))
            )),
            RvError::PinIncorrect,
            "alice's login with {pw} on a forged record"
        );
    }
    // A new server refuses to start on it.
    let mut with_pass = pg_args.to_vec();
    with_pass.extend_from_slice(&["--passphrase-file", &pass_file]);
    let err = serve_err(&c, &with_pass);
    assert!(
        err.contains("user alice") && err.contains("integrity"),
        "{err}"
    );
    pg.psql(&format!(
        "UPDATE hsmlink_accounts SET record = '\\x{}' WHERE name = 'alice'",
        saved.trim()
    ));
    drop(login_at(&t, a.addr(), "alice", "alice-pw"));
    let log = a.stderr();
    assert!(
        log.contains("event=user_refused user=\"alice\"") && log.contains("event=object_refused"),
        "{log}"
    );

    // 3. The keyring replaced by an unprotected one: a server starting
    //    with the passphrase refuses it instead of re-wrapping it.
    let ring = pg.psql("SELECT encode(value, 'hex') FROM hsmlink_meta WHERE key = 'keyring'");
    pg.psql(&format!(
        "UPDATE hsmlink_meta SET value = '\\x{}' WHERE key = 'keyring'",
        hex(&attackers_keyring())
    ));
    let err = serve_err(&c, &with_pass);
    assert!(
        err.contains("unprotected") && err.contains("refusing"),
        "{err}"
    );
    pg.psql(&format!(
        "UPDATE hsmlink_meta SET value = '\\x{}' WHERE key = 'keyring'",
        ring.trim()
    ));
    let b = serve(data_c.path(), &secrets, &pg_args);
    drop(login_at(&t, b.addr(), "alice", "alice-pw"));
    drop((a, b));
    t.reinitialize(&[]).expect("back to the defaults");
}

/// Whoever can write the database sets the `hsmlink_handles` sequence back:
/// the next server hands out handles that are already stored. A new object
/// must then fail to be stored (`CKR_DEVICE_ERROR`), never replace the
/// object that holds the handle (an upsert would silently swap alice's key
/// for a new one under the same handle).
#[test]
fn tamper_postgres_handle_sequence_set_back_never_overwrites_an_object() {
    let t = token();
    let pg = Postgres::start();
    let url = pg.url();
    let ca = path_str(pg.ca()).to_string();
    let secrets = Secrets::new();
    let pg_args = ["--postgres", url.as_str(), "--postgres-ca", ca.as_str()];
    add_user(&pg_args, "alice", "alice-pw");
    let data_a = TempDir::new("tamper-seq-a");
    let a = serve(data_a.path(), &secrets, &pg_args);
    let s = login_at(&t, a.addr(), "alice", "alice-pw");
    let victim = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"victim".to_vec()),
            Attribute::Value(b"the original value".to_vec()),
        ])
        .expect("token object");
    drop(s);
    drop(a);

    pg.psql("ALTER SEQUENCE hsmlink_handles RESTART WITH 1");
    let data_b = TempDir::new("tamper-seq-b");
    let b = serve(data_b.path(), &secrets, &pg_args);
    let s = login_at(&t, b.addr(), "alice", "alice-pw");
    let mut refused = 0;
    for i in 0..=victim.handle() {
        match s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(format!("intruder {i}").into_bytes()),
            Attribute::Value(b"a new value".to_vec()),
        ]) {
            Ok(h) => assert_ne!(h, victim, "a new object took the victim's handle"),
            Err(e) => {
                assert_eq!(rv_of::<()>(Err(e)), RvError::DeviceError);
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 1, "the one reused handle is refused");
    let found = s
        .find_objects(&[Attribute::Label(b"victim".to_vec())])
        .expect("find");
    assert_eq!(found, vec![victim], "the victim is still there");
    let value = s
        .get_attributes(victim, &[cryptoki::object::AttributeType::Value])
        .expect("read the victim");
    assert_eq!(
        value,
        vec![Attribute::Value(b"the original value".to_vec())]
    );
    assert!(b.stderr().contains("already stored"), "{}", b.stderr());
    drop(s);
    drop(b);
    t.reinitialize(&[]).expect("back to the defaults");
}

/// Another session of the database holds alice's row locked (whoever can
/// write the database, or a stuck client): a write of that row must fail
/// with the reason once the statement has waited 30 s
/// (`statement_timeout`), not hang for as long as the lock is held.
#[test]
fn tamper_postgres_a_held_row_lock_fails_a_write_instead_of_hanging() {
    let pg = Postgres::start();
    let url = pg.url();
    let ca = path_str(pg.ca()).to_string();
    let secrets = Secrets::new();
    let pass_file = path_str(&secrets.passphrase_file()).to_string();
    let pg_args = ["--postgres", url.as_str(), "--postgres-ca", ca.as_str()];
    add_user(&pg_args, "alice", "alice-pw");
    // The first start makes the keyring and seals alice's record.
    let data = TempDir::new("tamper-lock");
    drop(serve(data.path(), &secrets, &pg_args));

    std::thread::scope(|scope| {
        let holder = scope.spawn(|| {
            pg.psql(
                "BEGIN; SELECT 1 FROM hsmlink_accounts WHERE name = 'alice' FOR UPDATE; \
                 SELECT pg_sleep(60); COMMIT;",
            )
        });
        // Until the holder has the lock.
        let start = std::time::Instant::now();
        while !pg
            .psql(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                 WHERE a.query LIKE '%pg_sleep(60)%' AND l.mode = 'RowShareLock'",
            )
            .trim()
            .ne("0")
        {
            assert!(start.elapsed() < std::time::Duration::from_secs(20));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let start = std::time::Instant::now();
        let mut args = vec!["user", "lock"];
        args.extend_from_slice(&pg_args);
        args.extend_from_slice(&["--passphrase-file", &pass_file, "alice"]);
        let err = cli_err(&args, &[]);
        let took = start.elapsed();
        eprintln!("tamper: a write behind a held row lock failed after {took:?}");
        assert!(err.contains("statement timeout"), "{err}");
        assert!(
            took < std::time::Duration::from_secs(50),
            "the write waited for the lock's holder: {took:?}"
        );
        pg.psql(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
        );
        let _ = holder.join();
    });
}
