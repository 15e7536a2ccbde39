//! Attribute types and their canonical wire form.
//!
//! The C ABI hands attributes over as `(type, pointer, length)` with values in
//! the host's layout (`CK_ULONG` of 4 or 8 bytes). The core and the wire use a
//! canonical form, independent of the host: `CK_ULONG` as 8 bytes
//! little-endian, `CK_BBOOL` as one byte (0 or 1), `CK_DATE` as its 8 ASCII
//! digits, byte strings as they are. [`kind`] says which form a type has.

use crate::ck::{cka, ckr, Rv};

/// How an attribute's value is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `CK_BBOOL`.
    Bool,
    /// `CK_ULONG` (and its aliases: class, key type, mechanism type...).
    Ulong,
    /// A byte string (`CK_BYTE` array, UTF-8 text, DER).
    Bytes,
    /// `CK_DATE`: 8 bytes or empty.
    Date,
    /// An array of `CK_MECHANISM_TYPE` (`CKA_ALLOWED_MECHANISMS`).
    UlongArray,
    /// An array of `CK_ATTRIBUTE` (wrap/unwrap/derive templates): not supported.
    AttributeArray,
}

/// The layout of attribute `ty`. Unknown and vendor types are byte strings.
pub const fn kind(ty: u64) -> Kind {
    match ty {
        cka::TOKEN
        | cka::PRIVATE
        | cka::TRUSTED
        | cka::SENSITIVE
        | cka::ENCRYPT
        | cka::DECRYPT
        | cka::WRAP
        | cka::UNWRAP
        | cka::SIGN
        | cka::SIGN_RECOVER
        | cka::VERIFY
        | cka::VERIFY_RECOVER
        | cka::DERIVE
        | cka::EXTRACTABLE
        | cka::LOCAL
        | cka::NEVER_EXTRACTABLE
        | cka::ALWAYS_SENSITIVE
        | cka::MODIFIABLE
        | cka::COPYABLE
        | cka::DESTROYABLE
        | cka::ALWAYS_AUTHENTICATE
        | cka::WRAP_WITH_TRUSTED => Kind::Bool,
        cka::CLASS
        | cka::CERTIFICATE_TYPE
        | cka::CERTIFICATE_CATEGORY
        | cka::JAVA_MIDP_SECURITY_DOMAIN
        | cka::NAME_HASH_ALGORITHM
        | cka::KEY_TYPE
        | cka::MODULUS_BITS
        | cka::PRIME_BITS
        | cka::SUBPRIME_BITS
        | cka::VALUE_BITS
        | cka::VALUE_LEN
        | cka::KEY_GEN_MECHANISM => Kind::Ulong,
        cka::START_DATE | cka::END_DATE => Kind::Date,
        cka::ALLOWED_MECHANISMS => Kind::UlongArray,
        cka::WRAP_TEMPLATE | cka::UNWRAP_TEMPLATE | cka::DERIVE_TEMPLATE => Kind::AttributeArray,
        _ => Kind::Bytes,
    }
}

/// Whether `ty` is one of the secret attributes of a private or secret key:
/// readable only when the key is exportable.
pub const fn is_secret(ty: u64) -> bool {
    matches!(
        ty,
        cka::VALUE
            | cka::PRIVATE_EXPONENT
            | cka::PRIME_1
            | cka::PRIME_2
            | cka::EXPONENT_1
            | cka::EXPONENT_2
            | cka::COEFFICIENT
    )
}

/// Canonical bytes of a `CK_ULONG`.
pub const fn ulong(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// Canonical bytes of a `CK_BBOOL`.
pub const fn bool_byte(v: bool) -> [u8; 1] {
    [v as u8]
}

/// Read a canonical `CK_ULONG`.
pub fn read_ulong(v: &[u8]) -> Result<u64, Rv> {
    let b: [u8; 8] = v.try_into().map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)?;
    Ok(u64::from_le_bytes(b))
}

/// Read a canonical `CK_BBOOL` (any non-zero byte is true, as in C).
pub fn read_bool(v: &[u8]) -> Result<bool, Rv> {
    match v {
        [b] => Ok(*b != 0),
        _ => Err(ckr::ATTRIBUTE_VALUE_INVALID),
    }
}

/// Check that a canonical value has the length its kind requires.
pub fn check_value(ty: u64, v: &[u8]) -> Result<(), Rv> {
    match kind(ty) {
        Kind::Bool if v.len() != 1 => Err(ckr::ATTRIBUTE_VALUE_INVALID),
        Kind::Ulong if v.len() != 8 => Err(ckr::ATTRIBUTE_VALUE_INVALID),
        Kind::Date if !(v.is_empty() || v.len() == 8) => Err(ckr::ATTRIBUTE_VALUE_INVALID),
        Kind::UlongArray if !v.len().is_multiple_of(8) => Err(ckr::ATTRIBUTE_VALUE_INVALID),
        Kind::AttributeArray => Err(ckr::ATTRIBUTE_TYPE_INVALID),
        _ => Ok(()),
    }
}

/// Find attribute `ty` in a wire template.
pub fn find<'a>(template: &[crate::wire::Attribute<'a>], ty: u64) -> Option<&'a [u8]> {
    template.iter().find(|a| a.ty == ty).map(|a| a.value)
}

/// Read a `CK_ULONG` attribute of a template, if present.
pub fn find_ulong(template: &[crate::wire::Attribute<'_>], ty: u64) -> Result<Option<u64>, Rv> {
    find(template, ty).map(read_ulong).transpose()
}

/// Read a `CK_BBOOL` attribute of a template, if present.
pub fn find_bool(template: &[crate::wire::Attribute<'_>], ty: u64) -> Result<Option<bool>, Rv> {
    find(template, ty).map(read_bool).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_checks() {
        assert_eq!(kind(cka::TOKEN), Kind::Bool);
        assert_eq!(kind(cka::CLASS), Kind::Ulong);
        assert_eq!(kind(cka::LABEL), Kind::Bytes);
        assert!(check_value(cka::TOKEN, &[1]).is_ok());
        assert_eq!(
            check_value(cka::TOKEN, &[1, 0]),
            Err(ckr::ATTRIBUTE_VALUE_INVALID)
        );
        assert_eq!(
            check_value(cka::CLASS, &[1]),
            Err(ckr::ATTRIBUTE_VALUE_INVALID)
        );
        assert_eq!(read_ulong(&ulong(0x1234)), Ok(0x1234));
        assert_eq!(read_bool(&[7]), Ok(true));
    }
}
