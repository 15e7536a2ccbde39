//! The module's C ABI, called directly.
//!
//! Some behaviour the tests must check cannot be expressed through `cryptoki`,
//! which always sizes output buffers itself: a too-small buffer
//! (`CKR_BUFFER_TOO_SMALL`), a null buffer for the length query,
//! `C_GetAttributeValue` with a mix of valid, sensitive and invalid
//! attributes, and the completeness of the function list. These helpers load
//! the same `.so` (the dynamic loader returns the instance already loaded, so
//! session handles from `cryptoki` are valid here) and make those calls.
//!
//! It lives here, inside `ffi`, because calling a C ABI cannot be done
//! without `unsafe` and this module is where the project keeps all of it;
//! it is compiled only with the `test-client` feature (the end-to-end tests
//! turn it on), never into the shipped library. Every call passes pointers
//! to live, correctly sized Rust buffers.

use std::path::Path;
use std::ptr;

use cryptoki::object::ObjectHandle;
/// The C types and constants (`CKR_*`, `CKA_*`, ...).
pub use cryptoki_sys::*;

/// What an output-producing call returned.
#[derive(Debug, Clone)]
pub struct Out<T> {
    /// The return value.
    pub rv: CK_RV,
    /// The length the module wrote to the length argument.
    pub len: CK_ULONG,
    /// The output, truncated to `len` when `rv` is `CKR_OK` and `len` fits.
    pub data: Vec<T>,
    /// Whether the module wrote into the caller's buffer at all (the
    /// buffer starts filled with a canary pattern).
    pub buffer_touched: bool,
}

impl<T> Out<T> {
    /// `rv` as a readable name.
    pub fn rv_name(&self) -> String {
        rv_name(self.rv)
    }
}

/// A return value as its `CKR_` name (via cryptoki's table).
pub fn rv_name(rv: CK_RV) -> String {
    format!("{:?} (0x{rv:x})", cryptoki::error::Rv::from(rv))
}

const CANARY: u8 = 0xA5;

/// One attribute of a raw `C_GetAttributeValue` template.
#[derive(Debug, Clone)]
pub struct AttrQuery {
    /// `CKA_*`.
    pub type_: CK_ATTRIBUTE_TYPE,
    /// `None`: `pValue` is null (length query). `Some(n)`: a buffer of `n` bytes.
    pub capacity: Option<usize>,
    /// `ulValueLen` after the call.
    pub len: CK_ULONG,
    /// The buffer after the call (truncated to `len` when it fits).
    pub value: Vec<u8>,
}

impl AttrQuery {
    /// A length query (`pValue` null) for `type_`.
    pub fn length(type_: CK_ATTRIBUTE_TYPE) -> AttrQuery {
        AttrQuery {
            type_,
            capacity: None,
            len: 0,
            value: Vec::new(),
        }
    }

    /// A query with a buffer of `capacity` bytes for `type_`.
    pub fn value(type_: CK_ATTRIBUTE_TYPE, capacity: usize) -> AttrQuery {
        AttrQuery {
            type_,
            capacity: Some(capacity),
            len: 0,
            value: Vec::new(),
        }
    }

    /// Whether `ulValueLen` is `CK_UNAVAILABLE_INFORMATION`.
    pub fn unavailable(&self) -> bool {
        self.len == CK_UNAVAILABLE_INFORMATION
    }
}

/// The C ABI of the loaded module.
pub struct Raw {
    lib: cryptoki_sys::Pkcs11,
    list: CK_FUNCTION_LIST,
}

// SAFETY: the function list is a table of function pointers and a version;
// the module declares itself thread-safe (CKF_OS_LOCKING_OK).
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

macro_rules! call {
    ($self:ident . $f:ident ( $($arg:expr),* $(,)? )) => {{
        let f = $self
            .list
            .$f
            .unwrap_or_else(|| panic!(concat!(stringify!($f), " is a null pointer in the function list")));
        // SAFETY: every pointer argument points into a live buffer of the
        // length passed beside it (or is null where the API allows it).
        unsafe { f($($arg),*) }
    }};
}

macro_rules! function_names {
    ($list:expr, $($f:ident),* $(,)?) => {
        vec![$( (stringify!($f), $list.$f.is_some()) ),*]
    };
}

impl Raw {
    /// Loads `path` and fetches its function list with `C_GetFunctionList`.
    pub fn load(path: &Path) -> Raw {
        // SAFETY: loading the module under test runs its initializers; that
        // is what the test is about.
        let lib = unsafe { cryptoki_sys::Pkcs11::new(path) }
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
        let get = lib.C_GetFunctionList.as_ref().unwrap_or_else(|e| {
            panic!("{} does not export C_GetFunctionList: {e}", path.display())
        });
        let mut list_ptr: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: list_ptr is a valid out-pointer.
        let rv = unsafe { get(&mut list_ptr) };
        assert_eq!(rv, CKR_OK, "C_GetFunctionList returned {}", rv_name(rv));
        assert!(
            !list_ptr.is_null(),
            "C_GetFunctionList returned CKR_OK and a null list"
        );
        // SAFETY: the module returned a non-null pointer to its (static) list.
        let list = unsafe { ptr::read_unaligned(list_ptr) };
        Raw { lib, list }
    }

    /// The loaded library (for symbols outside the function list).
    pub fn library(&self) -> &cryptoki_sys::Pkcs11 {
        &self.lib
    }

    /// The version in the function list.
    pub fn list_version(&self) -> (u8, u8) {
        (self.list.version.major, self.list.version.minor)
    }

    /// Every v2.40 function of the list, with whether its pointer is non-null.
    pub fn functions(&self) -> Vec<(&'static str, bool)> {
        function_names!(
            self.list,
            C_Initialize,
            C_Finalize,
            C_GetInfo,
            C_GetFunctionList,
            C_GetSlotList,
            C_GetSlotInfo,
            C_GetTokenInfo,
            C_GetMechanismList,
            C_GetMechanismInfo,
            C_InitToken,
            C_InitPIN,
            C_SetPIN,
            C_OpenSession,
            C_CloseSession,
            C_CloseAllSessions,
            C_GetSessionInfo,
            C_GetOperationState,
            C_SetOperationState,
            C_Login,
            C_Logout,
            C_CreateObject,
            C_CopyObject,
            C_DestroyObject,
            C_GetObjectSize,
            C_GetAttributeValue,
            C_SetAttributeValue,
            C_FindObjectsInit,
            C_FindObjects,
            C_FindObjectsFinal,
            C_EncryptInit,
            C_Encrypt,
            C_EncryptUpdate,
            C_EncryptFinal,
            C_DecryptInit,
            C_Decrypt,
            C_DecryptUpdate,
            C_DecryptFinal,
            C_DigestInit,
            C_Digest,
            C_DigestUpdate,
            C_DigestKey,
            C_DigestFinal,
            C_SignInit,
            C_Sign,
            C_SignUpdate,
            C_SignFinal,
            C_SignRecoverInit,
            C_SignRecover,
            C_VerifyInit,
            C_Verify,
            C_VerifyUpdate,
            C_VerifyFinal,
            C_VerifyRecoverInit,
            C_VerifyRecover,
            C_DigestEncryptUpdate,
            C_DecryptDigestUpdate,
            C_SignEncryptUpdate,
            C_DecryptVerifyUpdate,
            C_GenerateKey,
            C_GenerateKeyPair,
            C_WrapKey,
            C_UnwrapKey,
            C_DeriveKey,
            C_SeedRandom,
            C_GenerateRandom,
            C_GetFunctionStatus,
            C_CancelFunction,
            C_WaitForSlotEvent,
        )
    }

    /// The interfaces of `C_GetInterfaceList` (PKCS#11 3.0): name, and the
    /// version at the head of each function list. `None` if not exported.
    pub fn interface_list(&self) -> Option<(CK_RV, Vec<InterfaceInfo>)> {
        let f = self.lib.C_GetInterfaceList.as_ref().ok()?;
        let mut count: CK_ULONG = 0;
        // SAFETY: a null list with a valid count pointer is the size query.
        let rv = unsafe { f(ptr::null_mut(), &mut count) };
        if rv != CKR_OK {
            return Some((rv, Vec::new()));
        }
        let mut list: Vec<CK_INTERFACE> = (0..count.max(1))
            .map(|_| CK_INTERFACE {
                pInterfaceName: ptr::null_mut(),
                pFunctionList: ptr::null_mut(),
                flags: 0,
            })
            .collect();
        // SAFETY: `list` holds `count` entries.
        let rv = unsafe { f(list.as_mut_ptr(), &mut count) };
        list.truncate(count as usize);
        let entries = list.iter().map(describe_interface).collect();
        Some((rv, entries))
    }

    /// `C_GetInterface(name, NULL, &iface, 0)` (PKCS#11 3.0).
    pub fn get_interface(
        &self,
        name: Option<&std::ffi::CStr>,
    ) -> Option<(CK_RV, Option<InterfaceInfo>)> {
        let f = self.lib.C_GetInterface.as_ref().ok()?;
        let mut iface: *mut CK_INTERFACE = ptr::null_mut();
        let name_ptr = name.map_or(ptr::null_mut(), |n| n.as_ptr().cast_mut().cast());
        // SAFETY: a NUL-terminated name (or null), a valid out-pointer.
        let rv = unsafe { f(name_ptr, ptr::null_mut(), &mut iface, 0) };
        if rv != CKR_OK || iface.is_null() {
            return Some((rv, None));
        }
        // SAFETY: the module returned a pointer to its interface.
        Some((rv, Some(describe_interface(unsafe { &*iface }))))
    }

    /// The function list pointer `C_GetFunctionList` returns.
    pub fn function_list_ptr(&self) -> *const CK_FUNCTION_LIST {
        let get = self
            .lib
            .C_GetFunctionList
            .as_ref()
            .expect("C_GetFunctionList");
        let mut list_ptr: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: list_ptr is a valid out-pointer.
        let _ = unsafe { get(&mut list_ptr) };
        list_ptr
    }

    /// `C_Initialize` with `CKF_OS_LOCKING_OK`.
    pub fn initialize(&self) -> CK_RV {
        let mut args = cryptoki_sys::CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: cryptoki_sys::CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        call!(self.C_Initialize((&mut args as *mut cryptoki_sys::CK_C_INITIALIZE_ARGS).cast()))
    }

    /// `C_Finalize(NULL)`.
    pub fn finalize(&self) -> CK_RV {
        call!(self.C_Finalize(ptr::null_mut()))
    }

    /// `C_CloseAllSessions(slot)`.
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> CK_RV {
        call!(self.C_CloseAllSessions(slot))
    }

    /// `C_GetSlotList(present, buf, &len)`; `capacity` `None` passes a null buffer.
    pub fn slot_list(&self, token_present: bool, capacity: Option<usize>) -> Out<CK_SLOT_ID> {
        ulong_out(capacity, |buf, len| {
            call!(self.C_GetSlotList(token_present as u8, buf, len))
        })
    }

    /// `C_GetMechanismList(slot, buf, &len)`.
    pub fn mechanism_list(
        &self,
        slot: CK_SLOT_ID,
        capacity: Option<usize>,
    ) -> Out<CK_MECHANISM_TYPE> {
        ulong_out(capacity, |buf, len| {
            call!(self.C_GetMechanismList(slot, buf, len))
        })
    }

    /// `C_GetTokenInfo(slot)`, the structure as the module filled it.
    pub fn token_info(&self, slot: CK_SLOT_ID) -> (CK_RV, cryptoki_sys::CK_TOKEN_INFO) {
        let mut info = cryptoki_sys::CK_TOKEN_INFO::default();
        let rv = call!(self.C_GetTokenInfo(slot, &mut info));
        (rv, info)
    }

    /// `C_GetInfo`, the structure as the module filled it.
    pub fn info(&self) -> (CK_RV, cryptoki_sys::CK_INFO) {
        let mut info = cryptoki_sys::CK_INFO::default();
        let rv = call!(self.C_GetInfo(&mut info));
        (rv, info)
    }

    /// `C_GetMechanismInfo(slot, mechanism)`.
    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mechanism: CK_MECHANISM_TYPE,
    ) -> (CK_RV, CK_MECHANISM_INFO) {
        let mut info = CK_MECHANISM_INFO::default();
        let rv = call!(self.C_GetMechanismInfo(slot, mechanism, &mut info));
        (rv, info)
    }

    /// `C_GetAttributeValue` with the given template; fills in each query.
    pub fn get_attribute_value(
        &self,
        session: CK_SESSION_HANDLE,
        object: ObjectHandle,
        queries: &mut [AttrQuery],
    ) -> CK_RV {
        let mut buffers: Vec<Vec<u8>> = queries
            .iter()
            .map(|q| vec![CANARY; q.capacity.unwrap_or(0).max(1)])
            .collect();
        let mut template: Vec<cryptoki_sys::CK_ATTRIBUTE> = queries
            .iter()
            .zip(buffers.iter_mut())
            .map(|(q, buf)| cryptoki_sys::CK_ATTRIBUTE {
                type_: q.type_,
                pValue: match q.capacity {
                    Some(_) => buf.as_mut_ptr().cast(),
                    None => ptr::null_mut(),
                },
                ulValueLen: q.capacity.unwrap_or(0) as CK_ULONG,
            })
            .collect();
        let rv = call!(self.C_GetAttributeValue(
            session,
            object.handle(),
            template.as_mut_ptr(),
            template.len() as CK_ULONG
        ));
        for ((q, attr), mut buf) in queries.iter_mut().zip(&template).zip(buffers) {
            q.len = attr.ulValueLen;
            if let Some(cap) = q.capacity {
                buf.truncate(cap);
                if (q.len as usize) <= cap {
                    buf.truncate(q.len as usize);
                }
                q.value = buf;
            }
        }
        rv
    }

    /// `C_CreateObject` with a template of raw (type, bytes) pairs, so that
    /// tests can send values of the wrong size.
    pub fn create_object(
        &self,
        session: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> (CK_RV, CK_OBJECT_HANDLE) {
        let mut attrs: Vec<CK_ATTRIBUTE> = template
            .iter()
            .map(|(type_, value)| CK_ATTRIBUTE {
                type_: *type_,
                pValue: value.as_ptr().cast_mut().cast(),
                ulValueLen: value.len() as CK_ULONG,
            })
            .collect();
        let mut handle: CK_OBJECT_HANDLE = 0;
        let rv = call!(self.C_CreateObject(
            session,
            attrs.as_mut_ptr(),
            attrs.len() as CK_ULONG,
            &mut handle
        ));
        (rv, handle)
    }

    /// `C_Login(session, user_type, pin)`.
    pub fn login(&self, session: CK_SESSION_HANDLE, user_type: CK_ULONG, pin: &[u8]) -> CK_RV {
        call!(self.C_Login(
            session,
            user_type,
            pin.as_ptr().cast_mut(),
            pin.len() as CK_ULONG
        ))
    }

    /// `C_Login` with a NULL `pPin` and length `len`.
    pub fn login_null_pin(
        &self,
        session: CK_SESSION_HANDLE,
        user_type: CK_ULONG,
        len: CK_ULONG,
    ) -> CK_RV {
        call!(self.C_Login(session, user_type, std::ptr::null_mut(), len))
    }

    /// `C_SignInit` with any mechanism type and parameter structure.
    pub fn sign_init<P>(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        parameter: Option<&P>,
        key: ObjectHandle,
    ) -> CK_RV {
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: parameter.map_or(ptr::null_mut(), |p| (p as *const P).cast_mut().cast()),
            ulParameterLen: parameter.map_or(0, |_| std::mem::size_of::<P>() as CK_ULONG),
        };
        call!(self.C_SignInit(session, &mut mech, key.handle()))
    }

    /// `C_VerifyInit` with any mechanism type and parameter structure.
    pub fn verify_init<P>(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        parameter: Option<&P>,
        key: ObjectHandle,
    ) -> CK_RV {
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: parameter.map_or(ptr::null_mut(), |p| (p as *const P).cast_mut().cast()),
            ulParameterLen: parameter.map_or(0, |_| std::mem::size_of::<P>() as CK_ULONG),
        };
        call!(self.C_VerifyInit(session, &mut mech, key.handle()))
    }

    /// `C_Verify` after a `C_VerifyInit`.
    pub fn verify(&self, session: CK_SESSION_HANDLE, data: &[u8], signature: &[u8]) -> CK_RV {
        call!(self.C_Verify(
            session,
            data.as_ptr().cast_mut(),
            data.len() as CK_ULONG,
            signature.as_ptr().cast_mut(),
            signature.len() as CK_ULONG
        ))
    }

    /// `C_Sign` after a `C_SignInit`.
    pub fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Out<u8> {
        byte_out(capacity, |out, len| {
            call!(self.C_Sign(
                session,
                data.as_ptr().cast_mut(),
                data.len() as CK_ULONG,
                out,
                len
            ))
        })
    }

    /// `C_SignFinal` after `C_SignInit` (and updates).
    pub fn sign_final(&self, session: CK_SESSION_HANDLE, capacity: Option<usize>) -> Out<u8> {
        byte_out(capacity, |out, len| {
            call!(self.C_SignFinal(session, out, len))
        })
    }

    /// `C_Encrypt` after a `C_EncryptInit`.
    pub fn encrypt(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Out<u8> {
        byte_out(capacity, |out, len| {
            call!(self.C_Encrypt(
                session,
                data.as_ptr().cast_mut(),
                data.len() as CK_ULONG,
                out,
                len
            ))
        })
    }

    /// `C_EncryptUpdate` after a `C_EncryptInit`.
    pub fn encrypt_update(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Out<u8> {
        byte_out(capacity, |out, len| {
            call!(self.C_EncryptUpdate(
                session,
                data.as_ptr().cast_mut(),
                data.len() as CK_ULONG,
                out,
                len
            ))
        })
    }

    /// `C_EncryptFinal`.
    pub fn encrypt_final(&self, session: CK_SESSION_HANDLE, capacity: Option<usize>) -> Out<u8> {
        byte_out(capacity, |out, len| {
            call!(self.C_EncryptFinal(session, out, len))
        })
    }

    /// `C_Decrypt` after a `C_DecryptInit`.
    pub fn decrypt(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Out<u8> {
        byte_out(capacity, |out, len| {
            call!(self.C_Decrypt(
                session,
                data.as_ptr().cast_mut(),
                data.len() as CK_ULONG,
                out,
                len
            ))
        })
    }

    /// `C_Digest` after a `C_DigestInit`.
    pub fn digest(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Out<u8> {
        byte_out(capacity, |out, len| {
            call!(self.C_Digest(
                session,
                data.as_ptr().cast_mut(),
                data.len() as CK_ULONG,
                out,
                len
            ))
        })
    }

    /// `C_DigestFinal`.
    pub fn digest_final(&self, session: CK_SESSION_HANDLE, capacity: Option<usize>) -> Out<u8> {
        byte_out(capacity, |out, len| {
            call!(self.C_DigestFinal(session, out, len))
        })
    }

    /// `C_GetObjectSize`.
    pub fn object_size(
        &self,
        session: CK_SESSION_HANDLE,
        object: ObjectHandle,
    ) -> (CK_RV, CK_ULONG) {
        let mut size: CK_ULONG = 0;
        let rv = call!(self.C_GetObjectSize(session, object.handle(), &mut size));
        (rv, size)
    }

    /// `C_FindObjects` with room for `capacity` handles.
    pub fn find_objects(
        &self,
        session: CK_SESSION_HANDLE,
        capacity: usize,
    ) -> (CK_RV, Vec<CK_OBJECT_HANDLE>) {
        let mut handles: Vec<CK_OBJECT_HANDLE> = vec![0; capacity.max(1)];
        let mut count: CK_ULONG = 0;
        let rv = call!(self.C_FindObjects(
            session,
            handles.as_mut_ptr(),
            capacity as CK_ULONG,
            &mut count
        ));
        handles.truncate((count as usize).min(capacity));
        (rv, handles)
    }

    /// `C_FindObjectsInit` with a template of raw (type, bytes) pairs.
    pub fn template_find_init(
        &self,
        session: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> CK_RV {
        let mut attrs: Vec<CK_ATTRIBUTE> = template
            .iter()
            .map(|(type_, value)| CK_ATTRIBUTE {
                type_: *type_,
                pValue: value.as_ptr().cast_mut().cast(),
                ulValueLen: value.len() as CK_ULONG,
            })
            .collect();
        call!(self.C_FindObjectsInit(session, attrs.as_mut_ptr(), attrs.len() as CK_ULONG))
    }

    /// `C_FindObjectsInit` with an empty template (match everything).
    pub fn find_objects_init_all(&self, session: CK_SESSION_HANDLE) -> CK_RV {
        call!(self.C_FindObjectsInit(session, ptr::null_mut(), 0))
    }

    /// `C_FindObjectsFinal`.
    pub fn find_objects_final(&self, session: CK_SESSION_HANDLE) -> CK_RV {
        call!(self.C_FindObjectsFinal(session))
    }

    /// `C_GetSessionInfo(session)`.
    pub fn get_session_info(&self, session: CK_SESSION_HANDLE) -> (CK_RV, CK_SESSION_INFO) {
        let mut info = CK_SESSION_INFO::default();
        let rv = call!(self.C_GetSessionInfo(session, &mut info));
        (rv, info)
    }

    /// `C_CloseSession(session)`.
    pub fn close_session(&self, session: CK_SESSION_HANDLE) -> CK_RV {
        call!(self.C_CloseSession(session))
    }

    /// `C_Initialize` with arbitrary arguments (null when `None`).
    pub fn initialize_with(&self, args: Option<CK_C_INITIALIZE_ARGS>) -> CK_RV {
        match args {
            Some(mut args) => {
                call!(self.C_Initialize((&mut args as *mut CK_C_INITIALIZE_ARGS).cast()))
            }
            None => call!(self.C_Initialize(ptr::null_mut())),
        }
    }

    /// `C_GetSessionInfo` with a null pointer (must be `CKR_ARGUMENTS_BAD`).
    pub fn get_session_info_null(&self, session: CK_SESSION_HANDLE) -> CK_RV {
        call!(self.C_GetSessionInfo(session, ptr::null_mut()))
    }

    /// `C_GetSlotList(FALSE, NULL, NULL)` (must be `CKR_ARGUMENTS_BAD`).
    pub fn slot_list_null_count(&self) -> CK_RV {
        call!(self.C_GetSlotList(0, ptr::null_mut(), ptr::null_mut()))
    }

    // ----- hostile arguments (abi_bounds) -----------------------------------
    //
    // These pass the module a real buffer of `real` elements (guarded by a
    // canary tail) with a *claimed* count that may be far larger: what a
    // buggy or hostile application does. The module must check the count
    // with checked arithmetic and write no more than it has to return; a
    // write past the real buffer shows in `overrun`.

    /// `C_FindObjects` with a buffer of `real` handles (plus a guard tail)
    /// and `ulMaxObjectCount = claimed`: (rv, handles written, count
    /// returned, whether the guard tail was written).
    pub fn find_objects_claiming(
        &self,
        session: CK_SESSION_HANDLE,
        real: usize,
        claimed: CK_ULONG,
    ) -> (CK_RV, Vec<CK_OBJECT_HANDLE>, CK_ULONG, bool) {
        const GUARD: CK_OBJECT_HANDLE = 0xA5A5_A5A5;
        let mut buf: Vec<CK_OBJECT_HANDLE> = vec![GUARD; real + 64];
        let mut count: CK_ULONG = 0xFFFF;
        let rv = call!(self.C_FindObjects(session, buf.as_mut_ptr(), claimed, &mut count));
        let overrun = buf[real..].iter().any(|&h| h != GUARD);
        let n = (count as usize).min(real);
        buf.truncate(n);
        (rv, buf, count, overrun)
    }

    /// `C_GetMechanismList` (or `C_GetSlotList` when `slots`) with a buffer
    /// of `real` elements and `*pulCount = claimed`: (rv, count returned,
    /// elements written into the real buffer, whether the guard tail was
    /// written).
    pub fn list_claiming(
        &self,
        slots: bool,
        real: usize,
        claimed: CK_ULONG,
    ) -> (CK_RV, CK_ULONG, Vec<CK_ULONG>, bool) {
        const GUARD: CK_ULONG = 0xA5A5_A5A5;
        let mut buf: Vec<CK_ULONG> = vec![GUARD; real + 64];
        let mut count = claimed;
        let rv = if slots {
            call!(self.C_GetSlotList(0, buf.as_mut_ptr(), &mut count))
        } else {
            call!(self.C_GetMechanismList(1, buf.as_mut_ptr(), &mut count))
        };
        let overrun = buf[real..].iter().any(|&v| v != GUARD);
        buf.truncate(real);
        buf.retain(|&v| v != GUARD);
        (rv, count, buf, overrun)
    }

    /// The template functions (`C_CreateObject`, `C_FindObjectsInit`,
    /// `C_GetAttributeValue`, `C_SetAttributeValue`, `C_GenerateKey`) given
    /// a one-attribute template and `ulCount = claimed`: their return values
    /// in that order. A claimed count past what the module accepts must be
    /// refused before the array is read.
    pub fn template_count_claiming(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        claimed: CK_ULONG,
    ) -> Vec<(&'static str, CK_RV)> {
        let mut value = [0u8; 8];
        let mut attr = CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: value.as_mut_ptr().cast(),
            ulValueLen: value.len() as CK_ULONG,
        };
        let mut handle: CK_OBJECT_HANDLE = 0;
        let mut mech = CK_MECHANISM {
            mechanism: CKM_AES_KEY_GEN,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut rvs = vec![(
            "C_CreateObject",
            call!(self.C_CreateObject(session, &mut attr, claimed, &mut handle)),
        )];
        rvs.push((
            "C_FindObjectsInit",
            call!(self.C_FindObjectsInit(session, &mut attr, claimed)),
        ));
        if rvs[1].1 == CKR_OK {
            call!(self.C_FindObjectsFinal(session));
        }
        rvs.push((
            "C_SetAttributeValue",
            call!(self.C_SetAttributeValue(session, object, &mut attr, claimed)),
        ));
        rvs.push((
            "C_GenerateKey",
            call!(self.C_GenerateKey(session, &mut mech, &mut attr, claimed, &mut handle)),
        ));
        rvs
    }

    /// `C_GetAttributeValue` with a one-attribute template and `ulCount =
    /// claimed` (only counts whose byte size overflows are safe to pass:
    /// the module must refuse them before reading).
    pub fn get_attribute_count_claiming(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        claimed: CK_ULONG,
    ) -> CK_RV {
        let mut attr = CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        };
        call!(self.C_GetAttributeValue(session, object, &mut attr, claimed))
    }

    /// `C_GenerateRandom` into a buffer of `real` bytes claimed to be
    /// `claimed` long (only overflowing claims are safe: refused unread).
    pub fn generate_random_claiming(
        &self,
        session: CK_SESSION_HANDLE,
        real: usize,
        claimed: CK_ULONG,
    ) -> CK_RV {
        let mut buf = vec![0u8; real.max(1)];
        call!(self.C_GenerateRandom(session, buf.as_mut_ptr(), claimed))
    }

    /// `C_Encrypt` with a misaligned length pointer (an odd address inside
    /// a real buffer).
    pub fn encrypt_misaligned_len(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> CK_RV {
        let mut words = [0u64; 4];
        let len_ptr = (words.as_mut_ptr() as *mut u8).wrapping_add(1) as *mut CK_ULONG;
        let mut out = [0u8; 64];
        call!(self.C_Encrypt(
            session,
            data.as_ptr().cast_mut(),
            data.len() as CK_ULONG,
            out.as_mut_ptr(),
            len_ptr
        ))
    }

    /// `C_GenerateRandom(session, buf)` into a buffer of `n` bytes.
    pub fn generate_random(&self, session: CK_SESSION_HANDLE, n: usize) -> (CK_RV, Vec<u8>) {
        let mut buf = vec![0u8; n];
        let rv = call!(self.C_GenerateRandom(session, buf.as_mut_ptr(), n as CK_ULONG));
        (rv, buf)
    }

    /// `C_WrapKey` into a buffer of `capacity` bytes (`None`: length query).
    pub fn wrap_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        wrapping_key: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        capacity: Option<usize>,
    ) -> Out<u8> {
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        byte_out(capacity, |buf, len| {
            call!(self.C_WrapKey(session, &mut mech, wrapping_key, key, buf, len))
        })
    }

    /// `C_DeriveKey` with any mechanism type and parameter structure (for
    /// mechanisms the `cryptoki` crate cannot name, `CKM_AES_ECB_ENCRYPT_DATA`
    /// and `CKM_ECDH1_COFACTOR_DERIVE`) and a template of raw pairs.
    pub fn derive_key<P>(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        parameter: Option<&P>,
        base: CK_OBJECT_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> (CK_RV, CK_OBJECT_HANDLE) {
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: parameter.map_or(ptr::null_mut(), |p| (p as *const P).cast_mut().cast()),
            ulParameterLen: parameter.map_or(0, |_| std::mem::size_of::<P>() as CK_ULONG),
        };
        let mut attrs: Vec<CK_ATTRIBUTE> = template
            .iter()
            .map(|(type_, value)| CK_ATTRIBUTE {
                type_: *type_,
                pValue: value.as_ptr().cast_mut().cast(),
                ulValueLen: value.len() as CK_ULONG,
            })
            .collect();
        let mut handle: CK_OBJECT_HANDLE = 0;
        let rv = call!(self.C_DeriveKey(
            session,
            &mut mech,
            base,
            attrs.as_mut_ptr(),
            attrs.len() as CK_ULONG,
            &mut handle
        ));
        (rv, handle)
    }
}

/// One `CK_INTERFACE`: its name, the version at the head of its function
/// list, and the list.
#[derive(Debug, Clone)]
pub struct InterfaceInfo {
    /// `pInterfaceName`.
    pub name: String,
    /// The `CK_VERSION` the function list starts with.
    pub version: (u8, u8),
    /// `pFunctionList`.
    pub functions: *const CK_FUNCTION_LIST,
}

fn describe_interface(iface: &CK_INTERFACE) -> InterfaceInfo {
    let name = if iface.pInterfaceName.is_null() {
        String::new()
    } else {
        // SAFETY: the module's interface name is a NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(iface.pInterfaceName.cast()) }
            .to_string_lossy()
            .into_owned()
    };
    let list = iface.pFunctionList as *const CK_FUNCTION_LIST;
    let version = if list.is_null() {
        (0, 0)
    } else {
        // SAFETY: every function list starts with a CK_VERSION.
        let v = unsafe { ptr::read_unaligned(list.cast::<CK_VERSION>()) };
        (v.major, v.minor)
    };
    InterfaceInfo {
        name,
        version,
        functions: list,
    }
}

fn ulong_out(
    capacity: Option<usize>,
    f: impl FnOnce(*mut CK_ULONG, *mut CK_ULONG) -> CK_RV,
) -> Out<CK_ULONG> {
    const ULONG_CANARY: CK_ULONG = 0xA5A5_A5A5;
    let mut buf: Vec<CK_ULONG> = vec![ULONG_CANARY; capacity.unwrap_or(0).max(1)];
    let mut len = capacity.unwrap_or(0) as CK_ULONG;
    let ptr = match capacity {
        Some(_) => buf.as_mut_ptr(),
        None => ptr::null_mut(),
    };
    let rv = f(ptr, &mut len);
    let buffer_touched = buf.iter().any(|&v| v != ULONG_CANARY);
    let cap = capacity.unwrap_or(0);
    buf.truncate(cap);
    if rv == CKR_OK && (len as usize) <= cap {
        buf.truncate(len as usize);
    }
    Out {
        rv,
        len,
        data: buf,
        buffer_touched,
    }
}

fn byte_out(capacity: Option<usize>, f: impl FnOnce(*mut u8, *mut CK_ULONG) -> CK_RV) -> Out<u8> {
    let mut buf: Vec<u8> = vec![CANARY; capacity.unwrap_or(0).max(1)];
    let mut len = capacity.unwrap_or(0) as CK_ULONG;
    let ptr = match capacity {
        Some(_) => buf.as_mut_ptr(),
        None => ptr::null_mut(),
    };
    let rv = f(ptr, &mut len);
    let cap = capacity.unwrap_or(0);
    let buffer_touched = buf[..cap].iter().any(|&b| b != CANARY);
    buf.truncate(cap);
    if rv == CKR_OK && (len as usize) <= cap {
        buf.truncate(len as usize);
    }
    Out {
        rv,
        len,
        data: buf,
        buffer_touched,
    }
}

/// An object handle from a raw number, for tests of invalid handles.
pub fn object_handle(raw: CK_OBJECT_HANDLE) -> ObjectHandle {
    // SAFETY: an ObjectHandle is a plain number; a wrong one only makes the
    // module return CKR_OBJECT_HANDLE_INVALID, which is what these tests check.
    unsafe { ObjectHandle::new_from_raw(raw) }
}

/// Makes the child spawned by `command` receive `SIGKILL` when the spawning
/// thread exits (Linux `PR_SET_PDEATHSIG`).
pub fn kill_child_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
