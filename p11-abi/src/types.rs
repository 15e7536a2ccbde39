//! PKCS#11 v2.40 C types, written from the OASIS specification (`pkcs11t.h`,
//! `pkcs11f.h`). Layout follows the Unix convention: natural alignment, no
//! packing, `CK_ULONG` is the platform's `unsigned long`.
#![allow(non_camel_case_types, non_snake_case)]

use std::os::raw::{c_ulong, c_void};

pub type CK_ULONG = c_ulong;
pub type CK_LONG = std::os::raw::c_long;
pub type CK_BYTE = u8;
pub type CK_CHAR = u8;
pub type CK_UTF8CHAR = u8;
pub type CK_BBOOL = u8;
pub type CK_FLAGS = CK_ULONG;
pub type CK_RV = CK_ULONG;
pub type CK_SLOT_ID = CK_ULONG;
pub type CK_SESSION_HANDLE = CK_ULONG;
pub type CK_OBJECT_HANDLE = CK_ULONG;
pub type CK_USER_TYPE = CK_ULONG;
pub type CK_MECHANISM_TYPE = CK_ULONG;
pub type CK_ATTRIBUTE_TYPE = CK_ULONG;
pub type CK_NOTIFICATION = CK_ULONG;
pub type CK_VOID_PTR = *mut c_void;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CK_VERSION {
    pub major: CK_BYTE,
    pub minor: CK_BYTE,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_INFO {
    pub cryptokiVersion: CK_VERSION,
    pub manufacturerID: [CK_UTF8CHAR; 32],
    pub flags: CK_FLAGS,
    pub libraryDescription: [CK_UTF8CHAR; 32],
    pub libraryVersion: CK_VERSION,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_SLOT_INFO {
    pub slotDescription: [CK_UTF8CHAR; 64],
    pub manufacturerID: [CK_UTF8CHAR; 32],
    pub flags: CK_FLAGS,
    pub hardwareVersion: CK_VERSION,
    pub firmwareVersion: CK_VERSION,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_TOKEN_INFO {
    pub label: [CK_UTF8CHAR; 32],
    pub manufacturerID: [CK_UTF8CHAR; 32],
    pub model: [CK_UTF8CHAR; 16],
    pub serialNumber: [CK_CHAR; 16],
    pub flags: CK_FLAGS,
    pub ulMaxSessionCount: CK_ULONG,
    pub ulSessionCount: CK_ULONG,
    pub ulMaxRwSessionCount: CK_ULONG,
    pub ulRwSessionCount: CK_ULONG,
    pub ulMaxPinLen: CK_ULONG,
    pub ulMinPinLen: CK_ULONG,
    pub ulTotalPublicMemory: CK_ULONG,
    pub ulFreePublicMemory: CK_ULONG,
    pub ulTotalPrivateMemory: CK_ULONG,
    pub ulFreePrivateMemory: CK_ULONG,
    pub hardwareVersion: CK_VERSION,
    pub firmwareVersion: CK_VERSION,
    pub utcTime: [CK_CHAR; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_SESSION_INFO {
    pub slotID: CK_SLOT_ID,
    pub state: CK_ULONG,
    pub flags: CK_FLAGS,
    pub ulDeviceError: CK_ULONG,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_ATTRIBUTE {
    pub type_: CK_ATTRIBUTE_TYPE,
    pub pValue: CK_VOID_PTR,
    pub ulValueLen: CK_ULONG,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_MECHANISM {
    pub mechanism: CK_MECHANISM_TYPE,
    pub pParameter: CK_VOID_PTR,
    pub ulParameterLen: CK_ULONG,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_MECHANISM_INFO {
    pub ulMinKeySize: CK_ULONG,
    pub ulMaxKeySize: CK_ULONG,
    pub flags: CK_FLAGS,
}

pub type CK_CREATEMUTEX = Option<unsafe extern "C" fn(*mut CK_VOID_PTR) -> CK_RV>;
pub type CK_MUTEX_FN = Option<unsafe extern "C" fn(CK_VOID_PTR) -> CK_RV>;
pub type CK_NOTIFY =
    Option<unsafe extern "C" fn(CK_SESSION_HANDLE, CK_NOTIFICATION, CK_VOID_PTR) -> CK_RV>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_C_INITIALIZE_ARGS {
    pub CreateMutex: CK_CREATEMUTEX,
    pub DestroyMutex: CK_MUTEX_FN,
    pub LockMutex: CK_MUTEX_FN,
    pub UnlockMutex: CK_MUTEX_FN,
    pub flags: CK_FLAGS,
    pub pReserved: CK_VOID_PTR,
}

// Mechanism parameter structures.

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_GCM_PARAMS {
    pub pIv: *mut CK_BYTE,
    pub ulIvLen: CK_ULONG,
    pub ulIvBits: CK_ULONG,
    pub pAAD: *mut CK_BYTE,
    pub ulAADLen: CK_ULONG,
    pub ulTagBits: CK_ULONG,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_AES_CTR_PARAMS {
    pub ulCounterBits: CK_ULONG,
    pub cb: [CK_BYTE; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_RSA_PKCS_PSS_PARAMS {
    pub hashAlg: CK_MECHANISM_TYPE,
    pub mgf: CK_ULONG,
    pub sLen: CK_ULONG,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_RSA_PKCS_OAEP_PARAMS {
    pub hashAlg: CK_MECHANISM_TYPE,
    pub mgf: CK_ULONG,
    pub source: CK_ULONG,
    pub pSourceData: CK_VOID_PTR,
    pub ulSourceDataLen: CK_ULONG,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_ECDH1_DERIVE_PARAMS {
    pub kdf: CK_ULONG,
    pub ulSharedDataLen: CK_ULONG,
    pub pSharedData: *mut CK_BYTE,
    pub ulPublicDataLen: CK_ULONG,
    pub pPublicData: *mut CK_BYTE,
}

/// `CK_EDDSA_PARAMS` (PKCS#11 3.0, for `CKM_EDDSA`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_EDDSA_PARAMS {
    pub phFlag: CK_BBOOL,
    pub ulContextDataLen: CK_ULONG,
    pub pContextData: *mut CK_BYTE,
}

/// `CK_KEY_DERIVATION_STRING_DATA`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_KEY_DERIVATION_STRING_DATA {
    pub pData: *mut CK_BYTE,
    pub ulLen: CK_ULONG,
}

/// `CK_AES_CBC_ENCRYPT_DATA_PARAMS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_AES_CBC_ENCRYPT_DATA_PARAMS {
    pub iv: [CK_BYTE; 16],
    pub pData: *mut CK_BYTE,
    pub length: CK_ULONG,
}

/// `CK_INTERFACE` (PKCS#11 3.0), used by `C_GetInterfaceList`/`C_GetInterface`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CK_INTERFACE {
    pub pInterfaceName: *const CK_CHAR,
    pub pFunctionList: *const c_void,
    pub flags: CK_FLAGS,
}

// SAFETY-free marker: the interface only points at immutable statics.
unsafe impl Sync for CK_INTERFACE {}

macro_rules! function_list {
    ($($name:ident: fn($($arg:ty),*);)*) => {
        /// `CK_FUNCTION_LIST` of v2.40: the version, then every function in
        /// the order of `pkcs11f.h`.
        #[repr(C)]
        pub struct CK_FUNCTION_LIST {
            pub version: CK_VERSION,
            $(pub $name: Option<unsafe extern "C" fn($($arg),*) -> CK_RV>,)*
        }
    };
}

type P<T> = *mut T;

function_list! {
    C_Initialize: fn(CK_VOID_PTR);
    C_Finalize: fn(CK_VOID_PTR);
    C_GetInfo: fn(P<CK_INFO>);
    C_GetFunctionList: fn(P<*const CK_FUNCTION_LIST>);
    C_GetSlotList: fn(CK_BBOOL, P<CK_SLOT_ID>, P<CK_ULONG>);
    C_GetSlotInfo: fn(CK_SLOT_ID, P<CK_SLOT_INFO>);
    C_GetTokenInfo: fn(CK_SLOT_ID, P<CK_TOKEN_INFO>);
    C_GetMechanismList: fn(CK_SLOT_ID, P<CK_MECHANISM_TYPE>, P<CK_ULONG>);
    C_GetMechanismInfo: fn(CK_SLOT_ID, CK_MECHANISM_TYPE, P<CK_MECHANISM_INFO>);
    C_InitToken: fn(CK_SLOT_ID, P<CK_UTF8CHAR>, CK_ULONG, P<CK_UTF8CHAR>);
    C_InitPIN: fn(CK_SESSION_HANDLE, P<CK_UTF8CHAR>, CK_ULONG);
    C_SetPIN: fn(CK_SESSION_HANDLE, P<CK_UTF8CHAR>, CK_ULONG, P<CK_UTF8CHAR>, CK_ULONG);
    C_OpenSession: fn(CK_SLOT_ID, CK_FLAGS, CK_VOID_PTR, CK_NOTIFY, P<CK_SESSION_HANDLE>);
    C_CloseSession: fn(CK_SESSION_HANDLE);
    C_CloseAllSessions: fn(CK_SLOT_ID);
    C_GetSessionInfo: fn(CK_SESSION_HANDLE, P<CK_SESSION_INFO>);
    C_GetOperationState: fn(CK_SESSION_HANDLE, P<CK_BYTE>, P<CK_ULONG>);
    C_SetOperationState: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE);
    C_Login: fn(CK_SESSION_HANDLE, CK_USER_TYPE, P<CK_UTF8CHAR>, CK_ULONG);
    C_Logout: fn(CK_SESSION_HANDLE);
    C_CreateObject: fn(CK_SESSION_HANDLE, P<CK_ATTRIBUTE>, CK_ULONG, P<CK_OBJECT_HANDLE>);
    C_CopyObject: fn(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, P<CK_ATTRIBUTE>, CK_ULONG, P<CK_OBJECT_HANDLE>);
    C_DestroyObject: fn(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
    C_GetObjectSize: fn(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, P<CK_ULONG>);
    C_GetAttributeValue: fn(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, P<CK_ATTRIBUTE>, CK_ULONG);
    C_SetAttributeValue: fn(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, P<CK_ATTRIBUTE>, CK_ULONG);
    C_FindObjectsInit: fn(CK_SESSION_HANDLE, P<CK_ATTRIBUTE>, CK_ULONG);
    C_FindObjects: fn(CK_SESSION_HANDLE, P<CK_OBJECT_HANDLE>, CK_ULONG, P<CK_ULONG>);
    C_FindObjectsFinal: fn(CK_SESSION_HANDLE);
    C_EncryptInit: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE);
    C_Encrypt: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_EncryptUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_EncryptFinal: fn(CK_SESSION_HANDLE, P<CK_BYTE>, P<CK_ULONG>);
    C_DecryptInit: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE);
    C_Decrypt: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_DecryptUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_DecryptFinal: fn(CK_SESSION_HANDLE, P<CK_BYTE>, P<CK_ULONG>);
    C_DigestInit: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>);
    C_Digest: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_DigestUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG);
    C_DigestKey: fn(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
    C_DigestFinal: fn(CK_SESSION_HANDLE, P<CK_BYTE>, P<CK_ULONG>);
    C_SignInit: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE);
    C_Sign: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_SignUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG);
    C_SignFinal: fn(CK_SESSION_HANDLE, P<CK_BYTE>, P<CK_ULONG>);
    C_SignRecoverInit: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE);
    C_SignRecover: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_VerifyInit: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE);
    C_Verify: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, CK_ULONG);
    C_VerifyUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG);
    C_VerifyFinal: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG);
    C_VerifyRecoverInit: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE);
    C_VerifyRecover: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_DigestEncryptUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_DecryptDigestUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_SignEncryptUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_DecryptVerifyUpdate: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_BYTE>, P<CK_ULONG>);
    C_GenerateKey: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, P<CK_ATTRIBUTE>, CK_ULONG, P<CK_OBJECT_HANDLE>);
    C_GenerateKeyPair: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, P<CK_ATTRIBUTE>, CK_ULONG, P<CK_ATTRIBUTE>, CK_ULONG, P<CK_OBJECT_HANDLE>, P<CK_OBJECT_HANDLE>);
    C_WrapKey: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, P<CK_BYTE>, P<CK_ULONG>);
    C_UnwrapKey: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE, P<CK_BYTE>, CK_ULONG, P<CK_ATTRIBUTE>, CK_ULONG, P<CK_OBJECT_HANDLE>);
    C_DeriveKey: fn(CK_SESSION_HANDLE, P<CK_MECHANISM>, CK_OBJECT_HANDLE, P<CK_ATTRIBUTE>, CK_ULONG, P<CK_OBJECT_HANDLE>);
    C_SeedRandom: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG);
    C_GenerateRandom: fn(CK_SESSION_HANDLE, P<CK_BYTE>, CK_ULONG);
    C_GetFunctionStatus: fn(CK_SESSION_HANDLE);
    C_CancelFunction: fn(CK_SESSION_HANDLE);
    C_WaitForSlotEvent: fn(CK_FLAGS, P<CK_SLOT_ID>, CK_VOID_PTR);
}
