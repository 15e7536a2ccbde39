//! Hostile calls into this crate's own C functions, for the `abi` fuzz
//! target (`fuzz/fuzz_targets/abi.rs`), compiled only with the
//! `fuzz-client` feature and never into the shipped library.
//!
//! The fuzz target links the module statically (so AddressSanitizer sees
//! every access it makes) and describes each pointer argument: NULL,
//! misaligned, or a real buffer of `real` elements whose count is given to
//! the module as `claimed`. Every real buffer is followed by a guard tail;
//! a write into it (`overrun`) or past it (ASan) is a bug of the module.
//!
//! The contract that keeps these calls sound when the module is right: a
//! claimed count larger than the real buffer is only given where the module
//! has less than the real buffer to write (a search over a known number of
//! objects, the mechanism list), or where its byte size overflows (the
//! module must refuse it before any access). Everything here is `unsafe`
//! only in the sense of calling a C ABI; it lives in `ffi`, where the
//! project keeps all of its `unsafe`.

use std::ptr;

use crate::types::*;

/// Bytes (or elements) after each real buffer that the module must never
/// write.
const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xA5;

/// How a pointer argument is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ptr {
    /// NULL.
    Null,
    /// An odd address inside a real buffer (misaligned for anything but bytes).
    Misaligned,
    /// A real buffer.
    Buf,
}

/// One pointer+count argument.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub ptr: Ptr,
    /// Elements really there.
    pub real: usize,
    /// The count handed to the module.
    pub claimed: u64,
}

impl Spec {
    /// A truthful buffer of `n` elements.
    pub fn exact(n: usize) -> Spec {
        Spec {
            ptr: Ptr::Buf,
            real: n,
            claimed: n as u64,
        }
    }
}

/// What an output call gave.
#[derive(Clone, Debug, Default)]
pub struct Output<T> {
    pub rv: CK_RV,
    /// The length or count word after the call.
    pub len: u64,
    /// The real buffer after the call (all `real` elements).
    pub data: Vec<T>,
    /// The guard tail after the buffer was written.
    pub overrun: bool,
}

/// A guarded buffer: one spare element, `real` elements, `GUARD` more,
/// all filled with `fill`. A real buffer starts at the second element; a
/// misaligned one a byte after it.
struct Guarded<T: Copy + PartialEq> {
    v: Vec<T>,
    real: usize,
    fill: T,
    misaligned: bool,
}

impl<T: Copy + PartialEq> Guarded<T> {
    fn new(real: usize, fill: T) -> Self {
        Guarded {
            v: vec![fill; 1 + real + 1 + GUARD],
            real,
            fill,
            misaligned: false,
        }
    }

    /// The pointer `p` says to pass.
    fn ptr(&mut self, p: Ptr) -> *mut T {
        let base = self.v[1..].as_mut_ptr();
        match p {
            Ptr::Null => ptr::null_mut(),
            Ptr::Misaligned => {
                self.misaligned = true;
                (base as *mut u8).wrapping_add(1) as *mut T
            }
            Ptr::Buf => base,
        }
    }

    /// The real elements (for a misaligned byte buffer, the `real` bytes
    /// from its odd address), and whether anything outside them was
    /// written (the spare element before, the guard after).
    fn finish(self) -> (Vec<T>, bool) {
        let (start, end) = if self.misaligned && std::mem::size_of::<T>() == 1 {
            (2, 2 + self.real)
        } else if self.misaligned {
            // Elements are not byte-addressable here: the element the odd
            // address falls in and the one after the last are the region.
            (1, 2 + self.real)
        } else {
            (1, 1 + self.real)
        };
        let overrun = self.v[..start]
            .iter()
            .chain(&self.v[end..])
            .any(|x| *x != self.fill);
        (self.v[start..start + self.real].to_vec(), overrun)
    }
}

/// A claimed byte count the module may write up to: no more than the real
/// buffer, or one whose size overflows (the module must refuse it unread).
fn safe_claim(claimed: u64, real: usize) -> u64 {
    if claimed <= real as u64 {
        claimed
    } else {
        claimed.max(isize::MAX as u64 + 1)
    }
}

/// A length word given by pointer: NULL, misaligned, or real.
fn len_word(p: Ptr, value: u64, store: &mut [u64; 2]) -> *mut CK_ULONG {
    store[0] = value;
    store[1] = value;
    match p {
        Ptr::Null => ptr::null_mut(),
        Ptr::Misaligned => (store.as_mut_ptr() as *mut u8).wrapping_add(1) as *mut CK_ULONG,
        Ptr::Buf => store.as_mut_ptr() as *mut CK_ULONG,
    }
}

fn read_len(p: Ptr, store: &[u64; 2]) -> u64 {
    match p {
        Ptr::Misaligned => {
            let mut b = [0u8; 8];
            let bytes: Vec<u8> = store.iter().flat_map(|w| w.to_ne_bytes()).collect();
            b.copy_from_slice(&bytes[1..9]);
            u64::from_ne_bytes(b)
        }
        _ => store[0],
    }
}

/// `C_Initialize(NULL)`.
pub fn initialize() -> CK_RV {
    unsafe { super::C_Initialize(ptr::null_mut()) }
}

/// `C_OpenSession(1, serial | rw)`: (rv, handle).
pub fn open_session() -> (CK_RV, CK_SESSION_HANDLE) {
    let mut h: CK_SESSION_HANDLE = 0;
    let rv = unsafe { super::C_OpenSession(1, 0x6, ptr::null_mut(), None, &mut h) };
    (rv, h)
}

/// `C_CloseSession`.
pub fn close_session(h: CK_SESSION_HANDLE) -> CK_RV {
    unsafe { super::C_CloseSession(h) }
}

/// `C_Login(CKU_USER)` with `pin` (NULL when `None`) and `claimed` length.
pub fn login(h: CK_SESSION_HANDLE, pin: Option<&[u8]>, claimed: u64) -> CK_RV {
    let p = pin.map_or(ptr::null_mut(), |p| p.as_ptr().cast_mut());
    unsafe { super::C_Login(h, 1, p, claimed as CK_ULONG) }
}

/// `C_CreateObject` with a template of (type, value) pairs: (rv, handle).
pub fn create_object(h: CK_SESSION_HANDLE, template: &[(u64, Vec<u8>)]) -> (CK_RV, u64) {
    let mut attrs: Vec<CK_ATTRIBUTE> = template
        .iter()
        .map(|(t, v)| CK_ATTRIBUTE {
            type_: *t as CK_ATTRIBUTE_TYPE,
            pValue: v.as_ptr().cast_mut().cast(),
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect();
    let mut o: CK_OBJECT_HANDLE = 0;
    let rv =
        unsafe { super::C_CreateObject(h, attrs.as_mut_ptr(), attrs.len() as CK_ULONG, &mut o) };
    (rv, o as u64)
}

/// `C_FindObjectsInit` with a one-attribute template (type, value), its
/// count given as `claimed` (1, or a hostile count).
pub fn find_init(h: CK_SESSION_HANDLE, ty: u64, value: &[u8], claimed: u64) -> CK_RV {
    let mut a = CK_ATTRIBUTE {
        type_: ty as CK_ATTRIBUTE_TYPE,
        pValue: value.as_ptr().cast_mut().cast(),
        ulValueLen: value.len() as CK_ULONG,
    };
    let count = if claimed <= 1 {
        claimed
    } else {
        claimed.max(33)
    };
    unsafe { super::C_FindObjectsInit(h, &mut a, count as CK_ULONG) }
}

/// `C_FindObjects` into `spec` (real handles, claimed count), the count
/// word given as `count_ptr`.
pub fn find(h: CK_SESSION_HANDLE, spec: Spec, count_ptr: Ptr) -> Output<CK_OBJECT_HANDLE> {
    let mut buf = Guarded::new(spec.real, 0xA5A5_A5A5 as CK_OBJECT_HANDLE);
    let mut store = [0xFFFF_u64; 2];
    let cp = len_word(count_ptr, 0xFFFF, &mut store);
    let p = buf.ptr(spec.ptr);
    let rv = unsafe { super::C_FindObjects(h, p, spec.claimed as CK_ULONG, cp) };
    let (data, overrun) = buf.finish();
    Output {
        rv,
        len: read_len(count_ptr, &store),
        data,
        overrun,
    }
}

/// `C_FindObjectsFinal`.
pub fn find_final(h: CK_SESSION_HANDLE) -> CK_RV {
    unsafe { super::C_FindObjectsFinal(h) }
}

/// `C_GetAttributeValue` of `object`: one attribute per (type, value
/// spec); the template's count is `claimed` (its length, or an
/// overflowing count). Returns rv, and per attribute (ulValueLen, bytes of
/// its real buffer, overrun).
pub fn get_attributes(
    h: CK_SESSION_HANDLE,
    object: u64,
    attrs: &[(u64, Spec)],
    claimed: u64,
) -> (CK_RV, Vec<(u64, Vec<u8>, bool)>) {
    let mut bufs: Vec<Guarded<u8>> = attrs
        .iter()
        .map(|(_, s)| Guarded::new(s.real, GUARD_BYTE))
        .collect();
    let mut template: Vec<CK_ATTRIBUTE> = attrs
        .iter()
        .zip(bufs.iter_mut())
        .map(|((t, s), b)| CK_ATTRIBUTE {
            type_: *t as CK_ATTRIBUTE_TYPE,
            pValue: b.ptr(s.ptr).cast(),
            ulValueLen: safe_claim(s.claimed, s.real) as CK_ULONG,
        })
        .collect();
    let count = if claimed as usize == template.len() {
        claimed
    } else {
        // Only counts whose byte size overflows are safe to claim.
        claimed.max(1 << 60)
    };
    let rv = unsafe {
        super::C_GetAttributeValue(
            h,
            object as CK_OBJECT_HANDLE,
            template.as_mut_ptr(),
            count as CK_ULONG,
        )
    };
    let out = template
        .iter()
        .zip(bufs)
        .map(|(a, b)| {
            let (data, overrun) = b.finish();
            (a.ulValueLen as u64, data, overrun)
        })
        .collect();
    (rv, out)
}

/// `C_EncryptInit` with a mechanism without parameter (`CKM_AES_ECB`, ...)
/// or with a 16-byte IV (`CKM_AES_CBC_PAD`, ...).
pub fn encrypt_init(
    h: CK_SESSION_HANDLE,
    mechanism: u64,
    iv: Option<&[u8; 16]>,
    key: u64,
) -> CK_RV {
    let mut m = CK_MECHANISM {
        mechanism: mechanism as CK_MECHANISM_TYPE,
        pParameter: iv.map_or(ptr::null_mut(), |v| v.as_ptr().cast_mut().cast()),
        ulParameterLen: iv.map_or(0, |v| v.len() as CK_ULONG),
    };
    unsafe { super::C_EncryptInit(h, &mut m, key as CK_OBJECT_HANDLE) }
}

/// A call of the (data in, bytes out) shape: `C_Encrypt`, `C_Digest`.
fn data_out(
    data: &[u8],
    data_claimed: u64,
    out: Spec,
    len_ptr: Ptr,
    f: impl FnOnce(*mut u8, CK_ULONG, *mut u8, *mut CK_ULONG) -> CK_RV,
) -> Output<u8> {
    let mut buf = Guarded::new(out.real, GUARD_BYTE);
    let mut store = [0u64; 2];
    let lp = len_word(len_ptr, safe_claim(out.claimed, out.real), &mut store);
    let p = buf.ptr(out.ptr);
    // Only overflowing claims of the input are safe.
    let dlen = if data_claimed as usize == data.len() {
        data_claimed
    } else {
        data_claimed.max(isize::MAX as u64 + 1)
    };
    let rv = f(data.as_ptr().cast_mut(), dlen as CK_ULONG, p, lp);
    let (data, overrun) = buf.finish();
    Output {
        rv,
        len: read_len(len_ptr, &store),
        data,
        overrun,
    }
}

/// `C_Encrypt(data)` into `out`.
pub fn encrypt(
    h: CK_SESSION_HANDLE,
    data: &[u8],
    data_claimed: u64,
    out: Spec,
    len_ptr: Ptr,
) -> Output<u8> {
    data_out(data, data_claimed, out, len_ptr, |d, dl, o, l| unsafe {
        super::C_Encrypt(h, d, dl, o, l)
    })
}

/// `C_DigestInit(CKM_SHA256)`.
pub fn digest_init_sha256(h: CK_SESSION_HANDLE) -> CK_RV {
    let mut m = CK_MECHANISM {
        mechanism: 0x250,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    unsafe { super::C_DigestInit(h, &mut m) }
}

/// `C_Digest(data)` into `out`.
pub fn digest(
    h: CK_SESSION_HANDLE,
    data: &[u8],
    data_claimed: u64,
    out: Spec,
    len_ptr: Ptr,
) -> Output<u8> {
    data_out(data, data_claimed, out, len_ptr, |d, dl, o, l| unsafe {
        super::C_Digest(h, d, dl, o, l)
    })
}

/// `C_GenerateRandom` into `out` (its claimed length: `real`, or an
/// overflowing one).
pub fn generate_random(h: CK_SESSION_HANDLE, out: Spec) -> Output<u8> {
    let mut buf = Guarded::new(out.real, GUARD_BYTE);
    let claimed = if out.claimed as usize == out.real {
        out.claimed
    } else {
        out.claimed.max(isize::MAX as u64 + 1)
    };
    let p = buf.ptr(out.ptr);
    let rv = unsafe { super::C_GenerateRandom(h, p, claimed as CK_ULONG) };
    let (data, overrun) = buf.finish();
    Output {
        rv,
        len: claimed,
        data,
        overrun,
    }
}

/// `C_GetMechanismList(1)` (or `C_GetSlotList` when `slots`) into `spec`,
/// the count word given as `count_ptr` holding `spec.claimed`.
pub fn list(slots: bool, spec: Spec, count_ptr: Ptr) -> Output<CK_ULONG> {
    let mut buf = Guarded::new(spec.real, 0xA5A5_A5A5 as CK_ULONG);
    let mut store = [0u64; 2];
    let cp = len_word(count_ptr, spec.claimed, &mut store);
    let p = buf.ptr(spec.ptr);
    let rv = unsafe {
        if slots {
            super::C_GetSlotList(0, p, cp)
        } else {
            super::C_GetMechanismList(1, p, cp)
        }
    };
    let (data, overrun) = buf.finish();
    Output {
        rv,
        len: read_len(count_ptr, &store),
        data,
        overrun,
    }
}

/// End whatever operation the session has (search, encryption, digest):
/// `C_FindObjectsFinal`, `C_EncryptFinal` and `C_DigestFinal` with room
/// for any output; their return values.
pub fn end_operations(h: CK_SESSION_HANDLE) -> [CK_RV; 3] {
    let mut out = vec![0u8; 64 * 1024];
    let mut len = out.len() as CK_ULONG;
    let e = unsafe { super::C_EncryptFinal(h, out.as_mut_ptr(), &mut len) };
    let mut len = out.len() as CK_ULONG;
    let d = unsafe { super::C_DigestFinal(h, out.as_mut_ptr(), &mut len) };
    [find_final(h), e, d]
}

/// `C_GetSessionInfo`: (rv, state).
pub fn session_state(h: CK_SESSION_HANDLE) -> (CK_RV, u64) {
    let mut info = CK_SESSION_INFO {
        slotID: 0,
        state: 0,
        flags: 0,
        ulDeviceError: 0,
    };
    let rv = unsafe { super::C_GetSessionInfo(h, &mut info) };
    (rv, info.state as u64)
}
