//! PKCS#11 v2.40 constants (`CKR_*`, `CKA_*`, `CKM_*`, ...), as written in the
//! OASIS specification and its `pkcs11t.h`. On the wire and in `core` every
//! `CK_ULONG` is carried as a `u64`, whatever the host's `unsigned long` is.

/// `CK_RV`.
pub type Rv = u64;
/// `CK_ULONG` as carried by the core.
pub type Ulong = u64;

/// Marks "no information" in `CK_ATTRIBUTE.ulValueLen` (`CK_UNAVAILABLE_INFORMATION`).
pub const UNAVAILABLE_INFORMATION: u64 = u64::MAX;
/// `CK_EFFECTIVELY_INFINITE`.
pub const EFFECTIVELY_INFINITE: u64 = 0;
/// `CK_INVALID_HANDLE`.
pub const INVALID_HANDLE: u64 = 0;

/// Return values (`CKR_*`).
pub mod ckr {
    use super::Rv;
    pub const OK: Rv = 0x0;
    pub const CANCEL: Rv = 0x1;
    pub const HOST_MEMORY: Rv = 0x2;
    pub const SLOT_ID_INVALID: Rv = 0x3;
    pub const GENERAL_ERROR: Rv = 0x5;
    pub const FUNCTION_FAILED: Rv = 0x6;
    pub const ARGUMENTS_BAD: Rv = 0x7;
    pub const NO_EVENT: Rv = 0x8;
    pub const NEED_TO_CREATE_THREADS: Rv = 0x9;
    pub const CANT_LOCK: Rv = 0xA;
    pub const ATTRIBUTE_READ_ONLY: Rv = 0x10;
    pub const ATTRIBUTE_SENSITIVE: Rv = 0x11;
    pub const ATTRIBUTE_TYPE_INVALID: Rv = 0x12;
    pub const ATTRIBUTE_VALUE_INVALID: Rv = 0x13;
    pub const ACTION_PROHIBITED: Rv = 0x1B;
    pub const DATA_INVALID: Rv = 0x20;
    pub const DATA_LEN_RANGE: Rv = 0x21;
    pub const DEVICE_ERROR: Rv = 0x30;
    pub const DEVICE_MEMORY: Rv = 0x31;
    pub const DEVICE_REMOVED: Rv = 0x32;
    pub const ENCRYPTED_DATA_INVALID: Rv = 0x40;
    pub const ENCRYPTED_DATA_LEN_RANGE: Rv = 0x41;
    pub const FUNCTION_CANCELED: Rv = 0x50;
    pub const FUNCTION_NOT_PARALLEL: Rv = 0x51;
    pub const FUNCTION_NOT_SUPPORTED: Rv = 0x54;
    pub const KEY_HANDLE_INVALID: Rv = 0x60;
    pub const KEY_SIZE_RANGE: Rv = 0x62;
    pub const KEY_TYPE_INCONSISTENT: Rv = 0x63;
    pub const KEY_NOT_NEEDED: Rv = 0x64;
    pub const KEY_CHANGED: Rv = 0x65;
    pub const KEY_NEEDED: Rv = 0x66;
    pub const KEY_INDIGESTIBLE: Rv = 0x67;
    pub const KEY_FUNCTION_NOT_PERMITTED: Rv = 0x68;
    pub const KEY_NOT_WRAPPABLE: Rv = 0x69;
    pub const KEY_UNEXTRACTABLE: Rv = 0x6A;
    pub const MECHANISM_INVALID: Rv = 0x70;
    pub const MECHANISM_PARAM_INVALID: Rv = 0x71;
    pub const OBJECT_HANDLE_INVALID: Rv = 0x82;
    pub const OPERATION_ACTIVE: Rv = 0x90;
    pub const OPERATION_NOT_INITIALIZED: Rv = 0x91;
    pub const PIN_INCORRECT: Rv = 0xA0;
    pub const PIN_INVALID: Rv = 0xA1;
    pub const PIN_LEN_RANGE: Rv = 0xA2;
    pub const PIN_EXPIRED: Rv = 0xA3;
    pub const PIN_LOCKED: Rv = 0xA4;
    pub const SESSION_CLOSED: Rv = 0xB0;
    pub const SESSION_COUNT: Rv = 0xB1;
    pub const SESSION_HANDLE_INVALID: Rv = 0xB3;
    pub const SESSION_PARALLEL_NOT_SUPPORTED: Rv = 0xB4;
    pub const SESSION_READ_ONLY: Rv = 0xB5;
    pub const SESSION_EXISTS: Rv = 0xB6;
    pub const SESSION_READ_ONLY_EXISTS: Rv = 0xB7;
    pub const SESSION_READ_WRITE_SO_EXISTS: Rv = 0xB8;
    pub const SIGNATURE_INVALID: Rv = 0xC0;
    pub const SIGNATURE_LEN_RANGE: Rv = 0xC1;
    pub const TEMPLATE_INCOMPLETE: Rv = 0xD0;
    pub const TEMPLATE_INCONSISTENT: Rv = 0xD1;
    pub const TOKEN_NOT_PRESENT: Rv = 0xE0;
    pub const TOKEN_NOT_RECOGNIZED: Rv = 0xE1;
    pub const TOKEN_WRITE_PROTECTED: Rv = 0xE2;
    pub const UNWRAPPING_KEY_HANDLE_INVALID: Rv = 0xF0;
    pub const UNWRAPPING_KEY_SIZE_RANGE: Rv = 0xF1;
    pub const UNWRAPPING_KEY_TYPE_INCONSISTENT: Rv = 0xF2;
    pub const USER_ALREADY_LOGGED_IN: Rv = 0x100;
    pub const USER_NOT_LOGGED_IN: Rv = 0x101;
    pub const USER_PIN_NOT_INITIALIZED: Rv = 0x102;
    pub const USER_TYPE_INVALID: Rv = 0x103;
    pub const USER_ANOTHER_ALREADY_LOGGED_IN: Rv = 0x104;
    pub const USER_TOO_MANY_TYPES: Rv = 0x105;
    pub const WRAPPED_KEY_INVALID: Rv = 0x110;
    pub const WRAPPED_KEY_LEN_RANGE: Rv = 0x112;
    pub const WRAPPING_KEY_HANDLE_INVALID: Rv = 0x113;
    pub const WRAPPING_KEY_SIZE_RANGE: Rv = 0x114;
    pub const WRAPPING_KEY_TYPE_INCONSISTENT: Rv = 0x115;
    pub const RANDOM_SEED_NOT_SUPPORTED: Rv = 0x120;
    pub const RANDOM_NO_RNG: Rv = 0x121;
    pub const DOMAIN_PARAMS_INVALID: Rv = 0x130;
    pub const CURVE_NOT_SUPPORTED: Rv = 0x140;
    pub const BUFFER_TOO_SMALL: Rv = 0x150;
    pub const SAVED_STATE_INVALID: Rv = 0x160;
    pub const INFORMATION_SENSITIVE: Rv = 0x170;
    pub const STATE_UNSAVEABLE: Rv = 0x180;
    pub const CRYPTOKI_NOT_INITIALIZED: Rv = 0x190;
    pub const CRYPTOKI_ALREADY_INITIALIZED: Rv = 0x191;
    pub const MUTEX_BAD: Rv = 0x1A0;
    pub const MUTEX_NOT_LOCKED: Rv = 0x1A1;
    pub const NEW_PIN_MODE: Rv = 0x1B0;
    pub const NEXT_OTP: Rv = 0x1B1;
    pub const EXCEEDED_MAX_ITERATIONS: Rv = 0x1B5;
    pub const FIPS_SELF_TEST_FAILED: Rv = 0x1B6;
    pub const LIBRARY_LOAD_FAILED: Rv = 0x1B7;
    pub const PIN_TOO_WEAK: Rv = 0x1B8;
    pub const PUBLIC_KEY_INVALID: Rv = 0x1B9;
    pub const FUNCTION_REJECTED: Rv = 0x200;
    pub const VENDOR_DEFINED: Rv = 0x8000_0000;

    /// Whether `rv` is one of the error codes above (not `CKR_OK`, not a
    /// vendor code): what a caller may be handed when a call fails. An HSM
    /// answering with anything else is broken.
    pub const fn is_error(rv: Rv) -> bool {
        matches!(
            rv,
            CANCEL
                | HOST_MEMORY
                | SLOT_ID_INVALID
                | GENERAL_ERROR
                | FUNCTION_FAILED
                | ARGUMENTS_BAD
                | NO_EVENT
                | NEED_TO_CREATE_THREADS
                | CANT_LOCK
                | ATTRIBUTE_READ_ONLY
                | ATTRIBUTE_SENSITIVE
                | ATTRIBUTE_TYPE_INVALID
                | ATTRIBUTE_VALUE_INVALID
                | ACTION_PROHIBITED
                | DATA_INVALID
                | DATA_LEN_RANGE
                | DEVICE_ERROR
                | DEVICE_MEMORY
                | DEVICE_REMOVED
                | ENCRYPTED_DATA_INVALID
                | ENCRYPTED_DATA_LEN_RANGE
                | FUNCTION_CANCELED
                | FUNCTION_NOT_PARALLEL
                | FUNCTION_NOT_SUPPORTED
                | KEY_HANDLE_INVALID
                | KEY_SIZE_RANGE
                | KEY_TYPE_INCONSISTENT
                | KEY_NOT_NEEDED
                | KEY_CHANGED
                | KEY_NEEDED
                | KEY_INDIGESTIBLE
                | KEY_FUNCTION_NOT_PERMITTED
                | KEY_NOT_WRAPPABLE
                | KEY_UNEXTRACTABLE
                | MECHANISM_INVALID
                | MECHANISM_PARAM_INVALID
                | OBJECT_HANDLE_INVALID
                | OPERATION_ACTIVE
                | OPERATION_NOT_INITIALIZED
                | PIN_INCORRECT
                | PIN_INVALID
                | PIN_LEN_RANGE
                | PIN_EXPIRED
                | PIN_LOCKED
                | SESSION_CLOSED
                | SESSION_COUNT
                | SESSION_HANDLE_INVALID
                | SESSION_PARALLEL_NOT_SUPPORTED
                | SESSION_READ_ONLY
                | SESSION_EXISTS
                | SESSION_READ_ONLY_EXISTS
                | SESSION_READ_WRITE_SO_EXISTS
                | SIGNATURE_INVALID
                | SIGNATURE_LEN_RANGE
                | TEMPLATE_INCOMPLETE
                | TEMPLATE_INCONSISTENT
                | TOKEN_NOT_PRESENT
                | TOKEN_NOT_RECOGNIZED
                | TOKEN_WRITE_PROTECTED
                | UNWRAPPING_KEY_HANDLE_INVALID
                | UNWRAPPING_KEY_SIZE_RANGE
                | UNWRAPPING_KEY_TYPE_INCONSISTENT
                | USER_ALREADY_LOGGED_IN
                | USER_NOT_LOGGED_IN
                | USER_PIN_NOT_INITIALIZED
                | USER_TYPE_INVALID
                | USER_ANOTHER_ALREADY_LOGGED_IN
                | USER_TOO_MANY_TYPES
                | WRAPPED_KEY_INVALID
                | WRAPPED_KEY_LEN_RANGE
                | WRAPPING_KEY_HANDLE_INVALID
                | WRAPPING_KEY_SIZE_RANGE
                | WRAPPING_KEY_TYPE_INCONSISTENT
                | RANDOM_SEED_NOT_SUPPORTED
                | RANDOM_NO_RNG
                | DOMAIN_PARAMS_INVALID
                | CURVE_NOT_SUPPORTED
                | BUFFER_TOO_SMALL
                | SAVED_STATE_INVALID
                | INFORMATION_SENSITIVE
                | STATE_UNSAVEABLE
                | CRYPTOKI_NOT_INITIALIZED
                | CRYPTOKI_ALREADY_INITIALIZED
                | MUTEX_BAD
                | MUTEX_NOT_LOCKED
                | NEW_PIN_MODE
                | NEXT_OTP
                | EXCEEDED_MAX_ITERATIONS
                | FIPS_SELF_TEST_FAILED
                | LIBRARY_LOAD_FAILED
                | PIN_TOO_WEAK
                | PUBLIC_KEY_INVALID
                | FUNCTION_REJECTED
        )
    }
}

/// Object classes (`CKO_*`).
pub mod cko {
    pub const DATA: u64 = 0;
    pub const CERTIFICATE: u64 = 1;
    pub const PUBLIC_KEY: u64 = 2;
    pub const PRIVATE_KEY: u64 = 3;
    pub const SECRET_KEY: u64 = 4;
    pub const HW_FEATURE: u64 = 5;
    pub const DOMAIN_PARAMETERS: u64 = 6;
    pub const MECHANISM: u64 = 7;
    pub const OTP_KEY: u64 = 8;
}

/// Key types (`CKK_*`).
pub mod ckk {
    pub const RSA: u64 = 0;
    pub const DSA: u64 = 1;
    pub const DH: u64 = 2;
    pub const EC: u64 = 3;
    pub const GENERIC_SECRET: u64 = 0x10;
    pub const DES3: u64 = 0x15;
    pub const AES: u64 = 0x1F;
    pub const SHA_1_HMAC: u64 = 0x28;
    pub const SHA256_HMAC: u64 = 0x2B;
    pub const SHA384_HMAC: u64 = 0x2C;
    pub const SHA512_HMAC: u64 = 0x2D;
    pub const SHA224_HMAC: u64 = 0x2E;
    pub const EC_EDWARDS: u64 = 0x40;
}

/// Certificate types (`CKC_*`).
pub mod ckc {
    pub const X_509: u64 = 0;
    pub const X_509_ATTR_CERT: u64 = 1;
    pub const WTLS: u64 = 2;
}

/// User types (`CKU_*`).
pub mod cku {
    pub const SO: u64 = 0;
    pub const USER: u64 = 1;
    pub const CONTEXT_SPECIFIC: u64 = 2;
}

/// Session states (`CKS_*`).
pub mod cks {
    pub const RO_PUBLIC_SESSION: u64 = 0;
    pub const RO_USER_FUNCTIONS: u64 = 1;
    pub const RW_PUBLIC_SESSION: u64 = 2;
    pub const RW_USER_FUNCTIONS: u64 = 3;
    pub const RW_SO_FUNCTIONS: u64 = 4;
}

/// Flags (`CKF_*`) of sessions, slots, tokens and mechanisms.
pub mod ckf {
    // CK_SLOT_INFO
    pub const TOKEN_PRESENT: u64 = 0x1;
    pub const REMOVABLE_DEVICE: u64 = 0x2;
    pub const HW_SLOT: u64 = 0x4;
    // CK_TOKEN_INFO
    pub const RNG: u64 = 0x1;
    pub const WRITE_PROTECTED: u64 = 0x2;
    pub const LOGIN_REQUIRED: u64 = 0x4;
    pub const USER_PIN_INITIALIZED: u64 = 0x8;
    pub const RESTORE_KEY_NOT_NEEDED: u64 = 0x20;
    pub const CLOCK_ON_TOKEN: u64 = 0x40;
    pub const PROTECTED_AUTHENTICATION_PATH: u64 = 0x100;
    pub const DUAL_CRYPTO_OPERATIONS: u64 = 0x200;
    pub const TOKEN_INITIALIZED: u64 = 0x400;
    // CK_SESSION_INFO
    pub const RW_SESSION: u64 = 0x2;
    pub const SERIAL_SESSION: u64 = 0x4;
    // CK_MECHANISM_INFO
    pub const HW: u64 = 0x1;
    pub const ENCRYPT: u64 = 0x100;
    pub const DECRYPT: u64 = 0x200;
    pub const DIGEST: u64 = 0x400;
    pub const SIGN: u64 = 0x800;
    pub const SIGN_RECOVER: u64 = 0x1000;
    pub const VERIFY: u64 = 0x2000;
    pub const VERIFY_RECOVER: u64 = 0x4000;
    pub const GENERATE: u64 = 0x8000;
    pub const GENERATE_KEY_PAIR: u64 = 0x10000;
    pub const WRAP: u64 = 0x20000;
    pub const UNWRAP: u64 = 0x40000;
    pub const DERIVE: u64 = 0x80000;
    pub const EC_F_P: u64 = 0x100000;
    pub const EC_F_2M: u64 = 0x200000;
    pub const EC_ECPARAMETERS: u64 = 0x400000;
    pub const EC_NAMEDCURVE: u64 = 0x800000;
    pub const EC_UNCOMPRESS: u64 = 0x1000000;
    pub const EC_COMPRESS: u64 = 0x2000000;
    // C_Initialize
    pub const LIBRARY_CANT_CREATE_OS_THREADS: u64 = 0x1;
    pub const OS_LOCKING_OK: u64 = 0x2;
}

/// Attribute types (`CKA_*`).
pub mod cka {
    pub const CLASS: u64 = 0x0;
    pub const TOKEN: u64 = 0x1;
    pub const PRIVATE: u64 = 0x2;
    pub const LABEL: u64 = 0x3;
    pub const APPLICATION: u64 = 0x10;
    pub const VALUE: u64 = 0x11;
    pub const OBJECT_ID: u64 = 0x12;
    pub const CERTIFICATE_TYPE: u64 = 0x80;
    pub const ISSUER: u64 = 0x81;
    pub const SERIAL_NUMBER: u64 = 0x82;
    pub const AC_ISSUER: u64 = 0x83;
    pub const OWNER: u64 = 0x84;
    pub const ATTR_TYPES: u64 = 0x85;
    pub const TRUSTED: u64 = 0x86;
    pub const CERTIFICATE_CATEGORY: u64 = 0x87;
    pub const JAVA_MIDP_SECURITY_DOMAIN: u64 = 0x88;
    pub const URL: u64 = 0x89;
    pub const HASH_OF_SUBJECT_PUBLIC_KEY: u64 = 0x8A;
    pub const HASH_OF_ISSUER_PUBLIC_KEY: u64 = 0x8B;
    pub const NAME_HASH_ALGORITHM: u64 = 0x8C;
    pub const CHECK_VALUE: u64 = 0x90;
    pub const KEY_TYPE: u64 = 0x100;
    pub const SUBJECT: u64 = 0x101;
    pub const ID: u64 = 0x102;
    pub const SENSITIVE: u64 = 0x103;
    pub const ENCRYPT: u64 = 0x104;
    pub const DECRYPT: u64 = 0x105;
    pub const WRAP: u64 = 0x106;
    pub const UNWRAP: u64 = 0x107;
    pub const SIGN: u64 = 0x108;
    pub const SIGN_RECOVER: u64 = 0x109;
    pub const VERIFY: u64 = 0x10A;
    pub const VERIFY_RECOVER: u64 = 0x10B;
    pub const DERIVE: u64 = 0x10C;
    pub const START_DATE: u64 = 0x110;
    pub const END_DATE: u64 = 0x111;
    pub const MODULUS: u64 = 0x120;
    pub const MODULUS_BITS: u64 = 0x121;
    pub const PUBLIC_EXPONENT: u64 = 0x122;
    pub const PRIVATE_EXPONENT: u64 = 0x123;
    pub const PRIME_1: u64 = 0x124;
    pub const PRIME_2: u64 = 0x125;
    pub const EXPONENT_1: u64 = 0x126;
    pub const EXPONENT_2: u64 = 0x127;
    pub const COEFFICIENT: u64 = 0x128;
    pub const PUBLIC_KEY_INFO: u64 = 0x129;
    pub const PRIME: u64 = 0x130;
    pub const SUBPRIME: u64 = 0x131;
    pub const BASE: u64 = 0x132;
    pub const PRIME_BITS: u64 = 0x133;
    pub const SUBPRIME_BITS: u64 = 0x134;
    pub const VALUE_BITS: u64 = 0x160;
    pub const VALUE_LEN: u64 = 0x161;
    pub const EXTRACTABLE: u64 = 0x162;
    pub const LOCAL: u64 = 0x163;
    pub const NEVER_EXTRACTABLE: u64 = 0x164;
    pub const ALWAYS_SENSITIVE: u64 = 0x165;
    pub const KEY_GEN_MECHANISM: u64 = 0x166;
    pub const MODIFIABLE: u64 = 0x170;
    pub const COPYABLE: u64 = 0x171;
    pub const DESTROYABLE: u64 = 0x172;
    pub const EC_PARAMS: u64 = 0x180;
    pub const EC_POINT: u64 = 0x181;
    pub const ALWAYS_AUTHENTICATE: u64 = 0x202;
    pub const WRAP_WITH_TRUSTED: u64 = 0x210;
    pub const ARRAY_ATTRIBUTE: u64 = 0x4000_0000;
    pub const WRAP_TEMPLATE: u64 = ARRAY_ATTRIBUTE | 0x211;
    pub const UNWRAP_TEMPLATE: u64 = ARRAY_ATTRIBUTE | 0x212;
    pub const DERIVE_TEMPLATE: u64 = ARRAY_ATTRIBUTE | 0x213;
    pub const ALLOWED_MECHANISMS: u64 = ARRAY_ATTRIBUTE | 0x600;
    pub const VENDOR_DEFINED: u64 = 0x8000_0000;
}

/// Mechanism types (`CKM_*`).
pub mod ckm {
    pub const RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0;
    pub const RSA_PKCS: u64 = 0x1;
    pub const RSA_9796: u64 = 0x2;
    pub const RSA_X_509: u64 = 0x3;
    pub const SHA1_RSA_PKCS: u64 = 0x6;
    pub const RSA_PKCS_OAEP: u64 = 0x9;
    pub const RSA_PKCS_PSS: u64 = 0xD;
    pub const SHA1_RSA_PKCS_PSS: u64 = 0xE;
    pub const SHA256_RSA_PKCS: u64 = 0x40;
    pub const SHA384_RSA_PKCS: u64 = 0x41;
    pub const SHA512_RSA_PKCS: u64 = 0x42;
    pub const SHA256_RSA_PKCS_PSS: u64 = 0x43;
    pub const SHA384_RSA_PKCS_PSS: u64 = 0x44;
    pub const SHA512_RSA_PKCS_PSS: u64 = 0x45;
    pub const SHA224_RSA_PKCS: u64 = 0x46;
    pub const SHA224_RSA_PKCS_PSS: u64 = 0x47;
    pub const SHA_1: u64 = 0x220;
    pub const SHA_1_HMAC: u64 = 0x221;
    pub const SHA_1_HMAC_GENERAL: u64 = 0x222;
    pub const SHA256: u64 = 0x250;
    pub const SHA256_HMAC: u64 = 0x251;
    pub const SHA224: u64 = 0x255;
    pub const SHA224_HMAC: u64 = 0x256;
    pub const SHA384: u64 = 0x260;
    pub const SHA384_HMAC: u64 = 0x261;
    pub const SHA512: u64 = 0x270;
    pub const SHA512_HMAC: u64 = 0x271;
    pub const GENERIC_SECRET_KEY_GEN: u64 = 0x350;
    pub const CONCATENATE_BASE_AND_KEY: u64 = 0x360;
    pub const CONCATENATE_BASE_AND_DATA: u64 = 0x362;
    pub const CONCATENATE_DATA_AND_BASE: u64 = 0x363;
    pub const XOR_BASE_AND_DATA: u64 = 0x364;
    pub const EXTRACT_KEY_FROM_KEY: u64 = 0x365;
    pub const AES_ECB_ENCRYPT_DATA: u64 = 0x1104;
    pub const AES_CBC_ENCRYPT_DATA: u64 = 0x1105;
    // PKCS#11 3.0: generic secret generation with an HMAC key type.
    pub const SHA_1_KEY_GEN: u64 = 0x4003;
    pub const SHA224_KEY_GEN: u64 = 0x4004;
    pub const SHA256_KEY_GEN: u64 = 0x4005;
    pub const SHA384_KEY_GEN: u64 = 0x4006;
    pub const SHA512_KEY_GEN: u64 = 0x4007;
    pub const EC_KEY_PAIR_GEN: u64 = 0x1040;
    pub const ECDSA: u64 = 0x1041;
    pub const ECDSA_SHA1: u64 = 0x1042;
    pub const ECDSA_SHA224: u64 = 0x1043;
    pub const ECDSA_SHA256: u64 = 0x1044;
    pub const ECDSA_SHA384: u64 = 0x1045;
    pub const ECDSA_SHA512: u64 = 0x1046;
    pub const ECDH1_DERIVE: u64 = 0x1050;
    pub const ECDH1_COFACTOR_DERIVE: u64 = 0x1051;
    pub const EC_EDWARDS_KEY_PAIR_GEN: u64 = 0x1055;
    pub const EDDSA: u64 = 0x1057;
    pub const AES_KEY_GEN: u64 = 0x1080;
    pub const AES_ECB: u64 = 0x1081;
    pub const AES_CBC: u64 = 0x1082;
    pub const AES_MAC: u64 = 0x1083;
    pub const AES_MAC_GENERAL: u64 = 0x1084;
    pub const AES_CBC_PAD: u64 = 0x1085;
    pub const AES_CTR: u64 = 0x1086;
    pub const AES_GCM: u64 = 0x1087;
    pub const AES_CCM: u64 = 0x1088;
    pub const AES_CMAC_GENERAL: u64 = 0x108B;
    pub const AES_CMAC: u64 = 0x108A;
    pub const AES_KEY_WRAP: u64 = 0x2109;
    pub const AES_KEY_WRAP_PAD: u64 = 0x210A;
    pub const VENDOR_DEFINED: u64 = 0x8000_0000;
}

/// Mask generation functions (`CKG_*`).
pub mod ckg {
    pub const MGF1_SHA1: u64 = 0x1;
    pub const MGF1_SHA256: u64 = 0x2;
    pub const MGF1_SHA384: u64 = 0x3;
    pub const MGF1_SHA512: u64 = 0x4;
    pub const MGF1_SHA224: u64 = 0x5;
}

/// OAEP source (`CKZ_*`).
pub mod ckz {
    pub const DATA_SPECIFIED: u64 = 0x1;
}

/// ECDH key derivation functions (`CKD_*`).
pub mod ckd {
    pub const NULL: u64 = 0x1;
    pub const SHA1_KDF: u64 = 0x2;
    pub const SHA224_KDF: u64 = 0x5;
    pub const SHA256_KDF: u64 = 0x6;
    pub const SHA384_KDF: u64 = 0x7;
    pub const SHA512_KDF: u64 = 0x8;
}
