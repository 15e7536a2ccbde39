//! Objects and the attribute rules of PKCS#11 v2.40 §4 under the Dinamo
//! profile: which attributes each class has, their defaults, which may be
//! set at creation, changed later or only by the token, and the exportable
//! rule (a key is exportable iff `CKA_EXTRACTABLE` and not `CKA_SENSITIVE`).
//!
//! Attribute values are kept in the canonical form of [`hsmlink_core::attr`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use hsmlink_core::attr::{self, is_secret};
use hsmlink_core::ck::{cka, ckc, ckk, cko, ckr, Rv, UNAVAILABLE_INFORMATION};
use hsmlink_core::wire::Attribute;

use crate::keys::{self, KeyMaterial};

/// An object's attributes: type → canonical value.
pub type Attrs = BTreeMap<u64, Vec<u8>>;

/// Where a session object lives: visible to connections of the same user and
/// application, destroyed with the connection that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionScope {
    pub app: [u8; 16],
    pub conn: u64,
}

/// One object of the token.
pub struct Object {
    pub handle: u64,
    pub owner: String,
    /// `None` for token objects.
    pub session: Option<SessionScope>,
    pub attrs: Attrs,
    material: OnceLock<Result<KeyMaterial, Rv>>,
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Object({}, owner {}, class {:?}, {} attributes)",
            self.handle,
            self.owner,
            self.class(),
            self.attrs.len()
        )
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (ty, v) in self.attrs.iter_mut() {
            if is_secret(*ty) {
                v.zeroize();
            }
        }
    }
}

impl Object {
    pub fn new(handle: u64, owner: String, session: Option<SessionScope>, attrs: Attrs) -> Self {
        Object {
            handle,
            owner,
            session,
            attrs,
            material: OnceLock::new(),
        }
    }

    pub fn get(&self, ty: u64) -> Option<&[u8]> {
        self.attrs.get(&ty).map(Vec::as_slice)
    }

    pub fn ulong(&self, ty: u64) -> Option<u64> {
        self.get(ty).and_then(|v| attr::read_ulong(v).ok())
    }

    pub fn flag(&self, ty: u64) -> bool {
        self.get(ty)
            .and_then(|v| attr::read_bool(v).ok())
            .unwrap_or(false)
    }

    pub fn class(&self) -> Option<u64> {
        self.ulong(cka::CLASS)
    }

    pub fn key_type(&self) -> Option<u64> {
        self.ulong(cka::KEY_TYPE)
    }

    pub fn is_token(&self) -> bool {
        self.session.is_none()
    }

    /// Whether this object is visible to `user` in application `app`.
    pub fn visible(&self, user: &str, app: &[u8; 16]) -> bool {
        self.owner == user && self.session.is_none_or(|s| &s.app == app)
    }

    /// A private or secret key whose secret attributes may leave the token.
    pub fn exportable(&self) -> bool {
        exportable(&self.attrs)
    }

    /// The mechanisms `CKA_ALLOWED_MECHANISMS` lists (empty: no restriction).
    pub fn allowed_mechanisms(&self) -> Vec<u64> {
        self.get(cka::ALLOWED_MECHANISMS)
            .unwrap_or(&[])
            .chunks_exact(8)
            .filter_map(|c| attr::read_ulong(c).ok())
            .collect()
    }

    /// Whether `CKA_ALLOWED_MECHANISMS` lets mechanism `m` be used with
    /// this key (`CKR_MECHANISM_INVALID` otherwise).
    pub fn check_mechanism(&self, m: u64) -> Result<(), Rv> {
        let allowed = self.allowed_mechanisms();
        if allowed.is_empty() || allowed.contains(&m) {
            Ok(())
        } else {
            Err(ckr::MECHANISM_INVALID)
        }
    }

    /// Whether attribute `ty` is secret *for this object* and the object
    /// does not let it out.
    pub fn hides(&self, ty: u64) -> bool {
        has_secrets(self.class()) && is_secret(ty) && !self.exportable()
    }

    /// The key material, parsed once and cached.
    pub fn material(&self) -> Result<&KeyMaterial, Rv> {
        self.material
            .get_or_init(|| keys::material(&self.attrs))
            .as_ref()
            .map_err(|e| *e)
    }

    /// Approximate size in bytes (`C_GetObjectSize`, the byte quotas).
    /// A hidden secret counts as long as the key's modulus if it has one:
    /// the parts of an RSA private key are stored without leading zero
    /// bytes, so their own lengths would tell whether the top byte of
    /// d, d mod (p-1)... is zero (the key policy, docs/security.md).
    pub fn size(&self) -> u64 {
        let modulus = self.get(cka::MODULUS).map_or(0, <[u8]>::len);
        self.attrs
            .iter()
            .map(|(ty, v)| {
                let len = if self.hides(*ty) {
                    v.len().max(modulus)
                } else {
                    v.len()
                };
                16 + len as u64
            })
            .sum()
    }

    /// The record stored for a token object, secret attributes apart: the
    /// key material of private and secret keys, and the value of data
    /// objects (application data may be anything), are sealed at rest.
    pub fn to_record(&self) -> crate::store::ObjectRecord {
        let mut rec = crate::store::ObjectRecord::default();
        rec.owner = self.owner.clone();
        let data = self.class() == Some(cko::DATA);
        for (ty, v) in &self.attrs {
            if (has_secrets(self.class()) && is_secret(*ty)) || (data && *ty == cka::VALUE) {
                rec.secret.push((*ty, v.clone()));
            } else {
                rec.public.push((*ty, v.clone()));
            }
        }
        rec
    }

    /// An object from its stored record.
    pub fn from_record(handle: u64, rec: &crate::store::ObjectRecord) -> Self {
        let attrs = rec
            .public
            .iter()
            .chain(rec.secret.iter())
            .map(|(t, v)| (*t, v.clone()))
            .collect();
        Object::new(handle, rec.owner.clone(), None, attrs)
    }

    /// Whether the object matches a search template: every attribute equal,
    /// hidden secrets never match.
    /// Whether every attribute of `template` has that value here
    /// (`CK_BBOOL`s compared as truth values).
    pub fn matches(&self, template: &[Attribute<'_>]) -> bool {
        template.iter().all(|a| {
            !self.hides(a.ty)
                && self.get(a.ty).map(|v| canonical_bool(a.ty, v))
                    == Some(canonical_bool(a.ty, a.value))
        })
    }
}

/// Classes whose keys carry secret attributes.
fn has_secrets(class: Option<u64>) -> bool {
    matches!(class, Some(cko::PRIVATE_KEY | cko::SECRET_KEY))
}

fn get_flag(a: &Attrs, ty: u64) -> bool {
    a.get(&ty)
        .and_then(|v| attr::read_bool(v).ok())
        .unwrap_or(false)
}

/// The exportable rule of the profile.
pub fn exportable(a: &Attrs) -> bool {
    get_flag(a, cka::EXTRACTABLE) && !get_flag(a, cka::SENSITIVE)
}

/// How an attribute may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Only the token sets it (`CKA_LOCAL`...): read-only in any template.
    TokenOnly,
    /// Given at creation, read-only afterwards.
    Fixed,
    /// Given at creation or in a copy template, read-only in `SetAttributes`.
    CopyOnly,
    /// Freely modifiable (if the object is `CKA_MODIFIABLE`).
    Modifiable,
    /// Modifiable from false to true only (`CKA_SENSITIVE`).
    OnlyToTrue,
    /// Modifiable from true to false only (`CKA_EXTRACTABLE`, `CKA_COPYABLE`).
    OnlyToFalse,
}

/// The policy of attribute `ty` on an object of this class and key type, or
/// `None` when the attribute is not valid for it.
fn policy(class: u64, key_type: Option<u64>, ty: u64) -> Option<Policy> {
    use Policy::*;
    let common = match ty {
        cka::CLASS => Some(Fixed),
        cka::TOKEN | cka::PRIVATE | cka::MODIFIABLE => Some(CopyOnly),
        cka::COPYABLE => Some(OnlyToFalse),
        cka::DESTROYABLE | cka::LABEL => Some(Modifiable),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    let key_common = |ty| match ty {
        cka::KEY_TYPE => Some(Fixed),
        cka::ID | cka::START_DATE | cka::END_DATE | cka::DERIVE | cka::ALLOWED_MECHANISMS => {
            Some(Modifiable)
        }
        cka::LOCAL | cka::KEY_GEN_MECHANISM => Some(TokenOnly),
        _ => None,
    };
    match class {
        cko::DATA => match ty {
            cka::APPLICATION | cka::OBJECT_ID | cka::VALUE => Some(Modifiable),
            _ => None,
        },
        cko::CERTIFICATE => match ty {
            cka::CERTIFICATE_TYPE | cka::VALUE | cka::CHECK_VALUE => Some(Fixed),
            cka::TRUSTED
            | cka::CERTIFICATE_CATEGORY
            | cka::START_DATE
            | cka::END_DATE
            | cka::SUBJECT
            | cka::ID
            | cka::ISSUER
            | cka::SERIAL_NUMBER
            | cka::URL
            | cka::HASH_OF_SUBJECT_PUBLIC_KEY
            | cka::HASH_OF_ISSUER_PUBLIC_KEY
            | cka::JAVA_MIDP_SECURITY_DOMAIN
            | cka::NAME_HASH_ALGORITHM => Some(Modifiable),
            _ => None,
        },
        cko::PUBLIC_KEY => key_common(ty).or(match ty {
            cka::SUBJECT
            | cka::ENCRYPT
            | cka::VERIFY
            | cka::VERIFY_RECOVER
            | cka::WRAP
            | cka::TRUSTED => Some(Modifiable),
            cka::MODULUS | cka::MODULUS_BITS | cka::PUBLIC_EXPONENT
                if key_type == Some(ckk::RSA) =>
            {
                Some(Fixed)
            }
            cka::EC_PARAMS | cka::EC_POINT
                if matches!(key_type, Some(ckk::EC | ckk::EC_EDWARDS)) =>
            {
                Some(Fixed)
            }
            _ => None,
        }),
        cko::PRIVATE_KEY => key_common(ty).or(match ty {
            cka::SUBJECT | cka::DECRYPT | cka::SIGN | cka::SIGN_RECOVER | cka::UNWRAP => {
                Some(Modifiable)
            }
            cka::SENSITIVE | cka::WRAP_WITH_TRUSTED => Some(OnlyToTrue),
            cka::EXTRACTABLE => Some(OnlyToFalse),
            cka::ALWAYS_SENSITIVE | cka::NEVER_EXTRACTABLE => Some(TokenOnly),
            cka::ALWAYS_AUTHENTICATE => Some(Fixed),
            cka::MODULUS
            | cka::MODULUS_BITS
            | cka::PUBLIC_EXPONENT
            | cka::PRIVATE_EXPONENT
            | cka::PRIME_1
            | cka::PRIME_2
            | cka::EXPONENT_1
            | cka::EXPONENT_2
            | cka::COEFFICIENT
                if key_type == Some(ckk::RSA) =>
            {
                Some(Fixed)
            }
            cka::EC_PARAMS | cka::VALUE if matches!(key_type, Some(ckk::EC | ckk::EC_EDWARDS)) => {
                Some(Fixed)
            }
            _ => None,
        }),
        cko::SECRET_KEY => key_common(ty).or(match ty {
            cka::ENCRYPT
            | cka::DECRYPT
            | cka::SIGN
            | cka::VERIFY
            | cka::WRAP
            | cka::UNWRAP
            | cka::TRUSTED => Some(Modifiable),
            cka::SENSITIVE | cka::WRAP_WITH_TRUSTED => Some(OnlyToTrue),
            cka::EXTRACTABLE => Some(OnlyToFalse),
            cka::ALWAYS_SENSITIVE | cka::NEVER_EXTRACTABLE => Some(TokenOnly),
            cka::VALUE | cka::VALUE_LEN => Some(Fixed),
            _ => None,
        }),
        _ => None,
    }
}

/// Attributes only the token sets.
const fn token_only(ty: u64) -> bool {
    matches!(
        ty,
        cka::LOCAL | cka::ALWAYS_SENSITIVE | cka::NEVER_EXTRACTABLE | cka::KEY_GEN_MECHANISM
    )
}

/// Key material attributes, never given in a generation template.
const fn material_attr(ty: u64) -> bool {
    matches!(
        ty,
        cka::MODULUS
            | cka::PRIVATE_EXPONENT
            | cka::PRIME_1
            | cka::PRIME_2
            | cka::EXPONENT_1
            | cka::EXPONENT_2
            | cka::COEFFICIENT
            | cka::VALUE
            | cka::EC_POINT
    )
}

/// A template checked for value lengths and duplicates, as a map.
/// `CK_BBOOL` values are kept as 0 or 1, whatever non-zero byte (true, as in
/// C) the application gave: a search for `CK_TRUE` finds them.
pub fn parse_template<'a>(t: &[Attribute<'a>]) -> Result<BTreeMap<u64, &'a [u8]>, Rv> {
    let mut out = BTreeMap::new();
    for a in t {
        attr::check_value(a.ty, a.value)?;
        let value = canonical_bool(a.ty, a.value);
        if let Some(prev) = out.insert(a.ty, value) {
            if prev != value {
                return Err(ckr::TEMPLATE_INCONSISTENT);
            }
        }
    }
    Ok(out)
}

/// A `CK_BBOOL` value as 0 or 1; other values as they are.
fn canonical_bool(ty: u64, v: &[u8]) -> &[u8] {
    match (attr::kind(ty), v) {
        (attr::Kind::Bool, [0]) => &[0],
        (attr::Kind::Bool, [_]) => &[1],
        _ => v,
    }
}

fn tpl_ulong(t: &BTreeMap<u64, &[u8]>, ty: u64) -> Result<Option<u64>, Rv> {
    t.get(&ty).map(|v| attr::read_ulong(v)).transpose()
}

fn tpl_bool(t: &BTreeMap<u64, &[u8]>, ty: u64) -> Result<Option<bool>, Rv> {
    t.get(&ty).map(|v| attr::read_bool(v)).transpose()
}

pub fn set_ulong(a: &mut Attrs, ty: u64, v: u64) {
    a.insert(ty, attr::ulong(v).to_vec());
}

pub fn set_bool(a: &mut Attrs, ty: u64, v: bool) {
    a.insert(ty, attr::bool_byte(v).to_vec());
}

/// Key types a class accepts; `Err` with the code for a refused one.
fn check_key_type(class: u64, kt: u64) -> Result<(), Rv> {
    let asym = matches!(kt, ckk::RSA | ckk::EC | ckk::EC_EDWARDS);
    let sym = matches!(
        kt,
        ckk::AES
            | ckk::GENERIC_SECRET
            | ckk::SHA_1_HMAC
            | ckk::SHA224_HMAC
            | ckk::SHA256_HMAC
            | ckk::SHA384_HMAC
            | ckk::SHA512_HMAC
    );
    match class {
        cko::PUBLIC_KEY | cko::PRIVATE_KEY if asym => Ok(()),
        cko::SECRET_KEY if sym => Ok(()),
        _ if asym || sym => Err(ckr::TEMPLATE_INCONSISTENT),
        _ => Err(ckr::ATTRIBUTE_VALUE_INVALID),
    }
}

/// How an object comes to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `C_CreateObject`: the template carries everything.
    Create,
    /// Key generation with mechanism `mech`: class and key type implied, the
    /// material comes from the generator.
    Generate {
        class: u64,
        key_type: u64,
        mech: u64,
    },
}

/// Build the attributes of a new object from a template: checks the
/// template against the class's rules, fills in defaults. For
/// [`Origin::Create`] the key material is validated and normalised; for
/// [`Origin::Generate`] the caller adds the material with
/// [`add_generated`] then calls [`finish_generated`].
pub fn build(template: &[Attribute<'_>], origin: Origin) -> Result<Attrs, Rv> {
    let t = parse_template(template)?;
    for ty in t.keys() {
        if token_only(*ty) {
            return Err(ckr::ATTRIBUTE_READ_ONLY);
        }
    }
    let class = match (origin, tpl_ulong(&t, cka::CLASS)?) {
        (Origin::Create, Some(c)) => c,
        (Origin::Create, None) => return Err(ckr::TEMPLATE_INCOMPLETE),
        (Origin::Generate { class, .. }, Some(c)) if c != class => {
            return Err(ckr::TEMPLATE_INCONSISTENT)
        }
        (Origin::Generate { class, .. }, _) => class,
    };
    if !matches!(
        class,
        cko::DATA | cko::CERTIFICATE | cko::PUBLIC_KEY | cko::PRIVATE_KEY | cko::SECRET_KEY
    ) {
        return Err(ckr::ATTRIBUTE_VALUE_INVALID);
    }
    let is_key = matches!(class, cko::PUBLIC_KEY | cko::PRIVATE_KEY | cko::SECRET_KEY);
    let key_type = if is_key {
        let kt = match (origin, tpl_ulong(&t, cka::KEY_TYPE)?) {
            (Origin::Create, Some(k)) => k,
            (Origin::Create, None) => return Err(ckr::TEMPLATE_INCOMPLETE),
            (Origin::Generate { key_type, .. }, Some(k)) if k != key_type => {
                // A generic secret generator may make HMAC-typed keys.
                if !(key_type == ckk::GENERIC_SECRET && check_key_type(class, k).is_ok())
                    || k == ckk::AES
                {
                    return Err(ckr::TEMPLATE_INCONSISTENT);
                }
                k
            }
            (Origin::Generate { key_type, .. }, _) => key_type,
        };
        check_key_type(class, kt)?;
        Some(kt)
    } else if t.contains_key(&cka::KEY_TYPE) {
        return Err(ckr::ATTRIBUTE_TYPE_INVALID);
    } else {
        None
    };
    for ty in t.keys() {
        if policy(class, key_type, *ty).is_none() {
            return Err(ckr::ATTRIBUTE_TYPE_INVALID);
        }
        if matches!(origin, Origin::Generate { .. }) && material_attr(*ty) {
            return Err(ckr::TEMPLATE_INCONSISTENT);
        }
    }
    if tpl_bool(&t, cka::ALWAYS_AUTHENTICATE)? == Some(true) {
        return Err(ckr::ATTRIBUTE_VALUE_INVALID);
    }

    let mut a = defaults(class, key_type);
    if let Origin::Generate { mech, .. } = origin {
        set_bool(&mut a, cka::LOCAL, true);
        set_ulong(&mut a, cka::KEY_GEN_MECHANISM, mech);
    }
    for (ty, v) in &t {
        a.insert(*ty, v.to_vec());
    }
    // The profile: every object is private, whatever the template said.
    set_bool(&mut a, cka::PRIVATE, true);

    match class {
        cko::CERTIFICATE => {
            match tpl_ulong(&t, cka::CERTIFICATE_TYPE)? {
                None => return Err(ckr::TEMPLATE_INCOMPLETE),
                Some(ckc::X_509) => {}
                Some(_) => return Err(ckr::ATTRIBUTE_VALUE_INVALID),
            }
            if !t.contains_key(&cka::SUBJECT) || !t.contains_key(&cka::VALUE) {
                return Err(ckr::TEMPLATE_INCOMPLETE);
            }
            if let Some(cat) = tpl_ulong(&t, cka::CERTIFICATE_CATEGORY)? {
                if cat > 3 {
                    return Err(ckr::ATTRIBUTE_VALUE_INVALID);
                }
            }
        }
        cko::PUBLIC_KEY | cko::PRIVATE_KEY | cko::SECRET_KEY if origin == Origin::Create => {
            keys::import(class, key_type.unwrap_or(u64::MAX), &t, &mut a)?;
        }
        _ => {}
    }
    if origin == Origin::Create && class != cko::PUBLIC_KEY && is_key {
        // An imported key has not always been sensitive nor never extractable.
        set_bool(&mut a, cka::ALWAYS_SENSITIVE, false);
        set_bool(&mut a, cka::NEVER_EXTRACTABLE, false);
    }
    Ok(a)
}

/// Add a generated material attribute; a generation parameter the template
/// already gave (e.g. `CKA_PUBLIC_EXPONENT`) must agree with it.
pub fn add_generated(
    a: &mut Attrs,
    given: &[Attribute<'_>],
    ty: u64,
    v: Vec<u8>,
) -> Result<(), Rv> {
    if let Some(g) = attr::find(given, ty) {
        if g != v.as_slice() {
            return Err(ckr::TEMPLATE_INCONSISTENT);
        }
    }
    a.insert(ty, v);
    Ok(())
}

/// Set the history flags of a generated private or secret key.
pub fn finish_generated(a: &mut Attrs) {
    let class = a.get(&cka::CLASS).and_then(|v| attr::read_ulong(v).ok());
    if has_secrets(class) {
        let s = get_flag(a, cka::SENSITIVE);
        let x = get_flag(a, cka::EXTRACTABLE);
        set_bool(a, cka::ALWAYS_SENSITIVE, s);
        set_bool(a, cka::NEVER_EXTRACTABLE, !x);
    }
}

/// The default attributes of a class.
fn defaults(class: u64, key_type: Option<u64>) -> Attrs {
    let mut a = Attrs::new();
    set_ulong(&mut a, cka::CLASS, class);
    set_bool(&mut a, cka::TOKEN, false);
    set_bool(&mut a, cka::PRIVATE, true);
    set_bool(&mut a, cka::MODIFIABLE, true);
    set_bool(&mut a, cka::COPYABLE, true);
    set_bool(&mut a, cka::DESTROYABLE, true);
    a.insert(cka::LABEL, Vec::new());
    let empty = [
        cka::ID,
        cka::START_DATE,
        cka::END_DATE,
        cka::SUBJECT,
        cka::APPLICATION,
        cka::OBJECT_ID,
        cka::ISSUER,
        cka::SERIAL_NUMBER,
        cka::URL,
        cka::HASH_OF_SUBJECT_PUBLIC_KEY,
        cka::HASH_OF_ISSUER_PUBLIC_KEY,
    ];
    for ty in empty {
        if policy(class, key_type, ty).is_some() {
            a.insert(ty, Vec::new());
        }
    }
    if class == cko::DATA {
        a.insert(cka::VALUE, Vec::new());
    }
    if class == cko::CERTIFICATE {
        set_ulong(&mut a, cka::CERTIFICATE_CATEGORY, 0);
        set_ulong(&mut a, cka::JAVA_MIDP_SECURITY_DOMAIN, 0);
        set_bool(&mut a, cka::TRUSTED, false);
    }
    if let Some(kt) = key_type {
        set_ulong(&mut a, cka::KEY_TYPE, kt);
        set_bool(&mut a, cka::LOCAL, false);
        set_ulong(&mut a, cka::KEY_GEN_MECHANISM, UNAVAILABLE_INFORMATION);
        // No restriction unless the application gives a list.
        a.insert(cka::ALLOWED_MECHANISMS, Vec::new());
        let on = match class {
            cko::PUBLIC_KEY => &[cka::ENCRYPT, cka::VERIFY, cka::VERIFY_RECOVER, cka::WRAP][..],
            cko::PRIVATE_KEY => &[cka::DECRYPT, cka::SIGN, cka::SIGN_RECOVER, cka::UNWRAP][..],
            _ => &[
                cka::ENCRYPT,
                cka::DECRYPT,
                cka::SIGN,
                cka::VERIFY,
                cka::WRAP,
                cka::UNWRAP,
            ][..],
        };
        for ty in on {
            set_bool(&mut a, *ty, true);
        }
        // v2.40 (common key attributes): CKA_DERIVE defaults to false; the
        // other usages are token-specific (true here, as before).
        set_bool(&mut a, cka::DERIVE, false);
        if class == cko::PUBLIC_KEY || class == cko::SECRET_KEY {
            set_bool(&mut a, cka::TRUSTED, false);
        }
        if has_secrets(Some(class)) {
            set_bool(&mut a, cka::SENSITIVE, false);
            // Keys are not exportable unless the application asks.
            set_bool(&mut a, cka::EXTRACTABLE, false);
            set_bool(&mut a, cka::WRAP_WITH_TRUSTED, false);
            set_bool(&mut a, cka::ALWAYS_SENSITIVE, false);
            set_bool(&mut a, cka::NEVER_EXTRACTABLE, false);
        }
        if class == cko::PRIVATE_KEY {
            set_bool(&mut a, cka::ALWAYS_AUTHENTICATE, false);
        }
    }
    a
}

/// Whether a change of `ty` from `old` to `new` is allowed by its policy;
/// `copy` says the change comes from a `CopyObject` template.
fn change_allowed(p: Policy, ty: u64, old: Option<&[u8]>, new: &[u8], copy: bool) -> bool {
    let as_bool = |v: Option<&[u8]>| v.and_then(|v| attr::read_bool(v).ok());
    match p {
        Policy::TokenOnly | Policy::Fixed => false,
        Policy::CopyOnly => copy || (ty == cka::PRIVATE),
        Policy::Modifiable => true,
        Policy::OnlyToTrue => as_bool(Some(new)) == Some(true) || as_bool(old) == Some(false),
        Policy::OnlyToFalse => as_bool(Some(new)) == Some(false) || as_bool(old) == Some(true),
    }
}

/// Usage flags: what a key may be used for.
pub const USAGES: [u64; 9] = [
    cka::ENCRYPT,
    cka::DECRYPT,
    cka::SIGN,
    cka::VERIFY,
    cka::SIGN_RECOVER,
    cka::VERIFY_RECOVER,
    cka::WRAP,
    cka::UNWRAP,
    cka::DERIVE,
];

/// Whether setting `ty` from `old` to `new` lets a key do more: a usage
/// flag turned on, or a `CKA_ALLOWED_MECHANISMS` list that admits a
/// mechanism the old one did not (an empty list admits every mechanism).
fn widens(ty: u64, old: Option<&[u8]>, new: &[u8]) -> bool {
    if USAGES.contains(&ty) {
        let was = old.and_then(|v| attr::read_bool(v).ok()).unwrap_or(false);
        return attr::read_bool(new).unwrap_or(true) && !was;
    }
    if ty == cka::ALLOWED_MECHANISMS {
        let list = |v: &[u8]| -> Vec<u64> {
            v.chunks_exact(8)
                .filter_map(|c| attr::read_ulong(c).ok())
                .collect()
        };
        let old = list(old.unwrap_or(&[]));
        let new = list(new);
        if old.is_empty() {
            return false;
        }
        return new.is_empty() || new.iter().any(|m| !old.contains(m));
    }
    false
}

/// Apply a `SetAttributes` (or, with `copy`, a `CopyObject`) template to a
/// copy of `attrs`, checking every rule.
pub fn apply(attrs: &Attrs, template: &[Attribute<'_>], copy: bool) -> Result<Attrs, Rv> {
    let t = parse_template(template)?;
    let class = attrs
        .get(&cka::CLASS)
        .and_then(|v| attr::read_ulong(v).ok())
        .ok_or(ckr::GENERAL_ERROR)?;
    let key_type = attrs
        .get(&cka::KEY_TYPE)
        .and_then(|v| attr::read_ulong(v).ok());
    if !copy && !get_flag(attrs, cka::MODIFIABLE) {
        return Err(ckr::ACTION_PROHIBITED);
    }
    // The key policy (docs/security.md): the usages of a key whose secret
    // never leaves the token only narrow, so that no change (and no copy)
    // adds a use its owner did not give it when it was made.
    let sealed = has_secrets(Some(class)) && !exportable(attrs);
    let mut out = attrs.clone();
    for (ty, v) in &t {
        let p = if token_only(*ty) {
            Policy::TokenOnly
        } else {
            policy(class, key_type, *ty).ok_or(ckr::ATTRIBUTE_TYPE_INVALID)?
        };
        if sealed && widens(*ty, attrs.get(ty).map(Vec::as_slice), v) {
            return Err(ckr::ATTRIBUTE_READ_ONLY);
        }
        if !change_allowed(p, *ty, attrs.get(ty).map(Vec::as_slice), v, copy) {
            return Err(ckr::ATTRIBUTE_READ_ONLY);
        }
        if copy && !get_flag(attrs, cka::MODIFIABLE) && !matches!(*ty, cka::TOKEN | cka::PRIVATE) {
            // A non-modifiable object may be copied, but only to move it
            // between session and token, or to make it non-modifiable again.
            if !(*ty == cka::MODIFIABLE && attr::read_bool(v) == Ok(false)) {
                return Err(ckr::ATTRIBUTE_READ_ONLY);
            }
        }
        if *ty == cka::ALWAYS_AUTHENTICATE && attr::read_bool(v) == Ok(true) {
            return Err(ckr::ATTRIBUTE_VALUE_INVALID);
        }
        out.insert(*ty, v.to_vec());
    }
    set_bool(&mut out, cka::PRIVATE, true);
    if get_flag(attrs, cka::SENSITIVE) != get_flag(&out, cka::SENSITIVE)
        && !get_flag(&out, cka::SENSITIVE)
    {
        return Err(ckr::ATTRIBUTE_READ_ONLY);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ty: u64, v: &[u8]) -> Attribute<'_> {
        Attribute { ty, value: v }
    }

    #[test]
    fn true_is_any_non_zero_byte_and_is_found_as_true() {
        // Found by the server fuzz target: an object made with CKA_TOKEN
        // set to 2 (true, as in C) was stored as 2, and a search for
        // CKA_TOKEN = CK_TRUE did not find it.
        let class = attr::ulong(cko::DATA);
        let a = build(
            &[
                at(cka::CLASS, &class),
                at(cka::TOKEN, &[2]),
                at(cka::MODIFIABLE, &[0]),
            ],
            Origin::Create,
        )
        .unwrap();
        assert_eq!(a[&cka::TOKEN], [1]);
        assert_eq!(a[&cka::MODIFIABLE], [0]);
        let o = Object::new(1, "u".into(), None, a);
        assert!(o.matches(&[at(cka::TOKEN, &[1])]));
        assert!(o.matches(&[at(cka::TOKEN, &[0x80])]));
        assert!(!o.matches(&[at(cka::TOKEN, &[0])]));
        assert!(o.matches(&[at(cka::MODIFIABLE, &[0])]));
        // The same attribute twice is consistent when both are true.
        assert!(build(
            &[
                at(cka::CLASS, &class),
                at(cka::TOKEN, &[2]),
                at(cka::TOKEN, &[1])
            ],
            Origin::Create,
        )
        .is_ok());
    }

    #[test]
    fn data_object_defaults() {
        let class = attr::ulong(cko::DATA);
        let a = build(
            &[at(cka::CLASS, &class), at(cka::LABEL, b"x")],
            Origin::Create,
        )
        .unwrap();
        assert_eq!(a[&cka::LABEL], b"x");
        assert_eq!(a[&cka::PRIVATE], [1]);
        assert_eq!(a[&cka::TOKEN], [0]);
        assert_eq!(a[&cka::VALUE], b"");
    }

    #[test]
    fn template_errors() {
        let data = attr::ulong(cko::DATA);
        let secret = attr::ulong(cko::SECRET_KEY);
        let aes = attr::ulong(ckk::AES);
        assert_eq!(
            build(&[at(cka::LABEL, b"x")], Origin::Create),
            Err(ckr::TEMPLATE_INCOMPLETE)
        );
        assert_eq!(
            build(&[at(cka::CLASS, &[1, 2])], Origin::Create),
            Err(ckr::ATTRIBUTE_VALUE_INVALID)
        );
        assert_eq!(
            build(&[at(cka::CLASS, &attr::ulong(99))], Origin::Create),
            Err(ckr::ATTRIBUTE_VALUE_INVALID)
        );
        assert_eq!(
            build(
                &[at(cka::CLASS, &data), at(cka::MODULUS, b"1")],
                Origin::Create
            ),
            Err(ckr::ATTRIBUTE_TYPE_INVALID)
        );
        assert_eq!(
            build(
                &[at(cka::CLASS, &data), at(cka::LOCAL, &[1])],
                Origin::Create
            ),
            Err(ckr::ATTRIBUTE_READ_ONLY)
        );
        assert_eq!(
            build(
                &[
                    at(cka::CLASS, &data),
                    at(cka::LABEL, b"a"),
                    at(cka::LABEL, b"b")
                ],
                Origin::Create
            ),
            Err(ckr::TEMPLATE_INCONSISTENT)
        );
        assert_eq!(
            build(
                &[
                    at(cka::CLASS, &secret),
                    at(cka::KEY_TYPE, &aes),
                    at(cka::VALUE, &[0; 15])
                ],
                Origin::Create
            ),
            Err(ckr::ATTRIBUTE_VALUE_INVALID)
        );
        assert_eq!(
            build(
                &[at(cka::CLASS, &secret), at(cka::KEY_TYPE, &aes)],
                Origin::Create
            ),
            Err(ckr::TEMPLATE_INCOMPLETE)
        );
        assert_eq!(
            build(
                &[
                    at(cka::CLASS, &attr::ulong(cko::PUBLIC_KEY)),
                    at(cka::KEY_TYPE, &aes)
                ],
                Origin::Create
            ),
            Err(ckr::TEMPLATE_INCONSISTENT)
        );
    }

    #[test]
    fn usages_of_a_non_exportable_key_only_narrow() {
        let secret = attr::ulong(cko::SECRET_KEY);
        let aes = attr::ulong(ckk::AES);
        let gcm = attr::ulong(hsmlink_core::ck::ckm::AES_GCM);
        let ecb = attr::ulong(hsmlink_core::ck::ckm::AES_ECB);
        let both = [gcm, ecb].concat();
        let key = |extractable: u8| {
            build(
                &[
                    at(cka::CLASS, &secret),
                    at(cka::KEY_TYPE, &aes),
                    at(cka::VALUE, &[7; 16]),
                    at(cka::EXTRACTABLE, &[extractable]),
                    at(cka::DECRYPT, &[0]),
                    at(cka::ALLOWED_MECHANISMS, &both),
                ],
                Origin::Create,
            )
            .unwrap()
        };
        let sealed = key(0);
        assert_eq!(sealed[&cka::DERIVE], [0], "CKA_DERIVE defaults to false");
        for copy in [false, true] {
            for widen in [
                at(cka::DERIVE, &[1]),
                at(cka::DECRYPT, &[1]),
                at(cka::ALLOWED_MECHANISMS, &[]),
                at(cka::ALLOWED_MECHANISMS, &attr::ulong(0x1234)),
            ] {
                assert_eq!(
                    apply(&sealed, &[widen], copy),
                    Err(ckr::ATTRIBUTE_READ_ONLY),
                    "{:#x} (copy: {copy})",
                    widen.ty
                );
            }
            let narrowed = apply(
                &sealed,
                &[at(cka::ENCRYPT, &[0]), at(cka::ALLOWED_MECHANISMS, &gcm)],
                copy,
            )
            .unwrap();
            assert_eq!(narrowed[&cka::ALLOWED_MECHANISMS], gcm);
            // An attribute the class does not have is still that error.
            assert_eq!(
                apply(&sealed, &[at(cka::VERIFY_RECOVER, &[1])], copy),
                Err(ckr::ATTRIBUTE_TYPE_INVALID)
            );
        }
        // An exportable key's usages change freely: it hides nothing.
        let open = key(1);
        let wider = apply(
            &open,
            &[at(cka::DERIVE, &[1]), at(cka::ALLOWED_MECHANISMS, &[])],
            false,
        )
        .unwrap();
        assert_eq!(wider[&cka::DERIVE], [1]);
    }

    #[test]
    fn sensitivity_is_monotonic() {
        let secret = attr::ulong(cko::SECRET_KEY);
        let aes = attr::ulong(ckk::AES);
        let a = build(
            &[
                at(cka::CLASS, &secret),
                at(cka::KEY_TYPE, &aes),
                at(cka::VALUE, &[7; 16]),
                at(cka::EXTRACTABLE, &[1]),
            ],
            Origin::Create,
        )
        .unwrap();
        assert!(exportable(&a));
        let b = apply(&a, &[at(cka::SENSITIVE, &[1])], false).unwrap();
        assert!(!exportable(&b));
        assert_eq!(
            apply(&b, &[at(cka::SENSITIVE, &[0])], false),
            Err(ckr::ATTRIBUTE_READ_ONLY)
        );
        let c = apply(&a, &[at(cka::EXTRACTABLE, &[0])], false).unwrap();
        assert_eq!(
            apply(&c, &[at(cka::EXTRACTABLE, &[1])], false),
            Err(ckr::ATTRIBUTE_READ_ONLY)
        );
        assert_eq!(
            apply(&a, &[at(cka::VALUE, &[1; 16])], false),
            Err(ckr::ATTRIBUTE_READ_ONLY)
        );
        assert_eq!(
            apply(&a, &[at(cka::CLASS, &attr::ulong(cko::DATA))], false),
            Err(ckr::ATTRIBUTE_READ_ONLY)
        );
        let d = apply(&a, &[at(cka::MODIFIABLE, &[0])], true).unwrap();
        assert_eq!(
            apply(&d, &[at(cka::LABEL, b"x")], false),
            Err(ckr::ACTION_PROHIBITED)
        );
    }
}
