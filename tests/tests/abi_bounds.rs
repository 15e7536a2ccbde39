//! Hostile pointer and count arguments through the built module's C ABI:
//! counts whose byte size overflows, counts far larger than the buffer
//! behind them, NULL and misaligned pointers. The module must answer with a
//! `CKR_*` code, write nothing past what it has to return, and never abort
//! the application (an allocation sized by the caller's count, or a slice
//! of an impossible length, would).

use cryptoki::object::{Attribute, ObjectClass};
use hsmlink_tests::raw::{self, rv_name, CKR_ARGUMENTS_BAD, CKR_OK};
use hsmlink_tests::{token, unique_label, PIN};

/// Counts that fit in memory arithmetic but not in the buffer given
/// (2^40 × 8 bytes: an allocation of them aborts the process).
const HUGE_BUT_REPRESENTABLE: [u64; 3] = [1 << 40, 1 << 59, (isize::MAX as u64) / 8];
/// Counts whose size in bytes overflows `isize` (× 8) or `usize` (× 8).
const OVERFLOWING: [u64; 4] = [(isize::MAX as u64) / 8 + 1, 1 << 60, 1 << 61, u64::MAX];

fn data_object(session: &cryptoki::session::Session, label: &str) {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(b"abi".to_vec()),
        ])
        .expect("C_CreateObject(data)");
}

#[test]
fn abi_bounds_find_objects_with_huge_counts_returns_only_what_there_is() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();
    let label = unique_label("abi-find");
    for _ in 0..3 {
        data_object(&session, &label);
    }
    let find_init = |s: &cryptoki::session::Session| {
        // cryptoki's find_objects does Init/Find/Final; this needs them apart.
        let template = [Attribute::Label(label.as_bytes().to_vec())];
        let rv = t
            .raw
            .template_find_init(s.handle(), &template_bytes(&template));
        assert_eq!(rv, CKR_OK, "C_FindObjectsInit: {}", rv_name(rv));
    };

    for claimed in HUGE_BUT_REPRESENTABLE {
        find_init(&session);
        let (rv, handles, count, overrun) = t.raw.find_objects_claiming(h, 8, claimed);
        assert_eq!(
            rv,
            CKR_OK,
            "C_FindObjects(ulMaxObjectCount = {claimed:#x}): {}",
            rv_name(rv)
        );
        assert_eq!(count, 3, "three objects match, whatever the room claimed");
        assert_eq!(handles.len(), 3);
        assert!(!overrun, "nothing is written past the objects found");
        assert_eq!(t.raw.find_objects_final(h), CKR_OK);
    }

    find_init(&session);
    for claimed in OVERFLOWING {
        let (rv, _, _, overrun) = t.raw.find_objects_claiming(h, 8, claimed);
        assert_eq!(
            rv,
            CKR_ARGUMENTS_BAD,
            "C_FindObjects(ulMaxObjectCount = {claimed:#x}): {}",
            rv_name(rv)
        );
        assert!(!overrun);
    }
    // The refused calls took nothing from the search.
    let (rv, handles, count, _) = t.raw.find_objects_claiming(h, 8, 8);
    assert_eq!(
        (rv, count, handles.len()),
        (CKR_OK, 3, 3),
        "{}",
        rv_name(rv)
    );
    assert_eq!(t.raw.find_objects_final(h), CKR_OK);

    // A bad session with a huge count: the session's error, no abort.
    let (rv, _, _, overrun) = t.raw.find_objects_claiming(0xdead_beef, 8, 1 << 40);
    assert_eq!(rv, raw::CKR_SESSION_HANDLE_INVALID, "{}", rv_name(rv));
    assert!(!overrun);
    // No search active: OPERATION_NOT_INITIALIZED, also with a huge count.
    let (rv, _, _, _) = t.raw.find_objects_claiming(h, 8, 1 << 40);
    assert_eq!(rv, raw::CKR_OPERATION_NOT_INITIALIZED, "{}", rv_name(rv));
}

/// A cryptoki template as raw (type, value) pairs for the raw client.
fn template_bytes(template: &[Attribute]) -> Vec<(u64, Vec<u8>)> {
    template
        .iter()
        .map(|a| match a {
            Attribute::Label(v) => (raw::CKA_LABEL, v.clone()),
            other => panic!("unexpected attribute {other:?}"),
        })
        .collect()
}

#[test]
fn abi_bounds_mechanism_and_slot_lists_write_only_their_entries() {
    let t = token();
    let all = t.raw.mechanism_list(1, None).len as usize;
    assert!(all > 10, "the mechanism list has {all} entries");
    for claimed in HUGE_BUT_REPRESENTABLE {
        let (rv, count, written, overrun) = t.raw.list_claiming(false, all, claimed);
        assert_eq!(
            rv,
            CKR_OK,
            "C_GetMechanismList({claimed:#x}): {}",
            rv_name(rv)
        );
        assert_eq!((count as usize, written.len()), (all, all));
        assert!(!overrun, "C_GetMechanismList wrote past its {all} entries");
        let (rv, count, written, overrun) = t.raw.list_claiming(true, 1, claimed);
        assert_eq!(rv, CKR_OK, "C_GetSlotList({claimed:#x}): {}", rv_name(rv));
        assert_eq!((count, written), (1, vec![1]));
        assert!(!overrun);
    }
    for claimed in OVERFLOWING {
        for slots in [false, true] {
            let (rv, _, written, overrun) = t.raw.list_claiming(slots, all, claimed);
            assert_eq!(
                rv,
                CKR_ARGUMENTS_BAD,
                "slots={slots} count {claimed:#x}: {}",
                rv_name(rv)
            );
            assert!(written.is_empty() && !overrun);
        }
    }
}

#[test]
fn abi_bounds_template_counts_are_checked_before_the_array_is_read() {
    let t = token();
    let session = t.user_session();
    let label = unique_label("abi-template");
    let object = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(label.into_bytes()),
        ])
        .expect("C_CreateObject");
    // Past the 32 attributes one message holds, up to counts whose size
    // overflows: refused before the (one-attribute) array is read.
    for claimed in [33, 1 << 20, 1 << 40, 1 << 59, 1 << 61, u64::MAX] {
        for (f, rv) in t
            .raw
            .template_count_claiming(session.handle(), object.handle(), claimed)
        {
            assert_eq!(
                rv,
                CKR_ARGUMENTS_BAD,
                "{f}(ulCount = {claimed:#x}): {}",
                rv_name(rv)
            );
        }
    }
    // C_GetAttributeValue reads the caller's whole template; a count whose
    // size in bytes overflows is refused unread.
    for claimed in [1 << 60, 1 << 62, u64::MAX] {
        let rv = t
            .raw
            .get_attribute_count_claiming(session.handle(), object.handle(), claimed);
        assert_eq!(
            rv,
            CKR_ARGUMENTS_BAD,
            "C_GetAttributeValue({claimed:#x}): {}",
            rv_name(rv)
        );
    }
    // Byte lengths past isize::MAX.
    for claimed in [isize::MAX as u64 + 1, u64::MAX] {
        let rv = t
            .raw
            .generate_random_claiming(session.handle(), 16, claimed);
        assert_eq!(
            rv,
            CKR_ARGUMENTS_BAD,
            "C_GenerateRandom({claimed:#x}): {}",
            rv_name(rv)
        );
    }
}

#[test]
fn abi_bounds_misaligned_length_pointer_is_arguments_bad() {
    let t = token();
    let session = t.user_session();
    let key = hsmlink_tests::keys::import_aes(&session, &[3u8; 16]);
    session
        .encrypt_init(&cryptoki::mechanism::Mechanism::AesEcb, key)
        .expect("C_EncryptInit");
    let rv = t.raw.encrypt_misaligned_len(session.handle(), &[0u8; 16]);
    assert_eq!(rv, CKR_ARGUMENTS_BAD, "{}", rv_name(rv));
}

/// v2.40 5.6: a NULL PIN is for a protected authentication path, which this
/// token has not: CKR_ARGUMENTS_BAD, and the HSM is not asked (so no failed
/// login is counted: more NULL-PIN calls than the lockout threshold leave
/// the user unlocked).
#[test]
fn abi_bounds_login_with_null_pin_is_arguments_bad_and_counts_no_failure() {
    let t = token();
    let session = t.rw_session();
    let h = session.handle();
    for len in [0, 5, u64::MAX] {
        for _ in 0..4 {
            let rv = t.raw.login_null_pin(h, raw::CKU_USER, len);
            assert_eq!(
                rv,
                CKR_ARGUMENTS_BAD,
                "C_Login(NULL, {len:#x}): {}",
                rv_name(rv)
            );
        }
    }
    let rv = t.raw.login_null_pin(0xdead_beef, raw::CKU_USER, 0);
    assert_eq!(rv, raw::CKR_SESSION_HANDLE_INVALID, "{}", rv_name(rv));
    let rv = t.raw.login(h, raw::CKU_USER, PIN.as_bytes());
    assert_eq!(
        rv,
        CKR_OK,
        "the real PIN after 12 NULL-PIN calls: {}",
        rv_name(rv)
    );
    assert!(
        !t.server_log().contains("event=login_failed"),
        "a NULL PIN reached the HSM as a failed login"
    );
}

/// Found by the `abi` fuzz target: many large values in one
/// `C_GetAttributeValue` made a reply larger than a frame, and the HSM's
/// `CKR_DATA_LEN_RANGE` (not a code this function may return) reached the
/// application. The module now asks for such a template in parts.
#[test]
fn abi_bounds_many_large_attribute_values_in_one_call() {
    let t = token();
    let session = t.user_session();
    let value: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let object = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Value(value.clone()),
        ])
        .expect("C_CreateObject");
    let mut queries: Vec<raw::AttrQuery> = (0..40)
        .map(|_| raw::AttrQuery::value(raw::CKA_VALUE, 4096))
        .collect();
    let rv = t
        .raw
        .get_attribute_value(session.handle(), object, &mut queries);
    assert_eq!(rv, CKR_OK, "40 values of 4,000 bytes: {}", rv_name(rv));
    for q in &queries {
        assert!(q.value == value, "a value came back wrong");
    }
}

/// A template too large for one message (a 20,000-byte value; frames are
/// ~17 KiB) is CKR_DEVICE_MEMORY from the functions that take templates,
/// never CKR_DATA_LEN_RANGE, which v2.40 does not list for them.
#[test]
fn abi_bounds_a_template_larger_than_a_frame_is_device_memory() {
    let t = token();
    let session = t.user_session();
    let big = vec![0x5Au8; 20_000];
    let class = (raw::CKO_DATA as raw::CK_ULONG).to_ne_bytes().to_vec();
    let (rv, _) = t.raw.create_object(
        session.handle(),
        &[
            (raw::CKA_CLASS, class),
            (raw::CKA_TOKEN, vec![0]),
            (raw::CKA_VALUE, big.clone()),
        ],
    );
    assert_eq!(
        rv,
        raw::CKR_DEVICE_MEMORY,
        "C_CreateObject: {}",
        rv_name(rv)
    );
    let rv = t
        .raw
        .template_find_init(session.handle(), &[(raw::CKA_VALUE, big)]);
    assert_eq!(
        rv,
        raw::CKR_DEVICE_MEMORY,
        "C_FindObjectsInit: {}",
        rv_name(rv)
    );
    // The session is still usable.
    data_object(&session, &unique_label("abi-after-big"));
}
