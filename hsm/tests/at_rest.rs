//! The store as an attacker with the data folder sees it: sealed records,
//! tampered records refused, clear records refused (sealed only by an
//! explicit `migrate`), an unprotected keyring refused when a passphrase is
//! given, a wrong passphrase refused.

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
fn clear_records_are_refused_by_a_server_and_sealed_by_migrate() {
    let dir = tempfile::tempdir().unwrap();
    // A store of an earlier version: a clear object owned by a bare name,
    // a user record without id or tag, no keyring.
    {
        let s = Store::open(dir.path()).unwrap();
        let plain = hsmlink_hsm::store::encode_plain(&aes_record("alice")).unwrap();
        assert_eq!(plain[0], FORMAT_PLAIN);
        s.put_objects(&[ObjectRow {
            handle: 9,
            owner: "alice",
            label: b"k",
            bytes: &plain,
        }])
        .unwrap();
        s.put_user("alice", &hsmlink_hsm::store::UserRecord::default())
            .unwrap();
    }
    // A server does not make a master key over records it cannot account for.
    let e = Hsm::open(
        Store::open(dir.path()).unwrap(),
        &pass("pp"),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(e.contains("no keyring"), "{e}");
    // `migrate`, once, explicitly.
    let out = hsmlink_hsm::hsm::migrate(&Store::open(dir.path()).unwrap(), &pass("pp")).unwrap();
    assert!(
        out.contains("1 user records") && out.contains("1 clear object"),
        "{out}"
    );
    let hsm = Hsm::open(
        Store::open(dir.path()).unwrap(),
        &pass("pp"),
        Limits::default(),
    )
    .unwrap();
    let id = hsm.store().user("alice").unwrap().unwrap().id;
    assert!(id > 0);
    let owner = hsmlink_hsm::users::owner_key("alice", id);
    let o = hsm
        .get(&owner, &[0; 16], 0, 9)
        .expect("the object is served to its owner's id");
    assert_eq!(o.get(cka::VALUE), Some(&KEY[..]));
    let stored = hsm.store().object(9).unwrap().unwrap();
    assert_eq!(stored[0], vault::FORMAT_SEALED);
    assert!(!contains(&stored, KEY));
    drop(hsm);
    // A clear record planted afterwards is refused (not served), and so is
    // a user record planted without a tag.
    {
        let s = Store::open(dir.path()).unwrap();
        let plain = hsmlink_hsm::store::encode_plain(&aes_record(&owner)).unwrap();
        s.put_objects(&[ObjectRow {
            handle: 10,
            owner: &owner,
            label: b"k",
            bytes: &plain,
        }])
        .unwrap();
    }
    let hsm = Hsm::open(
        Store::open(dir.path()).unwrap(),
        &pass("pp"),
        Limits::default(),
    )
    .unwrap();
    assert!(hsm.get(&owner, &[0; 16], 0, 10).is_none());
    assert!(hsm.get(&owner, &[0; 16], 0, 9).is_some());
    drop(hsm);
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_user("mallory", &hsmlink_hsm::store::UserRecord::default())
            .unwrap();
    }
    let e = Hsm::open(
        Store::open(dir.path()).unwrap(),
        &pass("pp"),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(
        e.contains("mallory") && e.contains("not authenticated"),
        "{e}"
    );
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
fn an_unprotected_keyring_is_refused_when_a_passphrase_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let open = |u: &Unlock| {
        let s = Store::open(dir.path()).unwrap();
        hsmlink_hsm::hsm::open_master(&s, u).map(|(m, r)| (m, r.protection.clone()))
    };
    let (_, p0) = open(&Unlock::Nothing).unwrap();
    assert_eq!(p0, vault::Protection::Unprotected);
    // Not silently re-wrapped: an unprotected keyring may have been planted
    // by whoever can write the database.
    let e = open(&pass("now protected")).unwrap_err();
    assert!(
        e.contains("unprotected") && e.contains("keyring change"),
        "{e}"
    );
    assert_eq!(
        open(&Unlock::Nothing).unwrap().1,
        vault::Protection::Unprotected
    );

    // A protected store whose keyring is replaced by an unprotected one
    // (the attacker's master key): refused with the passphrase.
    let dir2 = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir2.path()).unwrap();
        hsmlink_hsm::hsm::open_master(&s, &pass("pp")).unwrap();
        let theirs = vault::MasterKey::generate().unwrap();
        let ring = vault::Keyring::wrap(&theirs, &Unlock::Nothing).unwrap();
        s.replace_keyring(&ring.encode().unwrap()).unwrap();
    }
    let e = Hsm::open(
        Store::open(dir2.path()).unwrap(),
        &pass("pp"),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(e.contains("unprotected"), "{e}");
}

#[test]
fn migrate_moves_sealed_objects_of_an_earlier_version_to_their_owners_id() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The version before user ids: a keyring, a sealed object owned by
        // a bare name, a user record without id or tag.
        let s = Store::open(dir.path()).unwrap();
        let (m, _) = hsmlink_hsm::hsm::open_master(&s, &pass("pp")).unwrap();
        let sealed = vault::seal_object(&m, 5, &aes_record("bob")).unwrap();
        s.put_objects(&[ObjectRow {
            handle: 5,
            owner: "bob",
            label: b"k",
            bytes: &sealed,
        }])
        .unwrap();
        let mut v2 = vec![3u8];
        v2.extend(postcard::to_stdvec(&("bob-phc", 2u32, false)).unwrap());
        s.put_raw_user("bob", &v2).unwrap();
    }
    let e = Hsm::open(
        Store::open(dir.path()).unwrap(),
        &pass("pp"),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(e.contains("user bob") && e.contains("migrate"), "{e}");
    let out = hsmlink_hsm::hsm::migrate(&Store::open(dir.path()).unwrap(), &pass("pp")).unwrap();
    assert!(out.contains("1 objects moved"), "{out}");
    let hsm = Hsm::open(
        Store::open(dir.path()).unwrap(),
        &pass("pp"),
        Limits::default(),
    )
    .unwrap();
    let bob = hsm.store().user("bob").unwrap().unwrap();
    assert_eq!((bob.phc.as_str(), bob.failures), ("bob-phc", 2));
    let owner = hsmlink_hsm::users::owner_key("bob", bob.id);
    assert!(hsm.get(&owner, &[0; 16], 0, 5).is_some());
    assert!(hsm.get("bob", &[0; 16], 0, 5).is_none());
    // Once is enough: a second run converts nothing.
    drop(hsm);
    let out = hsmlink_hsm::hsm::migrate(&Store::open(dir.path()).unwrap(), &pass("pp")).unwrap();
    assert!(
        out.contains("0 user records") && out.contains("0 objects moved"),
        "{out}"
    );
}
