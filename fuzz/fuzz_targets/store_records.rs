//! Records as whoever can write the database leaves them: the bytes of a
//! user row, an object row and a keyring, read by the server.
//!
//! Properties: reading any bytes never panics; a user record is accepted
//! under the record key only if it is exactly what the server wrote for that
//! name (a genuine record with one byte changed, cut short, or read under
//! another name is refused), and accepted records read back unchanged; an
//! object record of the clear format is never opened by a server (only by
//! `migrate`), and a sealed one with any byte changed is refused.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use hsmlink_hsm::store::{ObjectRecord, UserRecord, decode_user, encode_user, read_user};
use hsmlink_hsm::vault::{self, Keyring, MasterKey, RecordKey};
use libfuzzer_sys::fuzz_target;

/// One master key per process (random: nothing may depend on its value).
fn keys() -> &'static (MasterKey, RecordKey) {
    static K: OnceLock<(MasterKey, RecordKey)> = OnceLock::new();
    K.get_or_init(|| {
        let m = MasterKey::generate().expect("master key");
        let r = m.record_key().expect("record key");
        (m, r)
    })
}

#[derive(Arbitrary, Debug)]
enum Edit {
    /// XOR one byte (at an index taken modulo the length) with a non-zero value.
    Flip(u16, u8),
    /// Cut the record short.
    Truncate(u16),
    /// Read it under another name.
    Rename(String),
    /// Append bytes.
    Extend(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    name: String,
    id: u64,
    phc: String,
    failures: u32,
    locked: bool,
    generation: u64,
    locked_until: u64,
    edit: Edit,
    raw: Vec<u8>,
    handle: u64,
}

fn edited(bytes: &[u8], name: &str, edit: &Edit) -> (Vec<u8>, String) {
    let mut b = bytes.to_vec();
    let mut n = name.to_string();
    match edit {
        Edit::Flip(i, x) => {
            let i = usize::from(*i) % b.len();
            b[i] ^= if *x == 0 { 1 } else { *x };
        }
        Edit::Truncate(l) => b.truncate(usize::from(*l) % b.len()),
        Edit::Rename(other) => n = other.clone(),
        Edit::Extend(more) => b.extend_from_slice(if more.is_empty() { &[0] } else { more }),
    }
    (b, n)
}

fuzz_target!(|data: &[u8]| {
    let (master, key) = keys();
    // Any bytes: no panic, whatever the name, with or without the key.
    let name_len = data.first().copied().unwrap_or(0) as usize % 8;
    let rest = data.get(1..).unwrap_or(&[]);
    let (name, raw) = rest.split_at(name_len.min(rest.len()));
    let name = String::from_utf8_lossy(name);
    let _ = read_user(&name, raw, Some(key));
    let _ = read_user(&name, raw, None);
    let _ = decode_user(&name, raw, Some(key));
    let _ = vault::open_object(master, 1, raw);
    let _ = vault::peek_object(raw);
    let _ = Keyring::decode(raw);

    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    // A genuine record reads back as written.
    let rec = UserRecord {
        id: input.id,
        phc: input.phc.clone(),
        failures: input.failures,
        locked: input.locked,
        generation: input.generation,
        locked_until: input.locked_until,
    };
    let bytes = encode_user(&input.name, &rec, Some(key)).expect("encode");
    assert_eq!(
        decode_user(&input.name, &bytes, Some(key)).expect("a genuine record"),
        rec
    );
    // Any edit of it is refused.
    let (b, n) = edited(&bytes, &input.name, &input.edit);
    if b != bytes || n != input.name {
        assert!(
            decode_user(&n, &b, Some(key)).is_err(),
            "an edited user record was accepted: {:?}",
            input.edit
        );
    }
    // An unauthenticated (pending) record is refused under the key.
    let pending = encode_user(&input.name, &rec, None).expect("encode");
    assert!(decode_user(&input.name, &pending, Some(key)).is_err());

    // Object records: a clear one is never opened by a server; a sealed one
    // opens only unchanged and under its own handle.
    let obj = ObjectRecord {
        owner: input.name.clone(),
        public: vec![(3, input.phc.clone().into_bytes())],
        secret: vec![(0x11, input.raw.clone())],
    };
    let plain = hsmlink_hsm::store::encode_plain(&obj).expect("encode");
    assert!(vault::open_object(master, input.handle, &plain).is_err());
    let sealed = vault::seal_object(master, input.handle, &obj).expect("seal");
    assert!(vault::open_object(master, input.handle, &sealed).is_ok());
    assert!(vault::open_object(master, input.handle.wrapping_add(1), &sealed).is_err());
    let (b, _) = edited(&sealed, "", &input.edit);
    if b != sealed {
        if let Ok(r) = vault::open_object(master, input.handle, &b) {
            // postcard may read a changed length prefix as the same record
            // only if nothing authenticated changed.
            assert_eq!(
                (r.owner.as_str(), &r.public, &r.secret),
                (obj.owner.as_str(), &obj.public, &obj.secret)
            );
        }
    }
});
