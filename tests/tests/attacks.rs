//! The published PKCS#11 API attacks, run as a logged-in attacker would run
//! them against the real server through the real module, one test per
//! attack. Each test carries the attack out in full and asserts that it
//! fails and that the non-exportable key stays unrecoverable.
//!
//! - The four leaks of issue 13 (truncating derivations, the `CKA_DERIVE`
//!   default, the concurrent relabel that undid `CKA_SENSITIVE`).
//! - J. Clulow, "On the Security of PKCS #11", CHES 2003: key separation
//!   (wrap/decrypt), the Trojan wrapped key (encrypt/unwrap), the Trojan
//!   public key, the weaker-key wrap, raw RSA wrapping with a small exponent.
//! - M. Bortolozzo, M. Centenaro, R. Focardi, G. Steel, "Attacking and
//!   Fixing PKCS#11 Security Tokens", CCS 2010: wrap/decrypt, sensitive key
//!   via unwrap, re-import with changed attributes, set/unset of conflicting
//!   usages, key conflict via copy, derive-based leaks.
//! - Attacks not in either paper: derived keys inheriting exportability,
//!   ECDH with points off the curve, `C_DigestKey` of a sensitive key, a
//!   search by secret value, `CKA_ALLOWED_MECHANISMS` widening, session
//!   copies, forged history flags, short HMAC keys.
//!
//! `docs/security.md` names each attack and the test that covers it.

mod hsm_service;

// In a module so that every test's path has "attacks" in it:
// `cargo test -p hsmlink-tests -- attacks` selects exactly this suite.
mod attacks {
    use cryptoki::error::{Error, RvError};
    use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    use cryptoki::mechanism::misc::{ExtractParams, KeyDerivationStringData};
    use cryptoki::mechanism::{Mechanism, MechanismType};
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
    use cryptoki::session::Session;
    use cryptoki::types::Ulong;
    use hsmlink_tests::raw;
    use hsmlink_tests::verify;
    use hsmlink_tests::{assert_rv, login_user, token, unique_label, Token};
    use openssl::hash::MessageDigest;
    use openssl::symm::Cipher;

    const KNOWN: &[u8] = b"a message the attacker knows";

    /// The victim: an AES-256 session key that has never left the HSM
    /// (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, so `ALWAYS_SENSITIVE` and
    /// `NEVER_EXTRACTABLE`), usable for every operation an owner might allow,
    /// derivation included.
    fn victim(session: &Session, token_object: bool) -> ObjectHandle {
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(token_object),
                    Attribute::Label(unique_label("victim").into_bytes()),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Derive(true),
                    Attribute::Sign(true),
                ],
            )
            .expect("C_GenerateKey(victim AES-256)")
    }

    /// `CKA_VALUE` as the module returns it, or the `CKR_*` it refuses with.
    fn read_value(t: &Token, session: &Session, k: ObjectHandle) -> Result<Vec<u8>, u64> {
        let mut q = [raw::AttrQuery::value(cryptoki_sys::CKA_VALUE, 1024)];
        let rv = t.raw.get_attribute_value(session.handle(), k, &mut q);
        if rv == raw::CKR_OK {
            Ok(q[0].value.clone())
        } else {
            Err(rv)
        }
    }

    /// Asserts the key's value cannot be read.
    #[track_caller]
    fn assert_hidden(t: &Token, session: &Session, k: ObjectHandle) {
        assert_eq!(
            read_value(t, session, k),
            Err(cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE),
            "CKA_VALUE of a non-exportable key"
        );
    }

    /// Whether `candidate` is the victim's value: AES-256-ECB of a block with
    /// it equals the HSM's.
    fn is_victim_value(session: &Session, victim: ObjectHandle, candidate: &[u8]) -> bool {
        let block = [0x5au8; 16];
        let theirs = session
            .encrypt(&Mechanism::AesEcb, victim, &block)
            .expect("C_Encrypt(AES-ECB) with the victim");
        candidate.len() == 32
            && verify::aes_encrypt(Cipher::aes_256_ecb(), candidate, None, false, &block) == theirs
    }

    fn rv_of<T>(r: cryptoki::error::Result<T>) -> Option<RvError> {
        match r {
            Err(Error::Pkcs11(rv, _)) => Some(rv),
            Err(e) => panic!("not a PKCS#11 error: {e}"),
            Ok(_) => None,
        }
    }

    /// How an attack that goes byte by byte ended.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        /// The HSM refused a step with this code; the bytes learnt before.
        Refused(RvError, usize),
        /// Every byte was learnt and the key matches the HSM's.
        Recovered,
        /// Every step ran but the guesses were not the key.
        Wrong,
    }

    /// The byte-by-byte oracle attack of issue 13: at step `j` (`known` =
    /// the victim's first `j` bytes as learnt so far) `derive` makes a
    /// generic secret whose value is `value(known, b)` for the one unknown byte
    /// `b`; an HMAC of a known message with it, tried offline against the 256
    /// candidates, gives `b`.
    fn byte_by_byte(
        session: &Session,
        victim: ObjectHandle,
        derive: impl Fn(&[u8]) -> cryptoki::error::Result<ObjectHandle>,
        value: impl Fn(&[u8], u8) -> Vec<u8>,
    ) -> Outcome {
        let mut known = Vec::new();
        for _ in 0..32 {
            let k = match derive(&known) {
                Ok(k) => k,
                Err(Error::Pkcs11(rv, _)) => return Outcome::Refused(rv, known.len()),
                Err(e) => panic!("{e}"),
            };
            let mac = match session.sign(&Mechanism::Sha256Hmac, k, KNOWN) {
                Ok(m) => m,
                Err(Error::Pkcs11(rv, _)) => return Outcome::Refused(rv, known.len()),
                Err(e) => panic!("{e}"),
            };
            let _ = session.destroy_object(k);
            let Some(b) = (0..=255u8)
                .find(|b| verify::hmac(MessageDigest::sha256(), &value(&known, *b), KNOWN) == mac)
            else {
                return Outcome::Wrong;
            };
            known.push(b);
        }
        if is_victim_value(session, victim, &known) {
            Outcome::Recovered
        } else {
            Outcome::Wrong
        }
    }

    /// The template of the attacker's derived HMAC keys.
    fn hmac_template(len: usize) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::ValueLen(Ulong::from(len as u64)),
            Attribute::Sign(true),
        ]
    }

    // ----- the leaks of issue 13 ---------------------------------------------------------

    /// Issue 13, leak 1: `CKM_EXTRACT_KEY_FROM_KEY` at bit offset 8·i with
    /// `CKA_VALUE_LEN` = 1 makes a 1-byte key holding byte i of the victim.
    #[test]
    fn issue13_extract_key_from_key_one_byte_at_a_time() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let outcome = byte_by_byte(
            &session,
            v,
            |known| {
                session.derive_key(
                    &Mechanism::ExtractKeyFromKey(ExtractParams::new(8 * known.len())),
                    v,
                    &hmac_template(1),
                )
            },
            |_, b| vec![b],
        );
        assert_eq!(
            outcome,
            Outcome::Refused(RvError::KeyFunctionNotPermitted, 0)
        );
        // Nor any window of the key, however long.
        for len in [14usize, 16, 31, 32, 64] {
            assert_rv(
                session.derive_key(
                    &Mechanism::ExtractKeyFromKey(ExtractParams::new(0)),
                    v,
                    &hmac_template(len),
                ),
                RvError::KeyFunctionNotPermitted,
            );
        }
        assert_hidden(&t, &session, v);
    }

    /// Issue 13, leak 2: `CKM_CONCATENATE_DATA_AND_BASE` with known data and
    /// `CKA_VALUE_LEN` cutting the result one byte into the victim; the known
    /// prefix grows by one byte per step.
    #[test]
    fn issue13_concatenate_data_and_base_truncated() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        // 13 known bytes before the victim: every derived key is 14 bytes or
        // more, the minimum length of a generic secret.
        let data = |known: &[u8]| vec![0xa5u8; 13usize.saturating_sub(known.len())];
        let outcome = byte_by_byte(
            &session,
            v,
            |known| {
                let d = data(known);
                let len = d.len() + known.len() + 1;
                session.derive_key(
                    &Mechanism::ConcatenateDataAndBase(KeyDerivationStringData::new(&d)),
                    v,
                    &hmac_template(len),
                )
            },
            |known, b| {
                let mut x = data(known);
                x.extend_from_slice(known);
                x.push(b);
                x
            },
        );
        assert_eq!(
            outcome,
            Outcome::Refused(RvError::KeyFunctionNotPermitted, 0)
        );
        // The other concatenations from a non-exportable key, whole or cut.
        let d = [0x11u8; 16];
        for mech in [
            Mechanism::ConcatenateBaseAndData(KeyDerivationStringData::new(&d)),
            Mechanism::ConcatenateDataAndBase(KeyDerivationStringData::new(&d)),
        ] {
            for template in [hmac_template(14), hmac_template(48), hmac_template(47)] {
                assert_rv(
                    session.derive_key(&mech, v, &template),
                    RvError::KeyFunctionNotPermitted,
                );
            }
        }
        assert_hidden(&t, &session, v);
    }

    /// Issue 13, leak 2: `CKM_CONCATENATE_BASE_AND_KEY` with an exportable base
    /// the attacker knows and the victim second, cut one byte into the victim.
    #[test]
    fn issue13_concatenate_base_and_key_with_the_victim_second() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let known_base: Vec<u8> = (1..=14).collect();
        let base = session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Value(known_base.clone()),
                Attribute::Derive(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ])
            .expect("an exportable base key");
        let outcome = byte_by_byte(
            &session,
            v,
            |known| {
                session.derive_key(
                    &Mechanism::ConcatenateBaseAndKey(v),
                    base,
                    &hmac_template(known_base.len() + known.len() + 1),
                )
            },
            |known, b| {
                let mut x = known_base.clone();
                x.extend_from_slice(known);
                x.push(b);
                x
            },
        );
        assert_eq!(
            outcome,
            Outcome::Refused(RvError::KeyFunctionNotPermitted, 0)
        );
        assert_hidden(&t, &session, v);
    }

    /// Issue 13, leak 2: `CKM_XOR_BASE_AND_DATA` with data shorter than the
    /// key: the result is as long as the data.
    #[test]
    fn issue13_xor_base_and_short_data() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let outcome = byte_by_byte(
            &session,
            v,
            |known| {
                let d = vec![0u8; known.len() + 1];
                let mut template = hmac_template(0);
                template.retain(|a| !matches!(a, Attribute::ValueLen(_)));
                session.derive_key(
                    &Mechanism::XorBaseAndData(KeyDerivationStringData::new(&d)),
                    v,
                    &template,
                )
            },
            |known, b| {
                let mut x = known.to_vec();
                x.push(b);
                x
            },
        );
        assert_eq!(
            outcome,
            Outcome::Refused(RvError::KeyFunctionNotPermitted, 0)
        );
        // Not with data as long as the key either: the result would be a key
        // related to the victim by a chosen difference.
        let d = [0u8; 32];
        assert_rv(
            session.derive_key(
                &Mechanism::XorBaseAndData(KeyDerivationStringData::new(&d)),
                v,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Decrypt(true),
                ],
            ),
            RvError::KeyFunctionNotPermitted,
        );
        assert_hidden(&t, &session, v);
    }

    /// Issue 13, leak 3: `CKA_DERIVE` defaults to false (v2.40, common key
    /// attributes) for every key made without it, and a non-exportable key
    /// whose owner turned it off cannot have it turned on again.
    #[test]
    fn issue13_derive_is_off_by_default_and_stays_off() {
        let t = token();
        let session = t.user_session();
        let derive = |k: ObjectHandle| {
            session
                .get_attributes(k, &[AttributeType::Derive])
                .expect("CKA_DERIVE")
        };
        let aes = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                ],
            )
            .unwrap();
        let hmac = session
            .generate_key(
                &Mechanism::GenericSecretKeyGen,
                &[Attribute::Token(false), Attribute::ValueLen(32.into())],
            )
            .unwrap();
        let imported = hsmlink_tests::keys::import_aes(&session, &[7; 16]);
        let pair = hsmlink_tests::keys::ec(&session, openssl::nid::Nid::X9_62_PRIME256V1, "derive");
        for k in [aes, hmac, imported, pair.private, pair.public] {
            assert_eq!(derive(k), vec![Attribute::Derive(false)]);
        }
        // Without CKA_DERIVE, no derivation at all.
        let d = [0u8; 32];
        assert_rv(
            session.derive_key(
                &Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new([0; 16], &d)),
                aes,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Token(false),
                ],
            ),
            RvError::KeyFunctionNotPermitted,
        );
        // The owner of a non-exportable key may not turn it (back) on.
        assert_rv(
            session.update_attributes(aes, &[Attribute::Derive(true)]),
            RvError::AttributeReadOnly,
        );
        let v = victim(&session, false);
        session
            .update_attributes(v, &[Attribute::Derive(false)])
            .expect("narrowing is allowed");
        assert_rv(
            session.update_attributes(v, &[Attribute::Derive(true)]),
            RvError::AttributeReadOnly,
        );
        assert_eq!(derive(v), vec![Attribute::Derive(false)]);
        // An exportable key may change as its owner likes: it hides nothing.
        session
            .update_attributes(imported, &[Attribute::Derive(true)])
            .expect("an exportable key's CKA_DERIVE");
        assert_eq!(derive(imported), vec![Attribute::Derive(true)]);
    }

    /// Issue 13, leak 4: two sessions of one user; one sets `CKA_SENSITIVE`
    /// while the other relabels the same object. Every `CKR_OK` must stick: the
    /// key ends sensitive and its value unreadable, in every round.
    #[test]
    fn issue13_concurrent_relabel_never_undoes_sensitive() {
        use std::sync::Barrier;
        const ROUNDS: usize = 400;
        let t = token();
        let setup = t.user_session();
        let label = unique_label("race");
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
        let barrier = Barrier::new(2);
        std::thread::scope(|scope| {
            let sensitive = scope.spawn(|| {
                let s = t.rw_session();
                login_user(&s);
                for k in &keys {
                    barrier.wait();
                    s.update_attributes(*k, &[Attribute::Sensitive(true)])
                        .expect("C_SetAttributeValue(CKA_SENSITIVE = TRUE)");
                }
            });
            let relabel = scope.spawn(|| {
                let s = t.rw_session();
                login_user(&s);
                for (i, k) in keys.iter().enumerate() {
                    barrier.wait();
                    // A few relabels per round, to overlap the other change.
                    for n in (0..3).rev() {
                        s.update_attributes(
                            *k,
                            &[Attribute::Label(format!("{label}-{i}-{n}").into_bytes())],
                        )
                        .expect("C_SetAttributeValue(CKA_LABEL)");
                    }
                }
            });
            sensitive.join().expect("the sensitive thread");
            relabel.join().expect("the relabel thread");
        });
        let mut reverted = 0;
        for (i, k) in keys.iter().enumerate() {
            let attrs = setup
                .get_attributes(*k, &[AttributeType::Sensitive, AttributeType::Label])
                .unwrap();
            if attrs[0] != Attribute::Sensitive(true) || read_value(&t, &setup, *k).is_ok() {
                reverted += 1;
            }
            // Both changes landed.
            assert_eq!(
                attrs[1],
                Attribute::Label(format!("{label}-{i}-0").into_bytes()),
                "round {i}: the relabel was lost"
            );
        }
        assert_eq!(
            reverted, 0,
            "CKA_SENSITIVE undone in {reverted} of {ROUNDS} rounds"
        );
        for k in keys {
            setup.destroy_object(k).unwrap();
        }
    }

    /// The same race across a fleet: two `serve` processes on one
    /// PostgreSQL database, one session on each (the module spreads
    /// sessions over `HSMLINK_ADDR` round robin). The compare-and-swap is
    /// the database's conditional UPDATE.
    #[test]
    fn issue13_fleet_relabel_never_undoes_sensitive() {
        use super::hsm_service::{add_user, serve, Secrets};
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        use std::sync::Barrier;
        const ROUNDS: usize = 150;
        let t = token();
        let pg = hsmlink_tests::pg::Postgres::start();
        let url = pg.url();
        // The database is reached over TLS only, its certificate checked.
        let ca = pg.ca().to_str().expect("a UTF-8 path").to_owned();
        let store = ["--postgres", &url, "--postgres-ca", &ca];
        let secrets = Secrets::new();
        add_user(&store, "alice", "alice-pw");
        let (da, db) = (
            hsmlink_tests::TempDir::new("race-a"),
            hsmlink_tests::TempDir::new("race-b"),
        );
        let a = serve(da.path(), &secrets, &store);
        let b = serve(db.path(), &secrets, &store);
        t.reinitialize(&[
            ("HSMLINK_ADDR", Some(&format!("{},{}", a.addr(), b.addr()))),
            ("HSMLINK_USER", Some("alice")),
        ])
        .expect("C_Initialize with both servers");
        let login =
            |s: &Session| match s.login(UserType::User, Some(&AuthPin::new("alice-pw".into()))) {
                Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => panic!("C_Login: {e}"),
            };
        let setup = t.rw_session();
        login(&setup);
        let keys: Vec<ObjectHandle> = (0..ROUNDS)
            .map(|_| {
                setup
                    .create_object(&[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(true),
                        Attribute::Value(vec![0x43; 32]),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(true),
                    ])
                    .expect("an exportable token key")
            })
            .collect();
        let barrier = Barrier::new(2);
        std::thread::scope(|scope| {
            let sensitive = scope.spawn(|| {
                let s = t.rw_session();
                login(&s);
                for k in &keys {
                    barrier.wait();
                    s.update_attributes(*k, &[Attribute::Sensitive(true)])
                        .expect("C_SetAttributeValue(CKA_SENSITIVE = TRUE)");
                }
            });
            let relabel = scope.spawn(|| {
                let s = t.rw_session();
                login(&s);
                for (i, k) in keys.iter().enumerate() {
                    barrier.wait();
                    for n in (0..3).rev() {
                        s.update_attributes(
                            *k,
                            &[Attribute::Label(format!("fleet-{i}-{n}").into_bytes())],
                        )
                        .expect("C_SetAttributeValue(CKA_LABEL)");
                    }
                }
            });
            sensitive.join().expect("the sensitive thread");
            relabel.join().expect("the relabel thread");
        });
        // Both servers served the race.
        for (name, server) in [("A", &a), ("B", &b)] {
            assert!(
                server.stderr().matches("event=login ").count() >= 1,
                "server {name} served no session"
            );
        }
        let mut reverted = 0;
        for (i, k) in keys.iter().enumerate() {
            let attrs = setup
                .get_attributes(*k, &[AttributeType::Sensitive, AttributeType::Label])
                .unwrap();
            if attrs[0] != Attribute::Sensitive(true) || read_value(&t, &setup, *k).is_ok() {
                reverted += 1;
            }
            assert_eq!(
                attrs[1],
                Attribute::Label(format!("fleet-{i}-0").into_bytes()),
                "round {i}: the relabel was lost"
            );
        }
        assert_eq!(
            reverted, 0,
            "CKA_SENSITIVE undone in {reverted} of {ROUNDS} rounds"
        );
        drop(setup);
        t.reinitialize(&[]).expect("C_Initialize with the defaults");
    }

    // ----- Clulow, CHES 2003 --------------------------------------------------------------

    /// Clulow §2.1 (key separation): a key that may both wrap and decrypt wraps
    /// the victim, then decrypts the blob. Under the profile a non-exportable
    /// key is never wrapped, whatever the wrapping key may do.
    #[test]
    fn clulow_wrap_then_decrypt() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let w = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
        for mech in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
            assert_rv(session.wrap_key(&mech, w, v), RvError::KeyUnextractable);
        }
        // Extractable but sensitive (wrappable in plain v2.40): still not.
        let sensitive_extractable = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        assert_rv(
            session.wrap_key(&Mechanism::AesKeyWrap, w, sensitive_extractable),
            RvError::KeyUnextractable,
        );
        assert_hidden(&t, &session, v);
        assert_hidden(&t, &session, sensitive_extractable);
    }

    /// RFC 3394 key wrap computed with an AES-ECB encryption oracle.
    fn kw_wrap_with(encrypt: impl Fn(&[u8; 16]) -> Vec<u8>, plain: &[u8]) -> Vec<u8> {
        let n = plain.len() / 8;
        let mut a = [0xa6u8; 8];
        let mut r: Vec<[u8; 8]> = plain.chunks(8).map(|c| c.try_into().unwrap()).collect();
        for j in 0..6 {
            for (i, ri) in r.iter_mut().enumerate() {
                let mut block = [0u8; 16];
                block[..8].copy_from_slice(&a);
                block[8..].copy_from_slice(ri);
                let b = encrypt(&block);
                let t = ((n * j) + i + 1) as u64;
                a.copy_from_slice(&b[..8]);
                for (x, y) in a.iter_mut().zip(t.to_be_bytes()) {
                    *x ^= y;
                }
                ri.copy_from_slice(&b[8..16]);
            }
        }
        let mut out = a.to_vec();
        for ri in r {
            out.extend_from_slice(&ri);
        }
        out
    }

    /// Clulow §2.3 (Trojan wrapped key): with a key that may encrypt and
    /// unwrap, the attacker wraps a key of their own choosing (AES key wrap
    /// built from ECB encryptions), unwraps it as a "secure" key, and wraps the
    /// victim with it. The Trojan key says it has been outside the token, and
    /// it cannot wrap the victim.
    #[test]
    fn clulow_trojan_wrapped_key() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let u = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Encrypt(true),
                    Attribute::Unwrap(true),
                ],
            )
            .unwrap();
        let trojan_value = [0x77u8; 32];
        let blob = kw_wrap_with(
            |block| session.encrypt(&Mechanism::AesEcb, u, block).unwrap(),
            &trojan_value,
        );
        let trojan = session
            .unwrap_key(
                &Mechanism::AesKeyWrap,
                u,
                &blob,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Wrap(true),
                    Attribute::Encrypt(true),
                ],
            )
            .expect("the forged blob unwraps (encrypt/unwrap is shown harmless, not refused)");
        // The token does not vouch for it.
        assert_eq!(
            session
                .get_attributes(
                    trojan,
                    &[
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable
                    ]
                )
                .unwrap(),
            vec![
                Attribute::AlwaysSensitive(false),
                Attribute::NeverExtractable(false)
            ]
        );
        let block = [3u8; 16];
        assert_eq!(
            session.encrypt(&Mechanism::AesEcb, trojan, &block).unwrap(),
            verify::aes_encrypt(Cipher::aes_256_ecb(), &trojan_value, None, false, &block),
            "the attacker knows the Trojan key"
        );
        for mech in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
            assert_rv(
                session.wrap_key(&mech, trojan, v),
                RvError::KeyUnextractable,
            );
        }
        assert_hidden(&t, &session, v);
    }

    /// Clulow §2.4 (Trojan public key): the attacker imports an RSA public key
    /// whose private half they hold and wraps the victim under it.
    #[test]
    fn clulow_trojan_public_key() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let trojan = session
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Modulus(rsa.n().to_vec()),
                Attribute::PublicExponent(rsa.e().to_vec()),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
            ])
            .unwrap();
        let oaep = cryptoki::mechanism::rsa::PkcsOaepParams::new(
            MechanismType::SHA1,
            cryptoki::mechanism::rsa::PkcsMgfType::MGF1_SHA1,
            cryptoki::mechanism::rsa::PkcsOaepSource::empty(),
        );
        for mech in [Mechanism::RsaPkcs, Mechanism::RsaPkcsOaep(oaep)] {
            assert_rv(
                session.wrap_key(&mech, trojan, v),
                RvError::KeyUnextractable,
            );
        }
        assert_hidden(&t, &session, v);
    }

    /// Clulow §2.2 (reduced key space): wrap a strong key under a weak one
    /// (AES-128, a 512-bit RSA key) and break the weak one offline.
    #[test]
    fn clulow_weaker_key_wrap() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let weak_aes = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(16.into()),
                    Attribute::Wrap(true),
                ],
            )
            .unwrap();
        assert_rv(
            session.wrap_key(&Mechanism::AesKeyWrap, weak_aes, v),
            RvError::KeyUnextractable,
        );
        let rsa = openssl::rsa::Rsa::generate(512).unwrap();
        let weak_rsa = session
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Modulus(rsa.n().to_vec()),
                Attribute::PublicExponent(rsa.e().to_vec()),
                Attribute::Wrap(true),
            ])
            .unwrap();
        assert_rv(
            session.wrap_key(&Mechanism::RsaPkcs, weak_rsa, v),
            RvError::KeyUnextractable,
        );
        assert_hidden(&t, &session, v);
    }

    /// Clulow §2.5 (small public exponent, no padding): raw RSA
    /// (`CKM_RSA_X_509`) wrapping with e = 3 gives k³ mod n = k³ for a short k,
    /// and a cube root gives k. Raw RSA wraps nothing, not even an exportable
    /// key.
    #[test]
    fn clulow_raw_rsa_wrap_with_small_exponent() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let e3 = openssl::bn::BigNum::from_u32(3).unwrap();
        let rsa = openssl::rsa::Rsa::generate_with_e(2048, &e3).unwrap();
        let trojan = session
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Modulus(rsa.n().to_vec()),
                Attribute::PublicExponent(rsa.e().to_vec()),
                Attribute::Wrap(true),
            ])
            .unwrap();
        let exportable = hsmlink_tests::keys::import_aes(&session, &[9; 16]);
        for k in [v, exportable] {
            let rv = rv_of(session.wrap_key(&Mechanism::RsaX509, trojan, k));
            assert!(
                matches!(
                    rv,
                    Some(RvError::MechanismInvalid | RvError::KeyUnextractable)
                ),
                "raw RSA wrap: {rv:?}"
            );
        }
        assert_hidden(&t, &session, v);
    }

    // ----- Bortolozzo, Centenaro, Focardi, Steel, CCS 2010 --------------------------------------

    /// CCS 2010 "sensitive key via unwrap": wrap the sensitive key, unwrap the
    /// blob with `CKA_SENSITIVE` false, read it.
    #[test]
    fn ccs2010_sensitive_key_via_unwrap() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                ],
            )
            .unwrap();
        assert_rv(
            session.wrap_key(&Mechanism::AesKeyWrap, kek, v),
            RvError::KeyUnextractable,
        );
        assert_hidden(&t, &session, v);
    }

    /// CCS 2010 "re-import": wrap a key once while it is exportable, unwrap
    /// the blob twice with conflicting roles (one copy wraps, one decrypts), and
    /// use the pair as a wrap/decrypt key. The copies are honest about their
    /// history and cannot wrap the victim.
    #[test]
    fn ccs2010_reimport_with_conflicting_attributes() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                ],
            )
            .unwrap();
        let w = hsmlink_tests::keys::import_aes(&session, &[0x31; 32]);
        let blob = session.wrap_key(&Mechanism::AesKeyWrap, kek, w).unwrap();
        let template = |wrap: bool| {
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Wrap(wrap),
                Attribute::Decrypt(!wrap),
            ]
        };
        let wrapper = session
            .unwrap_key(&Mechanism::AesKeyWrap, kek, &blob, &template(true))
            .unwrap();
        let decrypter = session
            .unwrap_key(&Mechanism::AesKeyWrap, kek, &blob, &template(false))
            .unwrap();
        assert_rv(
            session.wrap_key(&Mechanism::AesKeyWrap, wrapper, v),
            RvError::KeyUnextractable,
        );
        for k in [wrapper, decrypter] {
            assert_eq!(
                session
                    .get_attributes(k, &[AttributeType::AlwaysSensitive])
                    .unwrap(),
                vec![Attribute::AlwaysSensitive(false)]
            );
        }
        assert_hidden(&t, &session, v);
    }

    /// CCS 2010 "set/unset": turn on a conflicting usage of a non-exportable
    /// key with `C_SetAttributeValue` (a KEK that may only unwrap made to
    /// decrypt too: with AES-ECB decryption the attacker runs the key unwrap
    /// of any blob by hand). Usages of a non-exportable key only narrow.
    #[test]
    fn ccs2010_set_a_conflicting_usage() {
        let t = token();
        let session = t.user_session();
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Unwrap(true),
                    Attribute::Wrap(false),
                    Attribute::Decrypt(false),
                    Attribute::Encrypt(false),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                ],
            )
            .unwrap();
        for a in [
            Attribute::Decrypt(true),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Derive(true),
        ] {
            assert_rv(
                session.update_attributes(kek, std::slice::from_ref(&a)),
                RvError::AttributeReadOnly,
            );
        }
        assert_rv(
            session.decrypt(&Mechanism::AesEcb, kek, &[0; 16]),
            RvError::KeyFunctionNotPermitted,
        );
        // Narrowing is fine.
        session
            .update_attributes(kek, &[Attribute::Unwrap(false)])
            .unwrap();
        assert_hidden(&t, &session, kek);
    }

    /// CCS 2010 "key conflict via copy": `C_CopyObject` of the victim with a
    /// template that makes the copy readable, wrappable or able to do what the
    /// original may not.
    #[test]
    fn ccs2010_key_conflict_via_copy() {
        let t = token();
        let session = t.user_session();
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Unwrap(true),
                    Attribute::Decrypt(false),
                    Attribute::Encrypt(false),
                    Attribute::Wrap(false),
                ],
            )
            .unwrap();
        for a in [
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Decrypt(true),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
            Attribute::Derive(true),
        ] {
            assert_rv(
                session.copy_object(kek, std::slice::from_ref(&a)),
                RvError::AttributeReadOnly,
            );
        }
        let copy = session
            .copy_object(kek, &[Attribute::Token(false)])
            .unwrap();
        assert_hidden(&t, &session, copy);
        assert_rv(
            session.decrypt(&Mechanism::AesEcb, copy, &[0; 16]),
            RvError::KeyFunctionNotPermitted,
        );
    }

    /// CCS 2010 "derive-based leaks", the other way round: a key derived from
    /// a non-exportable key is itself non-exportable whatever the template
    /// says, and holds no fewer bits than its base.
    #[test]
    fn ccs2010_derived_keys_inherit_non_exportability() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        let data = [0x3cu8; 32];
        let k = session
            .derive_key(
                &Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new([1; 16], &data)),
                v,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                    Attribute::Encrypt(true),
                ],
            )
            .expect("AES-CBC encryption of data from the victim");
        assert_eq!(
            session
                .get_attributes(
                    k,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                    ]
                )
                .unwrap(),
            vec![
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::AlwaysSensitive(true),
                Attribute::NeverExtractable(true),
            ]
        );
        assert_hidden(&t, &session, k);
        // A derived key shorter than its non-exportable base: 128 bits out of
        // a 256-bit key (by a short result or by CKA_VALUE_LEN).
        let short = [0x3cu8; 16];
        assert_rv(
            session.derive_key(
                &Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new([1; 16], &short)),
                v,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                ],
            ),
            RvError::KeySizeRange,
        );
        assert_rv(
            session.derive_key(
                &Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new([1; 16], &data)),
                v,
                &hmac_template(16),
            ),
            RvError::KeySizeRange,
        );
        // And the chain goes on: a key derived from the derived key is no
        // more exportable.
        session
            .update_attributes(k, &[Attribute::Derive(false)])
            .unwrap();
        assert_hidden(&t, &session, v);
    }

    // ----- further attacks -------------------------------------------------------------------

    /// ECDH with a public point the attacker crafts off the curve (invalid
    /// curve attack: on a weaker curve the shared secret leaks the private key
    /// modulo small primes) or at infinity.
    #[test]
    fn ecdh_with_points_off_the_curve() {
        let t = token();
        let session = t.user_session();
        let pair = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::EcParams(verify::params_of_curve(
                        openssl::nid::Nid::X9_62_PRIME256V1,
                    )),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Derive(true),
                ],
            )
            .unwrap();
        let mut off = vec![0x04];
        off.extend_from_slice(&[0u8; 31]);
        off.push(1);
        off.extend_from_slice(&[0u8; 31]);
        off.push(1);
        let mut compressed_bad = vec![0x02];
        compressed_bad.extend_from_slice(&[0xffu8; 32]);
        for point in [off, vec![0x00], compressed_bad, vec![0x04; 65]] {
            let mech = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &point));
            assert_rv(
                session.derive_key(&mech, pair.1, &hmac_template(32)),
                RvError::MechanismParamInvalid,
            );
        }
        assert_eq!(
            read_value(&t, &session, pair.1),
            Err(cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE)
        );
    }

    /// `C_DigestKey` of a sensitive key: the module would feed its value to a
    /// digest the attacker then compares against guesses (or a short key's
    /// every value).
    #[test]
    fn digest_key_of_a_sensitive_key() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        session.digest_init(&Mechanism::Sha256).unwrap();
        assert_rv(session.digest_key(v), RvError::KeyIndigestible);
        assert_hidden(&t, &session, v);
    }

    /// A search with `CKA_VALUE` as the template is an equality oracle on the
    /// value; a hidden value never matches, even the right guess.
    #[test]
    fn search_by_secret_value_is_no_oracle() {
        let t = token();
        let session = t.user_session();
        let value = [0x5eu8; 32];
        let label = unique_label("oracle");
        let k = session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Label(label.clone().into_bytes()),
                Attribute::Value(value.to_vec()),
                Attribute::Sensitive(true),
            ])
            .unwrap();
        let found = session
            .find_objects(&[
                Attribute::Label(label.into_bytes()),
                Attribute::Value(value.to_vec()),
            ])
            .unwrap();
        assert!(found.is_empty(), "a search by the right value found {k:?}");
    }

    /// `CKA_ALLOWED_MECHANISMS` of a non-exportable key only narrows: a key
    /// limited to AES-GCM cannot be opened to AES-ECB (or to every mechanism
    /// with an empty list), directly or through a copy.
    #[test]
    fn allowed_mechanisms_cannot_be_widened() {
        let t = token();
        let session = t.user_session();
        let k = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(true),
                    Attribute::Encrypt(true),
                    Attribute::AllowedMechanisms(vec![
                        MechanismType::AES_GCM,
                        MechanismType::AES_CBC,
                    ]),
                ],
            )
            .unwrap();
        for widened in [
            vec![],
            vec![MechanismType::AES_ECB],
            vec![MechanismType::AES_GCM, MechanismType::AES_ECB],
        ] {
            assert_rv(
                session.update_attributes(k, &[Attribute::AllowedMechanisms(widened.clone())]),
                RvError::AttributeReadOnly,
            );
            assert_rv(
                session.copy_object(k, &[Attribute::AllowedMechanisms(widened)]),
                RvError::AttributeReadOnly,
            );
        }
        assert_rv(
            session.encrypt(&Mechanism::AesEcb, k, &[0; 16]),
            RvError::MechanismInvalid,
        );
        session
            .update_attributes(
                k,
                &[Attribute::AllowedMechanisms(vec![MechanismType::AES_GCM])],
            )
            .expect("narrowing");
    }

    /// A session key copied into a token object (and back) keeps every rule.
    #[test]
    fn session_copies_keep_the_rules() {
        let t = token();
        let session = t.user_session();
        let v = victim(&session, false);
        assert_rv(
            session.copy_object(v, &[Attribute::Token(true), Attribute::Sensitive(false)]),
            RvError::AttributeReadOnly,
        );
        let on_token = session.copy_object(v, &[Attribute::Token(true)]).unwrap();
        let back = session
            .copy_object(on_token, &[Attribute::Token(false)])
            .unwrap();
        for k in [on_token, back] {
            assert_hidden(&t, &session, k);
            assert_eq!(
                session
                    .get_attributes(
                        k,
                        &[
                            AttributeType::AlwaysSensitive,
                            AttributeType::NeverExtractable
                        ]
                    )
                    .unwrap(),
                vec![
                    Attribute::AlwaysSensitive(true),
                    Attribute::NeverExtractable(true)
                ]
            );
        }
        // A second session of the same application sees the copies with the
        // same rules.
        let other = t.rw_session();
        assert_hidden(&t, &other, on_token);
        session.destroy_object(on_token).unwrap();
    }

    /// A key the attacker knows (imported or unwrapped) marked as if it had
    /// never left the token.
    #[test]
    fn history_flags_cannot_be_forged() {
        let t = token();
        let session = t.user_session();
        let base = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![1; 16]),
            Attribute::Sensitive(true),
        ];
        for forged in [
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::Local(true),
        ] {
            let mut tpl = base.clone();
            tpl.push(forged.clone());
            assert_rv(session.create_object(&tpl), RvError::AttributeReadOnly);
        }
        let k = session.create_object(&base).unwrap();
        for forged in [
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
        ] {
            assert_rv(
                session.update_attributes(k, std::slice::from_ref(&forged)),
                RvError::AttributeReadOnly,
            );
            assert_rv(
                session.copy_object(k, &[forged]),
                RvError::AttributeReadOnly,
            );
        }
        assert_eq!(
            session
                .get_attributes(
                    k,
                    &[
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable
                    ]
                )
                .unwrap(),
            vec![
                Attribute::AlwaysSensitive(false),
                Attribute::NeverExtractable(false)
            ]
        );
        // Unwrapped with the flags asked for: refused.
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                ],
            )
            .unwrap();
        let known = hsmlink_tests::keys::import_aes(&session, &[2; 16]);
        let blob = session
            .wrap_key(&Mechanism::AesKeyWrap, kek, known)
            .unwrap();
        for forged in [
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
        ] {
            let rv = rv_of(session.unwrap_key(
                &Mechanism::AesKeyWrap,
                kek,
                &blob,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    forged,
                ],
            ));
            assert!(
                matches!(
                    rv,
                    Some(RvError::AttributeReadOnly | RvError::TemplateInconsistent)
                ),
                "forged history in an unwrap template: {rv:?}"
            );
        }
    }

    /// Generic secrets and HMAC keys shorter than 112 bits (NIST SP 800-107,
    /// SP 800-131A) are refused however they would be made: a short key is a
    /// key an attacker can try exhaustively against its MACs.
    #[test]
    fn short_hmac_keys_are_refused() {
        let t = token();
        let session = t.user_session();
        for kt in [KeyType::GENERIC_SECRET, KeyType::SHA256_HMAC] {
            assert_rv(
                session.create_object(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(kt),
                    Attribute::Token(false),
                    Attribute::Value(vec![1; 13]),
                ]),
                RvError::AttributeValueInvalid,
            );
            session
                .create_object(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(kt),
                    Attribute::Token(false),
                    Attribute::Value(vec![1; 14]),
                ])
                .expect("14 bytes (112 bits)");
        }
        for mech in [Mechanism::GenericSecretKeyGen, Mechanism::Sha256KeyGen] {
            for len in [1u64, 8, 13] {
                let rv = rv_of(session.generate_key(
                    &mech,
                    &[Attribute::Token(false), Attribute::ValueLen(len.into())],
                ));
                assert!(
                    matches!(
                        rv,
                        Some(RvError::KeySizeRange | RvError::AttributeValueInvalid)
                    ),
                    "C_GenerateKey({mech:?}, {len} bytes): {rv:?}"
                );
            }
        }
        // By derivation from an exportable key, and by unwrapping.
        let base = session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Value(vec![4; 32]),
                Attribute::Derive(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ])
            .unwrap();
        let rv = rv_of(session.derive_key(
            &Mechanism::ExtractKeyFromKey(ExtractParams::new(0)),
            base,
            &hmac_template(8),
        ));
        assert!(
            matches!(
                rv,
                Some(
                    RvError::KeySizeRange
                        | RvError::AttributeValueInvalid
                        | RvError::TemplateInconsistent
                )
            ),
            "an 8-byte derived HMAC key: {rv:?}"
        );
        let kek = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(16.into()),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                    Attribute::Extractable(true),
                ],
            )
            .unwrap();
        let kek_value = read_value(&t, &session, kek).expect("the KEK is exportable");
        let mut wrapped = vec![0u8; 8 + 8 + 8];
        let mut c = openssl::cipher_ctx::CipherCtx::new().unwrap();
        c.encrypt_init(
            Some(openssl::cipher::Cipher::aes_128_wrap_pad()),
            Some(&kek_value),
            None,
        )
        .unwrap();
        let n = c.cipher_update(&[6u8; 8], Some(&mut wrapped)).unwrap();
        wrapped.truncate(n);
        let rv = rv_of(session.unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
            ],
        ));
        assert!(
            matches!(
                rv,
                Some(RvError::AttributeValueInvalid | RvError::TemplateInconsistent)
            ),
            "an unwrapped 8-byte HMAC key: {rv:?}"
        );
    }

    /// The secret parts of non-exportable private keys are hidden one by one.
    #[test]
    fn private_key_parts_are_hidden() {
        let t = token();
        let session = t.user_session();
        let rsa = hsmlink_tests::keys::rsa(&session, 2048, &unique_label("parts"));
        let ec =
            hsmlink_tests::keys::ec(&session, openssl::nid::Nid::SECP384R1, &unique_label("p"));
        for (k, parts) in [
            (
                rsa.private,
                &[
                    cryptoki_sys::CKA_PRIVATE_EXPONENT,
                    cryptoki_sys::CKA_PRIME_1,
                    cryptoki_sys::CKA_PRIME_2,
                    cryptoki_sys::CKA_EXPONENT_1,
                    cryptoki_sys::CKA_EXPONENT_2,
                    cryptoki_sys::CKA_COEFFICIENT,
                ][..],
            ),
            (ec.private, &[cryptoki_sys::CKA_VALUE][..]),
        ] {
            for ty in parts {
                let mut q = [raw::AttrQuery::value(*ty, 1024)];
                let rv = t.raw.get_attribute_value(session.handle(), k, &mut q);
                assert_eq!(
                    rv,
                    cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE,
                    "attribute {ty:#x}"
                );
            }
        }
    }
}
