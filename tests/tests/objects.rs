//! Object management: the five classes created, found, read, copied,
//! modified and destroyed; imported keys used with OpenSSL on the other side;
//! C_GetAttributeValue's length and CK_UNAVAILABLE_INFORMATION rules;
//! template errors.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use hsmlink_tests::keys::{self, pattern};
use hsmlink_tests::raw::{self, rv_name, AttrQuery, CKR_OK};
use hsmlink_tests::verify::{self, attribute_bytes};
use hsmlink_tests::{assert_rv, rv_of, token, unique_label};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};

fn by_label(session: &Session, label: &str) -> Vec<ObjectHandle> {
    let mut found = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .expect("C_FindObjects");
    found.sort_by_key(|h| h.handle());
    found
}

fn ulong_bytes(v: u64) -> Vec<u8> {
    (v as raw::CK_ULONG).to_ne_bytes().to_vec()
}

fn self_signed_certificate(cn: &str) -> (X509, PKey<Private>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("ec key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let name = name.build();
    let mut builder = X509::builder().expect("x509");
    builder.set_version(2).expect("version");
    builder.set_subject_name(&name).expect("subject");
    builder.set_issuer_name(&name).expect("issuer");
    builder.set_pubkey(&key).expect("pubkey");
    let serial = openssl::bn::BigNum::from_u32(4242)
        .expect("serial")
        .to_asn1_integer()
        .expect("asn1");
    builder.set_serial_number(&serial).expect("serial");
    builder
        .set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).expect("time"))
        .expect("nb");
    builder
        .set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).expect("time"))
        .expect("na");
    builder
        .sign(&key, MessageDigest::sha256())
        .expect("sign cert");
    (builder.build(), key)
}

fn rsa_private_template(rsa: &Rsa<Private>, label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Sign(true),
        Attribute::Modulus(rsa.n().to_vec()),
        Attribute::PublicExponent(rsa.e().to_vec()),
        Attribute::PrivateExponent(rsa.d().to_vec()),
        Attribute::Prime1(rsa.p().expect("p").to_vec()),
        Attribute::Prime2(rsa.q().expect("q").to_vec()),
        Attribute::Exponent1(rsa.dmp1().expect("dp").to_vec()),
        Attribute::Exponent2(rsa.dmq1().expect("dq").to_vec()),
        Attribute::Coefficient(rsa.iqmp().expect("qinv").to_vec()),
    ]
}

fn ec_point_der(key: &EcKey<Private>) -> Vec<u8> {
    let mut ctx = BigNumContext::new().expect("ctx");
    let point = key
        .public_key()
        .to_bytes(key.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .expect("point");
    let mut der = vec![0x04];
    if point.len() >= 0x80 {
        der.push(0x81);
    }
    der.push(point.len() as u8);
    der.extend(point);
    der
}

#[test]
fn all_five_classes_are_created_found_read_and_destroyed() {
    let t = token();
    let session = t.user_session();
    let label = unique_label("five");
    let (cert, _) = self_signed_certificate("hsmlink five classes");
    let cert_der = cert.to_der().expect("der");
    let subject = cert.subject_name().to_der().expect("subject der");
    let rsa = Rsa::generate(2048).expect("rsa");
    let l = || Attribute::Label(label.as_bytes().to_vec());

    let data = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            l(),
            Attribute::Application(b"hsmlink-tests".to_vec()),
            Attribute::Value(b"plain data".to_vec()),
        ])
        .expect("C_CreateObject(CKO_DATA)");
    let certificate = session
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            l(),
            Attribute::Subject(subject.clone()),
            Attribute::Id(vec![0x42]),
            Attribute::Value(cert_der.clone()),
        ])
        .expect("C_CreateObject(CKO_CERTIFICATE, X.509)");
    let public = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            l(),
            Attribute::Verify(true),
            Attribute::Modulus(rsa.n().to_vec()),
            Attribute::PublicExponent(rsa.e().to_vec()),
        ])
        .expect("C_CreateObject(CKO_PUBLIC_KEY, RSA)");
    let mut private_template = rsa_private_template(&rsa, &label);
    private_template.retain(|a| !matches!(a, Attribute::Token(_)));
    private_template.push(Attribute::Token(true));
    let private = session
        .create_object(&private_template)
        .expect("C_CreateObject(CKO_PRIVATE_KEY, RSA)");
    let secret = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            l(),
            Attribute::Value(vec![9u8; 16]),
            Attribute::Encrypt(true),
        ])
        .expect("C_CreateObject(CKO_SECRET_KEY, AES)");

    let mut all = vec![data, certificate, public, private, secret];
    all.sort_by_key(|h| h.handle());
    assert_eq!(by_label(&session, &label), all, "all five found by label");
    for (class, handle) in [
        (ObjectClass::DATA, data),
        (ObjectClass::CERTIFICATE, certificate),
        (ObjectClass::PUBLIC_KEY, public),
        (ObjectClass::PRIVATE_KEY, private),
        (ObjectClass::SECRET_KEY, secret),
    ] {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .expect("find by class");
        assert_eq!(found, vec![handle], "find by class {class:?}");
        let attrs = session
            .get_attributes(handle, &[AttributeType::Class, AttributeType::Token])
            .expect("read");
        assert!(
            attrs.contains(&Attribute::Class(class)) && attrs.contains(&Attribute::Token(true)),
            "{attrs:?}"
        );
    }
    assert_eq!(
        attribute_bytes(&session, data, AttributeType::Value),
        b"plain data"
    );
    assert_eq!(
        attribute_bytes(&session, data, AttributeType::Application),
        b"hsmlink-tests"
    );
    assert_eq!(
        attribute_bytes(&session, certificate, AttributeType::Value),
        cert_der,
        "certificate CKA_VALUE"
    );
    assert_eq!(
        attribute_bytes(&session, certificate, AttributeType::Subject),
        subject
    );
    let ct = session
        .get_attributes(certificate, &[AttributeType::CertificateType])
        .expect("cert type");
    assert_eq!(ct, vec![Attribute::CertificateType(CertificateType::X_509)]);
    assert_eq!(
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(vec![0x42])
            ])
            .expect("by id"),
        vec![certificate]
    );
    assert_eq!(
        attribute_bytes(&session, public, AttributeType::Modulus),
        rsa.n().to_vec()
    );
    // An imported key was not generated on the token: CKA_LOCAL is false.
    let local = session
        .get_attributes(private, &[AttributeType::Local])
        .expect("local");
    assert_eq!(local, vec![Attribute::Local(false)]);

    for handle in all {
        session.destroy_object(handle).expect("C_DestroyObject");
        assert_rv(
            session.get_attributes(handle, &[AttributeType::Class]),
            RvError::ObjectHandleInvalid,
        );
        assert_rv(session.destroy_object(handle), RvError::ObjectHandleInvalid);
    }
    assert!(by_label(&session, &label).is_empty());
}

#[test]
fn imported_private_keys_sign_and_openssl_verifies() {
    let t = token();
    let session = t.user_session();
    let message = b"signed with an imported key";

    let rsa = Rsa::generate(2048).expect("rsa");
    let rsa_public =
        PKey::public_key_from_der(&rsa.public_key_to_der().expect("der")).expect("pub");
    let key = session
        .create_object(&rsa_private_template(&rsa, &unique_label("imported-rsa")))
        .expect("C_CreateObject(RSA private key)");
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, key, message)
        .expect("C_Sign with imported RSA");
    assert!(verify::rsa_pkcs1_verifies(
        &rsa_public,
        MessageDigest::sha256(),
        message,
        &sig
    ));

    for (nid, params) in [
        (
            Nid::X9_62_PRIME256V1,
            verify::params_of_curve(Nid::X9_62_PRIME256V1),
        ),
        (Nid::SECP384R1, verify::params_of_curve(Nid::SECP384R1)),
        (Nid::SECP521R1, verify::params_of_curve(Nid::SECP521R1)),
    ] {
        let group = EcGroup::from_curve_name(nid).expect("group");
        let ec = EcKey::generate(&group).expect("ec");
        let field = (group.degree() as usize).div_ceil(8);
        let ec_public =
            PKey::from_ec_key(EcKey::from_public_key(&group, ec.public_key()).expect("pub"))
                .expect("pkey");
        let key = session
            .create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::EcParams(params),
                Attribute::Value(
                    ec.private_key()
                        .to_vec_padded(field as i32)
                        .expect("scalar"),
                ),
            ])
            .unwrap_or_else(|e| panic!("C_CreateObject(EC private key {nid:?}): {e}"));
        let sig = session
            .sign(&Mechanism::EcdsaSha256, key, message)
            .expect("C_Sign with imported EC");
        assert!(
            verify::ecdsa_verifies(&ec_public, Some(MessageDigest::sha256()), message, &sig),
            "OpenSSL rejects the signature of an imported {nid:?} key"
        );
    }
}

#[test]
fn imported_public_keys_verify_openssl_signatures() {
    let t = token();
    let session = t.user_session();
    let message = b"signed by OpenSSL, verified by the token";

    let rsa = Rsa::generate(2048).expect("rsa");
    let public = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Verify(true),
            Attribute::Modulus(rsa.n().to_vec()),
            Attribute::PublicExponent(rsa.e().to_vec()),
        ])
        .expect("C_CreateObject(RSA public key)");
    let pkey = PKey::from_rsa(rsa).expect("pkey");
    let mut signer = openssl::sign::Signer::new(MessageDigest::sha384(), &pkey).expect("signer");
    let sig = signer.sign_oneshot_to_vec(message).expect("sign");
    session
        .verify(&Mechanism::Sha384RsaPkcs, public, message, &sig)
        .expect("C_Verify of an OpenSSL RSA signature");
    assert_rv(
        session.verify(&Mechanism::Sha384RsaPkcs, public, b"other", &sig),
        RvError::SignatureInvalid,
    );

    let group = EcGroup::from_curve_name(Nid::SECP384R1).expect("group");
    let ec = EcKey::generate(&group).expect("ec");
    let public = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::Verify(true),
            Attribute::EcParams(verify::params_of_curve(Nid::SECP384R1)),
            Attribute::EcPoint(ec_point_der(&ec)),
        ])
        .expect("C_CreateObject(EC public key)");
    assert_eq!(
        attribute_bytes(&session, public, AttributeType::EcPoint),
        ec_point_der(&ec)
    );
    let digest = verify::hash(MessageDigest::sha384(), message);
    let der_sig = openssl::ecdsa::EcdsaSig::sign(&digest, &ec).expect("ecdsa");
    let mut raw_sig = der_sig.r().to_vec_padded(48).expect("r");
    raw_sig.extend(der_sig.s().to_vec_padded(48).expect("s"));
    session
        .verify(&Mechanism::EcdsaSha384, public, message, &raw_sig)
        .expect("C_Verify of an OpenSSL ECDSA signature");
    session
        .verify(&Mechanism::Ecdsa, public, &digest, &raw_sig)
        .expect("C_Verify(CKM_ECDSA)");
}

#[test]
fn find_objects_returns_every_match_in_batches() {
    let t = token();
    let session = t.user_session();
    let label = unique_label("batch");
    let mut made: Vec<u64> = (0..11)
        .map(|i| {
            session
                .create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(i % 2 == 0),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .expect("create")
                .handle()
        })
        .collect();
    made.sort_unstable();

    let h = session.handle();
    // Three handles per C_FindObjects call.
    let found = session
        .iter_objects_with_cache_size(
            &[Attribute::Label(label.as_bytes().to_vec())],
            std::num::NonZeroUsize::new(3).expect("3"),
        )
        .expect("C_FindObjectsInit")
        .map(|r| r.expect("C_FindObjects").handle())
        .collect::<Vec<_>>();
    let mut sorted = found.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, made, "batched search finds each object once");

    // Token-only and session-only searches.
    let tokens = session
        .find_objects(&[
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Token(true),
        ])
        .expect("find token objects");
    assert_eq!(tokens.len(), 6);
    let sessions = session
        .find_objects(&[
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Token(false),
        ])
        .expect("find session objects");
    assert_eq!(sessions.len(), 5);
    // A template nothing matches.
    assert!(session
        .find_objects(&[
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Class(ObjectClass::SECRET_KEY)
        ])
        .expect("find")
        .is_empty());

    // Raw: an empty template matches all objects, ours among them; a batch
    // of 0 returns 0; FindObjects after the end returns 0.
    assert_eq!(t.raw.find_objects_init_all(h), CKR_OK);
    let mut every = Vec::new();
    loop {
        let (rv, batch) = t.raw.find_objects(h, 4);
        assert_eq!(rv, CKR_OK, "C_FindObjects: {}", rv_name(rv));
        if batch.is_empty() {
            break;
        }
        every.extend(batch);
    }
    let (rv, batch) = t.raw.find_objects(h, 4);
    assert_eq!((rv, batch.len()), (CKR_OK, 0), "after the end");
    assert_eq!(t.raw.find_objects_final(h), CKR_OK);
    for handle in &made {
        assert!(every.contains(handle), "the empty template misses {handle}");
    }
    let unique: std::collections::BTreeSet<_> = every.iter().collect();
    assert_eq!(unique.len(), every.len(), "a handle returned twice");

    for handle in made {
        session
            .destroy_object(raw::object_handle(handle))
            .expect("destroy");
    }
}

#[test]
fn find_operation_states() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();
    let (rv, _) = t.raw.find_objects(h, 4);
    assert_eq!(
        rv,
        raw::CKR_OPERATION_NOT_INITIALIZED,
        "C_FindObjects without init: {}",
        rv_name(rv)
    );
    assert_eq!(
        t.raw.find_objects_final(h),
        raw::CKR_OPERATION_NOT_INITIALIZED,
        "C_FindObjectsFinal without init"
    );
    assert_eq!(t.raw.find_objects_init_all(h), CKR_OK);
    assert_eq!(
        t.raw.find_objects_init_all(h),
        raw::CKR_OPERATION_ACTIVE,
        "C_FindObjectsInit while a search is active"
    );
    assert_eq!(t.raw.find_objects_final(h), CKR_OK);
    assert_eq!(
        t.raw.find_objects_final(h),
        raw::CKR_OPERATION_NOT_INITIALIZED
    );
}

#[test]
fn copy_object_makes_an_independent_copy() {
    let t = token();
    let session = t.user_session();
    let label = unique_label("copy");
    let original = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(b"original value".to_vec()),
        ])
        .expect("create");
    let copy_label = format!("{label}-copy");
    let copy = session
        .copy_object(
            original,
            &[
                Attribute::Label(copy_label.as_bytes().to_vec()),
                Attribute::Token(false),
            ],
        )
        .expect("C_CopyObject");
    assert_ne!(copy, original);
    assert_eq!(
        attribute_bytes(&session, copy, AttributeType::Value),
        b"original value"
    );
    assert_eq!(
        attribute_bytes(&session, copy, AttributeType::Label),
        copy_label.as_bytes()
    );
    let token_flag = session
        .get_attributes(copy, &[AttributeType::Token])
        .expect("token");
    assert_eq!(
        token_flag,
        vec![Attribute::Token(false)],
        "the copy became a session object"
    );
    session.destroy_object(original).expect("destroy original");
    assert_eq!(
        attribute_bytes(&session, copy, AttributeType::Value),
        b"original value",
        "the copy survives"
    );

    // Keys copy too, and the copy works.
    let key = keys::import_aes(&session, &[3u8; 16]);
    let key_copy = session.copy_object(key, &[]).expect("copy a key");
    let ct = session
        .encrypt(&Mechanism::AesEcb, key, &[0u8; 16])
        .expect("encrypt");
    assert_eq!(
        session
            .encrypt(&Mechanism::AesEcb, key_copy, &[0u8; 16])
            .expect("encrypt"),
        ct
    );

    // The class cannot change in a copy.
    let rv = rv_of(session.copy_object(copy, &[Attribute::Class(ObjectClass::SECRET_KEY)]));
    assert!(
        matches!(
            rv,
            RvError::AttributeReadOnly
                | RvError::TemplateInconsistent
                | RvError::AttributeValueInvalid
        ),
        "C_CopyObject changing CKA_CLASS: got {rv:?}"
    );
    // A non-exportable key's copy cannot be made exportable.
    let hidden = keys::aes(&session, 16, false);
    let rv = rv_of(session.copy_object(
        hidden,
        &[Attribute::Extractable(true), Attribute::Sensitive(false)],
    ));
    assert!(
        matches!(
            rv,
            RvError::AttributeReadOnly
                | RvError::TemplateInconsistent
                | RvError::AttributeValueInvalid
        ),
        "copying a non-exportable key as exportable: got {rv:?}"
    );
    assert_rv(
        session.copy_object(raw::object_handle(0xdead_beef), &[]),
        RvError::ObjectHandleInvalid,
    );
}

#[test]
fn set_attribute_value_rules() {
    let t = token();
    let session = t.user_session();
    let label = unique_label("set");
    let data = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .expect("create");
    let new_label = format!("{label}-renamed");
    session
        .update_attributes(
            data,
            &[
                Attribute::Label(new_label.as_bytes().to_vec()),
                Attribute::Value(b"new value".to_vec()),
            ],
        )
        .expect("C_SetAttributeValue(label, value)");
    assert_eq!(
        attribute_bytes(&session, data, AttributeType::Label),
        new_label.as_bytes()
    );
    assert_eq!(
        attribute_bytes(&session, data, AttributeType::Value),
        b"new value"
    );
    assert_eq!(by_label(&session, &new_label), vec![data]);
    assert!(by_label(&session, &label).is_empty());

    assert_rv(
        session.update_attributes(data, &[Attribute::Class(ObjectClass::SECRET_KEY)]),
        RvError::AttributeReadOnly,
    );
    let rv = rv_of(session.update_attributes(data, &[Attribute::Token(false)]));
    assert!(
        matches!(
            rv,
            RvError::AttributeReadOnly | RvError::TemplateInconsistent
        ),
        "changing CKA_TOKEN: got {rv:?}"
    );

    let key = keys::aes(&session, 16, false);
    assert_rv(
        session.update_attributes(key, &[Attribute::ValueLen(32.into())]),
        RvError::AttributeReadOnly,
    );
    // Sensitive can only go false -> true; extractable only true -> false.
    assert_rv(
        session.update_attributes(key, &[Attribute::Sensitive(false)]),
        RvError::AttributeReadOnly,
    );
    assert_rv(
        session.update_attributes(key, &[Attribute::Extractable(true)]),
        RvError::AttributeReadOnly,
    );
    let open = keys::aes(&session, 16, true);
    session
        .update_attributes(open, &[Attribute::Sensitive(true)])
        .expect("sensitive false -> true");
    let mut q = [AttrQuery::value(raw::CKA_VALUE, 64)];
    let rv = t.raw.get_attribute_value(session.handle(), open, &mut q);
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_SENSITIVE,
        "after CKA_SENSITIVE=true: {}",
        rv_name(rv)
    );
    // Usage flags can change.
    session
        .update_attributes(open, &[Attribute::Encrypt(false)])
        .expect("CKA_ENCRYPT -> false");
    assert_rv(
        session.encrypt_init(&Mechanism::AesEcb, open),
        RvError::KeyFunctionNotPermitted,
    );

    assert_rv(
        session.update_attributes(
            raw::object_handle(0xdead_beef),
            &[Attribute::Label(b"x".to_vec())],
        ),
        RvError::ObjectHandleInvalid,
    );
    session.destroy_object(data).expect("destroy");
}

#[test]
fn get_object_size() {
    let t = token();
    let session = t.user_session();
    let small = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Value(vec![1; 10]),
        ])
        .expect("create");
    let large = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Value(pattern(5000)),
        ])
        .expect("create");
    let (rv_small, size_small) = t.raw.object_size(session.handle(), small);
    let (rv_large, size_large) = t.raw.object_size(session.handle(), large);
    if rv_small == raw::CKR_INFORMATION_SENSITIVE || rv_small == raw::CKR_FUNCTION_NOT_SUPPORTED {
        // Allowed by the standard: the size is not revealed.
        return;
    }
    assert_eq!(rv_small, CKR_OK, "C_GetObjectSize: {}", rv_name(rv_small));
    assert_eq!(rv_large, CKR_OK);
    assert!(
        size_large > size_small,
        "a 5000-byte object ({size_large}) is larger than a 10-byte one ({size_small})"
    );
    let (rv, _) = t
        .raw
        .object_size(session.handle(), raw::object_handle(0xdead_beef));
    assert_eq!(rv, raw::CKR_OBJECT_HANDLE_INVALID, "{}", rv_name(rv));
}

#[test]
fn get_attribute_value_length_query_and_unavailable_information() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();
    let label = unique_label("gav");
    let data = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(b"0123456789".to_vec()),
        ])
        .expect("create");

    // 1. Length query: pValue NULL gives the exact lengths, CKR_OK.
    let mut q = [
        AttrQuery::length(raw::CKA_VALUE),
        AttrQuery::length(raw::CKA_LABEL),
        AttrQuery::length(raw::CKA_CLASS),
    ];
    let rv = t.raw.get_attribute_value(h, data, &mut q);
    assert_eq!(rv, CKR_OK, "length query: {}", rv_name(rv));
    assert_eq!(q[0].len, 10);
    assert_eq!(q[1].len as usize, label.len());
    assert_eq!(q[2].len as usize, std::mem::size_of::<raw::CK_ULONG>());

    // 2. Exact buffers: values returned.
    let mut q = [
        AttrQuery::value(raw::CKA_VALUE, 10),
        AttrQuery::value(raw::CKA_LABEL, label.len()),
    ];
    assert_eq!(t.raw.get_attribute_value(h, data, &mut q), CKR_OK);
    assert_eq!(q[0].value, b"0123456789");
    assert_eq!(q[1].value, label.as_bytes());

    // 3. A larger buffer: the value and its true length.
    let mut q = [AttrQuery::value(raw::CKA_VALUE, 100)];
    assert_eq!(t.raw.get_attribute_value(h, data, &mut q), CKR_OK);
    assert_eq!((q[0].len, &q[0].value[..]), (10, &b"0123456789"[..]));

    // 4. Too small: CKR_BUFFER_TOO_SMALL and CK_UNAVAILABLE_INFORMATION for
    //    that attribute; the others are still processed.
    let mut q = [
        AttrQuery::value(raw::CKA_VALUE, 4),
        AttrQuery::value(raw::CKA_LABEL, 256),
    ];
    let rv = t.raw.get_attribute_value(h, data, &mut q);
    assert_eq!(
        rv,
        raw::CKR_BUFFER_TOO_SMALL,
        "4-byte buffer for a 10-byte value: {}",
        rv_name(rv)
    );
    assert!(
        q[0].unavailable(),
        "too-small attribute's ulValueLen = {:#x}",
        q[0].len
    );
    assert_eq!(
        q[1].value,
        label.as_bytes(),
        "the other attribute is still returned"
    );

    // 5. An attribute the object does not have: CKR_ATTRIBUTE_TYPE_INVALID,
    //    CK_UNAVAILABLE_INFORMATION, and the valid ones still filled in.
    let mut q = [
        AttrQuery::value(raw::CKA_LABEL, 256),
        AttrQuery::value(raw::CKA_MODULUS, 256),
        AttrQuery::value(raw::CKA_VALUE, 64),
    ];
    let rv = t.raw.get_attribute_value(h, data, &mut q);
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_TYPE_INVALID,
        "CKA_MODULUS of a data object: {}",
        rv_name(rv)
    );
    assert!(q[1].unavailable());
    assert_eq!(q[0].value, label.as_bytes());
    assert_eq!(q[2].value, b"0123456789");
    // Same as a length query.
    let mut q = [
        AttrQuery::length(raw::CKA_MODULUS),
        AttrQuery::length(raw::CKA_VALUE),
    ];
    let rv = t.raw.get_attribute_value(h, data, &mut q);
    assert_eq!(rv, raw::CKR_ATTRIBUTE_TYPE_INVALID, "{}", rv_name(rv));
    assert!(q[0].unavailable());
    assert_eq!(q[1].len, 10);

    // 6. A sensitive attribute: CKR_ATTRIBUTE_SENSITIVE, others filled in.
    let key = keys::aes(&session, 16, false);
    let mut q = [
        AttrQuery::value(raw::CKA_VALUE, 64),
        AttrQuery::value(raw::CKA_VALUE_LEN, std::mem::size_of::<raw::CK_ULONG>()),
    ];
    let rv = t.raw.get_attribute_value(h, key, &mut q);
    assert_eq!(rv, raw::CKR_ATTRIBUTE_SENSITIVE, "{}", rv_name(rv));
    assert!(q[0].unavailable());
    assert_eq!(q[1].value, ulong_bytes(16), "CKA_VALUE_LEN still returned");
    let mut q = [AttrQuery::length(raw::CKA_VALUE)];
    let rv = t.raw.get_attribute_value(h, key, &mut q);
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_SENSITIVE,
        "length query of a sensitive value: {}",
        rv_name(rv)
    );
    assert!(q[0].unavailable());

    // 7. A vendor-less unknown attribute type.
    let mut q = [AttrQuery::value(0x0fff_fff0, 16)];
    let rv = t.raw.get_attribute_value(h, data, &mut q);
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_TYPE_INVALID,
        "unknown attribute: {}",
        rv_name(rv)
    );
    assert!(q[0].unavailable());

    // 8. An empty attribute reads as length 0.
    let empty = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Value(Vec::new()),
        ])
        .expect("create with an empty value");
    let mut q = [AttrQuery::length(raw::CKA_VALUE)];
    assert_eq!(t.raw.get_attribute_value(h, empty, &mut q), CKR_OK);
    assert_eq!(q[0].len, 0);
}

#[test]
fn bad_templates_are_refused_with_the_standard_codes() {
    let t = token();
    let session = t.user_session();
    let h = session.handle();
    // No class.
    assert_rv(
        session.create_object(&[Attribute::Token(false), Attribute::Label(b"x".to_vec())]),
        RvError::TemplateIncomplete,
    );
    // A secret key without its value or key type.
    assert_rv(
        session.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
        ]),
        RvError::TemplateIncomplete,
    );
    assert_rv(
        session.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(false),
            Attribute::Value(vec![0; 16]),
        ]),
        RvError::TemplateIncomplete,
    );
    // An RSA public key without its modulus.
    assert_rv(
        session.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::PublicExponent(vec![1, 0, 1]),
        ]),
        RvError::TemplateIncomplete,
    );
    // An unknown class value.
    let (rv, _) = t
        .raw
        .create_object(h, &[(raw::CKA_CLASS, ulong_bytes(0x7777))]);
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_VALUE_INVALID,
        "CKA_CLASS=0x7777: {}",
        rv_name(rv)
    );
    // A CK_BBOOL of the wrong size, and a CK_ULONG of the wrong size.
    let (rv, _) = t.raw.create_object(
        h,
        &[
            (raw::CKA_CLASS, ulong_bytes(raw::CKO_DATA)),
            (raw::CKA_TOKEN, vec![0, 0, 0, 0]),
        ],
    );
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_VALUE_INVALID,
        "4-byte CKA_TOKEN: {}",
        rv_name(rv)
    );
    let (rv, _) = t.raw.create_object(h, &[(raw::CKA_CLASS, vec![0, 0])]);
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_VALUE_INVALID,
        "2-byte CKA_CLASS: {}",
        rv_name(rv)
    );
    // An attribute type that does not exist.
    let (rv, _) = t.raw.create_object(
        h,
        &[
            (raw::CKA_CLASS, ulong_bytes(raw::CKO_DATA)),
            (0x0fff_fff0, vec![1]),
        ],
    );
    assert_eq!(
        rv,
        raw::CKR_ATTRIBUTE_TYPE_INVALID,
        "unknown attribute type: {}",
        rv_name(rv)
    );
    // An attribute the class does not have.
    let rv = rv_of(session.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(false),
        Attribute::Modulus(vec![1, 2, 3]),
    ]));
    assert!(
        matches!(
            rv,
            RvError::AttributeTypeInvalid | RvError::TemplateInconsistent
        ),
        "CKA_MODULUS on a data object: got {rv:?}"
    );
    // Attributes only the token sets.
    let rv = rv_of(session.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(vec![0; 16]),
        Attribute::Local(true),
    ]));
    assert!(
        matches!(
            rv,
            RvError::AttributeReadOnly | RvError::TemplateInconsistent
        ),
        "CKA_LOCAL in C_CreateObject: got {rv:?}"
    );
    // The same attribute twice with different values.
    let rv = rv_of(session.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(false),
        Attribute::Token(true),
    ]));
    assert!(
        matches!(
            rv,
            RvError::TemplateInconsistent | RvError::AttributeValueInvalid
        ),
        "CKA_TOKEN twice: got {rv:?}"
    );
    // A CKA_VALUE_LEN in C_CreateObject of a secret key is not allowed.
    let rv = rv_of(session.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(vec![0; 16]),
        Attribute::ValueLen(16.into()),
    ]));
    assert!(
        matches!(
            rv,
            RvError::TemplateInconsistent | RvError::AttributeReadOnly
        ),
        "CKA_VALUE_LEN in C_CreateObject: got {rv:?}"
    );
}

#[test]
fn objects_are_shared_by_the_sessions_of_the_application() {
    let t = token();
    let a = t.user_session();
    let b = t.ro_session();
    let label = unique_label("shared");
    let session_object = a
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .expect("create");
    assert_eq!(
        by_label(&b, &label),
        vec![session_object],
        "session objects are visible to the other sessions"
    );
    b.destroy_object(session_object)
        .expect("another session destroys it");
    assert!(by_label(&a, &label).is_empty());
}
