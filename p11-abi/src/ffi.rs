//! The exported C functions: the only `unsafe` code of hsmlink.
//!
//! Every entry point runs inside [`guard`], which turns a panic into
//! `CKR_GENERAL_ERROR` (a panic must never unwind into the host process).
//! Every pointer goes through the helpers below, which refuse null and
//! misaligned pointers with `CKR_ARGUMENTS_BAD` before any dereference.
//! Everything past the pointers is safe code in `module` and `hsmlink-core`.
#![allow(non_snake_case, clippy::missing_safety_doc)]

#[cfg(feature = "fuzz-client")]
pub mod hostile;
#[cfg(feature = "test-client")]
pub mod testing;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use hsmlink_core::ck::{ckf, ckm, ckr, ckz, Rv, UNAVAILABLE_INFORMATION};
use hsmlink_core::mech;
use hsmlink_core::token::Len;
use hsmlink_core::wire::{AttrValue, MechParam, Mechanism, Op, MAX_ATTRS};

use crate::module::{self, as_attributes, canonical_template, host_value, padded, SLOT_ID};
use crate::types::*;

const VERSION_2_40: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};
const LIBRARY_VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

type R = Result<(), Rv>;

/// Run `f`, catching any panic.
fn guard(f: impl FnOnce() -> R) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ckr::OK as CK_RV,
        Ok(Err(rv)) => rv as CK_RV,
        Err(_) => {
            log::error!("internal error (panic) caught at the C boundary");
            ckr::GENERAL_ERROR as CK_RV
        }
    }
}

// ----- pointer helpers --------------------------------------------------------

unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T, Rv> {
    if p.is_null() || !p.is_aligned() {
        return Err(ckr::ARGUMENTS_BAD);
    }
    Ok(&mut *p)
}

unsafe fn get<T: Copy>(p: *const T) -> Result<T, Rv> {
    if p.is_null() || !p.is_aligned() {
        return Err(ckr::ARGUMENTS_BAD);
    }
    Ok(ptr::read(p))
}

/// A caller's element count, checked before any use: it must fit a
/// `usize`, and `n` elements of `T` must fit in `isize::MAX` bytes (the
/// limit of any Rust slice); anything else is `CKR_ARGUMENTS_BAD`.
fn count<T>(n: CK_ULONG) -> Result<usize, Rv> {
    let n = usize::try_from(n).map_err(|_| ckr::ARGUMENTS_BAD)?;
    let bytes = n
        .checked_mul(std::mem::size_of::<T>())
        .ok_or(ckr::ARGUMENTS_BAD)?;
    if bytes > isize::MAX as usize {
        return Err(ckr::ARGUMENTS_BAD);
    }
    Ok(n)
}

fn len(n: CK_ULONG) -> Result<usize, Rv> {
    count::<u8>(n)
}

/// A pointer and count pair from the caller, checked with checked
/// arithmetic: not null (unless the count is zero), aligned for `T`, and
/// the `count × size_of::<T>()` bytes from `p` neither overflow nor wrap
/// around the address space. `None` for a zero count (no pointer needed).
fn span<T>(p: *const T, n: CK_ULONG) -> Result<Option<usize>, Rv> {
    let n = count::<T>(n)?;
    if n == 0 {
        return Ok(None);
    }
    if p.is_null() || !p.is_aligned() {
        return Err(ckr::ARGUMENTS_BAD);
    }
    let bytes = n * std::mem::size_of::<T>();
    (p as usize).checked_add(bytes).ok_or(ckr::ARGUMENTS_BAD)?;
    Ok(Some(n))
}

unsafe fn bytes<'a>(p: *const u8, n: CK_ULONG) -> Result<&'a [u8], Rv> {
    array(p, n)
}

unsafe fn bytes_mut<'a>(p: *mut u8, n: CK_ULONG) -> Result<&'a mut [u8], Rv> {
    array_mut(p, n)
}

unsafe fn array<'a, T>(p: *const T, n: CK_ULONG) -> Result<&'a [T], Rv> {
    match span(p, n)? {
        None => Ok(&[]),
        Some(n) => Ok(std::slice::from_raw_parts(p, n)),
    }
}

unsafe fn array_mut<'a, T>(p: *mut T, n: CK_ULONG) -> Result<&'a mut [T], Rv> {
    match span(p, n)? {
        None => Ok(&mut []),
        Some(n) => Ok(std::slice::from_raw_parts_mut(p, n)),
    }
}

/// A caller's output array of `cap` elements, written element by element:
/// no slice of the caller's claimed size is made and nothing is allocated
/// by it; only as many elements as there are to return are written.
struct OutArray<T> {
    p: *mut T,
    cap: usize,
}

impl<T> OutArray<T> {
    unsafe fn new(p: *mut T, n: CK_ULONG) -> Result<Self, Rv> {
        let cap = span(p, n)?.unwrap_or(0);
        Ok(OutArray { p, cap })
    }

    fn cap(&self) -> usize {
        self.cap
    }

    /// Write element `i` (`i < cap`, else `CKR_GENERAL_ERROR`).
    fn put(&mut self, i: usize, v: T) -> R {
        if i >= self.cap {
            return Err(ckr::GENERAL_ERROR);
        }
        // SAFETY: `span` checked the pointer (non-null, aligned, the
        // caller's `cap` elements within the address space) and `i < cap`.
        unsafe { self.p.add(i).write(v) };
        Ok(())
    }
}

/// A template as (type, value bytes in the host's layout).
/// More than [`MAX_ATTRS`] attributes (what one message to the HSM holds)
/// is `CKR_ARGUMENTS_BAD`, checked before the array is read, so no
/// allocation is ever sized by the caller's count.
unsafe fn template<'a>(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<(u64, &'a [u8])>, Rv> {
    if count::<CK_ATTRIBUTE>(n)? > MAX_ATTRS {
        return Err(ckr::ARGUMENTS_BAD);
    }
    array(p, n)?
        .iter()
        .map(|a| Ok((a.type_ as u64, bytes(a.pValue as *const u8, a.ulValueLen)?)))
        .collect()
}

/// A request too large for one frame (a template with long values) is
/// `CKR_DATA_LEN_RANGE` inside the module, a code the object and key
/// functions may not return; they answer `CKR_DEVICE_MEMORY` instead (the
/// module's frame buffers cannot hold it).
fn too_large(rv: Rv) -> Rv {
    if rv == ckr::DATA_LEN_RANGE {
        ckr::DEVICE_MEMORY
    } else {
        rv
    }
}

/// The parameter structure of a mechanism: present, aligned, exact size.
unsafe fn param<T: Copy>(m: &CK_MECHANISM) -> Result<T, Rv> {
    let p = m.pParameter as *const T;
    if p.is_null() || !p.is_aligned() || len(m.ulParameterLen)? != std::mem::size_of::<T>() {
        return Err(ckr::MECHANISM_PARAM_INVALID);
    }
    Ok(ptr::read(p))
}

/// A byte string inside a mechanism's parameters (an IV, a label, a public
/// value): one that cannot be read (NULL or wrapping with a length) or
/// that is longer than a frame can carry is an invalid parameter, refused
/// before any byte of it is read.
unsafe fn param_bytes<'a>(p: *const u8, n: CK_ULONG) -> Result<&'a [u8], Rv> {
    message_bytes(p, n, ckr::MECHANISM_PARAM_INVALID).map_err(|_| ckr::MECHANISM_PARAM_INVALID)
}

/// `n` bytes at `p` that must travel in one message: longer than a frame
/// can carry is `too_long`, refused before any byte is read.
///
/// # Safety
/// A non-NULL `p` points to `n` readable bytes (as for every slice
/// helper here: NULL, misalignment and wrapping are refused).
unsafe fn message_bytes<'a>(p: *const u8, n: CK_ULONG, too_long: Rv) -> Result<&'a [u8], Rv> {
    if len(n)? > module::BUF {
        return Err(too_long);
    }
    bytes(p, n)
}

/// Decode a `CK_MECHANISM` and its parameters into the core's form.
unsafe fn mechanism<'a>(p: *const CK_MECHANISM) -> Result<Mechanism<'a>, Rv> {
    let m = get(p)?;
    let ty = m.mechanism as u64;
    let raw = || param_bytes(m.pParameter as *const u8, m.ulParameterLen);
    let param = match ty {
        ckm::AES_CBC | ckm::AES_CBC_PAD => MechParam::Iv(raw()?),
        ckm::AES_KEY_WRAP | ckm::AES_KEY_WRAP_PAD => match raw()? {
            [] => MechParam::None,
            iv => MechParam::Bytes(iv),
        },
        ckm::AES_GCM => {
            let g: CK_GCM_PARAMS = param(&m)?;
            MechParam::Gcm {
                iv: param_bytes(g.pIv, g.ulIvLen)?,
                aad: param_bytes(g.pAAD, g.ulAADLen)?,
                tag_bits: u32::try_from(g.ulTagBits).map_err(|_| ckr::MECHANISM_PARAM_INVALID)?,
            }
        }
        ckm::AES_CTR => {
            let c: CK_AES_CTR_PARAMS = param(&m)?;
            MechParam::Ctr {
                counter_bits: u32::try_from(c.ulCounterBits)
                    .map_err(|_| ckr::MECHANISM_PARAM_INVALID)?,
                block: c.cb,
            }
        }
        ckm::RSA_PKCS_PSS
        | ckm::SHA1_RSA_PKCS_PSS
        | ckm::SHA224_RSA_PKCS_PSS
        | ckm::SHA256_RSA_PKCS_PSS
        | ckm::SHA384_RSA_PKCS_PSS
        | ckm::SHA512_RSA_PKCS_PSS => {
            let s: CK_RSA_PKCS_PSS_PARAMS = param(&m)?;
            MechParam::Pss {
                hash: s.hashAlg as u64,
                mgf: s.mgf as u64,
                salt_len: s.sLen as u64,
            }
        }
        ckm::RSA_PKCS_OAEP => {
            let o: CK_RSA_PKCS_OAEP_PARAMS = param(&m)?;
            let label = param_bytes(o.pSourceData as *const u8, o.ulSourceDataLen)?;
            if o.source as u64 != ckz::DATA_SPECIFIED && !(o.source == 0 && label.is_empty()) {
                return Err(ckr::MECHANISM_PARAM_INVALID);
            }
            MechParam::Oaep {
                hash: o.hashAlg as u64,
                mgf: o.mgf as u64,
                label,
            }
        }
        ckm::ECDH1_DERIVE | ckm::ECDH1_COFACTOR_DERIVE => {
            let e: CK_ECDH1_DERIVE_PARAMS = param(&m)?;
            MechParam::Ecdh {
                kdf: e.kdf as u64,
                shared_data: param_bytes(e.pSharedData, e.ulSharedDataLen)?,
                public_data: param_bytes(e.pPublicData, e.ulPublicDataLen)?,
            }
        }
        ckm::EDDSA => {
            if m.pParameter.is_null() && m.ulParameterLen == 0 {
                MechParam::None
            } else {
                let e: CK_EDDSA_PARAMS = param(&m)?;
                MechParam::Eddsa {
                    prehash: e.phFlag != 0,
                    context: param_bytes(e.pContextData, e.ulContextDataLen)?,
                }
            }
        }
        // CK_OBJECT_HANDLE and CK_EXTRACT_PARAMS: one CK_ULONG.
        ckm::CONCATENATE_BASE_AND_KEY | ckm::EXTRACT_KEY_FROM_KEY => {
            let n: CK_ULONG = param(&m)?;
            MechParam::Ulong(n as u64)
        }
        ckm::CONCATENATE_BASE_AND_DATA
        | ckm::CONCATENATE_DATA_AND_BASE
        | ckm::XOR_BASE_AND_DATA
        | ckm::AES_ECB_ENCRYPT_DATA => {
            let d: CK_KEY_DERIVATION_STRING_DATA = param(&m)?;
            MechParam::Bytes(param_bytes(d.pData, d.ulLen)?)
        }
        ckm::AES_CBC_ENCRYPT_DATA => {
            let d: CK_AES_CBC_ENCRYPT_DATA_PARAMS = param(&m)?;
            MechParam::AesCbcData {
                iv: d.iv,
                data: param_bytes(d.pData, d.length)?,
            }
        }
        ckm::AES_CMAC_GENERAL => {
            let n: CK_ULONG = param(&m)?;
            MechParam::Ulong(n as u64)
        }
        // Mechanisms without parameters: whatever is passed is ignored.
        _ => MechParam::None,
    };
    Ok(Mechanism { ty, param })
}

/// An output buffer with its length word: `None` for a length query.
unsafe fn output<'a>(
    p: *mut u8,
    plen: *mut CK_ULONG,
) -> Result<(Option<&'a mut [u8]>, &'a mut CK_ULONG), Rv> {
    let l = out(plen)?;
    let buf = if p.is_null() {
        None
    } else {
        Some(bytes_mut(p, *l)?)
    };
    Ok((buf, l))
}

/// Report an output length the PKCS#11 way: a null buffer gets the size and
/// `CKR_OK`; a short one gets the size and `CKR_BUFFER_TOO_SMALL`.
fn report(r: Result<Len, Rv>, was_query: bool, plen: &mut CK_ULONG) -> R {
    match r? {
        Len::Written(n) => {
            *plen = n as CK_ULONG;
            Ok(())
        }
        Len::Needed(n) => {
            *plen = n as CK_ULONG;
            if was_query {
                Ok(())
            } else {
                Err(ckr::BUFFER_TOO_SMALL)
            }
        }
    }
}

fn slot(id: CK_SLOT_ID) -> R {
    if id as u64 == SLOT_ID {
        Ok(())
    } else {
        Err(ckr::SLOT_ID_INVALID)
    }
}

/// Count forks in the child, so a call can tell it runs in a forked child
/// without asking for the process id (a system call) every time. glibc
/// drops the handler when the library is unloaded.
fn watch_forks() {
    extern "C" fn child_after_fork() {
        module::note_fork();
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic
        // counter (async-signal-safe, as a child of a threaded process
        // requires).
        if unsafe { libc::pthread_atfork(None, None, Some(child_after_fork)) } == 0 {
            module::forks_watched();
        }
    });
}

/// Runs when the library is unloaded (`dlclose`) or the process ends (an
/// ELF `.fini_array` entry).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".fini_array"]
static UNLOAD: extern "C" fn() = unload;

/// Free the session slots if nothing uses them: without this, every
/// `dlopen`/`dlclose` cycle of an application that finalizes properly
/// would leak them (6.5 MiB).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
extern "C" fn unload() {
    if let Some(slots) = module::slots_for_unload() {
        // SAFETY: the slice was leaked from a `Box` by `module::slots`, is
        // taken out of the only place that hands it out, and no `Module`
        // (the only user of its `'static` borrow) is alive; the library's
        // code, the only code that knows it, is being unloaded.
        drop(unsafe { Box::from_raw(slots as *const [module::Slot] as *mut [module::Slot]) });
    }
}

macro_rules! cfn {
    ($name:ident ( $($a:ident : $t:ty),* $(,)? ) $body:block) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> CK_RV {
            guard(move || $body)
        }
    };
}

// ----- general purpose ----------------------------------------------------------

cfn!(C_Initialize(pInitArgs: CK_VOID_PTR) {
    if !pInitArgs.is_null() {
        let a: CK_C_INITIALIZE_ARGS = get(pInitArgs as *const CK_C_INITIALIZE_ARGS)?;
        if !a.pReserved.is_null() {
            return Err(ckr::ARGUMENTS_BAD);
        }
        let given = [
            a.CreateMutex.is_some(),
            a.DestroyMutex.is_some(),
            a.LockMutex.is_some(),
            a.UnlockMutex.is_some(),
        ];
        if given.iter().any(|&g| g) && !given.iter().all(|&g| g) {
            return Err(ckr::ARGUMENTS_BAD);
        }
        // With or without CKF_OS_LOCKING_OK the library locks with the OS's
        // primitives, which v2.40 allows when the application supplies its
        // own functions too (the library may use either).
    }
    watch_forks();
    module::initialize()
});

cfn!(C_Finalize(pReserved: CK_VOID_PTR) {
    if !pReserved.is_null() {
        return Err(ckr::ARGUMENTS_BAD);
    }
    module::finalize()
});

cfn!(C_GetInfo(pInfo: *mut CK_INFO) {
    module::module()?;
    *out(pInfo)? = CK_INFO {
        cryptokiVersion: VERSION_2_40,
        manufacturerID: padded("hsmlink"),
        flags: 0,
        libraryDescription: padded("hsmlink PKCS#11 network module"),
        libraryVersion: LIBRARY_VERSION,
    };
    Ok(())
});

cfn!(C_GetFunctionList(ppFunctionList: *mut *const CK_FUNCTION_LIST) {
    *out(ppFunctionList)? = &FUNCTION_LIST;
    Ok(())
});

/// `CK_INTERFACE` holds raw pointers; this one only points at statics.
struct Interface(CK_INTERFACE);
// SAFETY: the pointers inside are to immutable `'static` data.
unsafe impl Sync for Interface {}

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";
static INTERFACE: Interface = Interface(CK_INTERFACE {
    pInterfaceName: c"PKCS 11".as_ptr() as *const CK_CHAR,
    pFunctionList: &FUNCTION_LIST as *const CK_FUNCTION_LIST as *const std::os::raw::c_void,
    flags: 0,
});

/// `C_GetInterfaceList` (PKCS#11 3.0): one interface, "PKCS 11", version 2.40.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterfaceList(
    pInterfacesList: *mut CK_INTERFACE,
    pulCount: *mut CK_ULONG,
) -> CK_RV {
    guard(move || {
        let count = out(pulCount)?;
        if pInterfacesList.is_null() {
            *count = 1;
            return Ok(());
        }
        let mut dst = OutArray::new(pInterfacesList, *count)?;
        if dst.cap() < 1 {
            *count = 1;
            return Err(ckr::BUFFER_TOO_SMALL);
        }
        dst.put(0, INTERFACE.0)?;
        *count = 1;
        Ok(())
    })
}

/// `C_GetInterface` (PKCS#11 3.0): the "PKCS 11" interface at version 2.40.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterface(
    pInterfaceName: *const CK_UTF8CHAR,
    pVersion: *const CK_VERSION,
    ppInterface: *mut *const CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    guard(move || {
        let dst = out(ppInterface)?;
        if !pInterfaceName.is_null() {
            // Compared byte by byte, reading no further than the first
            // difference or NUL: never past the end of a short string.
            for (i, want) in INTERFACE_NAME.iter().enumerate() {
                if *pInterfaceName.add(i) != *want {
                    return Err(ckr::ARGUMENTS_BAD);
                }
            }
        }
        if !pVersion.is_null() && get(pVersion)? != VERSION_2_40 {
            return Err(ckr::ARGUMENTS_BAD);
        }
        if flags != 0 {
            return Err(ckr::ARGUMENTS_BAD);
        }
        *dst = &INTERFACE.0;
        Ok(())
    })
}

// ----- slots and tokens -----------------------------------------------------------

cfn!(C_GetSlotList(tokenPresent: CK_BBOOL, pSlotList: *mut CK_SLOT_ID, pulCount: *mut CK_ULONG) {
    let _ = tokenPresent;
    module::module()?;
    let count = out(pulCount)?;
    if pSlotList.is_null() {
        *count = 1;
        return Ok(());
    }
    let mut dst = OutArray::new(pSlotList, *count)?;
    if dst.cap() < 1 {
        *count = 1;
        return Err(ckr::BUFFER_TOO_SMALL);
    }
    dst.put(0, SLOT_ID as CK_SLOT_ID)?;
    *count = 1;
    Ok(())
});

cfn!(C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_SLOT_INFO) {
    module::module()?;
    slot(slotID)?;
    *out(pInfo)? = CK_SLOT_INFO {
        slotDescription: padded("hsmlink network HSM"),
        manufacturerID: padded("hsmlink"),
        flags: (ckf::TOKEN_PRESENT | ckf::HW_SLOT) as CK_FLAGS,
        hardwareVersion: LIBRARY_VERSION,
        firmwareVersion: LIBRARY_VERSION,
    };
    Ok(())
});

cfn!(C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_TOKEN_INFO) {
    let m = module::module()?;
    slot(slotID)?;
    let info = out(pInfo)?;
    let (sessions, rw) = m.token.session_count();
    let max = m.token.max_sessions() as CK_ULONG;
    let unavailable = UNAVAILABLE_INFORMATION as CK_ULONG;
    *info = CK_TOKEN_INFO {
        label: padded(module::TOKEN_LABEL),
        manufacturerID: padded("hsmlink"),
        model: padded("hsmlink"),
        serialNumber: padded("1"),
        flags: (ckf::RNG
            | ckf::LOGIN_REQUIRED
            | ckf::USER_PIN_INITIALIZED
            | ckf::TOKEN_INITIALIZED) as CK_FLAGS,
        ulMaxSessionCount: max,
        ulSessionCount: sessions as CK_ULONG,
        ulMaxRwSessionCount: max,
        ulRwSessionCount: rw as CK_ULONG,
        ulMaxPinLen: 255,
        ulMinPinLen: 1,
        ulTotalPublicMemory: unavailable,
        ulFreePublicMemory: unavailable,
        ulTotalPrivateMemory: unavailable,
        ulFreePrivateMemory: unavailable,
        hardwareVersion: LIBRARY_VERSION,
        firmwareVersion: LIBRARY_VERSION,
        utcTime: [b' '; 16],
    };
    Ok(())
});

cfn!(C_GetMechanismList(slotID: CK_SLOT_ID, pMechanismList: *mut CK_MECHANISM_TYPE, pulCount: *mut CK_ULONG) {
    module::module()?;
    slot(slotID)?;
    let count = out(pulCount)?;
    let all = mech::MECHANISMS;
    if pMechanismList.is_null() {
        *count = all.len() as CK_ULONG;
        return Ok(());
    }
    let mut dst = OutArray::new(pMechanismList, *count)?;
    if dst.cap() < all.len() {
        *count = all.len() as CK_ULONG;
        return Err(ckr::BUFFER_TOO_SMALL);
    }
    for (i, m) in all.iter().enumerate() {
        dst.put(i, m.ty as CK_MECHANISM_TYPE)?;
    }
    *count = all.len() as CK_ULONG;
    Ok(())
});

cfn!(C_GetMechanismInfo(slotID: CK_SLOT_ID, mechanism: CK_MECHANISM_TYPE, pInfo: *mut CK_MECHANISM_INFO) {
    module::module()?;
    slot(slotID)?;
    let m = mech::info(mechanism as u64).ok_or(ckr::MECHANISM_INVALID)?;
    *out(pInfo)? = CK_MECHANISM_INFO {
        ulMinKeySize: m.min_key as CK_ULONG,
        ulMaxKeySize: m.max_key as CK_ULONG,
        flags: m.flags as CK_FLAGS,
    };
    Ok(())
});

// Token initialization and PIN setting are done on the HSM (the profile).
cfn!(C_InitToken(slotID: CK_SLOT_ID, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG, pLabel: *mut CK_UTF8CHAR) {
    let _ = (pPin, ulPinLen, pLabel);
    module::module()?;
    slot(slotID)?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

cfn!(C_InitPIN(hSession: CK_SESSION_HANDLE, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG) {
    let _ = (hSession, pPin, ulPinLen);
    module::module()?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

cfn!(C_SetPIN(hSession: CK_SESSION_HANDLE, pOldPin: *mut CK_UTF8CHAR, ulOldLen: CK_ULONG, pNewPin: *mut CK_UTF8CHAR, ulNewLen: CK_ULONG) {
    let _ = (hSession, pOldPin, ulOldLen, pNewPin, ulNewLen);
    module::module()?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

// ----- sessions -----------------------------------------------------------------------

cfn!(C_OpenSession(slotID: CK_SLOT_ID, flags: CK_FLAGS, pApplication: CK_VOID_PTR, Notify: CK_NOTIFY, phSession: *mut CK_SESSION_HANDLE) {
    let _ = (pApplication, Notify);
    let m = module::module()?;
    slot(slotID)?;
    let dst = out(phSession)?;
    if flags as u64 & ckf::SERIAL_SESSION == 0 {
        return Err(ckr::SESSION_PARALLEL_NOT_SUPPORTED);
    }
    let h = m.token.open_session(flags as u64 & ckf::RW_SESSION != 0)?;
    *dst = h as CK_SESSION_HANDLE;
    Ok(())
});

cfn!(C_CloseSession(hSession: CK_SESSION_HANDLE) {
    module::module()?.token.close_session(hSession as u64)
});

cfn!(C_CloseAllSessions(slotID: CK_SLOT_ID) {
    let m = module::module()?;
    slot(slotID)?;
    m.token.close_all_sessions();
    Ok(())
});

cfn!(C_GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: *mut CK_SESSION_INFO) {
    let m = module::module()?;
    let dst = out(pInfo)?;
    let i = m.token.session_info(hSession as u64)?;
    *dst = CK_SESSION_INFO {
        slotID: SLOT_ID as CK_SLOT_ID,
        state: i.state as CK_ULONG,
        flags: i.flags as CK_FLAGS,
        ulDeviceError: 0,
    };
    Ok(())
});

cfn!(C_GetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: *mut CK_BYTE, pulOperationStateLen: *mut CK_ULONG) {
    let _ = (pOperationState, pulOperationStateLen);
    module::module()?.token.session_info(hSession as u64)?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

cfn!(C_SetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: *mut CK_BYTE, ulOperationStateLen: CK_ULONG, hEncryptionKey: CK_OBJECT_HANDLE, hAuthenticationKey: CK_OBJECT_HANDLE) {
    let _ = (pOperationState, ulOperationStateLen, hEncryptionKey, hAuthenticationKey);
    module::module()?.token.session_info(hSession as u64)?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

cfn!(C_Login(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG) {
    let m = module::module()?;
    // A NULL pPin asks for the protected authentication path (v2.40 §5.6),
    // which this token does not have (no CKF_PROTECTED_AUTHENTICATION_PATH):
    // an argument error, never sent to the HSM as an empty PIN (which would
    // count as a failed login). An empty PIN (non-NULL, length 0) is a PIN.
    if pPin.is_null() {
        m.token.session_info(hSession as u64)?;
        return Err(ckr::ARGUMENTS_BAD);
    }
    // A PIN longer than any the token takes is refused before a byte of it
    // is read (the special PIN is parsed as text: a length that lies would
    // have it read past the caller's buffer).
    if ulPinLen as u64 > hsmlink_core::token::MAX_PIN as u64 {
        m.token.session_info(hSession as u64)?;
        return Err(ckr::PIN_LEN_RANGE);
    }
    let pin = bytes(pPin, ulPinLen)?;
    m.token.login(hSession as u64, userType as u64, pin)
});

cfn!(C_Logout(hSession: CK_SESSION_HANDLE) {
    module::module()?.token.logout(hSession as u64)
});

// ----- objects ------------------------------------------------------------------------

cfn!(C_CreateObject(hSession: CK_SESSION_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG, phObject: *mut CK_OBJECT_HANDLE) {
    let m = module::module()?;
    let t = canonical_template(&template(pTemplate, ulCount)?)?;
    let dst = out(phObject)?;
    *dst = m
        .token
        .create_object(hSession as u64, &as_attributes(&t))
        .map_err(too_large)? as CK_OBJECT_HANDLE;
    Ok(())
});

cfn!(C_CopyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG, phNewObject: *mut CK_OBJECT_HANDLE) {
    let m = module::module()?;
    let t = canonical_template(&template(pTemplate, ulCount)?)?;
    let dst = out(phNewObject)?;
    *dst = m
        .token
        .copy_object(hSession as u64, hObject as u64, &as_attributes(&t))
        .map_err(too_large)? as CK_OBJECT_HANDLE;
    Ok(())
});

cfn!(C_DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) {
    module::module()?.token.destroy_object(hSession as u64, hObject as u64)
});

cfn!(C_GetObjectSize(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pulSize: *mut CK_ULONG) {
    let m = module::module()?;
    let dst = out(pulSize)?;
    *dst = m.token.object_size(hSession as u64, hObject as u64)? as CK_ULONG;
    Ok(())
});

cfn!(C_GetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG) {
    let m = module::module()?;
    // The template is read once, whole, before anything is written: a value
    // may land in the template itself (a pValue pointing into it), and must
    // not change where the next value goes or how long it may be. While
    // values are written no reference to the template is held: the module
    // writes only through the pointers the application passed.
    let n = span(pTemplate as *const CK_ATTRIBUTE, ulCount)?.unwrap_or(0);
    let mut attrs: Vec<CK_ATTRIBUTE> = Vec::new();
    attrs.try_reserve_exact(n).map_err(|_| ckr::HOST_MEMORY)?;
    for i in 0..n {
        attrs.push(ptr::read(pTemplate.add(i)));
    }
    let mut rv = ckr::OK;
    for (k, chunk) in attrs.chunks(MAX_ATTRS).enumerate() {
        attribute_chunk(&m, hSession as u64, hObject as u64, pTemplate.add(k * MAX_ATTRS), chunk, &mut rv)?;
    }
    if rv == ckr::OK {
        Ok(())
    } else {
        Err(rv)
    }
});

/// One exchange of `C_GetAttributeValue` for up to [`MAX_ATTRS`]
/// attributes: `chunk` is the module's copy of the caller's entries at
/// `dst`, where the lengths are written back (`rv` collects the
/// per-attribute outcome). When the values together do not fit one reply
/// frame (the HSM answers `CKR_DATA_LEN_RANGE`, which `C_GetAttributeValue`
/// may not return), the chunk is asked for in halves; a single value larger
/// than a frame is `CKR_FUNCTION_FAILED`.
///
/// # Safety
/// `dst` points to `chunk.len()` aligned entries of the caller's template.
unsafe fn attribute_chunk(
    m: &module::Module,
    session: u64,
    object: u64,
    dst: *mut CK_ATTRIBUTE,
    chunk: &[CK_ATTRIBUTE],
    rv: &mut Rv,
) -> R {
    let types: Vec<u64> = chunk.iter().map(|a| a.type_ as u64).collect();
    let mut answers: Vec<Option<Vec<u8>>> = Vec::with_capacity(types.len());
    let mut codes: Vec<Rv> = Vec::with_capacity(types.len());
    let r = m.token.get_attributes(session, object, &types, |i, v| {
        let (val, code) = match v {
            AttrValue::Value(b) => {
                let ty = types.get(i).copied().unwrap_or_default();
                (Some(host_value(ty, b).into_owned()), ckr::OK)
            }
            AttrValue::Sensitive => (None, ckr::ATTRIBUTE_SENSITIVE),
            AttrValue::Invalid => (None, ckr::ATTRIBUTE_TYPE_INVALID),
        };
        answers.push(val);
        codes.push(code);
    });
    match r {
        Err(ckr::DATA_LEN_RANGE) if chunk.len() > 1 => {
            let half = chunk.len() / 2;
            let (head, tail) = chunk.split_at(half);
            attribute_chunk(m, session, object, dst, head, rv)?;
            return attribute_chunk(m, session, object, dst.add(half), tail, rv);
        }
        Err(ckr::DATA_LEN_RANGE) => {
            log::warn!("an attribute value is larger than a frame can carry");
            return Err(ckr::FUNCTION_FAILED);
        }
        r => r?,
    }
    for (i, ((a, val), code)) in chunk.iter().zip(answers).zip(codes).enumerate() {
        let length = ptr::addr_of_mut!((*dst.add(i)).ulValueLen);
        let Some(val) = val else {
            length.write(UNAVAILABLE_INFORMATION as CK_ULONG);
            *rv = code;
            continue;
        };
        if a.pValue.is_null() {
            length.write(val.len() as CK_ULONG);
        } else if len(a.ulValueLen)? >= val.len() {
            // SAFETY: the caller's buffer holds `ulValueLen` bytes (its
            // contract), at least `val.len()`; `bytes_mut` checks the
            // pointer and the length.
            bytes_mut(a.pValue as *mut u8, val.len() as CK_ULONG)?.copy_from_slice(&val);
            length.write(val.len() as CK_ULONG);
        } else {
            length.write(UNAVAILABLE_INFORMATION as CK_ULONG);
            *rv = ckr::BUFFER_TOO_SMALL;
        }
    }
    Ok(())
}

cfn!(C_SetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG) {
    let m = module::module()?;
    let t = canonical_template(&template(pTemplate, ulCount)?)?;
    m.token
        .set_attributes(hSession as u64, hObject as u64, &as_attributes(&t))
        .map_err(too_large)
});

cfn!(C_FindObjectsInit(hSession: CK_SESSION_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG) {
    let m = module::module()?;
    let t = canonical_template(&template(pTemplate, ulCount)?)?;
    m.token
        .find_init(hSession as u64, &as_attributes(&t))
        .map_err(too_large)
});

cfn!(C_FindObjects(hSession: CK_SESSION_HANDLE, phObject: *mut CK_OBJECT_HANDLE, ulMaxObjectCount: CK_ULONG, pulObjectCount: *mut CK_ULONG) {
    let m = module::module()?;
    let count = out(pulObjectCount)?;
    let mut dst = OutArray::new(phObject, ulMaxObjectCount)?;
    // Handles come in batches of at most MAX_FIND through a buffer of that
    // size: what is written is bounded by what the search finds, never by
    // the caller's count.
    let mut batch = [0u64; hsmlink_core::wire::MAX_FIND];
    let mut n = 0usize;
    loop {
        let want = (dst.cap() - n).min(batch.len());
        let room = batch.get_mut(..want).ok_or(ckr::GENERAL_ERROR)?;
        let got = m.token.find(hSession as u64, room)?;
        for (i, h) in batch.iter().take(got.min(want)).enumerate() {
            dst.put(n + i, *h as CK_OBJECT_HANDLE)?;
        }
        n += got.min(want);
        if want == 0 || got < want {
            break;
        }
    }
    *count = n as CK_ULONG;
    Ok(())
});

cfn!(C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) {
    module::module()?.token.find_final(hSession as u64)
});

// ----- encryption, decryption, signatures -----------------------------------------------

unsafe fn init(op: Op, h: CK_SESSION_HANDLE, p: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) -> R {
    let m = module::module()?;
    let mech = mechanism(p)?;
    m.token.crypto_init(h as u64, op, &mech, key as u64)
}

/// A signature to verify: one longer than a message can carry is no
/// signature of any key here (`CKR_SIGNATURE_LEN_RANGE`), refused unread.
unsafe fn signature<'a>(p: *const u8, n: CK_ULONG) -> Result<&'a [u8], Rv> {
    message_bytes(p, n, ckr::SIGNATURE_LEN_RANGE)
}

/// The arguments of a call of the active operation `op` (`None`: a
/// digest), checked: when they are refused (`CKR_ARGUMENTS_BAD`), the
/// operation ends, as v2.40 says of every failed single-part, update or
/// final call but `CKR_BUFFER_TOO_SMALL`.
fn checked_args<T>(
    m: &module::Module,
    h: CK_SESSION_HANDLE,
    op: Option<Op>,
    args: Result<T, Rv>,
) -> Result<T, Rv> {
    if args.is_err() {
        m.token.abandon(h as u64, op);
    }
    args
}

unsafe fn single(
    op: Op,
    h: CK_SESSION_HANDLE,
    data: *mut u8,
    data_len: CK_ULONG,
    outp: *mut u8,
    out_len: *mut CK_ULONG,
) -> R {
    let m = module::module()?;
    let (data, (buf, plen)) = checked_args(
        &m,
        h,
        Some(op),
        (|| Ok((bytes(data, data_len)?, output(outp, out_len)?)))(),
    )?;
    let query = buf.is_none();
    report(m.token.crypto(h as u64, op, data, buf), query, plen)
}

unsafe fn update(
    op: Op,
    h: CK_SESSION_HANDLE,
    data: *mut u8,
    data_len: CK_ULONG,
    outp: *mut u8,
    out_len: *mut CK_ULONG,
) -> R {
    let m = module::module()?;
    let (data, (buf, plen)) = checked_args(
        &m,
        h,
        Some(op),
        (|| Ok((bytes(data, data_len)?, output(outp, out_len)?)))(),
    )?;
    let query = buf.is_none();
    report(m.token.crypto_update(h as u64, op, data, buf), query, plen)
}

unsafe fn finish(op: Op, h: CK_SESSION_HANDLE, outp: *mut u8, out_len: *mut CK_ULONG) -> R {
    let m = module::module()?;
    let (buf, plen) = checked_args(&m, h, Some(op), output(outp, out_len))?;
    let query = buf.is_none();
    report(m.token.crypto_final(h as u64, op, buf), query, plen)
}

cfn!(C_EncryptInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE) {
    init(Op::Encrypt, hSession, pMechanism, hKey)
});

cfn!(C_Encrypt(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pEncryptedData: *mut CK_BYTE, pulEncryptedDataLen: *mut CK_ULONG) {
    single(Op::Encrypt, hSession, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen)
});

cfn!(C_EncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG, pEncryptedPart: *mut CK_BYTE, pulEncryptedPartLen: *mut CK_ULONG) {
    update(Op::Encrypt, hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen)
});

cfn!(C_EncryptFinal(hSession: CK_SESSION_HANDLE, pLastEncryptedPart: *mut CK_BYTE, pulLastEncryptedPartLen: *mut CK_ULONG) {
    finish(Op::Encrypt, hSession, pLastEncryptedPart, pulLastEncryptedPartLen)
});

cfn!(C_DecryptInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE) {
    init(Op::Decrypt, hSession, pMechanism, hKey)
});

cfn!(C_Decrypt(hSession: CK_SESSION_HANDLE, pEncryptedData: *mut CK_BYTE, ulEncryptedDataLen: CK_ULONG, pData: *mut CK_BYTE, pulDataLen: *mut CK_ULONG) {
    single(Op::Decrypt, hSession, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen)
});

cfn!(C_DecryptUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: *mut CK_BYTE, ulEncryptedPartLen: CK_ULONG, pPart: *mut CK_BYTE, pulPartLen: *mut CK_ULONG) {
    update(Op::Decrypt, hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen)
});

cfn!(C_DecryptFinal(hSession: CK_SESSION_HANDLE, pLastPart: *mut CK_BYTE, pulLastPartLen: *mut CK_ULONG) {
    finish(Op::Decrypt, hSession, pLastPart, pulLastPartLen)
});

cfn!(C_DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM) {
    let m = module::module()?;
    let mech = mechanism(pMechanism)?;
    m.token.digest_init(hSession as u64, &mech)
});

cfn!(C_Digest(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pDigest: *mut CK_BYTE, pulDigestLen: *mut CK_ULONG) {
    let m = module::module()?;
    let (data, (buf, plen)) = checked_args(&m, hSession, None, (|| Ok((bytes(pData, ulDataLen)?, output(pDigest, pulDigestLen)?)))())?;
    let query = buf.is_none();
    report(m.token.digest(hSession as u64, data, buf), query, plen)
});

cfn!(C_DigestUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG) {
    let m = module::module()?;
    m.token.digest_update(hSession as u64, checked_args(&m, hSession, None, bytes(pPart, ulPartLen))?)
});

cfn!(C_DigestKey(hSession: CK_SESSION_HANDLE, hKey: CK_OBJECT_HANDLE) {
    module::module()?.token.digest_key(hSession as u64, hKey as u64)
});

cfn!(C_DigestFinal(hSession: CK_SESSION_HANDLE, pDigest: *mut CK_BYTE, pulDigestLen: *mut CK_ULONG) {
    let m = module::module()?;
    let (buf, plen) = checked_args(&m, hSession, None, output(pDigest, pulDigestLen))?;
    let query = buf.is_none();
    report(m.token.digest_final(hSession as u64, buf), query, plen)
});

cfn!(C_SignInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE) {
    init(Op::Sign, hSession, pMechanism, hKey)
});

cfn!(C_Sign(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG) {
    single(Op::Sign, hSession, pData, ulDataLen, pSignature, pulSignatureLen)
});

cfn!(C_SignUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG) {
    let m = module::module()?;
    m.token.crypto_update_no_output(hSession as u64, Op::Sign, checked_args(&m, hSession, Some(Op::Sign), bytes(pPart, ulPartLen))?)
});

cfn!(C_SignFinal(hSession: CK_SESSION_HANDLE, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG) {
    finish(Op::Sign, hSession, pSignature, pulSignatureLen)
});

cfn!(C_SignRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE) {
    let _ = (pMechanism, hKey);
    module::module()?.token.session_info(hSession as u64)?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

cfn!(C_SignRecover(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG) {
    let _ = (pData, ulDataLen, pSignature, pulSignatureLen);
    module::module()?.token.session_info(hSession as u64)?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

cfn!(C_VerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE) {
    init(Op::Verify, hSession, pMechanism, hKey)
});

cfn!(C_Verify(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG) {
    let m = module::module()?;
    let (data, sig) = checked_args(&m, hSession, Some(Op::Verify), (|| Ok((bytes(pData, ulDataLen)?, signature(pSignature, ulSignatureLen)?)))())?;
    m.token.verify(hSession as u64, data, sig)
});

cfn!(C_VerifyUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG) {
    let m = module::module()?;
    m.token.crypto_update_no_output(hSession as u64, Op::Verify, checked_args(&m, hSession, Some(Op::Verify), bytes(pPart, ulPartLen))?)
});

cfn!(C_VerifyFinal(hSession: CK_SESSION_HANDLE, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG) {
    let m = module::module()?;
    m.token.verify_final(hSession as u64, checked_args(&m, hSession, Some(Op::Verify), signature(pSignature, ulSignatureLen))?)
});

cfn!(C_VerifyRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE) {
    let _ = (pMechanism, hKey);
    module::module()?.token.session_info(hSession as u64)?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

cfn!(C_VerifyRecover(hSession: CK_SESSION_HANDLE, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG, pData: *mut CK_BYTE, pulDataLen: *mut CK_ULONG) {
    let _ = (pSignature, ulSignatureLen, pData, pulDataLen);
    module::module()?.token.session_info(hSession as u64)?;
    Err(ckr::FUNCTION_NOT_SUPPORTED)
});

// Dual-function operations are not offered by the profile.
macro_rules! dual {
    ($($name:ident),*) => {$(
        cfn!($name(hSession: CK_SESSION_HANDLE, pIn: *mut CK_BYTE, ulInLen: CK_ULONG, pOut: *mut CK_BYTE, pulOutLen: *mut CK_ULONG) {
            let _ = (pIn, ulInLen, pOut, pulOutLen);
            module::module()?.token.session_info(hSession as u64)?;
            Err(ckr::FUNCTION_NOT_SUPPORTED)
        });
    )*};
}
dual!(
    C_DigestEncryptUpdate,
    C_DecryptDigestUpdate,
    C_SignEncryptUpdate,
    C_DecryptVerifyUpdate
);

// ----- keys -----------------------------------------------------------------------------

cfn!(C_GenerateKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG, phKey: *mut CK_OBJECT_HANDLE) {
    let m = module::module()?;
    let mech = mechanism(pMechanism)?;
    let t = canonical_template(&template(pTemplate, ulCount)?)?;
    let dst = out(phKey)?;
    *dst = m
        .token
        .generate_key(hSession as u64, &mech, &as_attributes(&t))
        .map_err(too_large)? as CK_OBJECT_HANDLE;
    Ok(())
});

cfn!(C_GenerateKeyPair(
    hSession: CK_SESSION_HANDLE,
    pMechanism: *mut CK_MECHANISM,
    pPublicKeyTemplate: *mut CK_ATTRIBUTE,
    ulPublicKeyAttributeCount: CK_ULONG,
    pPrivateKeyTemplate: *mut CK_ATTRIBUTE,
    ulPrivateKeyAttributeCount: CK_ULONG,
    phPublicKey: *mut CK_OBJECT_HANDLE,
    phPrivateKey: *mut CK_OBJECT_HANDLE,
) {
    let m = module::module()?;
    let mech = mechanism(pMechanism)?;
    let public = canonical_template(&template(pPublicKeyTemplate, ulPublicKeyAttributeCount)?)?;
    let private = canonical_template(&template(pPrivateKeyTemplate, ulPrivateKeyAttributeCount)?)?;
    let pub_dst = out(phPublicKey)?;
    let priv_dst = out(phPrivateKey)?;
    let (pu, pr) = m.token.generate_key_pair(
        hSession as u64,
        &mech,
        &as_attributes(&public),
        &as_attributes(&private),
    ).map_err(too_large)?;
    *pub_dst = pu as CK_OBJECT_HANDLE;
    *priv_dst = pr as CK_OBJECT_HANDLE;
    Ok(())
});

cfn!(C_WrapKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hWrappingKey: CK_OBJECT_HANDLE, hKey: CK_OBJECT_HANDLE, pWrappedKey: *mut CK_BYTE, pulWrappedKeyLen: *mut CK_ULONG) {
    let m = module::module()?;
    let mech = mechanism(pMechanism)?;
    let (buf, plen) = output(pWrappedKey, pulWrappedKeyLen)?;
    let query = buf.is_none();
    let r = m.token.wrap_key(hSession as u64, &mech, hWrappingKey as u64, hKey as u64, buf);
    report(r, query, plen)
});

cfn!(C_UnwrapKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hUnwrappingKey: CK_OBJECT_HANDLE, pWrappedKey: *mut CK_BYTE, ulWrappedKeyLen: CK_ULONG, pTemplate: *mut CK_ATTRIBUTE, ulAttributeCount: CK_ULONG, phKey: *mut CK_OBJECT_HANDLE) {
    let m = module::module()?;
    let mech = mechanism(pMechanism)?;
    // A wrapped key travels in one message: a longer one is refused unread.
    let wrapped = message_bytes(pWrappedKey, ulWrappedKeyLen, ckr::WRAPPED_KEY_LEN_RANGE)?;
    let t = canonical_template(&template(pTemplate, ulAttributeCount)?)?;
    let dst = out(phKey)?;
    *dst = m.token.unwrap_key(
        hSession as u64,
        &mech,
        hUnwrappingKey as u64,
        wrapped,
        &as_attributes(&t),
    ).map_err(too_large)? as CK_OBJECT_HANDLE;
    Ok(())
});

cfn!(C_DeriveKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hBaseKey: CK_OBJECT_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulAttributeCount: CK_ULONG, phKey: *mut CK_OBJECT_HANDLE) {
    let m = module::module()?;
    let mech = mechanism(pMechanism)?;
    let t = canonical_template(&template(pTemplate, ulAttributeCount)?)?;
    let dst = out(phKey)?;
    *dst = m
        .token
        .derive_key(hSession as u64, &mech, hBaseKey as u64, &as_attributes(&t))
        .map_err(too_large)? as CK_OBJECT_HANDLE;
    Ok(())
});

// ----- random numbers -----------------------------------------------------------------

cfn!(C_SeedRandom(hSession: CK_SESSION_HANDLE, pSeed: *mut CK_BYTE, ulSeedLen: CK_ULONG) {
    let m = module::module()?;
    m.token.seed_random(hSession as u64, bytes(pSeed, ulSeedLen)?)
});

cfn!(C_GenerateRandom(hSession: CK_SESSION_HANDLE, RandomData: *mut CK_BYTE, ulRandomLen: CK_ULONG) {
    let m = module::module()?;
    m.token.generate_random(hSession as u64, bytes_mut(RandomData, ulRandomLen)?)
});

// ----- legacy and events ----------------------------------------------------------------

cfn!(C_GetFunctionStatus(hSession: CK_SESSION_HANDLE) {
    module::module()?.token.session_info(hSession as u64)?;
    Err(ckr::FUNCTION_NOT_PARALLEL)
});

cfn!(C_CancelFunction(hSession: CK_SESSION_HANDLE) {
    module::module()?.token.session_info(hSession as u64)?;
    Err(ckr::FUNCTION_NOT_PARALLEL)
});

cfn!(C_WaitForSlotEvent(flags: CK_FLAGS, pSlot: *mut CK_SLOT_ID, pReserved: CK_VOID_PTR) {
    let _ = (pSlot, pReserved);
    module::module()?;
    // The one slot never changes: there is no event to wait for.
    const CKF_DONT_BLOCK: CK_FLAGS = 1;
    if flags & CKF_DONT_BLOCK != 0 {
        Err(ckr::NO_EVENT)
    } else {
        Err(ckr::FUNCTION_NOT_SUPPORTED)
    }
});

/// hsmlink extension: the number of request/reply exchanges with the HSM
/// since `C_Initialize` (for benchmarks: round trips per operation).
/// Returns `CKR_CRYPTOKI_NOT_INITIALIZED` before `C_Initialize`.
#[no_mangle]
pub unsafe extern "C" fn hsmlink_exchange_count(pulCount: *mut u64) -> CK_RV {
    guard(move || {
        let m = module::module()?;
        *out(pulCount)? = m.token.connector().exchanges();
        Ok(())
    })
}

/// The v2.40 function list, handed out by `C_GetFunctionList`.
pub static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: VERSION_2_40,
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};

#[cfg(test)]
mod abi_bounds_tests {
    //! The pointer helpers at the edges of their arithmetic: every count
    //! whose byte size overflows, passes `isize::MAX` or wraps the address
    //! space is `CKR_ARGUMENTS_BAD` before any dereference.
    use super::*;

    const HALF: CK_ULONG = (isize::MAX as CK_ULONG) / 8;

    #[test]
    fn abi_bounds_count_checks_count_times_size() {
        assert_eq!(count::<u8>(0), Ok(0));
        assert_eq!(count::<u8>(isize::MAX as CK_ULONG), Ok(isize::MAX as usize));
        assert_eq!(
            count::<u8>(isize::MAX as CK_ULONG + 1),
            Err(ckr::ARGUMENTS_BAD)
        );
        assert_eq!(count::<u8>(CK_ULONG::MAX), Err(ckr::ARGUMENTS_BAD));
        // 8-byte elements: 2^60 × 8 = 2^63 > isize::MAX; 2^61 × 8 wraps to 0.
        assert_eq!(count::<u64>(HALF), Ok(HALF as usize));
        assert_eq!(count::<u64>(HALF + 1), Err(ckr::ARGUMENTS_BAD));
        assert_eq!(count::<u64>(1 << 60), Err(ckr::ARGUMENTS_BAD));
        assert_eq!(count::<u64>(1 << 61), Err(ckr::ARGUMENTS_BAD));
        assert_eq!(count::<u64>(CK_ULONG::MAX), Err(ckr::ARGUMENTS_BAD));
        let attr = std::mem::size_of::<CK_ATTRIBUTE>() as CK_ULONG;
        let most = isize::MAX as CK_ULONG / attr;
        assert_eq!(count::<CK_ATTRIBUTE>(most), Ok(most as usize));
        assert_eq!(count::<CK_ATTRIBUTE>(most + 1), Err(ckr::ARGUMENTS_BAD));
        // Zero-sized elements never overflow.
        assert_eq!(count::<()>(CK_ULONG::MAX), Ok(usize::MAX));
    }

    #[test]
    fn abi_bounds_span_refuses_null_misaligned_and_wrapping() {
        let mut v = [0u64; 4];
        let p = v.as_mut_ptr();
        assert_eq!(span(p, 4), Ok(Some(4)));
        assert_eq!(span(p, 0), Ok(None));
        assert_eq!(span(std::ptr::null::<u64>(), 0), Ok(None));
        assert_eq!(span(std::ptr::null::<u64>(), 1), Err(ckr::ARGUMENTS_BAD));
        let odd = (p as *mut u8).wrapping_add(1) as *const u64;
        assert_eq!(span(odd, 1), Err(ckr::ARGUMENTS_BAD));
        assert_eq!(span(p, 1 << 61), Err(ckr::ARGUMENTS_BAD));
        // A pointer near the top of the address space whose range wraps.
        let high = (usize::MAX - 15) as *const u64;
        assert_eq!(span(high, 1), Ok(Some(1)));
        assert_eq!(span(high, 2), Err(ckr::ARGUMENTS_BAD));
        let high_byte = (usize::MAX - 3) as *const u8;
        assert_eq!(span(high_byte, 4), Err(ckr::ARGUMENTS_BAD));
        assert_eq!(span(high_byte, 3), Ok(Some(3)));
    }

    #[test]
    fn abi_bounds_slice_helpers_at_the_edges() {
        unsafe {
            let mut v = [7u64; 2];
            assert_eq!(array(v.as_ptr(), 2).map(|s| s.len()), Ok(2));
            assert_eq!(array(v.as_ptr(), 1 << 61).err(), Some(ckr::ARGUMENTS_BAD));
            assert_eq!(array(v.as_ptr(), HALF + 1).err(), Some(ckr::ARGUMENTS_BAD));
            assert_eq!(
                array_mut(v.as_mut_ptr(), 1 << 61).err(),
                Some(ckr::ARGUMENTS_BAD)
            );
            assert_eq!(
                array_mut(v.as_mut_ptr(), CK_ULONG::MAX).err(),
                Some(ckr::ARGUMENTS_BAD)
            );
            assert_eq!(array::<u64>(std::ptr::null(), 0).map(|s| s.len()), Ok(0));
            let mut b = [0u8; 3];
            assert_eq!(bytes(b.as_ptr(), 3).map(|s| s.len()), Ok(3));
            assert_eq!(
                bytes(b.as_ptr(), CK_ULONG::MAX).err(),
                Some(ckr::ARGUMENTS_BAD)
            );
            assert_eq!(
                bytes_mut(b.as_mut_ptr(), isize::MAX as CK_ULONG + 1).err(),
                Some(ckr::ARGUMENTS_BAD)
            );
            assert_eq!(bytes(std::ptr::null(), 1).err(), Some(ckr::ARGUMENTS_BAD));
            assert_eq!(bytes(std::ptr::null(), 0).map(|s| s.len()), Ok(0));
        }
    }

    #[test]
    fn abi_bounds_out_array_writes_only_within_its_count() {
        let mut v = [0u64; 3];
        let mut o = unsafe { OutArray::new(v.as_mut_ptr(), 3) }.unwrap();
        assert_eq!(o.cap(), 3);
        o.put(0, 1).unwrap();
        o.put(2, 3).unwrap();
        assert_eq!(o.put(3, 4), Err(ckr::GENERAL_ERROR));
        assert_eq!(v, [1, 0, 3]);
        for n in [1 << 60, 1 << 61, CK_ULONG::MAX] {
            assert_eq!(
                unsafe { OutArray::new(v.as_mut_ptr(), n) }.err(),
                Some(ckr::ARGUMENTS_BAD),
                "{n}"
            );
        }
        let o = unsafe { OutArray::<u64>::new(std::ptr::null_mut(), 0) }.unwrap();
        assert_eq!(o.cap(), 0);
    }

    #[test]
    fn abi_bounds_template_counts_are_bounded_before_reading() {
        unsafe {
            // Counts past MAX_ATTRS are refused without reading the array:
            // the pointer here points at nothing of that size.
            let one = CK_ATTRIBUTE {
                type_: 0,
                pValue: std::ptr::null_mut(),
                ulValueLen: 0,
            };
            for n in [
                MAX_ATTRS as CK_ULONG + 1,
                1 << 40,
                1 << 59,
                1 << 61,
                CK_ULONG::MAX,
            ] {
                assert_eq!(template(&one, n).err(), Some(ckr::ARGUMENTS_BAD), "{n}");
            }
            assert_eq!(template(&one, 1).map(|t| t.len()), Ok(1));
            assert_eq!(template(std::ptr::null(), 0).map(|t| t.len()), Ok(0));
            assert_eq!(
                template(std::ptr::null(), 1).err(),
                Some(ckr::ARGUMENTS_BAD)
            );
            // An attribute whose value length overflows.
            let mut b = [0u8; 1];
            let bad = CK_ATTRIBUTE {
                type_: 3,
                pValue: b.as_mut_ptr().cast(),
                ulValueLen: CK_ULONG::MAX,
            };
            assert_eq!(template(&bad, 1).err(), Some(ckr::ARGUMENTS_BAD));
        }
    }

    #[test]
    fn abi_bounds_output_refuses_overflowing_lengths() {
        unsafe {
            let mut b = [0u8; 4];
            let mut l: CK_ULONG = CK_ULONG::MAX;
            assert_eq!(
                output(b.as_mut_ptr(), &mut l).err(),
                Some(ckr::ARGUMENTS_BAD)
            );
            let mut l: CK_ULONG = 4;
            assert_eq!(
                output(b.as_mut_ptr(), &mut l).map(|(o, _)| o.map(|o| o.len())),
                Ok(Some(4))
            );
            assert_eq!(
                output(std::ptr::null_mut(), &mut l).map(|(o, _)| o.is_none()),
                Ok(true)
            );
            assert_eq!(
                output(b.as_mut_ptr(), std::ptr::null_mut()).err(),
                Some(ckr::ARGUMENTS_BAD)
            );
        }
    }
}
