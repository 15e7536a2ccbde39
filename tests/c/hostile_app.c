/*
 * A hostile application: it loads the module and calls its C functions the
 * way a buggy or malicious program does (NULL and lying pointers, counts and
 * lengths, templates whose buffers point into the template itself, bogus
 * handles, mechanism parameters that lie, calls racing C_CloseSession and
 * C_Finalize). The module must answer each with the code PKCS#11 v2.40 gives,
 * and never crash, hang or write where it was not told to.
 *
 * Usage: hostile_app MODULE.so PIN SECTION   (HSMLINK_ADDR/HSMLINK_USER set)
 * SECTION: general | handles | templates | mechanisms | pins | threads |
 *          forkfinalize
 * (pins expects HSMLINK_SPECIAL_PIN=1 and HSMLINK_TEST_USER)
 * Prints one line per check ("ok ..." or "FAIL ..."); exits 0 when all hold.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

/* PKCS#11 3.0's interface (p11-kit's header may predate it). */
typedef struct {
    CK_UTF8CHAR_PTR pInterfaceName;
    void *pFunctionList;
    CK_FLAGS flags;
} HOSTILE_INTERFACE;
typedef HOSTILE_INTERFACE *CK_INTERFACE_PTR;
typedef CK_RV (*CK_C_GetInterface)(CK_UTF8CHAR_PTR, CK_VERSION_PTR, CK_INTERFACE_PTR *, CK_FLAGS);
typedef CK_RV (*CK_C_GetInterfaceList)(CK_INTERFACE_PTR, CK_ULONG_PTR);

static CK_FUNCTION_LIST_PTR f;
static CK_C_GetFunctionList get_list;
static CK_C_GetInterface get_interface;
static CK_C_GetInterfaceList get_interface_list;
static const char *pin;
static int failures;

#define ULMAX ((CK_ULONG)-1)

static void expect(const char *what, CK_RV got, CK_RV want) {
    if (got == want) {
        printf("ok   %s = 0x%lx\n", what, got);
    } else {
        printf("FAIL %s = 0x%lx, want 0x%lx\n", what, got, want);
        failures++;
    }
    fflush(stdout);
}

static void truth(const char *what, int holds) {
    printf("%s %s\n", holds ? "ok  " : "FAIL", what);
    if (!holds)
        failures++;
    fflush(stdout);
}

static CK_SESSION_HANDLE open_session(void) {
    CK_SESSION_HANDLE s = 0;
    expect("C_OpenSession", f->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK);
    return s;
}

static CK_SESSION_HANDLE logged_in(void) {
    CK_SESSION_HANDLE s = open_session();
    expect("C_Login", f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)), CKR_OK);
    return s;
}

static CK_OBJECT_HANDLE aes_key(CK_SESSION_HANDLE s) {
    CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_VALUE_LEN, &len, sizeof len},
        {CKA_TOKEN, &no, sizeof no},
        {CKA_ENCRYPT, &yes, sizeof yes},
        {CKA_DECRYPT, &yes, sizeof yes},
        {CKA_SIGN, &yes, sizeof yes},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_UNWRAP, &yes, sizeof yes},
    };
    CK_OBJECT_HANDLE k = 0;
    expect("C_GenerateKey(AES)", f->C_GenerateKey(s, &gen, t, 7, &k), CKR_OK);
    return k;
}

static CK_OBJECT_HANDLE data_object(CK_SESSION_HANDLE s, const void *label, CK_ULONG label_len) {
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_BBOOL no = CK_FALSE;
    static const char value[] = "hostile value";
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_TOKEN, &no, sizeof no},
        {CKA_LABEL, (void *)label, label_len},
        {CKA_VALUE, (void *)value, sizeof value - 1},
    };
    CK_OBJECT_HANDLE o = 0;
    expect("C_CreateObject(data)", f->C_CreateObject(s, t, 4, &o), CKR_OK);
    return o;
}

/* One byte `c` at the start of a zeroed page followed by an inaccessible
 * one: a module that reads past what it needs crashes. */
static CK_BYTE_PTR guarded_byte(CK_BYTE c) {
    long page = sysconf(_SC_PAGESIZE);
    CK_BYTE_PTR p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + page, page, PROT_NONE) != 0) {
        fprintf(stderr, "mmap failed\n");
        exit(2);
    }
    p[0] = c;
    return p;
}

/* ----- general: info functions, C_Initialize arguments, interfaces ----- */

static void general(void) {
    CK_INFO info;
    CK_C_INITIALIZE_ARGS args;
    CK_INTERFACE_PTR iface = NULL;
    CK_VERSION v240 = {2, 40}, v30 = {3, 0};

    expect("C_GetFunctionList(NULL)", get_list(NULL), CKR_ARGUMENTS_BAD);
    expect("C_GetInfo before C_Initialize", f->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
    expect("C_Finalize before C_Initialize", f->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);

    memset(&args, 0, sizeof args);
    args.pReserved = &args;
    expect("C_Initialize(pReserved non-NULL)", f->C_Initialize(&args), CKR_ARGUMENTS_BAD);
    memset(&args, 0, sizeof args);
    args.CreateMutex = (CK_CREATEMUTEX)(uintptr_t)1;
    args.flags = CKF_OS_LOCKING_OK;
    expect("C_Initialize(CreateMutex only)", f->C_Initialize(&args), CKR_ARGUMENTS_BAD);
    memset(&args, 0, sizeof args);
    args.CreateMutex = (CK_CREATEMUTEX)(uintptr_t)1;
    args.DestroyMutex = (CK_DESTROYMUTEX)(uintptr_t)1;
    args.LockMutex = (CK_LOCKMUTEX)(uintptr_t)1;
    expect("C_Initialize(three of four mutex callbacks)", f->C_Initialize(&args), CKR_ARGUMENTS_BAD);
    expect("C_Initialize(misaligned args)",
           f->C_Initialize((char *)&args + 1), CKR_ARGUMENTS_BAD);
    expect("C_GetInfo after refused C_Initialize", f->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);

    expect("C_Initialize(NULL)", f->C_Initialize(NULL), CKR_OK);
    expect("C_Initialize again", f->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    expect("C_Finalize(non-NULL)", f->C_Finalize(&info), CKR_ARGUMENTS_BAD);

    expect("C_GetInfo(NULL)", f->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);
    expect("C_GetInfo(misaligned)", f->C_GetInfo((CK_INFO_PTR)((char *)&info + 1)), CKR_ARGUMENTS_BAD);
    expect("C_GetSlotInfo(1, NULL)", f->C_GetSlotInfo(1, NULL), CKR_ARGUMENTS_BAD);
    expect("C_GetTokenInfo(1, NULL)", f->C_GetTokenInfo(1, NULL), CKR_ARGUMENTS_BAD);
    expect("C_GetMechanismInfo(1, AES_CBC, NULL)", f->C_GetMechanismInfo(1, CKM_AES_CBC, NULL), CKR_ARGUMENTS_BAD);
    expect("C_GetMechanismList(1, NULL, NULL)", f->C_GetMechanismList(1, NULL, NULL), CKR_ARGUMENTS_BAD);
    {
        CK_SLOT_INFO si;
        CK_TOKEN_INFO ti;
        CK_MECHANISM_INFO mi;
        expect("C_GetSlotInfo(0)", f->C_GetSlotInfo(0, &si), CKR_SLOT_ID_INVALID);
        expect("C_GetSlotInfo(ULONG_MAX)", f->C_GetSlotInfo(ULMAX, &si), CKR_SLOT_ID_INVALID);
        expect("C_GetTokenInfo(ULONG_MAX)", f->C_GetTokenInfo(ULMAX, &ti), CKR_SLOT_ID_INVALID);
        expect("C_GetMechanismInfo(ULONG_MAX slot)", f->C_GetMechanismInfo(ULMAX, CKM_AES_CBC, &mi), CKR_SLOT_ID_INVALID);
        expect("C_GetMechanismInfo(1, ULONG_MAX)", f->C_GetMechanismInfo(1, ULMAX, &mi), CKR_MECHANISM_INVALID);
    }

    if (get_interface) {
        static const CK_UTF8CHAR short_name[] = "PKCS";
        static const CK_UTF8CHAR longer[] = "PKCS 11 and more";
        static const CK_UTF8CHAR lower[] = "pkcs 11";
        expect("C_GetInterface(NULL, NULL, NULL)", get_interface(NULL, NULL, NULL, 0), CKR_ARGUMENTS_BAD);
        expect("C_GetInterface(\"PKCS\")", get_interface((CK_UTF8CHAR_PTR)short_name, NULL, &iface, 0), CKR_ARGUMENTS_BAD);
        expect("C_GetInterface(\"PKCS 11 and more\")", get_interface((CK_UTF8CHAR_PTR)longer, NULL, &iface, 0), CKR_ARGUMENTS_BAD);
        expect("C_GetInterface(\"pkcs 11\")", get_interface((CK_UTF8CHAR_PTR)lower, NULL, &iface, 0), CKR_ARGUMENTS_BAD);
        expect("C_GetInterface(version 3.0)", get_interface(NULL, &v30, &iface, 0), CKR_ARGUMENTS_BAD);
        expect("C_GetInterface(flags it cannot meet)", get_interface(NULL, NULL, &iface, 1), CKR_ARGUMENTS_BAD);
        expect("C_GetInterface(misaligned output pointer)",
               get_interface(NULL, NULL, (CK_INTERFACE_PTR *)((char *)&iface + 1), 0), CKR_ARGUMENTS_BAD);
        iface = NULL;
        expect("C_GetInterface(\"PKCS 11\", 2.40)", get_interface((CK_UTF8CHAR_PTR)"PKCS 11", &v240, &iface, 0), CKR_OK);
        truth("C_GetInterface gives the function list", iface && iface->pFunctionList == (void *)f);
    }
    if (get_interface_list) {
        HOSTILE_INTERFACE list[2];
        CK_ULONG n = 0;
        expect("C_GetInterfaceList(NULL, NULL)", get_interface_list(NULL, NULL), CKR_ARGUMENTS_BAD);
        expect("C_GetInterfaceList(buffer, count 0)", get_interface_list(list, &n), CKR_BUFFER_TOO_SMALL);
        truth("C_GetInterfaceList says 1", n == 1);
        n = (CK_ULONG)1 << 60;
        expect("C_GetInterfaceList(count 2^60)", get_interface_list(list, &n), CKR_ARGUMENTS_BAD);
        n = 2;
        expect("C_GetInterfaceList(count 2)", get_interface_list(list, &n), CKR_OK);
        truth("C_GetInterfaceList wrote one", n == 1 && list[0].pFunctionList == (void *)f);
    }
    expect("C_InitToken(NULLs)", f->C_InitToken(1, NULL, 5, NULL), CKR_FUNCTION_NOT_SUPPORTED);
    expect("C_SetPIN(NULLs)", f->C_SetPIN(ULMAX, NULL, ULMAX, NULL, ULMAX), CKR_FUNCTION_NOT_SUPPORTED);
    expect("C_WaitForSlotEvent(DONT_BLOCK, NULL)", f->C_WaitForSlotEvent(CKF_DONT_BLOCK, NULL, NULL), CKR_NO_EVENT);
    expect("C_Finalize(NULL)", f->C_Finalize(NULL), CKR_OK);
    expect("C_GetSlotList after C_Finalize", f->C_GetSlotList(CK_FALSE, NULL, &(CK_ULONG){0}), CKR_CRYPTOKI_NOT_INITIALIZED);
}

/* ----- handles: 0, ULONG_MAX, a closed session's ----- */

static void handles(void) {
    CK_SESSION_INFO si;
    CK_BYTE buf[16];
    CK_ULONG n = sizeof buf;
    CK_MECHANISM cbc = {CKM_AES_CBC_PAD, buf, 16};
    CK_ATTRIBUTE label = {CKA_LABEL, NULL, 0};
    CK_SESSION_HANDLE bad[] = {0, ULMAX, 0x7fffffffUL, 0x100000001UL};
    CK_OBJECT_HANDLE bad_obj[] = {0, ULMAX, 0x100000001UL};
    char what[128];

    expect("C_Initialize(NULL)", f->C_Initialize(NULL), CKR_OK);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CK_SESSION_HANDLE h = bad[i];
        snprintf(what, sizeof what, "C_GetSessionInfo(0x%lx)", h);
        expect(what, f->C_GetSessionInfo(h, &si), CKR_SESSION_HANDLE_INVALID);
        snprintf(what, sizeof what, "C_CloseSession(0x%lx)", h);
        expect(what, f->C_CloseSession(h), CKR_SESSION_HANDLE_INVALID);
        snprintf(what, sizeof what, "C_Login(0x%lx)", h);
        expect(what, f->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)), CKR_SESSION_HANDLE_INVALID);
        snprintf(what, sizeof what, "C_GenerateRandom(0x%lx)", h);
        expect(what, f->C_GenerateRandom(h, buf, sizeof buf), CKR_SESSION_HANDLE_INVALID);
        snprintf(what, sizeof what, "C_Encrypt(0x%lx)", h);
        expect(what, f->C_Encrypt(h, buf, sizeof buf, buf, &n), CKR_SESSION_HANDLE_INVALID);
    }
    expect("C_CloseAllSessions(0)", f->C_CloseAllSessions(0), CKR_SLOT_ID_INVALID);
    expect("C_CloseAllSessions(ULONG_MAX)", f->C_CloseAllSessions(ULMAX), CKR_SLOT_ID_INVALID);
    expect("C_OpenSession(no SERIAL flag)",
           f->C_OpenSession(1, CKF_RW_SESSION, NULL, NULL, &(CK_SESSION_HANDLE){0}),
           CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    expect("C_OpenSession(phSession NULL)",
           f->C_OpenSession(1, CKF_SERIAL_SESSION, NULL, NULL, NULL), CKR_ARGUMENTS_BAD);
    expect("C_OpenSession(slot ULONG_MAX)",
           f->C_OpenSession(ULMAX, CKF_SERIAL_SESSION, NULL, NULL, &(CK_SESSION_HANDLE){0}),
           CKR_SLOT_ID_INVALID);

    CK_SESSION_HANDLE s = logged_in();
    for (size_t i = 0; i < sizeof bad_obj / sizeof bad_obj[0]; i++) {
        CK_OBJECT_HANDLE o = bad_obj[i];
        snprintf(what, sizeof what, "C_GetAttributeValue(object 0x%lx)", o);
        expect(what, f->C_GetAttributeValue(s, o, &label, 1), CKR_OBJECT_HANDLE_INVALID);
        snprintf(what, sizeof what, "C_DestroyObject(0x%lx)", o);
        expect(what, f->C_DestroyObject(s, o), CKR_OBJECT_HANDLE_INVALID);
        snprintf(what, sizeof what, "C_EncryptInit(key 0x%lx)", o);
        expect(what, f->C_EncryptInit(s, &cbc, o), CKR_KEY_HANDLE_INVALID);
        snprintf(what, sizeof what, "C_GetObjectSize(0x%lx)", o);
        expect(what, f->C_GetObjectSize(s, o, &n), CKR_OBJECT_HANDLE_INVALID);
    }
    /* A closed session's handle stays invalid, also for its objects. */
    CK_OBJECT_HANDLE o = data_object(s, "closed", 6);
    expect("C_CloseSession", f->C_CloseSession(s), CKR_OK);
    expect("C_GetSessionInfo(closed)", f->C_GetSessionInfo(s, &si), CKR_SESSION_HANDLE_INVALID);
    expect("C_GetAttributeValue(closed session)", f->C_GetAttributeValue(s, o, &label, 1), CKR_SESSION_HANDLE_INVALID);
    expect("C_CloseSession(closed)", f->C_CloseSession(s), CKR_SESSION_HANDLE_INVALID);
    /* A handle from before C_Finalize never names a session opened after
     * the next C_Initialize (a part of the application still holding it, or
     * a thread still in a call, would act on another part's session). */
    expect("C_Finalize(NULL)", f->C_Finalize(NULL), CKR_OK);
    expect("C_Initialize(NULL) again", f->C_Initialize(NULL), CKR_OK);
    CK_SESSION_HANDLE before = open_session();
    expect("C_Finalize(NULL)", f->C_Finalize(NULL), CKR_OK);
    expect("C_Initialize(NULL) once more", f->C_Initialize(NULL), CKR_OK);
    CK_SESSION_HANDLE after = open_session();
    truth("the new session's handle is not the old one's", after != before);
    expect("C_GetSessionInfo(a handle from before C_Finalize)", f->C_GetSessionInfo(before, &si), CKR_SESSION_HANDLE_INVALID);
    expect("C_CloseSession(a handle from before C_Finalize)", f->C_CloseSession(before), CKR_SESSION_HANDLE_INVALID);
    expect("the new session is still open", f->C_GetSessionInfo(after, &si), CKR_OK);
    expect("C_Finalize(NULL)", f->C_Finalize(NULL), CKR_OK);
}

/* ----- templates: lying lengths, buffers pointing into each other ----- */

static void templates(void) {
    expect("C_Initialize(NULL)", f->C_Initialize(NULL), CKR_OK);
    CK_SESSION_HANDLE s = logged_in();

    /* A label whose 24 bytes look like a CK_ATTRIBUTE naming a bogus
     * buffer. The application's template asks for the label into the
     * template's own second entry, then for the value into a real buffer:
     * a module that reads the second entry again after writing the first
     * would write the value to 0x4141414141414141. */
    CK_ATTRIBUTE fake = {CKA_VALUE, (void *)(uintptr_t)0x4141414141414141ULL, 64};
    CK_OBJECT_HANDLE o = data_object(s, &fake, sizeof fake);
    {
        CK_BYTE value[64];
        memset(value, 0xEE, sizeof value);
        CK_ATTRIBUTE t[2];
        t[0].type = CKA_LABEL;
        t[0].pValue = &t[1];
        t[0].ulValueLen = sizeof t[1];
        t[1].type = CKA_VALUE;
        t[1].pValue = value;
        t[1].ulValueLen = sizeof value;
        expect("C_GetAttributeValue(label written into the template's next entry)",
               f->C_GetAttributeValue(s, o, t, 2), CKR_OK);
        truth("the value went to the buffer the application gave",
              memcmp(value, "hostile value", 13) == 0 && value[13] == 0xEE);
        truth("the first entry's length is the label's", t[0].ulValueLen == sizeof fake);
    }
    /* Two entries sharing one buffer: the later value wins, nothing else is
     * written. */
    {
        CK_BYTE shared[32];
        CK_BYTE guard[32];
        memset(shared, 0, sizeof shared);
        memset(guard, 0x5A, sizeof guard);
        CK_OBJECT_HANDLE d = data_object(s, "twelve bytes", 12);
        CK_ATTRIBUTE t[] = {
            {CKA_LABEL, shared, sizeof shared},
            {CKA_VALUE, shared, sizeof shared},
        };
        expect("C_GetAttributeValue(two entries, one buffer)", f->C_GetAttributeValue(s, d, t, 2), CKR_OK);
        truth("the later value is in the shared buffer", memcmp(shared, "hostile value", 13) == 0);
        truth("the lengths are the values'", t[0].ulValueLen == 12 && t[1].ulValueLen == 13);
        truth("the guard beside the buffer is untouched", guard[0] == 0x5A && guard[31] == 0x5A);
    }
    /* ulValueLen lies: far larger than the real buffer. The module writes
     * only the value's own length. */
    {
        struct {
            CK_BYTE buf[8];
            CK_BYTE guard[64];
        } b;
        memset(&b, 0x5A, sizeof b);
        CK_OBJECT_HANDLE d = data_object(s, "five!", 5);
        CK_ATTRIBUTE t = {CKA_LABEL, b.buf, (CK_ULONG)1 << 40};
        expect("C_GetAttributeValue(ulValueLen 2^40, 8-byte buffer)", f->C_GetAttributeValue(s, d, &t, 1), CKR_OK);
        truth("only the 5-byte label was written", memcmp(b.buf, "five!", 5) == 0 && b.buf[5] == 0x5A && b.guard[0] == 0x5A);
        truth("ulValueLen is 5", t.ulValueLen == 5);
        t.pValue = b.buf;
        t.ulValueLen = ULMAX;
        expect("C_GetAttributeValue(ulValueLen ULONG_MAX)", f->C_GetAttributeValue(s, d, &t, 1), CKR_ARGUMENTS_BAD);
        /* A buffer at the very end of the address space: its end wraps. */
        t.pValue = (void *)(uintptr_t)(ULMAX - 3);
        t.ulValueLen = 16;
        expect("C_GetAttributeValue(pValue wraps the address space)", f->C_GetAttributeValue(s, d, &t, 1), CKR_ARGUMENTS_BAD);
        /* Too short: the length, CK_UNAVAILABLE_INFORMATION, nothing written. */
        memset(&b, 0x5A, sizeof b);
        t.pValue = b.buf;
        t.ulValueLen = 4;
        expect("C_GetAttributeValue(4-byte buffer, 5-byte label)", f->C_GetAttributeValue(s, d, &t, 1), CKR_BUFFER_TOO_SMALL);
        truth("nothing written into the short buffer", b.buf[0] == 0x5A && t.ulValueLen == CK_UNAVAILABLE_INFORMATION);
        /* Template NULL with a count; count 0 with NULL. */
        expect("C_GetAttributeValue(NULL template, count 1)", f->C_GetAttributeValue(s, d, NULL, 1), CKR_ARGUMENTS_BAD);
        expect("C_GetAttributeValue(misaligned template)",
               f->C_GetAttributeValue(s, d, (CK_ATTRIBUTE_PTR)((char *)&t + 1), 1), CKR_ARGUMENTS_BAD);
        expect("C_CreateObject(NULL template, count 3)", f->C_CreateObject(s, NULL, 3, &(CK_OBJECT_HANDLE){0}), CKR_ARGUMENTS_BAD);
        CK_ATTRIBUTE bad_in = {CKA_LABEL, NULL, 12};
        expect("C_SetAttributeValue(pValue NULL, length 12)", f->C_SetAttributeValue(s, d, &bad_in, 1), CKR_ARGUMENTS_BAD);
        expect("C_FindObjectsInit(pValue NULL, length 12)", f->C_FindObjectsInit(s, &bad_in, 1), CKR_ARGUMENTS_BAD);
    }
    /* Values whose length lies, in templates the module reads: too long
     * for any message, refused before a byte past the real one is read. */
    {
        CK_BYTE_PTR x = guarded_byte('x');
        CK_OBJECT_CLASS cls = CKO_DATA;
        CK_BBOOL no = CK_FALSE;
        CK_ATTRIBUTE t[] = {
            {CKA_CLASS, &cls, sizeof cls},
            {CKA_TOKEN, &no, sizeof no},
            {CKA_LABEL, x, (CK_ULONG)1 << 40},
        };
        CK_OBJECT_HANDLE d = data_object(s, "lying", 5), h = 0;
        expect("C_CreateObject(label claimed 2^40 long)", f->C_CreateObject(s, t, 3, &h), CKR_DEVICE_MEMORY);
        expect("C_SetAttributeValue(label claimed 2^40 long)", f->C_SetAttributeValue(s, d, &t[2], 1), CKR_DEVICE_MEMORY);
        expect("C_FindObjectsInit(label claimed 2^40 long)", f->C_FindObjectsInit(s, &t[2], 1), CKR_DEVICE_MEMORY);
        t[2].type = CKA_CLASS;
        t[2].ulValueLen = (CK_ULONG)1 << 40;
        expect("C_FindObjectsInit(class claimed 2^40 long)", f->C_FindObjectsInit(s, &t[2], 1), CKR_ATTRIBUTE_VALUE_INVALID);
    }
    /* Output buffers: NULL length words, NULL data with a length. */
    {
        CK_BYTE buf[64];
        CK_ULONG n = sizeof buf;
        expect("C_GenerateRandom(NULL, 16)", f->C_GenerateRandom(s, NULL, 16), CKR_ARGUMENTS_BAD);
        expect("C_SeedRandom(NULL, 16)", f->C_SeedRandom(s, NULL, 16), CKR_ARGUMENTS_BAD);
        expect("C_FindObjectsInit(all)", f->C_FindObjectsInit(s, NULL, 0), CKR_OK);
        expect("C_FindObjects(NULL handles, max 4)", f->C_FindObjects(s, NULL, 4, &n), CKR_ARGUMENTS_BAD);
        expect("C_FindObjects(NULL count)", f->C_FindObjects(s, (CK_OBJECT_HANDLE_PTR)buf, 4, NULL), CKR_ARGUMENTS_BAD);
        expect("C_FindObjectsFinal", f->C_FindObjectsFinal(s), CKR_OK);
        CK_MECHANISM sha = {CKM_SHA256, NULL, 0};
        expect("C_DigestInit(SHA256)", f->C_DigestInit(s, &sha), CKR_OK);
        expect("C_Digest(NULL data, length 5)", f->C_Digest(s, NULL, 5, buf, &n), CKR_ARGUMENTS_BAD);
        expect("C_DigestInit(SHA256) again", f->C_DigestInit(s, &sha), CKR_OK);
        expect("C_Digest(NULL length word)", f->C_Digest(s, buf, 5, buf, NULL), CKR_ARGUMENTS_BAD);
        expect("C_DigestInit(NULL mechanism)", f->C_DigestInit(s, NULL), CKR_ARGUMENTS_BAD);
        n = sizeof buf;
        expect("C_DigestInit(SHA256) once more", f->C_DigestInit(s, &sha), CKR_OK);
        expect("C_Digest still works", f->C_Digest(s, (CK_BYTE_PTR)"abc", 3, buf, &n), CKR_OK);
        truth("SHA-256(abc) starts ba7816bf", n == 32 && buf[0] == 0xba && buf[1] == 0x78 && buf[2] == 0x16 && buf[3] == 0xbf);
    }
    expect("C_Finalize(NULL)", f->C_Finalize(NULL), CKR_OK);
}

/* ----- mechanisms: parameters whose lengths or pointers lie ----- */

static void mechanisms(void) {
    expect("C_Initialize(NULL)", f->C_Initialize(NULL), CKR_OK);
    CK_SESSION_HANDLE s = logged_in();
    CK_OBJECT_HANDLE k = aes_key(s);
    CK_BYTE iv[16] = {0};
    CK_BYTE out[64];
    CK_ULONG n;

    CK_GCM_PARAMS g;
    memset(&g, 0, sizeof g);
    g.pIv = NULL;
    g.ulIvLen = ULMAX / 2;
    g.ulTagBits = 128;
    CK_MECHANISM gcm = {CKM_AES_GCM, &g, sizeof g};
    expect("GCM: pIv NULL, ulIvLen huge", f->C_EncryptInit(s, &gcm, k), CKR_MECHANISM_PARAM_INVALID);
    g.ulIvLen = 12;
    expect("GCM: pIv NULL, ulIvLen 12", f->C_EncryptInit(s, &gcm, k), CKR_MECHANISM_PARAM_INVALID);
    g.pIv = iv;
    g.ulIvLen = (CK_ULONG)1 << 40;
    expect("GCM: 12-byte IV claimed 2^40 long", f->C_EncryptInit(s, &gcm, k), CKR_MECHANISM_PARAM_INVALID);
    g.ulIvLen = 12;
    g.pAAD = NULL;
    g.ulAADLen = 100;
    expect("GCM: pAAD NULL, ulAADLen 100", f->C_EncryptInit(s, &gcm, k), CKR_MECHANISM_PARAM_INVALID);
    g.ulAADLen = 0;
    gcm.ulParameterLen = (CK_ULONG)1 << 40;
    expect("GCM: ulParameterLen 2^40", f->C_EncryptInit(s, &gcm, k), CKR_MECHANISM_PARAM_INVALID);
    gcm.ulParameterLen = sizeof g - 8;
    expect("GCM: ulParameterLen short", f->C_EncryptInit(s, &gcm, k), CKR_MECHANISM_PARAM_INVALID);
    gcm.pParameter = NULL;
    gcm.ulParameterLen = sizeof g;
    expect("GCM: pParameter NULL", f->C_EncryptInit(s, &gcm, k), CKR_MECHANISM_PARAM_INVALID);
    gcm.pParameter = &g;
    g.ulTagBits = 1000;
    expect("GCM: ulTagBits 1000", f->C_EncryptInit(s, &gcm, k), CKR_MECHANISM_PARAM_INVALID);
    g.ulTagBits = 128;
    expect("GCM: sane parameters", f->C_EncryptInit(s, &gcm, k), CKR_OK);
    n = sizeof out;
    expect("GCM: encrypt", f->C_Encrypt(s, (CK_BYTE_PTR)"hostile", 7, out, &n), CKR_OK);
    truth("GCM: 7 bytes + 16-byte tag", n == 23);

    CK_MECHANISM cbc = {CKM_AES_CBC_PAD, NULL, 16};
    expect("CBC: IV NULL, length 16", f->C_EncryptInit(s, &cbc, k), CKR_MECHANISM_PARAM_INVALID);
    cbc.pParameter = iv;
    cbc.ulParameterLen = ULMAX;
    expect("CBC: IV length ULONG_MAX", f->C_EncryptInit(s, &cbc, k), CKR_MECHANISM_PARAM_INVALID);
    cbc.ulParameterLen = 8;
    expect("CBC: IV of 8 bytes", f->C_EncryptInit(s, &cbc, k), CKR_MECHANISM_PARAM_INVALID);

    CK_RSA_PKCS_OAEP_PARAMS o;
    memset(&o, 0, sizeof o);
    o.hashAlg = CKM_SHA256;
    o.mgf = CKG_MGF1_SHA256;
    o.source = CKZ_DATA_SPECIFIED;
    o.pSourceData = NULL;
    o.ulSourceDataLen = 32;
    CK_MECHANISM oaep = {CKM_RSA_PKCS_OAEP, &o, sizeof o};
    /* The key is checked by the HSM; the parameters never get that far. */
    expect("OAEP: pSourceData NULL, length 32", f->C_EncryptInit(s, &oaep, k), CKR_MECHANISM_PARAM_INVALID);
    o.pSourceData = iv;
    o.ulSourceDataLen = ULMAX - 4;
    expect("OAEP: source data length wraps", f->C_EncryptInit(s, &oaep, k), CKR_MECHANISM_PARAM_INVALID);

    CK_ECDH1_DERIVE_PARAMS e;
    memset(&e, 0, sizeof e);
    e.kdf = CKD_NULL;
    e.pPublicData = iv;
    e.ulPublicDataLen = ULMAX / 2;
    CK_MECHANISM ecdh = {CKM_ECDH1_DERIVE, &e, sizeof e};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}};
    CK_OBJECT_HANDLE dk = 0;
    expect("ECDH: ulPublicDataLen huge", f->C_DeriveKey(s, &ecdh, k, t, 2, &dk), CKR_MECHANISM_PARAM_INVALID);
    e.pPublicData = NULL;
    e.ulPublicDataLen = 65;
    expect("ECDH: pPublicData NULL, length 65", f->C_DeriveKey(s, &ecdh, k, t, 2, &dk), CKR_MECHANISM_PARAM_INVALID);
    e.pPublicData = iv;
    e.ulPublicDataLen = 16;
    e.pSharedData = NULL;
    e.ulSharedDataLen = 8;
    expect("ECDH: pSharedData NULL, length 8", f->C_DeriveKey(s, &ecdh, k, t, 2, &dk), CKR_MECHANISM_PARAM_INVALID);
    truth("no key handle was written", dk == 0);

    /* The session is still sound after all that. */
    n = sizeof out;
    CK_MECHANISM good = {CKM_AES_CBC_PAD, iv, 16};
    expect("CBC: sane", f->C_EncryptInit(s, &good, k), CKR_OK);
    expect("CBC: encrypt", f->C_Encrypt(s, (CK_BYTE_PTR)"hostile", 7, out, &n), CKR_OK);
    truth("CBC: one block", n == 16);
    /* v2.40: a failed C_Encrypt/C_EncryptUpdate/C_Sign ends the operation,
     * also when the module refuses its pointers. */
    expect("CBC: init for a refused call", f->C_EncryptInit(s, &good, k), CKR_OK);
    expect("C_Encrypt(NULL length word)", f->C_Encrypt(s, (CK_BYTE_PTR)"hostile", 7, out, NULL), CKR_ARGUMENTS_BAD);
    n = sizeof out;
    expect("C_Encrypt after it: the operation ended", f->C_Encrypt(s, (CK_BYTE_PTR)"hostile", 7, out, &n), CKR_OPERATION_NOT_INITIALIZED);
    expect("CBC: init for a refused update", f->C_EncryptInit(s, &good, k), CKR_OK);
    expect("C_EncryptUpdate(NULL data, length 16)", f->C_EncryptUpdate(s, NULL, 16, out, &n), CKR_ARGUMENTS_BAD);
    expect("C_EncryptInit after it: no operation active", f->C_EncryptInit(s, &good, k), CKR_OK);
    n = sizeof out;
    expect("C_Encrypt on the new operation", f->C_Encrypt(s, (CK_BYTE_PTR)"hostile", 7, out, &n), CKR_OK);

    /* Inputs with a bound of their own, claimed far longer than they are:
     * refused before a byte past the real one is read. */
    {
        CK_BYTE_PTR x = guarded_byte('x');
        CK_MECHANISM cmac = {CKM_AES_CMAC, NULL, 0};
        CK_RV rv = f->C_VerifyInit(s, &cmac, k);
        expect("C_VerifyInit(AES_CMAC)", rv, CKR_OK);
        expect("C_Verify(signature claimed 2^40 long)", f->C_Verify(s, (CK_BYTE_PTR)"abc", 3, x, (CK_ULONG)1 << 40), CKR_SIGNATURE_LEN_RANGE);
        CK_MECHANISM wrap = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_AES;
        CK_ATTRIBUTE ut[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}};
        CK_OBJECT_HANDLE uk = 0;
        expect("C_UnwrapKey(wrapped key claimed 2^40 long)", f->C_UnwrapKey(s, &wrap, k, x, (CK_ULONG)1 << 40, ut, 2, &uk), CKR_WRAPPED_KEY_LEN_RANGE);
    }
    expect("C_Finalize(NULL)", f->C_Finalize(NULL), CKR_OK);
}

/* ----- pins: lengths that lie, with the special PIN (user:password@host,
 * HSMLINK_SPECIAL_PIN=1, the PIN parsed as text) ----- */

static void pins(void) {
    /* The 1-byte PIN sits at the start of a zeroed page (valid UTF-8 all
     * along) followed by an inaccessible one: reading past it crashes. */
    CK_UTF8CHAR_PTR one = guarded_byte('a');
    CK_UTF8CHAR long_pin[300];
    char special[512];
    const char *addr = getenv("HSMLINK_ADDR");
    const char *user = getenv("HSMLINK_TEST_USER");
    memset(long_pin, 'a', sizeof long_pin);
    expect("C_Initialize(NULL)", f->C_Initialize(NULL), CKR_OK);
    CK_SESSION_HANDLE s = open_session();
    expect("C_Login(1-byte PIN claimed 2^40 long)", f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)one, (CK_ULONG)1 << 40), CKR_PIN_LEN_RANGE);
    expect("C_Login(1-byte PIN claimed ULONG_MAX long)", f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)one, ULMAX), CKR_PIN_LEN_RANGE);
    expect("C_Login(300-byte PIN)", f->C_Login(s, CKU_USER, long_pin, sizeof long_pin), CKR_PIN_LEN_RANGE);
    expect("C_Login(PIN wraps the address space)", f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)(uintptr_t)(ULMAX - 3), 16), CKR_ARGUMENTS_BAD);
    expect("C_Login(PIN claimed 2^40 long, bad session)", f->C_Login(s + 1000, CKU_USER, (CK_UTF8CHAR_PTR)one, (CK_ULONG)1 << 40), CKR_SESSION_HANDLE_INVALID);
    snprintf(special, sizeof special, "%s:%s@%s", user ? user : "", pin, addr ? addr : "");
    expect("C_Login(a valid special PIN) still works", f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)special, strlen(special)), CKR_OK);
    CK_BYTE buf[16];
    expect("C_GenerateRandom logged in", f->C_GenerateRandom(s, buf, sizeof buf), CKR_OK);
    expect("C_Finalize(NULL)", f->C_Finalize(NULL), CKR_OK);
}

/* ----- threads: C_CloseSession and C_Finalize while calls are under way ----- */

static volatile int stop;
static volatile CK_SESSION_HANDLE shared_session;
static volatile long calls_ok, calls_refused, calls_odd;

static void *worker(void *arg) {
    (void)arg;
    CK_BYTE buf[4096];
    while (!stop) {
        CK_SESSION_HANDLE s = shared_session;
        CK_RV rv = f->C_GenerateRandom(s, buf, sizeof buf);
        CK_SESSION_INFO si;
        CK_RV rv2 = f->C_GetSessionInfo(s, &si);
        CK_RV both[2] = {rv, rv2};
        for (int i = 0; i < 2; i++) {
            switch (both[i]) {
            case CKR_OK:
                __sync_fetch_and_add(&calls_ok, 1);
                break;
            case CKR_SESSION_HANDLE_INVALID:
            case CKR_SESSION_CLOSED:
            case CKR_CRYPTOKI_NOT_INITIALIZED:
                __sync_fetch_and_add(&calls_refused, 1);
                break;
            default:
                printf("     odd code 0x%lx from a racing call\n", both[i]);
                __sync_fetch_and_add(&calls_odd, 1);
            }
        }
    }
    return NULL;
}

static void threads(void) {
    enum { WORKERS = 4, ROUNDS = 25 };
    pthread_t t[WORKERS];
    expect("C_Initialize(NULL)", f->C_Initialize(NULL), CKR_OK);
    shared_session = logged_in();
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    int rounds_ok = 1;
    for (int r = 0; r < ROUNDS; r++) {
        usleep(20000);
        /* Close the session the workers are using, open another. */
        CK_RV rv = f->C_CloseSession(shared_session);
        if (rv != CKR_OK)
            rounds_ok = 0;
        CK_SESSION_HANDLE s = 0;
        if (f->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
            rounds_ok = 0;
        shared_session = s;
        usleep(20000);
        /* Finalize under their feet, and initialize again. */
        if (r % 5 == 4) {
            if (f->C_Finalize(NULL) != CKR_OK)
                rounds_ok = 0;
            usleep(5000);
            if (f->C_Initialize(NULL) != CKR_OK)
                rounds_ok = 0;
            s = 0;
            if (f->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
                rounds_ok = 0;
            if (f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) != CKR_OK)
                rounds_ok = 0;
            shared_session = s;
        }
    }
    stop = 1;
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    truth("every close, finalize, initialize and login of the main thread worked", rounds_ok);
    printf("     racing calls: %ld ok, %ld refused, %ld odd\n", calls_ok, calls_refused, calls_odd);
    truth("racing calls answered only OK or a closed/invalid/uninitialized code", calls_odd == 0);
    truth("racing calls did work between the closes", calls_ok > 0 && calls_refused > 0);
    CK_BYTE buf[16];
    expect("the last session works", f->C_GenerateRandom(shared_session, buf, sizeof buf), CKR_OK);
    expect("C_Finalize(NULL)", f->C_Finalize(NULL), CKR_OK);
}

/* ----- forkfinalize: fork() while C_Finalize waits for a call under way.
 * The HSM is a socket that accepts (in the kernel's backlog) and never
 * answers; the module's I/O timeout (HSMLINK_TIMEOUT_MS=4000) ends the
 * call. The child must find a library it can initialize at once: no lock
 * of the parent's finalize may be held in its copy. ----- */

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec / 1e6;
}

static CK_SESSION_HANDLE slow_session;
static CK_RV slow_rv, finalize_rv;
static double slow_end, finalize_end;

static void *slow_call(void *arg) {
    (void)arg;
    CK_BYTE buf[16];
    slow_rv = f->C_GenerateRandom(slow_session, buf, sizeof buf);
    slow_end = now_s();
    return NULL;
}

static void *finalizer(void *arg) {
    (void)arg;
    finalize_rv = f->C_Finalize(NULL);
    finalize_end = now_s();
    return NULL;
}

static void forkfinalize(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 16) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) != 0) {
        truth("a silent listener", 0);
        return;
    }
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    setenv("HSMLINK_ADDR", addr, 1);
    setenv("HSMLINK_TIMEOUT_MS", "4000", 1);
    expect("C_Initialize(NULL)", f->C_Initialize(NULL), CKR_OK);
    slow_session = open_session();
    pthread_t slow, fin;
    pthread_create(&slow, NULL, slow_call, NULL);
    usleep(600000); /* the call waits for the silent HSM */
    pthread_create(&fin, NULL, finalizer, NULL);
    usleep(600000); /* C_Finalize waits for that call */
    pid_t child = fork();
    if (child == 0) {
        alarm(10);
        double t0 = now_s();
        CK_RV rv = f->C_Initialize(NULL);
        double took = now_s() - t0;
        CK_RV rv2 = f->C_Finalize(NULL);
        _exit(rv == CKR_OK && rv2 == CKR_OK && took < 1.5 ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    truth("the child, forked while C_Finalize waited, initialized and finalized at once",
          WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (WIFSIGNALED(status))
        printf("     the child was killed by signal %d (SIGALRM: it hung)\n", WTERMSIG(status));
    pthread_join(slow, NULL);
    pthread_join(fin, NULL);
    expect("the slow call ends with the HSM unreachable", slow_rv, CKR_DEVICE_ERROR);
    expect("C_Finalize", finalize_rv, CKR_OK);
    truth("C_Finalize returned after the call under way", finalize_end >= slow_end);
    expect("C_Initialize(NULL) after", f->C_Initialize(NULL), CKR_OK);
    expect("C_Finalize(NULL) after", f->C_Finalize(NULL), CKR_OK);
    close(l);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODULE PIN SECTION\n", argv[0]);
        return 2;
    }
    pin = argv[2];
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    get_list = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    get_interface = (CK_C_GetInterface)dlsym(lib, "C_GetInterface");
    get_interface_list = (CK_C_GetInterfaceList)dlsym(lib, "C_GetInterfaceList");
    if (!get_list || get_list(&f) != CKR_OK || !f) {
        fprintf(stderr, "C_GetFunctionList failed\n");
        return 2;
    }
    const char *section = argv[3];
    if (!strcmp(section, "general"))
        general();
    else if (!strcmp(section, "handles"))
        handles();
    else if (!strcmp(section, "templates"))
        templates();
    else if (!strcmp(section, "mechanisms"))
        mechanisms();
    else if (!strcmp(section, "pins"))
        pins();
    else if (!strcmp(section, "forkfinalize"))
        forkfinalize();
    else if (!strcmp(section, "threads"))
        threads();
    else {
        fprintf(stderr, "unknown section %s\n", section);
        return 2;
    }
    printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
