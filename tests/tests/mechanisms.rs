//! C_GetMechanismList and C_GetMechanismInfo: every mechanism of the
//! foundation issue is offered, with flags and key sizes that match what the
//! token does.

use cryptoki::error::RvError;
use cryptoki::mechanism::MechanismType;
use hsmlink_tests::raw;
use hsmlink_tests::{assert_rv, token};

/// (mechanism, flags it must have, min, max key size as the token reports it)
/// A mechanism, the flags it must have, and its (min, max) key size.
type Requirement = (raw::CK_MECHANISM_TYPE, raw::CK_FLAGS, Option<(u64, u64)>);

fn required() -> Vec<Requirement> {
    use raw::*;
    let sv = CKF_SIGN | CKF_VERIFY;
    let ed = CKF_ENCRYPT | CKF_DECRYPT;
    let rsa = Some((1024, 4096));
    let ec = Some((256, 521));
    let aes = Some((16, 32));
    vec![
        (CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR, rsa),
        (CKM_RSA_PKCS, sv, rsa),
        (CKM_SHA1_RSA_PKCS, sv, rsa),
        (CKM_SHA224_RSA_PKCS, sv, rsa),
        (CKM_SHA256_RSA_PKCS, sv, rsa),
        (CKM_SHA384_RSA_PKCS, sv, rsa),
        (CKM_SHA512_RSA_PKCS, sv, rsa),
        (CKM_RSA_PKCS_PSS, sv, rsa),
        (CKM_SHA1_RSA_PKCS_PSS, sv, rsa),
        (CKM_SHA224_RSA_PKCS_PSS, sv, rsa),
        (CKM_SHA256_RSA_PKCS_PSS, sv, rsa),
        (CKM_SHA384_RSA_PKCS_PSS, sv, rsa),
        (CKM_SHA512_RSA_PKCS_PSS, sv, rsa),
        (CKM_EC_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR, ec),
        (CKM_ECDSA, sv, ec),
        (CKM_ECDSA_SHA1, sv, ec),
        (CKM_ECDSA_SHA224, sv, ec),
        (CKM_ECDSA_SHA256, sv, ec),
        (CKM_ECDSA_SHA384, sv, ec),
        (CKM_ECDSA_SHA512, sv, ec),
        (CKM_AES_KEY_GEN, CKF_GENERATE, aes),
        (CKM_AES_ECB, ed, aes),
        (CKM_AES_CBC, ed, aes),
        (CKM_AES_CBC_PAD, ed, aes),
        (CKM_AES_CTR, ed, aes),
        (CKM_AES_GCM, ed, aes),
        (CKM_GENERIC_SECRET_KEY_GEN, CKF_GENERATE, None),
        (CKM_SHA_1_HMAC, sv, None),
        (CKM_SHA256_HMAC, sv, None),
        (CKM_SHA384_HMAC, sv, None),
        (CKM_SHA512_HMAC, sv, None),
        (CKM_SHA_1, CKF_DIGEST, None),
        (CKM_SHA224, CKF_DIGEST, None),
        (CKM_SHA256, CKF_DIGEST, None),
        (CKM_SHA384, CKF_DIGEST, None),
        (CKM_SHA512, CKF_DIGEST, None),
    ]
}

#[test]
fn every_required_mechanism_is_listed() {
    let t = token();
    let out = t.raw.mechanism_list(1, Some(512));
    assert_eq!(out.rv, raw::CKR_OK, "{}", out.rv_name());
    let listed = out.data;
    let missing: Vec<String> = required()
        .iter()
        .filter(|(m, _, _)| !listed.contains(m))
        .map(|(m, _, _)| format!("{m:#x}"))
        .collect();
    assert!(
        missing.is_empty(),
        "mechanisms missing from C_GetMechanismList: {missing:?}"
    );
    let mut unique = listed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), listed.len(), "a mechanism is listed twice");
}

#[test]
fn mechanism_info_flags_and_sizes() {
    let t = token();
    for (m, flags, sizes) in required() {
        let (rv, info) = t.raw.mechanism_info(1, m);
        assert_eq!(
            rv,
            raw::CKR_OK,
            "C_GetMechanismInfo({m:#x}): {}",
            raw::rv_name(rv)
        );
        let got = info.flags;
        assert_eq!(
            got & flags,
            flags,
            "C_GetMechanismInfo({m:#x}) flags {got:#x} lack {flags:#x}"
        );
        if let Some((min, max)) = sizes {
            assert_eq!(
                (info.ulMinKeySize, info.ulMaxKeySize),
                (min, max),
                "C_GetMechanismInfo({m:#x}) key sizes"
            );
        }
        // Flags that do not belong to the mechanism's family.
        if flags == raw::CKF_DIGEST {
            assert_eq!(
                got & (raw::CKF_SIGN | raw::CKF_ENCRYPT),
                0,
                "digest {m:#x} flags {got:#x}"
            );
        }
        if flags == raw::CKF_SIGN | raw::CKF_VERIFY && m != raw::CKM_RSA_PKCS {
            assert_eq!(
                got & (raw::CKF_DIGEST | raw::CKF_ENCRYPT),
                0,
                "{m:#x} flags {got:#x}"
            );
        }
        if flags == raw::CKF_GENERATE_KEY_PAIR || flags == raw::CKF_GENERATE {
            assert_eq!(
                got & (raw::CKF_SIGN | raw::CKF_ENCRYPT),
                0,
                "key generation {m:#x} flags {got:#x}"
            );
        }
    }
}

#[test]
fn ec_mechanisms_announce_named_curves_over_prime_fields() {
    let t = token();
    for ty in [
        MechanismType::ECC_KEY_PAIR_GEN,
        MechanismType::ECDSA,
        MechanismType::ECDSA_SHA256,
    ] {
        let info = t
            .pkcs11
            .get_mechanism_info(t.slot, ty)
            .expect("C_GetMechanismInfo");
        assert!(info.ec_f_p(), "{ty:?}: CKF_EC_F_P");
        assert!(
            info.ec_from_oid(),
            "{ty:?}: CKF_EC_OID (v2.40 CKF_EC_NAMEDCURVE)"
        );
        assert!(info.ec_uncompressed(), "{ty:?}: CKF_EC_UNCOMPRESS");
    }
}

#[test]
fn unknown_mechanism_info_is_mechanism_invalid() {
    let t = token();
    // CKM_MD5 is a real mechanism the profile does not offer.
    let (rv, _) = t.raw.mechanism_info(1, raw::CKM_MD5);
    assert_eq!(
        rv,
        raw::CKR_MECHANISM_INVALID,
        "C_GetMechanismInfo(CKM_MD5): {}",
        raw::rv_name(rv)
    );
    let vendor = MechanismType::new_vendor_defined(raw::CKM_VENDOR_DEFINED | 0x77).expect("vendor");
    assert_rv(
        t.pkcs11.get_mechanism_info(t.slot, vendor),
        RvError::MechanismInvalid,
    );
    let out = t.raw.mechanism_list(1, Some(512));
    assert!(
        !out.data.contains(&raw::CKM_MD5),
        "CKM_MD5 listed but not offered"
    );
}

#[test]
fn mechanisms_performed_by_the_hsm_report_ckf_hw() {
    // v2.40: CKF_HW is "true if the mechanism is performed by the device".
    // Key generation, signatures and encryption happen in the HSM (digests
    // may be computed in the module). Clients rely on it: pkcs11-tool
    // --test only tests signatures with CKF_SIGN|CKF_HW mechanisms.
    let t = token();
    let lacking: Vec<String> = required()
        .into_iter()
        .filter(|(_, flags, _)| *flags != raw::CKF_DIGEST)
        .filter(|(m, _, _)| t.raw.mechanism_info(1, *m).1.flags & raw::CKF_HW == 0)
        .map(|(m, _, _)| format!("{m:#x}"))
        .collect();
    assert!(
        lacking.is_empty(),
        "HSM mechanisms without CKF_HW: {lacking:?}"
    );
}
