//! Shared pieces of the fuzz targets of hsmlink (see `fuzz/README.md`):
//!
//! - [`rv`]: the `CKR_*` values a caller may legitimately see;
//! - [`tables`]: interesting attribute types, mechanisms and values that
//!   structure-aware generators pick from;
//! - [`calls`]: the byte format of the `token_model` target (a sequence of
//!   Cryptoki calls), with an encoder so that seeds can be written from a
//!   real session;
//! - [`fake`]: the in-memory fake HSM the `token_model` target runs against;
//! - [`server`]: the in-process software HSM the `server` target drives, and
//!   the structured requests it generates;
//! - [`records`]: the record format of the `server` target's inputs;
//! - [`messages`]: every wire message generated from structure, for the
//!   round-trip property of the `wire_*` targets.
//!
//! No `unsafe` here: the crate forbids it like the rest of the project.
#![forbid(unsafe_code)]

pub mod calls;
pub mod extraction;
pub mod fake;
pub mod messages;
pub mod records;
pub mod server;
pub mod tables;

/// Return values.
pub mod rv {
    use hsmlink_core::ck::{Rv, ckr};

    /// Every `CKR_*` of PKCS#11 v2.40 (and the 3.0 values the core names).
    pub const KNOWN: &[Rv] = &[
        ckr::CANCEL,
        ckr::HOST_MEMORY,
        ckr::SLOT_ID_INVALID,
        ckr::GENERAL_ERROR,
        ckr::FUNCTION_FAILED,
        ckr::ARGUMENTS_BAD,
        ckr::NO_EVENT,
        ckr::NEED_TO_CREATE_THREADS,
        ckr::CANT_LOCK,
        ckr::ATTRIBUTE_READ_ONLY,
        ckr::ATTRIBUTE_SENSITIVE,
        ckr::ATTRIBUTE_TYPE_INVALID,
        ckr::ATTRIBUTE_VALUE_INVALID,
        ckr::ACTION_PROHIBITED,
        ckr::DATA_INVALID,
        ckr::DATA_LEN_RANGE,
        ckr::DEVICE_ERROR,
        ckr::DEVICE_MEMORY,
        ckr::DEVICE_REMOVED,
        ckr::ENCRYPTED_DATA_INVALID,
        ckr::ENCRYPTED_DATA_LEN_RANGE,
        ckr::FUNCTION_CANCELED,
        ckr::FUNCTION_NOT_PARALLEL,
        ckr::FUNCTION_NOT_SUPPORTED,
        ckr::KEY_HANDLE_INVALID,
        ckr::KEY_SIZE_RANGE,
        ckr::KEY_TYPE_INCONSISTENT,
        ckr::KEY_NOT_NEEDED,
        ckr::KEY_CHANGED,
        ckr::KEY_NEEDED,
        ckr::KEY_INDIGESTIBLE,
        ckr::KEY_FUNCTION_NOT_PERMITTED,
        ckr::KEY_NOT_WRAPPABLE,
        ckr::KEY_UNEXTRACTABLE,
        ckr::MECHANISM_INVALID,
        ckr::MECHANISM_PARAM_INVALID,
        ckr::OBJECT_HANDLE_INVALID,
        ckr::OPERATION_ACTIVE,
        ckr::OPERATION_NOT_INITIALIZED,
        ckr::PIN_INCORRECT,
        ckr::PIN_INVALID,
        ckr::PIN_LEN_RANGE,
        ckr::PIN_EXPIRED,
        ckr::PIN_LOCKED,
        ckr::SESSION_CLOSED,
        ckr::SESSION_COUNT,
        ckr::SESSION_HANDLE_INVALID,
        ckr::SESSION_PARALLEL_NOT_SUPPORTED,
        ckr::SESSION_READ_ONLY,
        ckr::SESSION_EXISTS,
        ckr::SESSION_READ_ONLY_EXISTS,
        ckr::SESSION_READ_WRITE_SO_EXISTS,
        ckr::SIGNATURE_INVALID,
        ckr::SIGNATURE_LEN_RANGE,
        ckr::TEMPLATE_INCOMPLETE,
        ckr::TEMPLATE_INCONSISTENT,
        ckr::TOKEN_NOT_PRESENT,
        ckr::TOKEN_NOT_RECOGNIZED,
        ckr::TOKEN_WRITE_PROTECTED,
        ckr::UNWRAPPING_KEY_HANDLE_INVALID,
        ckr::UNWRAPPING_KEY_SIZE_RANGE,
        ckr::UNWRAPPING_KEY_TYPE_INCONSISTENT,
        ckr::USER_ALREADY_LOGGED_IN,
        ckr::USER_NOT_LOGGED_IN,
        ckr::USER_PIN_NOT_INITIALIZED,
        ckr::USER_TYPE_INVALID,
        ckr::USER_ANOTHER_ALREADY_LOGGED_IN,
        ckr::USER_TOO_MANY_TYPES,
        ckr::WRAPPED_KEY_INVALID,
        ckr::WRAPPED_KEY_LEN_RANGE,
        ckr::WRAPPING_KEY_HANDLE_INVALID,
        ckr::WRAPPING_KEY_SIZE_RANGE,
        ckr::WRAPPING_KEY_TYPE_INCONSISTENT,
        ckr::RANDOM_SEED_NOT_SUPPORTED,
        ckr::RANDOM_NO_RNG,
        ckr::DOMAIN_PARAMS_INVALID,
        ckr::CURVE_NOT_SUPPORTED,
        ckr::BUFFER_TOO_SMALL,
        ckr::SAVED_STATE_INVALID,
        ckr::INFORMATION_SENSITIVE,
        ckr::STATE_UNSAVEABLE,
        ckr::CRYPTOKI_NOT_INITIALIZED,
        ckr::CRYPTOKI_ALREADY_INITIALIZED,
        ckr::MUTEX_BAD,
        ckr::MUTEX_NOT_LOCKED,
        ckr::NEW_PIN_MODE,
        ckr::NEXT_OTP,
        ckr::EXCEEDED_MAX_ITERATIONS,
        ckr::FIPS_SELF_TEST_FAILED,
        ckr::LIBRARY_LOAD_FAILED,
        ckr::PIN_TOO_WEAK,
        ckr::PUBLIC_KEY_INVALID,
        ckr::FUNCTION_REJECTED,
    ];

    /// Whether `rv` is an error code a PKCS#11 caller may be handed.
    pub fn is_error(rv: Rv) -> bool {
        KNOWN.contains(&rv)
    }
}
