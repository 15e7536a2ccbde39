//! More attacks on "keys that never leave" (docs/security.md), written
//! after the policy landed, by an attacker who is the keys' logged-in
//! owner: every derivation the server offers with a non-exportable base
//! (lengths and key types changed), ECDH with chosen peer points, key
//! material changed by `C_SetAttributeValue` / `C_CopyObject`, unwrapping
//! under a non-exportable key as a decryption oracle, raw RSA on an
//! unwrapping key, `C_GetObjectSize` as a side channel, the race of
//! `CKA_SENSITIVE` against copies and wraps in parallel sessions, key
//! material in generation templates, `CKA_ALLOWED_MECHANISMS` against
//! padding oracles, secret parts of unwrapped, copied and derived keys, and
//! a truncated-MAC verification oracle. Two leaked and are fixed (the
//! object size, the CMAC verification); docs/security.md lists them all.
//!
//! Each test runs against the real server through the real module and
//! asserts that the attack fails, or (where the attack is harmless) that
//! the HSM gives exactly what the attacker could compute without it.

// In a module so that `cargo test -p hsmlink-tests -- attacks` selects it.
mod attacks_more {
    use cryptoki::error::Rv;
    use cryptoki::error::{Error, RvError};
    use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    use cryptoki::mechanism::misc::{ExtractParams, KeyDerivationStringData};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
    use cryptoki::session::Session;
    use cryptoki::types::Ulong;
    use hsmlink_tests::raw;
    use hsmlink_tests::verify;
    use hsmlink_tests::{assert_rv, login_user, token, unique_label, Token};
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcPoint, PointConversionForm};
    use openssl::nid::Nid;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const KNOWN: &[u8] = b"a message the attacker knows";

    /// A non-exportable AES-256 session key (`CKA_SENSITIVE`, not
    /// extractable) that may encrypt, decrypt, sign and derive.
    fn sealed_aes(session: &Session) -> ObjectHandle {
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::Label(unique_label("sealed").into_bytes()),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Derive(true),
                    Attribute::Sign(true),
                ],
            )
            .expect("C_GenerateKey(AES-256)")
    }

    /// A secret attribute as the module returns it, or its `CKR_*`.
    fn read(t: &Token, session: &Session, k: ObjectHandle, ty: u64) -> Result<Vec<u8>, u64> {
        let mut q = [raw::AttrQuery::value(ty, 2048)];
        let rv = t.raw.get_attribute_value(session.handle(), k, &mut q);
        if rv == raw::CKR_OK {
            Ok(q[0].value.clone())
        } else {
            Err(rv)
        }
    }

    #[track_caller]
    fn assert_hidden(t: &Token, session: &Session, k: ObjectHandle) {
        assert_eq!(
            read(t, session, k, cryptoki_sys::CKA_VALUE),
            Err(cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE),
            "CKA_VALUE of a non-exportable key"
        );
    }

    fn rv<T>(r: cryptoki::error::Result<T>) -> Option<RvError> {
        match r {
            Err(Error::Pkcs11(rv, _)) => Some(rv),
            Err(e) => panic!("not a PKCS#11 error: {e}"),
            Ok(_) => None,
        }
    }

    fn ulong(session: &Session, k: ObjectHandle, ty: AttributeType) -> u64 {
        match session.get_attributes(k, &[ty]).unwrap().pop() {
            Some(Attribute::ValueLen(v)) => v.into(),
            other => panic!("{ty:?}: {other:?}"),
        }
    }

    /// An attacker's template: a session secret key of type `kt`, `len`
    /// bytes if given, asking to be exportable.
    fn exportable_template(kt: KeyType, len: Option<usize>) -> Vec<Attribute> {
        let mut t = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(kt),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Sign(true),
            Attribute::Encrypt(true),
        ];
        if let Some(l) = len {
            t.push(Attribute::ValueLen(Ulong::from(l as u64)));
        }
        t
    }

    /// [`exportable_template`] as raw pairs for the C ABI.
    fn raw_template(kt: KeyType, len: Option<usize>) -> Vec<(u64, Vec<u8>)> {
        let ul = |v: u64| (v as cryptoki_sys::CK_ULONG).to_ne_bytes().to_vec();
        let mut t = vec![
            (cryptoki_sys::CKA_CLASS, ul(cryptoki_sys::CKO_SECRET_KEY)),
            (cryptoki_sys::CKA_KEY_TYPE, ul(*kt)),
            (cryptoki_sys::CKA_TOKEN, vec![0]),
            (cryptoki_sys::CKA_SENSITIVE, vec![0]),
            (cryptoki_sys::CKA_EXTRACTABLE, vec![1]),
            (cryptoki_sys::CKA_SIGN, vec![1]),
            (cryptoki_sys::CKA_ENCRYPT, vec![1]),
        ];
        if let Some(l) = len {
            t.push((cryptoki_sys::CKA_VALUE_LEN, ul(l as u64)));
        }
        t
    }

    /// The derivation mechanisms the token lists, each tried with a
    /// non-exportable base (AES-256 for the secret-key derivations, P-256
    /// for ECDH) and every template an attacker would use to get the base's
    /// bits out: shorter `CKA_VALUE_LEN`, other key types of fewer bytes,
    /// `CKA_SENSITIVE` false / `CKA_EXTRACTABLE` true. Each either is
    /// refused or makes a key that is non-exportable and no shorter than
    /// the base. A mechanism the token adds later without a case here fails
    /// the test.
    #[test]
    fn every_offered_derivation_with_a_sealed_base() {
        let t = token();
        let session = t.user_session();
        // Through the C ABI: cryptoki drops the mechanisms it has no name for.
        let list = t.raw.mechanism_list(hsmlink_tests::SLOT_ID, Some(256));
        assert_eq!(list.rv, raw::CKR_OK);
        let mut derives: Vec<u64> = list
            .data
            .into_iter()
            .filter(|m| {
                let (r, info) = t.raw.mechanism_info(hsmlink_tests::SLOT_ID, *m);
                assert_eq!(r, raw::CKR_OK);
                info.flags & cryptoki_sys::CKF_DERIVE != 0
            })
            .collect();
        derives.sort_unstable();
        let mut expected = vec![
            cryptoki_sys::CKM_ECDH1_DERIVE,
            cryptoki_sys::CKM_ECDH1_COFACTOR_DERIVE,
            cryptoki_sys::CKM_CONCATENATE_BASE_AND_KEY,
            cryptoki_sys::CKM_CONCATENATE_BASE_AND_DATA,
            cryptoki_sys::CKM_CONCATENATE_DATA_AND_BASE,
            cryptoki_sys::CKM_XOR_BASE_AND_DATA,
            cryptoki_sys::CKM_EXTRACT_KEY_FROM_KEY,
            cryptoki_sys::CKM_AES_ECB_ENCRYPT_DATA,
            cryptoki_sys::CKM_AES_CBC_ENCRYPT_DATA,
        ];
        expected.sort_unstable();
        assert_eq!(
            derives, expected,
            "the derivations offered (each needs its attack here)"
        );

        let base = sealed_aes(&session);
        let other = sealed_aes(&session);
        let exportable = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Extractable(true),
                    Attribute::Derive(true),
                ],
            )
            .unwrap();
        // The lengths and key types an attacker tries: a byte, a short HMAC
        // key, half the base, the whole base, more than the base.
        let shapes: Vec<(KeyType, Option<usize>)> = vec![
            (KeyType::GENERIC_SECRET, Some(1)),
            (KeyType::GENERIC_SECRET, Some(14)),
            (KeyType::SHA256_HMAC, Some(14)),
            (KeyType::AES, Some(16)),
            (KeyType::GENERIC_SECRET, Some(16)),
            (KeyType::AES, Some(32)),
            (KeyType::GENERIC_SECRET, Some(32)),
            (KeyType::GENERIC_SECRET, Some(48)),
            (KeyType::GENERIC_SECRET, None),
        ];
        let zeros = [0u8; 32];
        let data64: Vec<u8> = (0..64u8).collect();
        let sd_zeros = KeyDerivationStringData::new(&zeros);
        let sd_short = KeyDerivationStringData::new(&zeros[..1]);
        let sd_empty = KeyDerivationStringData::new(&[]);
        // The derivations that show the base's bits: always refused with a
        // non-exportable base, and with a non-exportable second key.
        let showing: Vec<Mechanism> = vec![
            Mechanism::ConcatenateBaseAndKey(exportable),
            Mechanism::ConcatenateBaseAndData(sd_zeros),
            Mechanism::ConcatenateBaseAndData(sd_empty),
            Mechanism::ConcatenateDataAndBase(sd_zeros),
            Mechanism::ConcatenateDataAndBase(sd_empty),
            Mechanism::XorBaseAndData(sd_zeros),
            Mechanism::XorBaseAndData(sd_short),
            Mechanism::ExtractKeyFromKey(ExtractParams::new(0)),
            Mechanism::ExtractKeyFromKey(ExtractParams::new(8)),
        ];
        for m in &showing {
            for (kt, len) in &shapes {
                let r = rv(session.derive_key(m, base, &exportable_template(*kt, *len)));
                assert_eq!(
                    r,
                    Some(RvError::KeyFunctionNotPermitted),
                    "{m:?} {kt:?} {len:?} from a non-exportable base"
                );
            }
        }
        for (kt, len) in &shapes {
            assert_eq!(
                rv(session.derive_key(
                    &Mechanism::ConcatenateBaseAndKey(other),
                    exportable,
                    &exportable_template(*kt, *len)
                )),
                Some(RvError::KeyFunctionNotPermitted),
                "BASE_AND_KEY with a non-exportable second key, {kt:?} {len:?}"
            );
        }
        // AES encryption of data: allowed, but never shorter than the base
        // and never exportable, whatever the template asks.
        let iv = [0x11u8; 16];
        let mut made = 0;
        for data in [&data64[..16], &data64[..32], &data64[..]] {
            for ecb in [true, false] {
                for (kt, len) in &shapes {
                    let r = if ecb {
                        let d = cryptoki_sys::CK_KEY_DERIVATION_STRING_DATA {
                            pData: data.as_ptr().cast_mut(),
                            ulLen: data.len() as cryptoki_sys::CK_ULONG,
                        };
                        let (r, h) = t.raw.derive_key(
                            session.handle(),
                            cryptoki_sys::CKM_AES_ECB_ENCRYPT_DATA,
                            Some(&d),
                            base.handle(),
                            &raw_template(*kt, *len),
                        );
                        match Rv::from(r) {
                            Rv::Ok => Ok(raw::object_handle(h)),
                            Rv::Error(e) => Err(e),
                        }
                    } else {
                        let m = Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new(iv, data));
                        session
                            .derive_key(&m, base, &exportable_template(*kt, *len))
                            .map_err(|e| match e {
                                Error::Pkcs11(e, _) => e,
                                e => panic!("{e}"),
                            })
                    };
                    let what = format!("ECB {ecb}, {} bytes of data, {kt:?} {len:?}", data.len());
                    let value_len = len.unwrap_or(data.len());
                    match r {
                        Ok(k) => {
                            made += 1;
                            assert!(
                                value_len >= 32 && value_len <= data.len(),
                                "{what}: a key of {value_len} bytes from a 32-byte sealed base"
                            );
                            assert_eq!(
                                ulong(&session, k, AttributeType::ValueLen),
                                value_len as u64
                            );
                            assert_hidden(&t, &session, k);
                            assert_eq!(
                                session
                                    .get_attributes(
                                        k,
                                        &[AttributeType::Sensitive, AttributeType::Extractable]
                                    )
                                    .unwrap(),
                                vec![Attribute::Sensitive(true), Attribute::Extractable(false)],
                                "{what}"
                            );
                            // Nor can a copy of it be made exportable.
                            assert_rv(
                                session.copy_object(k, &[Attribute::Sensitive(false)]),
                                RvError::AttributeReadOnly,
                            );
                            session.destroy_object(k).unwrap();
                        }
                        Err(e) => {
                            let expected = if value_len > data.len() {
                                RvError::TemplateInconsistent
                            } else if value_len < 32 {
                                RvError::KeySizeRange
                            } else {
                                RvError::AttributeValueInvalid
                            };
                            assert_eq!(e, expected, "{what}");
                        }
                    }
                }
            }
        }
        assert!(made >= 8, "the whole-length derivations are allowed");
        // The base is as hidden as before.
        assert_hidden(&t, &session, base);

        // ECDH with an AES base, or an EC public key as base.
        let point = ec_generator(Nid::X9_62_PRIME256V1);
        let ecdh = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &point));
        assert_rv(
            session.derive_key(
                &ecdh,
                base,
                &exportable_template(KeyType::GENERIC_SECRET, Some(32)),
            ),
            RvError::KeyTypeInconsistent,
        );
    }

    /// The generator of a curve, uncompressed.
    fn ec_generator(nid: Nid) -> Vec<u8> {
        let g = EcGroup::from_curve_name(nid).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        g.generator_opt()
            .unwrap()
            .to_bytes(&g, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap()
    }

    /// r·P on `nid`, uncompressed; P uncompressed.
    fn ec_mul(nid: Nid, p: &[u8], r: &BigNum) -> Vec<u8> {
        let g = EcGroup::from_curve_name(nid).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let p = EcPoint::from_bytes(&g, p, &mut ctx).unwrap();
        let mut out = EcPoint::new(&g).unwrap();
        out.mul2(&g, &p, r, &mut ctx).unwrap();
        out.to_bytes(&g, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .unwrap()
    }

    /// ECDH with a non-exportable P-256 private key d and peer points the
    /// attacker chooses. With a peer point P = r·G whose r the attacker
    /// knows, the secret x(d·P) = x(r·Q) is computable from the public key
    /// Q alone: the HSM tells nothing new, whatever slice of it the
    /// template asks for (CKD_NULL, 1..32 bytes, AES or generic, exportable).
    /// P = G gives x(Q), the public key's own coordinate; P = Q gives
    /// x(d·Q), which reveals d only by solving a discrete logarithm (the
    /// static DH oracle, docs/security.md). A 1-byte or 13-byte key is
    /// refused (short HMAC keys), a key longer than the secret too; a peer
    /// on another curve is refused.
    #[test]
    fn ecdh_with_a_sealed_private_key_gives_only_what_the_peer_knows() {
        let t = token();
        let session = t.user_session();
        let nid = Nid::X9_62_PRIME256V1;
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::EcParams(verify::params_of_curve(nid)),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Derive(true),
                    Attribute::Sign(true),
                ],
            )
            .unwrap();
        let q_der = match session
            .get_attributes(public, &[AttributeType::EcPoint])
            .unwrap()
            .pop()
        {
            Some(Attribute::EcPoint(p)) => p,
            other => panic!("{other:?}"),
        };
        // DER OCTET STRING of the 65-byte point.
        assert_eq!(&q_der[..2], &[0x04, 65]);
        let q = q_der[2..].to_vec();
        let g = ec_generator(nid);
        let derive = |peer: &[u8], kt: KeyType, len: Option<usize>| {
            let m = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), peer));
            session
                .derive_key(&m, private, &exportable_template(kt, len))
                .map(|k| read(&t, &session, k, cryptoki_sys::CKA_VALUE).expect("exportable"))
        };
        let mut r = BigNum::new().unwrap();
        let mut rs = vec![BigNum::from_u32(1).unwrap(), BigNum::from_u32(2).unwrap()];
        for _ in 0..3 {
            let order = {
                let grp = EcGroup::from_curve_name(nid).unwrap();
                let mut o = BigNum::new().unwrap();
                grp.order(&mut o, &mut BigNumContext::new().unwrap())
                    .unwrap();
                o
            };
            order.rand_range(&mut r).unwrap();
            rs.push(r.to_owned().unwrap());
        }
        for r in &rs {
            let p = ec_mul(nid, &g, r);
            // What the attacker computes alone: x(r·Q).
            let rq = ec_mul(nid, &q, r);
            let x = &rq[1..33];
            assert_eq!(derive(&p, KeyType::GENERIC_SECRET, None).unwrap(), x);
            // The cofactor variant (cofactor 1 on every curve offered).
            let params = cryptoki_sys::CK_ECDH1_DERIVE_PARAMS {
                kdf: cryptoki_sys::CKD_NULL,
                ulSharedDataLen: 0,
                pSharedData: std::ptr::null_mut(),
                ulPublicDataLen: p.len() as cryptoki_sys::CK_ULONG,
                pPublicData: p.as_ptr().cast_mut(),
            };
            let (r, h) = t.raw.derive_key(
                session.handle(),
                cryptoki_sys::CKM_ECDH1_COFACTOR_DERIVE,
                Some(&params),
                private.handle(),
                &raw_template(KeyType::GENERIC_SECRET, Some(20)),
            );
            assert_eq!(r, raw::CKR_OK);
            assert_eq!(
                read(&t, &session, raw::object_handle(h), cryptoki_sys::CKA_VALUE).unwrap(),
                x[12..]
            );
            for len in [14usize, 16, 31, 32] {
                assert_eq!(
                    derive(&p, KeyType::GENERIC_SECRET, Some(len)).unwrap(),
                    x[32 - len..],
                    "the last {len} bytes of the secret"
                );
            }
            assert_eq!(derive(&p, KeyType::AES, Some(16)).unwrap(), x[16..]);
            for len in [0usize, 1, 13] {
                assert_eq!(
                    rv(derive(&p, KeyType::GENERIC_SECRET, Some(len))),
                    Some(RvError::AttributeValueInvalid),
                    "{len} bytes"
                );
            }
            assert_eq!(
                rv(derive(&p, KeyType::GENERIC_SECRET, Some(33))),
                Some(RvError::KeySizeRange)
            );
        }
        // P = G: the public key's x coordinate, public anyway.
        assert_eq!(derive(&g, KeyType::GENERIC_SECRET, None).unwrap(), q[1..33]);
        // P = Q: x(d·Q), a value nobody without d has; its bits are not d's
        // (d·Q = d²·G), and the key stays hidden.
        let dq = derive(&q, KeyType::GENERIC_SECRET, None).unwrap();
        assert_eq!(dq.len(), 32);
        assert_ne!(dq, q[1..33]);
        // A peer point of another curve (P-384's generator).
        assert_eq!(
            rv(derive(
                &ec_generator(Nid::SECP384R1),
                KeyType::GENERIC_SECRET,
                None
            )),
            Some(RvError::MechanismParamInvalid)
        );
        // The public key is no base for a derivation.
        assert_rv(
            session.derive_key(
                &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &g)),
                public,
                &exportable_template(KeyType::GENERIC_SECRET, None),
            ),
            RvError::KeyTypeInconsistent,
        );
        assert_eq!(
            read(&t, &session, private, cryptoki_sys::CKA_VALUE),
            Err(cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE)
        );
    }

    /// Key material changed after the fact: `CKA_KEY_TYPE`, `CKA_VALUE_LEN`,
    /// `CKA_VALUE` of a secret key (an HMAC key of 14 bytes cut to one byte
    /// would be tried exhaustively against its MACs), `CKA_EC_PARAMS` of an
    /// EC private key (its scalar used on another curve), `CKA_MODULUS` /
    /// `CKA_PUBLIC_EXPONENT` of an RSA private key (faulty private
    /// operations), by `C_SetAttributeValue` and in `C_CopyObject`
    /// templates. All `CKR_ATTRIBUTE_READ_ONLY`; the keys compute as before.
    #[test]
    fn key_material_never_changes_by_set_or_copy() {
        let t = token();
        let session = t.user_session();
        let hmac_key = session
            .generate_key(
                &Mechanism::GenericSecretKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(14.into()),
                    Attribute::Sensitive(true),
                    Attribute::Sign(true),
                ],
            )
            .unwrap();
        let mac = session
            .sign(&Mechanism::Sha256Hmac, hmac_key, KNOWN)
            .unwrap();
        let aes = sealed_aes(&session);
        let block = [0x5au8; 16];
        let ct = session.encrypt(&Mechanism::AesEcb, aes, &block).unwrap();
        let changes = [
            Attribute::ValueLen(1.into()),
            Attribute::ValueLen(13.into()),
            Attribute::ValueLen(16.into()),
            Attribute::Value(vec![0; 14]),
            Attribute::Value(vec![0; 1]),
            Attribute::KeyType(KeyType::AES),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::KeyType(KeyType::SHA_1_HMAC),
            Attribute::KeyType(KeyType::DES3),
        ];
        for k in [hmac_key, aes] {
            for c in &changes {
                assert_rv(
                    session.update_attributes(k, std::slice::from_ref(c)),
                    RvError::AttributeReadOnly,
                );
                assert_rv(
                    session.copy_object(k, std::slice::from_ref(c)),
                    RvError::AttributeReadOnly,
                );
            }
        }
        assert_eq!(
            session
                .sign(&Mechanism::Sha256Hmac, hmac_key, KNOWN)
                .unwrap(),
            mac
        );
        assert_eq!(ulong(&session, hmac_key, AttributeType::ValueLen), 14);
        let copy = session.copy_object(hmac_key, &[]).unwrap();
        assert_eq!(
            session.sign(&Mechanism::Sha256Hmac, copy, KNOWN).unwrap(),
            mac
        );
        assert_eq!(
            session.encrypt(&Mechanism::AesEcb, aes, &block).unwrap(),
            ct
        );
        assert_hidden(&t, &session, hmac_key);
        assert_hidden(&t, &session, copy);

        // EC: the scalar on another curve.
        let ec = hsmlink_tests::keys::ec(&session, Nid::SECP384R1, &unique_label("ec"));
        for c in [
            Attribute::EcParams(verify::params_of_curve(Nid::X9_62_PRIME256V1)),
            Attribute::EcParams(verify::params_of_curve(Nid::SECP521R1)),
        ] {
            assert_rv(
                session.update_attributes(ec.private, std::slice::from_ref(&c)),
                RvError::AttributeReadOnly,
            );
            assert_rv(
                session.copy_object(ec.private, std::slice::from_ref(&c)),
                RvError::AttributeReadOnly,
            );
        }
        // RSA: the private key with another modulus or exponent.
        let rsa = hsmlink_tests::keys::rsa(&session, 1024, &unique_label("rsa"));
        for c in [
            Attribute::PublicExponent(vec![1]),
            Attribute::PublicExponent(vec![3]),
            Attribute::Modulus(vec![0xff; 128]),
            Attribute::PrivateExponent(vec![1]),
            Attribute::Prime1(vec![3]),
        ] {
            assert_rv(
                session.update_attributes(rsa.private, std::slice::from_ref(&c)),
                RvError::AttributeReadOnly,
            );
            assert_rv(
                session.copy_object(rsa.private, std::slice::from_ref(&c)),
                RvError::AttributeReadOnly,
            );
        }
        let sig = session
            .sign(&Mechanism::RsaPkcs, rsa.private, b"data")
            .unwrap();
        session
            .verify(&Mechanism::RsaPkcs, rsa.public, b"data", &sig)
            .expect("the private key signs as before");
        for ty in [
            cryptoki_sys::CKA_PRIVATE_EXPONENT,
            cryptoki_sys::CKA_PRIME_1,
            cryptoki_sys::CKA_PRIME_2,
            cryptoki_sys::CKA_EXPONENT_1,
            cryptoki_sys::CKA_EXPONENT_2,
            cryptoki_sys::CKA_COEFFICIENT,
        ] {
            assert_eq!(
                read(&t, &session, rsa.private, ty),
                Err(cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE)
            );
        }
    }

    /// `C_GetObjectSize` as a side channel: the parts of an RSA private key
    /// (d, d mod p-1, d mod q-1, q^-1 mod p) are big integers stored without
    /// leading zero bytes, so a size that summed their lengths told whether
    /// the top byte of each was zero (for d, about one key in a hundred).
    /// The size of a non-exportable key depends on public values only: 500
    /// RSA-1024 keys, all the same size (with the old sizes 2 keys in 150
    /// stood out, so the chance that 500 were all equal is about 0.1%);
    /// P-256 keys likewise. A length query of a part answers
    /// `CK_UNAVAILABLE_INFORMATION`, as v2.40 says for sensitive attributes.
    #[test]
    fn object_size_tells_nothing_of_a_private_key() {
        let t = token();
        let session = t.user_session();
        let size = |k: ObjectHandle| {
            let (r, n) = t.raw.object_size(session.handle(), k);
            assert_eq!(r, raw::CKR_OK);
            n
        };
        let label = unique_label("size");
        let mut sizes = std::collections::BTreeMap::new();
        for _ in 0..500 {
            let pair = hsmlink_tests::keys::rsa(&session, 1024, &label);
            *sizes.entry(size(pair.private)).or_insert(0u32) += 1;
            // Nor does a length query tell a part's length.
            let mut q: Vec<raw::AttrQuery> = [
                cryptoki_sys::CKA_PRIVATE_EXPONENT,
                cryptoki_sys::CKA_EXPONENT_1,
                cryptoki_sys::CKA_EXPONENT_2,
                cryptoki_sys::CKA_COEFFICIENT,
            ]
            .into_iter()
            .map(raw::AttrQuery::length)
            .collect();
            assert_eq!(
                t.raw
                    .get_attribute_value(session.handle(), pair.private, &mut q),
                cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE
            );
            assert!(q.iter().all(raw::AttrQuery::unavailable));
            session.destroy_object(pair.private).unwrap();
            session.destroy_object(pair.public).unwrap();
        }
        assert_eq!(sizes.len(), 1, "RSA-1024 private key sizes: {sizes:?}");
        let mut sizes = std::collections::BTreeMap::new();
        for _ in 0..150 {
            let pair = hsmlink_tests::keys::ec(&session, Nid::X9_62_PRIME256V1, &label);
            *sizes.entry(size(pair.private)).or_insert(0u32) += 1;
            session.destroy_object(pair.private).unwrap();
            session.destroy_object(pair.public).unwrap();
        }
        assert_eq!(sizes.len(), 1, "P-256 private key sizes: {sizes:?}");
    }

    /// Unwrapping under a non-exportable key used as a decryption oracle:
    /// the KEK may wrap and unwrap but neither encrypt nor decrypt, so the
    /// attacker cannot forge a blob (Clulow's Trojan key needs C_Encrypt
    /// with the KEK); random blobs (2^-64 chance each for RFC 3394) and
    /// blobs with a flipped bit never unwrap, so "unwrap" gives out no AES
    /// decryption under the KEK; a blob of an exportable key unwraps to
    /// that key (its value was readable anyway); the KEK wraps no
    /// non-exportable key, itself included.
    #[test]
    fn unwrap_under_a_sealed_kek_is_no_decryption_oracle() {
        let t = token();
        let session = t.user_session();
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                    Attribute::Encrypt(false),
                    Attribute::Decrypt(false),
                ],
            )
            .unwrap();
        let block = [0u8; 16];
        for m in [
            Mechanism::AesEcb,
            Mechanism::AesKeyWrap,
            Mechanism::AesKeyWrapPad,
        ] {
            let e = rv(session.encrypt(&m, kek, &block));
            assert!(
                matches!(
                    e,
                    Some(RvError::KeyFunctionNotPermitted | RvError::MechanismInvalid)
                ),
                "C_Encrypt({m:?}) with a KEK that may not encrypt: {e:?}"
            );
            let d = rv(session.decrypt(&m, kek, &[0u8; 32]));
            assert!(
                matches!(
                    d,
                    Some(RvError::KeyFunctionNotPermitted | RvError::MechanismInvalid)
                ),
                "C_Decrypt({m:?}) with a KEK that may not decrypt: {d:?}"
            );
        }
        let template = exportable_template(KeyType::GENERIC_SECRET, None);
        let (rv_rand, random) = t.raw.generate_random(session.handle(), 200 * 40);
        assert_eq!(rv_rand, raw::CKR_OK);
        for (i, blob) in random.chunks(40).enumerate() {
            for m in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
                assert_eq!(
                    rv(session.unwrap_key(&m, kek, blob, &template)),
                    Some(RvError::WrappedKeyInvalid),
                    "random blob {i} under {m:?}"
                );
            }
            // One AES block for KWP: a key of at most 8 bytes, never valid.
            assert!(
                rv(session.unwrap_key(&Mechanism::AesKeyWrapPad, kek, &blob[..16], &template))
                    .is_some(),
                "a one-block blob"
            );
        }
        // A real blob of an exportable key: unwraps to that key; changed in
        // any bit, to nothing.
        let exportable = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let value = read(&t, &session, exportable, cryptoki_sys::CKA_VALUE).unwrap();
        let blob = session
            .wrap_key(&Mechanism::AesKeyWrap, kek, exportable)
            .unwrap();
        let back = session
            .unwrap_key(&Mechanism::AesKeyWrap, kek, &blob, &template)
            .unwrap();
        assert_eq!(
            read(&t, &session, back, cryptoki_sys::CKA_VALUE).unwrap(),
            value
        );
        for bit in (0..blob.len() * 8).step_by(13) {
            let mut b = blob.clone();
            b[bit / 8] ^= 0x80 >> (bit % 8);
            assert_eq!(
                rv(session.unwrap_key(&Mechanism::AesKeyWrap, kek, &b, &template)),
                Some(RvError::WrappedKeyInvalid),
                "bit {bit} flipped"
            );
        }
        for m in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
            assert_rv(session.wrap_key(&m, kek, kek), RvError::KeyUnextractable);
        }
        assert_hidden(&t, &session, kek);
    }

    /// Raw RSA on a non-exportable RSA key that unwraps and decrypts: a
    /// raw decryption (`CKM_RSA_X_509`) of a PKCS#1 blob shows the wrapped
    /// key, which was exportable (only exportable keys are wrapped); a
    /// non-exportable key is wrapped under the public key by no mechanism,
    /// raw RSA included; raw RSA unwrapping is not offered. Bleichenbacher's
    /// padding oracle (C_UnwrapKey's `CKR_WRAPPED_KEY_INVALID`) decrypts
    /// RSA ciphertexts for whoever may unwrap with the key, which unwrapping
    /// itself already does (docs/security.md); it cannot reach a
    /// non-exportable key, which is never under RSA.
    #[test]
    fn raw_rsa_on_a_sealed_unwrapping_key() {
        let t = token();
        let session = t.user_session();
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::ModulusBits(2048.into()),
                    Attribute::Wrap(true),
                    Attribute::Encrypt(true),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Unwrap(true),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
        let exportable = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let value = read(&t, &session, exportable, cryptoki_sys::CKA_VALUE).unwrap();
        let blob = session
            .wrap_key(&Mechanism::RsaPkcs, public, exportable)
            .unwrap();
        let block = session
            .decrypt(&Mechanism::RsaX509, private, &blob)
            .unwrap();
        assert_eq!(
            block[block.len() - 32..],
            value[..],
            "the exportable key, as read"
        );
        let sealed = sealed_aes(&session);
        for m in [
            Mechanism::RsaPkcs,
            Mechanism::RsaX509,
            Mechanism::RsaPkcsOaep(cryptoki::mechanism::rsa::PkcsOaepParams::new(
                cryptoki::mechanism::MechanismType::SHA256,
                cryptoki::mechanism::rsa::PkcsMgfType::MGF1_SHA256,
                cryptoki::mechanism::rsa::PkcsOaepSource::empty(),
            )),
        ] {
            assert_rv(
                session.wrap_key(&m, public, sealed),
                RvError::KeyUnextractable,
            );
        }
        assert_rv(
            session.unwrap_key(
                &Mechanism::RsaX509,
                private,
                &blob,
                &exportable_template(KeyType::GENERIC_SECRET, None),
            ),
            RvError::MechanismInvalid,
        );
        for ty in [
            cryptoki_sys::CKA_PRIVATE_EXPONENT,
            cryptoki_sys::CKA_PRIME_1,
            cryptoki_sys::CKA_COEFFICIENT,
        ] {
            assert_eq!(
                read(&t, &session, private, ty),
                Err(cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE)
            );
        }
    }

    /// The race of `C_SetAttributeValue(CKA_SENSITIVE = true)` against
    /// `C_CopyObject` (template `CKA_EXTRACTABLE` true) and `C_WrapKey` of
    /// the same token key, in three sessions on three threads, 150 rounds:
    /// a copy or wrap made before the change returned may hold the value
    /// (the key was exportable then), but none that started after it did.
    #[test]
    fn sensitive_against_copies_and_wraps_in_parallel_sessions() {
        use std::sync::Barrier;
        const ROUNDS: usize = 150;
        let t = token();
        let setup = t.user_session();
        let label = unique_label("race3");
        let kek = setup
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                ],
            )
            .unwrap();
        let keys: Vec<ObjectHandle> = (0..ROUNDS)
            .map(|_| {
                setup
                    .create_object(&[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(true),
                        Attribute::Label(label.clone().into_bytes()),
                        Attribute::Value(vec![0x42; 32]),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(true),
                    ])
                    .expect("an exportable token key")
            })
            .collect();
        // Rounds whose change has returned (round i: sealed > i).
        let sealed = AtomicUsize::new(0);
        let barrier = Barrier::new(3);
        let late_leaks = AtomicUsize::new(0);
        let (early, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let s = t.rw_session();
                login_user(&s);
                for (i, k) in keys.iter().enumerate() {
                    barrier.wait();
                    s.update_attributes(*k, &[Attribute::Sensitive(true)])
                        .expect("SENSITIVE false -> true");
                    sealed.store(i + 1, Ordering::SeqCst);
                    barrier.wait();
                }
                done.store(true, Ordering::SeqCst);
            });
            for copier in [true, false] {
                let (keys, sealed, barrier) = (&keys, &sealed, &barrier);
                let (late_leaks, early, refused) = (&late_leaks, &early, &refused);
                let t = &t;
                scope.spawn(move || {
                    let s = t.rw_session();
                    login_user(&s);
                    for (i, k) in keys.iter().enumerate() {
                        barrier.wait();
                        // Until one call has started after the change
                        // returned (the setter makes one call a round).
                        let deadline =
                            std::time::Instant::now() + std::time::Duration::from_secs(60);
                        loop {
                            if std::time::Instant::now() >= deadline {
                                // Counted short in `refused` below.
                                break;
                            }
                            let after = sealed.load(Ordering::SeqCst) > i;
                            let leaked = if copier {
                                match s.copy_object(
                                    *k,
                                    &[Attribute::Token(false), Attribute::Extractable(true)],
                                ) {
                                    Ok(c) => {
                                        let r = read(t, &s, c, cryptoki_sys::CKA_VALUE).is_ok();
                                        s.destroy_object(c).unwrap();
                                        r
                                    }
                                    Err(_) => false,
                                }
                            } else {
                                s.wrap_key(&Mechanism::AesKeyWrap, kek, *k).is_ok()
                            };
                            match (after, leaked) {
                                (true, true) => {
                                    late_leaks.fetch_add(1, Ordering::SeqCst);
                                }
                                (false, true) => {
                                    early.fetch_add(1, Ordering::SeqCst);
                                }
                                (true, false) => {
                                    refused.fetch_add(1, Ordering::SeqCst);
                                }
                                (false, false) => {}
                            }
                            if after {
                                break;
                            }
                        }
                        barrier.wait();
                    }
                });
            }
        });
        assert!(done.load(Ordering::SeqCst));
        for k in keys {
            setup.destroy_object(k).unwrap();
        }
        assert_eq!(
            late_leaks.load(Ordering::SeqCst),
            0,
            "a copy or wrap that started after CKA_SENSITIVE was set held the value"
        );
        // The race was run: operations went through before the change and
        // were refused after it.
        assert!(early.load(Ordering::SeqCst) > 0);
        assert_eq!(refused.load(Ordering::SeqCst), 2 * ROUNDS);
    }

    /// A truncated-MAC verification oracle: with `CKM_AES_CMAC_GENERAL` a
    /// tag may be 1 byte long, so `C_Verify` with a 1-byte tag tells the
    /// first byte of the CMAC in at most 256 tries, a 2-byte tag the second,
    /// and so on: 16 × 256 verifications give the whole tag of any message,
    /// and a key that may only verify (`CKA_SIGN` false) signs. It gives an
    /// AES-based function of the key the owner did not allow, which is the
    /// stuff of key-separation attacks. Verifying a CMAC_GENERAL tag shorter
    /// than 8 bytes is refused (`CKR_MECHANISM_PARAM_INVALID`, 2^64 tries
    /// for the first step); signing with it is not (whoever may sign can
    /// compute the tag anyway).
    #[test]
    fn truncated_mac_verification_is_no_signing_oracle() {
        let t = token();
        let session = t.user_session();
        let k = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Sign(false),
                    Attribute::Verify(true),
                    Attribute::Encrypt(false),
                ],
            )
            .unwrap();
        let message = b"pay 1000 to the attacker";
        assert_eq!(
            t.raw
                .sign_init::<()>(session.handle(), cryptoki_sys::CKM_AES_CMAC, None, k),
            cryptoki_sys::CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        // The attack: learn the tag a byte at a time.
        let mut tag: Vec<u8> = Vec::new();
        let mut refused = None;
        'bytes: for len in 1..=16usize {
            let params = len as cryptoki_sys::CK_MAC_GENERAL_PARAMS;
            for b in 0..=255u8 {
                let r = t.raw.verify_init(
                    session.handle(),
                    cryptoki_sys::CKM_AES_CMAC_GENERAL,
                    Some(&params),
                    k,
                );
                if r != raw::CKR_OK {
                    refused = Some((len, r));
                    break 'bytes;
                }
                let mut guess = tag.clone();
                guess.push(b);
                match t.raw.verify(session.handle(), message, &guess) {
                    raw::CKR_OK => {
                        tag = guess;
                        continue 'bytes;
                    }
                    cryptoki_sys::CKR_SIGNATURE_INVALID => {}
                    other => panic!("C_Verify: {}", raw::rv_name(other)),
                }
            }
            panic!("no byte {len} verified");
        }
        let forged = tag.len() == 16
            && t.raw
                .verify_init::<()>(session.handle(), cryptoki_sys::CKM_AES_CMAC, None, k)
                == raw::CKR_OK
            && t.raw.verify(session.handle(), message, &tag) == raw::CKR_OK;
        assert!(!forged, "a CMAC forged with a verify-only key");
        assert_eq!(
            refused,
            Some((1, cryptoki_sys::CKR_MECHANISM_PARAM_INVALID)),
            "the first step (a 1-byte tag) is refused"
        );
        // 8 bytes and more are verified; a signing key still signs short tags.
        for len in [7usize, 8, 16] {
            let params = len as cryptoki_sys::CK_MAC_GENERAL_PARAMS;
            let r = t.raw.verify_init(
                session.handle(),
                cryptoki_sys::CKM_AES_CMAC_GENERAL,
                Some(&params),
                k,
            );
            if len < 8 {
                assert_eq!(r, cryptoki_sys::CKR_MECHANISM_PARAM_INVALID, "{len}");
            } else {
                assert_eq!(r, raw::CKR_OK, "{len}");
                assert_eq!(
                    t.raw.verify(session.handle(), message, &vec![0u8; len]),
                    cryptoki_sys::CKR_SIGNATURE_INVALID
                );
            }
        }
        let signer = sealed_aes(&session);
        let params: cryptoki_sys::CK_MAC_GENERAL_PARAMS = 1;
        assert_eq!(
            t.raw.sign_init(
                session.handle(),
                cryptoki_sys::CKM_AES_CMAC_GENERAL,
                Some(&params),
                signer
            ),
            raw::CKR_OK
        );
        let out = t.raw.sign(session.handle(), message, Some(16));
        assert_eq!((out.rv, out.data.len()), (raw::CKR_OK, 1));
        assert_hidden(&t, &session, k);
    }

    /// Key material given in a generation template: a "generated" key
    /// whose value the caller chose would carry `CKA_LOCAL`,
    /// `CKA_ALWAYS_SENSITIVE` and `CKA_NEVER_EXTRACTABLE` true, the token's
    /// word that nobody ever knew it. `CKA_VALUE` in `C_GenerateKey`, and
    /// `CKA_VALUE` (EC), `CKA_PRIVATE_EXPONENT`, `CKA_PRIME_1`, `CKA_MODULUS`
    /// (RSA) in `C_GenerateKeyPair`, are refused; nothing is made.
    #[test]
    fn generation_templates_carry_no_key_material() {
        let t = token();
        let session = t.user_session();
        let label = unique_label("chosen");
        let chosen = [0x11u8; 32];
        let refused = |r: cryptoki::error::Result<ObjectHandle>| {
            let e = rv(r);
            assert!(
                matches!(
                    e,
                    Some(
                        RvError::TemplateInconsistent
                            | RvError::AttributeReadOnly
                            | RvError::AttributeTypeInvalid
                    )
                ),
                "{e:?}"
            );
        };
        refused(session.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::Label(label.clone().into_bytes()),
                Attribute::ValueLen(32.into()),
                Attribute::Value(chosen.to_vec()),
                Attribute::Sensitive(true),
            ],
        ));
        refused(session.generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(false),
                Attribute::Label(label.clone().into_bytes()),
                Attribute::ValueLen(32.into()),
                Attribute::Value(chosen.to_vec()),
            ],
        ));
        let ec_params = verify::params_of_curve(Nid::X9_62_PRIME256V1);
        refused(
            session
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[
                        Attribute::Token(false),
                        Attribute::EcParams(ec_params.clone()),
                    ],
                    &[
                        Attribute::Token(false),
                        Attribute::Label(label.clone().into_bytes()),
                        Attribute::Value(chosen.to_vec()),
                    ],
                )
                .map(|p| p.1),
        );
        for private_part in [
            Attribute::PrivateExponent(vec![1]),
            Attribute::Prime1(vec![0xff; 64]),
            Attribute::Modulus(vec![0xff; 128]),
        ] {
            refused(
                session
                    .generate_key_pair(
                        &Mechanism::RsaPkcsKeyPairGen,
                        &[Attribute::Token(false), Attribute::ModulusBits(1024.into())],
                        &[
                            Attribute::Token(false),
                            Attribute::Label(label.clone().into_bytes()),
                            private_part,
                        ],
                    )
                    .map(|p| p.1),
            );
        }
        let found = session
            .find_objects(&[Attribute::Label(label.into_bytes())])
            .unwrap();
        assert!(found.is_empty(), "objects made: {found:?}");
    }

    /// `CKA_ALLOWED_MECHANISMS` as a Bleichenbacher defence: an RSA key
    /// restricted to OAEP must not answer PKCS#1 v1.5 unwraps, not even
    /// with a different error for a good and a bad padding (the check of
    /// the mechanism comes before the decryption). Likewise an AES key
    /// restricted to `CKM_AES_KEY_WRAP_PAD` is no RFC 3394 integrity oracle.
    #[test]
    fn allowed_mechanisms_are_checked_before_any_decryption() {
        let t = token();
        let session = t.user_session();
        let oaep = cryptoki::mechanism::rsa::PkcsOaepParams::new(
            cryptoki::mechanism::MechanismType::SHA256,
            cryptoki::mechanism::rsa::PkcsMgfType::MGF1_SHA256,
            cryptoki::mechanism::rsa::PkcsOaepSource::empty(),
        );
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::ModulusBits(2048.into()),
                    Attribute::Wrap(true),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Unwrap(true),
                    Attribute::AllowedMechanisms(vec![
                        cryptoki::mechanism::MechanismType::RSA_PKCS_OAEP,
                    ]),
                ],
            )
            .unwrap();
        let exportable = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let template = exportable_template(KeyType::GENERIC_SECRET, None);
        let good = session
            .wrap_key(&Mechanism::RsaPkcs, public, exportable)
            .unwrap();
        let mut bad = good.clone();
        bad[0] ^= 0x55;
        for blob in [&good, &bad, &vec![0u8; 256]] {
            assert_rv(
                session.unwrap_key(&Mechanism::RsaPkcs, private, blob, &template),
                RvError::MechanismInvalid,
            );
            assert_rv(
                session.unwrap_key(&Mechanism::RsaX509, private, blob, &template),
                RvError::MechanismInvalid,
            );
        }
        // OAEP, the mechanism allowed, works.
        let blob = session
            .wrap_key(&Mechanism::RsaPkcsOaep(oaep), public, exportable)
            .unwrap();
        session
            .unwrap_key(&Mechanism::RsaPkcsOaep(oaep), private, &blob, &template)
            .expect("an OAEP unwrap");

        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                    Attribute::AllowedMechanisms(vec![
                        cryptoki::mechanism::MechanismType::AES_KEY_WRAP_PAD,
                    ]),
                ],
            )
            .unwrap();
        let padded = session
            .wrap_key(&Mechanism::AesKeyWrapPad, kek, exportable)
            .unwrap();
        for blob in [&padded, &vec![0u8; 40]] {
            assert_rv(
                session.unwrap_key(&Mechanism::AesKeyWrap, kek, blob, &template),
                RvError::MechanismInvalid,
            );
        }
    }

    /// The secret parts of keys made from other keys, read and searched
    /// for: an RSA private key unwrapped (PKCS#8 under AES key wrap with
    /// padding) as sensitive, a copy of it, an ECDH-derived key asked to be
    /// sensitive (peer G: its value is x(Q), known). `C_GetAttributeValue`
    /// answers `CKR_ATTRIBUTE_SENSITIVE` for every part; a search with the
    /// right value of a part (known here: the RSA key came from an
    /// exportable one) finds nothing, nor does one by `CKA_CHECK_VALUE`,
    /// which keys here do not have.
    #[test]
    fn secret_parts_of_unwrapped_copied_and_derived_keys_stay_hidden() {
        let t = token();
        let session = t.user_session();
        let label = unique_label("parts");
        let (_, source) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[Attribute::Token(false), Attribute::ModulusBits(1024.into())],
                &[
                    Attribute::Token(false),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let parts = [
            cryptoki_sys::CKA_PRIVATE_EXPONENT,
            cryptoki_sys::CKA_PRIME_1,
            cryptoki_sys::CKA_PRIME_2,
            cryptoki_sys::CKA_EXPONENT_1,
            cryptoki_sys::CKA_EXPONENT_2,
            cryptoki_sys::CKA_COEFFICIENT,
        ];
        let known: Vec<Vec<u8>> = parts
            .iter()
            .map(|ty| read(&t, &session, source, *ty).expect("an exportable key's part"))
            .collect();
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                ],
            )
            .unwrap();
        let blob = session
            .wrap_key(&Mechanism::AesKeyWrapPad, kek, source)
            .unwrap();
        let unwrapped = session
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek,
                &blob,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Token(false),
                    Attribute::Label(label.clone().into_bytes()),
                    Attribute::Sensitive(true),
                    Attribute::Sign(true),
                ],
            )
            .unwrap();
        let copy = session
            .copy_object(unwrapped, &[Attribute::Label(label.clone().into_bytes())])
            .unwrap();
        for k in [unwrapped, copy] {
            for ty in parts {
                assert_eq!(
                    read(&t, &session, k, ty),
                    Err(cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE),
                    "part {ty:#x}"
                );
            }
        }
        for (ty, value) in parts.iter().zip(&known) {
            let template = [
                Attribute::Label(label.clone().into_bytes()),
                match *ty {
                    cryptoki_sys::CKA_PRIVATE_EXPONENT => Attribute::PrivateExponent(value.clone()),
                    cryptoki_sys::CKA_PRIME_1 => Attribute::Prime1(value.clone()),
                    cryptoki_sys::CKA_PRIME_2 => Attribute::Prime2(value.clone()),
                    cryptoki_sys::CKA_EXPONENT_1 => Attribute::Exponent1(value.clone()),
                    cryptoki_sys::CKA_EXPONENT_2 => Attribute::Exponent2(value.clone()),
                    _ => Attribute::Coefficient(value.clone()),
                },
            ];
            assert_eq!(
                session.find_objects(&template).unwrap(),
                vec![],
                "a search by the right part {ty:#x}"
            );
        }
        assert_eq!(
            session
                .find_objects(&[Attribute::Label(label.clone().into_bytes())])
                .unwrap()
                .len(),
            2
        );
        // ECDH-derived, asked sensitive.
        let (ec_public, ec_private) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::EcParams(verify::params_of_curve(Nid::X9_62_PRIME256V1)),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Derive(true),
                ],
            )
            .unwrap();
        let g = ec_generator(Nid::X9_62_PRIME256V1);
        let mut template = exportable_template(KeyType::GENERIC_SECRET, Some(32));
        template.retain(|a| !matches!(a, Attribute::Sensitive(_) | Attribute::Extractable(_)));
        template.push(Attribute::Sensitive(true));
        let d = session
            .derive_key(
                &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &g)),
                ec_private,
                &template,
            )
            .expect("ECDH into a sensitive key");
        assert_hidden(&t, &session, d);
        let d_copy = session.copy_object(d, &[]).unwrap();
        assert_hidden(&t, &session, d_copy);
        // Its value is x(Q), public: a search by it must still not find it.
        let q = match session
            .get_attributes(ec_public, &[AttributeType::EcPoint])
            .unwrap()
            .pop()
        {
            Some(Attribute::EcPoint(p)) => p,
            other => panic!("{other:?}"),
        };
        let x = q[3..35].to_vec();
        assert_eq!(
            session
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                .unwrap()
                .iter()
                .filter(|h| [d, d_copy].contains(h))
                .count(),
            2
        );
        assert_eq!(
            session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Value(x),
                ])
                .unwrap(),
            vec![],
            "a search by the sensitive ECDH key's (public) value"
        );
        // CKA_CHECK_VALUE: not an attribute of keys here; no search by it.
        let aes = sealed_aes(&session);
        let mut q = [raw::AttrQuery::value(cryptoki_sys::CKA_CHECK_VALUE, 16)];
        assert_eq!(
            t.raw.get_attribute_value(session.handle(), aes, &mut q),
            cryptoki_sys::CKR_ATTRIBUTE_TYPE_INVALID
        );
        assert_eq!(
            session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::CheckValue(vec![0, 0, 0]),
                ])
                .unwrap(),
            vec![]
        );
    }
}
