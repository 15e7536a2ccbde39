//! Corners of the standard that third-party clients walk into: data and
//! certificate objects with their attributes, searches on binary
//! attributes, CKA_MODIFIABLE / CKA_COPYABLE / CKA_DESTROYABLE,
//! C_CopyObject with a template, renaming keys after generation, secret key
//! generation at every size, and what C_GetMechanismInfo says of the
//! mechanisms added for conformance.

use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use hsmlink_tests::{assert_rv, keys, raw, token, unique_label, verify};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;

fn find(session: &Session, template: &[Attribute]) -> Vec<ObjectHandle> {
    session.find_objects(template).expect("C_FindObjects")
}

#[test]
fn data_objects_with_application_and_object_id_are_found_by_them() {
    let t = token();
    let session = t.user_session();
    let app = unique_label("app");
    let oid = vec![0x06, 0x03, 0x2a, 0x00, 0x03]; // with a zero byte inside
    let h = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Application(app.as_bytes().to_vec()),
            Attribute::ObjectId(oid.clone()),
            Attribute::Value(vec![0, 1, 2, 0, 3]),
        ])
        .unwrap();
    assert_eq!(
        find(&session, &[Attribute::Application(app.as_bytes().to_vec())]),
        vec![h]
    );
    assert_eq!(
        find(
            &session,
            &[
                Attribute::ObjectId(oid),
                Attribute::Value(vec![0, 1, 2, 0, 3])
            ]
        ),
        vec![h]
    );
    assert!(find(&session, &[Attribute::Value(vec![0, 1, 2, 0])]).is_empty());
}

#[test]
fn certificates_are_found_by_issuer_and_serial_and_keep_their_category() {
    let t = token();
    let session = t.user_session();
    let subject = unique_label("CN=subject").into_bytes();
    let issuer = b"\x30\x0b\x31\x09\x30\x07\x06\x03\x55\x04\x03\x0c\x00".to_vec();
    let serial = vec![0x02, 0x01, 0x00];
    let value = vec![0x30, 0x03, 0x02, 0x01, 0x05];
    // cryptoki has no name for CKA_CERTIFICATE_CATEGORY: the C ABI it is.
    let ulong = |v: u64| (v as cryptoki_sys::CK_ULONG).to_ne_bytes().to_vec();
    let template = |category: u64| {
        vec![
            (cryptoki_sys::CKA_CLASS, ulong(1)),
            (cryptoki_sys::CKA_CERTIFICATE_TYPE, ulong(0)),
            (cryptoki_sys::CKA_TOKEN, vec![0]),
            (cryptoki_sys::CKA_SUBJECT, subject.clone()),
            (cryptoki_sys::CKA_ISSUER, issuer.clone()),
            (cryptoki_sys::CKA_SERIAL_NUMBER, serial.clone()),
            (cryptoki_sys::CKA_VALUE, value.clone()),
            (cryptoki_sys::CKA_CERTIFICATE_CATEGORY, ulong(category)),
        ]
    };
    let (rv, cert) = t.raw.create_object(session.handle(), &template(2));
    assert_eq!(rv, raw::CKR_OK, "{}", raw::rv_name(rv));
    let cert = raw::object_handle(cert);
    let (rv, _) = t.raw.create_object(session.handle(), &template(4));
    assert_eq!(
        rv,
        cryptoki_sys::CKR_ATTRIBUTE_VALUE_INVALID,
        "category 4: {}",
        raw::rv_name(rv)
    );
    assert_eq!(
        find(
            &session,
            &[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Issuer(issuer.clone()),
                Attribute::SerialNumber(serial.clone()),
                Attribute::Subject(subject.clone()),
            ]
        ),
        vec![cert]
    );
    assert_eq!(
        session
            .get_attributes(
                cert,
                &[AttributeType::CertificateType, AttributeType::Value]
            )
            .unwrap(),
        vec![
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Value(value.clone()),
        ]
    );
    // CKA_CERTIFICATE_TYPE is required; CKA_VALUE of a certificate is fixed.
    assert_rv(
        session.create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Subject(b"x".to_vec()),
            Attribute::Value(value),
        ]),
        RvError::TemplateIncomplete,
    );
    assert_rv(
        session.update_attributes(cert, &[Attribute::Value(vec![1])]),
        RvError::AttributeReadOnly,
    );
}

#[test]
fn keys_are_found_by_binary_material_but_never_by_hidden_secrets() {
    let t = token();
    let session = t.user_session();
    let pair = keys::rsa(&session, 2048, &unique_label("bin"));
    let modulus = verify::attribute_bytes(&session, pair.public, AttributeType::Modulus);
    let found = find(&session, &[Attribute::Modulus(modulus)]);
    assert!(found.contains(&pair.public) && found.contains(&pair.private));
    let ec = keys::ec(&session, Nid::X9_62_PRIME256V1, &unique_label("bin-ec"));
    let point = verify::attribute_bytes(&session, ec.public, AttributeType::EcPoint);
    assert_eq!(
        find(&session, &[Attribute::EcPoint(point)]),
        vec![ec.public]
    );
    let id = vec![0x00, 0xff, 0x00, 0x10];
    let value = vec![0x42; 32];
    let k = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Id(id.clone()),
            Attribute::Value(value.clone()),
            Attribute::Sensitive(true),
        ])
        .unwrap();
    assert_eq!(find(&session, &[Attribute::Id(id.clone())]), vec![k]);
    assert!(
        find(&session, &[Attribute::Id(id), Attribute::Value(value)]).is_empty(),
        "a sensitive value must not be matched (it would leak through searches)"
    );
}

#[test]
fn modifiable_copyable_destroyable() {
    let t = token();
    let session = t.user_session();
    let fixed = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"fixed".to_vec()),
            Attribute::Modifiable(false),
            Attribute::Copyable(false),
            Attribute::Destroyable(false),
        ])
        .unwrap();
    assert_rv(
        session.update_attributes(fixed, &[Attribute::Label(b"x".to_vec())]),
        RvError::ActionProhibited,
    );
    assert_rv(session.copy_object(fixed, &[]), RvError::ActionProhibited);
    assert_rv(session.destroy_object(fixed), RvError::ActionProhibited);
    assert_eq!(
        session
            .get_attributes(
                fixed,
                &[
                    AttributeType::Modifiable,
                    AttributeType::Copyable,
                    AttributeType::Destroyable
                ]
            )
            .unwrap(),
        vec![
            Attribute::Modifiable(false),
            Attribute::Copyable(false),
            Attribute::Destroyable(false)
        ]
    );
    // CKA_COPYABLE only goes from true to false.
    let free = session
        .create_object(&[Attribute::Class(ObjectClass::DATA), Attribute::Token(false)])
        .unwrap();
    session
        .update_attributes(free, &[Attribute::Copyable(false)])
        .unwrap();
    assert_rv(
        session.update_attributes(free, &[Attribute::Copyable(true)]),
        RvError::AttributeReadOnly,
    );
}

#[test]
fn copy_object_with_a_template() {
    let t = token();
    let session = t.user_session();
    let label = unique_label("copy");
    let key = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(vec![7; 20]),
            Attribute::Sign(true),
        ])
        .unwrap();
    let copy = session
        .copy_object(
            key,
            &[
                Attribute::Label(b"the copy".to_vec()),
                Attribute::Sign(false),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    assert_eq!(
        session
            .get_attributes(
                copy,
                &[
                    AttributeType::Label,
                    AttributeType::Sign,
                    AttributeType::KeyType
                ]
            )
            .unwrap(),
        vec![
            Attribute::Label(b"the copy".to_vec()),
            Attribute::Sign(false),
            Attribute::KeyType(KeyType::GENERIC_SECRET)
        ]
    );
    assert_rv(
        session.sign(&Mechanism::Sha256Hmac, copy, b"x"),
        RvError::KeyFunctionNotPermitted,
    );
    session.sign(&Mechanism::Sha256Hmac, key, b"x").unwrap();
    assert_rv(
        session.copy_object(key, &[Attribute::KeyType(KeyType::AES)]),
        RvError::AttributeReadOnly,
    );
}

#[test]
fn generated_keys_are_renamed_like_java_does() {
    let t = token();
    let session = t.user_session();
    let pair = keys::ec(&session, Nid::SECP384R1, &unique_label("tmp"));
    let alias = unique_label("alias");
    for h in [pair.public, pair.private] {
        session
            .update_attributes(
                h,
                &[
                    Attribute::Label(alias.as_bytes().to_vec()),
                    Attribute::Id(vec![1, 2, 3]),
                ],
            )
            .unwrap();
    }
    session
        .update_attributes(pair.public, &[Attribute::Subject(b"CN=alias".to_vec())])
        .unwrap();
    let found = find(&session, &[Attribute::Label(alias.as_bytes().to_vec())]);
    assert_eq!(found.len(), 2);
    assert_rv(
        session.update_attributes(pair.private, &[Attribute::Local(false)]),
        RvError::AttributeReadOnly,
    );
    assert_rv(
        session.update_attributes(pair.private, &[Attribute::KeyType(KeyType::RSA)]),
        RvError::AttributeReadOnly,
    );
}

#[test]
fn secret_keys_of_every_size_are_generated_and_used() {
    let t = token();
    let session = t.user_session();
    for len in [16u64, 24, 32] {
        let k = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(len.into()),
                    Attribute::Encrypt(true),
                ],
            )
            .unwrap();
        assert_eq!(
            session
                .encrypt(&Mechanism::AesEcb, k, &[0; 16])
                .unwrap()
                .len(),
            16
        );
    }
    assert_rv(
        session.generate_key(&Mechanism::AesKeyGen, &[Attribute::Token(false)]),
        RvError::TemplateIncomplete,
    );
    // 14 bytes (112 bits) is the shortest generic secret (docs/security.md).
    for len in [14u64, 17, 64, 65, 200, 512] {
        let k = session
            .generate_key(
                &Mechanism::GenericSecretKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(Ulong::from(len)),
                    Attribute::Sign(true),
                    Attribute::Verify(true),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let value = verify::attribute_bytes(&session, k, AttributeType::Value);
        assert_eq!(value.len() as u64, len);
        let mac = session.sign(&Mechanism::Sha512Hmac, k, b"data").unwrap();
        assert_eq!(
            mac,
            verify::hmac(MessageDigest::sha512(), &value, b"data"),
            "{len}-byte key"
        );
    }
    for (mech, kt) in [
        (Mechanism::Sha1KeyGen, KeyType::SHA_1_HMAC),
        (Mechanism::Sha256KeyGen, KeyType::SHA256_HMAC),
        (Mechanism::Sha512KeyGen, KeyType::SHA512_HMAC),
    ] {
        let k = session
            .generate_key(
                &mech,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sign(true),
                ],
            )
            .unwrap();
        assert_eq!(
            session
                .get_attributes(k, &[AttributeType::KeyType])
                .unwrap(),
            vec![Attribute::KeyType(kt)]
        );
        session.sign(&Mechanism::Sha256Hmac, k, b"x").unwrap();
    }
}

#[test]
fn mechanism_info_tells_the_truth_about_the_added_mechanisms() {
    let t = token();
    let slot = t.slot;
    let info = |m: MechanismType| t.pkcs11.get_mechanism_info(slot, m).unwrap();
    let list = t.pkcs11.get_mechanism_list(slot).unwrap();
    for m in [
        MechanismType::EDDSA,
        MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
        MechanismType::ECDH1_DERIVE,
        MechanismType::AES_CMAC,
        MechanismType::RSA_PKCS_OAEP,
        MechanismType::AES_KEY_WRAP_PAD,
    ] {
        assert!(list.contains(&m), "{m} listed");
    }
    let i = info(MechanismType::EDDSA);
    assert!(i.sign() && i.verify() && i.hardware() && !i.encrypt());
    assert_eq!((i.min_key_size(), i.max_key_size()), (255, 448));
    let i = info(MechanismType::ECDH1_DERIVE);
    assert!(i.derive() && i.ec_from_oid() && i.ec_uncompressed() && !i.sign());
    let i = info(MechanismType::RSA_PKCS_OAEP);
    assert!(i.encrypt() && i.decrypt() && i.wrap() && i.unwrap() && !i.sign());
    let i = info(MechanismType::RSA_PKCS);
    assert!(i.wrap() && i.unwrap() && i.sign());
    let i = info(MechanismType::AES_CMAC);
    assert!(i.sign() && i.verify() && !i.encrypt());
    assert_eq!((i.min_key_size(), i.max_key_size()), (16, 32));
    let i = info(MechanismType::AES_KEY_WRAP);
    assert!(i.wrap() && i.unwrap() && !i.encrypt());
    let i = info(MechanismType::ECC_KEY_PAIR_GEN);
    assert!(i.generate_key_pair() && i.ec_from_oid());
    assert_eq!((i.min_key_size(), i.max_key_size()), (256, 521));
}
