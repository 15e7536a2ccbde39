//! The store as an attacker with the data folder sees it: sealed records,
//! tampered records refused, old clear records sealed on start, a wrong
//! passphrase refused.

use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckk, cko};
use hsmlink_hsm::object::Object;
use hsmlink_hsm::store::{ObjectRecord, ObjectRow, Store, FORMAT_PLAIN};
use hsmlink_hsm::vault::{self, Unlock};
use hsmlink_hsm::{Hsm, Limits};
use zeroize::Zeroizing;

const KEY: &[u8; 32] = b"THE-SECRET-AES-KEY-VALUE-32bytes";

fn pass(p: &str) -> Unlock {
    Unlock::Passphrase(Zeroizing::new(p.as_bytes().to_vec()))
}

fn aes_record(owner: &str) -> ObjectRecord {
    let mut attrs = hsmlink_hsm::object::Attrs::new();
    attrs.insert(cka::CLASS, attr::ulong(cko::SECRET_KEY).to_vec());
    attrs.insert(cka::KEY_TYPE, attr::ulong(ckk::AES).to_vec());
    attrs.insert(cka::TOKEN, vec![1]);
    attrs.insert(cka::SENSITIVE, vec![1]);
    attrs.insert(cka::EXTRACTABLE, vec![0]);
    attrs.insert(cka::LABEL, b"k".to_vec());
    attrs.insert(cka::VALUE, KEY.to_vec());
    Object::new(9, owner.into(), None, attrs).to_record()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn clear_records_of_earlier_versions_are_sealed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let mut plain = vec![FORMAT_PLAIN];
        plain.extend(postcard::to_stdvec(&aes_record("alice")).unwrap());
        s.put_objects(&[ObjectRow {
            handle: 9,
            owner: "alice",
            label: b"k",
            bytes: &plain,
        }])
        .unwrap();
    }
    {
        let hsm = Hsm::open(
            Store::open(dir.path()).unwrap(),
            &pass("pp"),
            Limits::default(),
        )
        .unwrap();
        let o = hsm
            .get("alice", &[0; 16], 0, 9)
            .expect("the object is served");
        assert_eq!(o.get(cka::VALUE), Some(&KEY[..]));
        let stored = hsm.store().object(9).unwrap().unwrap();
        assert_eq!(stored[0], vault::FORMAT_SEALED);
        assert!(!contains(&stored, KEY));
    }
    // A wrong passphrase does not open it.
    let e = Hsm::open(
        Store::open(dir.path()).unwrap(),
        &pass("PP"),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(e.contains("wrong passphrase"), "{e}");
}

#[test]
fn a_tampered_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (master, _) = {
        let s = Store::open(dir.path()).unwrap();
        hsmlink_hsm::hsm::open_master(&s, &pass("pp")).unwrap()
    };
    // Sealed under the real master key, then made "exportable" and given
    // to mallory by someone with write access to the database file.
    let sealed = vault::seal_object(&master, 9, &aes_record("alice")).unwrap();
    let mut so = vault::peek_object(&sealed).unwrap();
    for (t, v) in so.public.iter_mut() {
        if *t == cka::SENSITIVE {
            *v = vec![0];
        }
        if *t == cka::EXTRACTABLE {
            *v = vec![1];
        }
    }
    so.owner = "mallory".into();
    let mut forged = vec![vault::FORMAT_SEALED];
    forged.extend(postcard::to_stdvec(&so).unwrap());
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_objects(&[ObjectRow {
            handle: 9,
            owner: "mallory",
            label: b"k",
            bytes: &forged,
        }])
        .unwrap();
    }
    let hsm = Hsm::open(
        Store::open(dir.path()).unwrap(),
        &pass("pp"),
        Limits::default(),
    )
    .unwrap();
    assert!(hsm.get("mallory", &[0; 16], 0, 9).is_none());
    assert!(hsm.get("alice", &[0; 16], 0, 9).is_none());
}

#[test]
fn an_unprotected_master_key_is_protected_by_the_first_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let open = |u: &Unlock| {
        let s = Store::open(dir.path()).unwrap();
        hsmlink_hsm::hsm::open_master(&s, u).map(|(m, r)| (m, r.protection.clone()))
    };
    let (m0, p0) = open(&Unlock::Nothing).unwrap();
    assert_eq!(p0, vault::Protection::Unprotected);
    let (m1, p1) = open(&pass("now protected")).unwrap();
    assert!(matches!(p1, vault::Protection::Passphrase { .. }));
    // The same master key: what was sealed before still opens.
    let sealed = vault::seal_object(&m0, 1, &aes_record("alice")).unwrap();
    assert!(vault::open_object(&m1, 1, &sealed).is_ok());
    // From now on the passphrase is needed, and only the right one.
    assert!(open(&Unlock::Nothing).unwrap_err().contains("passphrase"));
    assert!(open(&pass("other"))
        .unwrap_err()
        .contains("wrong passphrase"));
    assert!(open(&pass("now protected")).is_ok());
}
