/*
 * Fork safety, the way nginx, Apache or PHP-FPM use a PKCS#11 module: the
 * parent initializes and logs in, then forks; the child must find the
 * library uninitialized (it may not touch the parent's connections), call
 * C_Initialize again and work on its own connections, while the parent's
 * session keeps working.
 *
 * Usage: fork_check MODULE.so PIN     (HSMLINK_ADDR/HSMLINK_USER set)
 * Exit 0 when every step behaved; otherwise prints the failing step.
 * Types are declared here from the PKCS#11 v2.40 specification.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef CK_ULONG CK_SESSION_HANDLE;
typedef unsigned char CK_BYTE;

#define CKR_OK 0x0UL
#define CKR_CRYPTOKI_NOT_INITIALIZED 0x190UL
#define CKF_RW_SESSION 0x2UL
#define CKF_SERIAL_SESSION 0x4UL
#define CKU_USER 1UL

typedef CK_RV (*init_fn)(void *);
typedef CK_RV (*open_fn)(CK_ULONG, CK_ULONG, void *, void *, CK_SESSION_HANDLE *);
typedef CK_RV (*login_fn)(CK_SESSION_HANDLE, CK_ULONG, CK_BYTE *, CK_ULONG);
typedef CK_RV (*random_fn)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG);
typedef CK_RV (*close_fn)(CK_SESSION_HANDLE);

static init_fn C_Initialize, C_Finalize;
static open_fn C_OpenSession;
static login_fn C_Login;
static random_fn C_GenerateRandom;
static close_fn C_CloseSession;

static int check(const char *who, const char *step, CK_RV got, CK_RV want) {
    if (got != want) {
        fprintf(stderr, "%s: %s returned 0x%lx, expected 0x%lx\n", who, step, got, want);
        return 1;
    }
    return 0;
}

static int work(const char *who, const char *pin, CK_SESSION_HANDLE *out) {
    CK_SESSION_HANDLE s;
    CK_BYTE buf[32];
    if (check(who, "C_OpenSession", C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), CKR_OK))
        return 1;
    if (check(who, "C_Login", C_Login(s, CKU_USER, (CK_BYTE *)pin, strlen(pin)), CKR_OK))
        return 1;
    if (check(who, "C_GenerateRandom", C_GenerateRandom(s, buf, sizeof buf), CKR_OK))
        return 1;
    *out = s;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODULE PIN\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    C_Initialize = (init_fn)dlsym(lib, "C_Initialize");
    C_Finalize = (init_fn)dlsym(lib, "C_Finalize");
    C_OpenSession = (open_fn)dlsym(lib, "C_OpenSession");
    C_Login = (login_fn)dlsym(lib, "C_Login");
    C_GenerateRandom = (random_fn)dlsym(lib, "C_GenerateRandom");
    C_CloseSession = (close_fn)dlsym(lib, "C_CloseSession");
    if (!C_Initialize || !C_Finalize || !C_OpenSession || !C_Login || !C_GenerateRandom || !C_CloseSession) {
        fprintf(stderr, "missing symbol\n");
        return 2;
    }
    const char *pin = argv[2];
    CK_SESSION_HANDLE parent;
    if (check("parent", "C_Initialize", C_Initialize(NULL), CKR_OK) || work("parent", pin, &parent))
        return 1;

    const int children = 4;
    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            CK_BYTE buf[16];
            CK_SESSION_HANDLE mine;
            /* The inherited library is not this process's. */
            if (check("child", "C_GenerateRandom on the parent's session",
                      C_GenerateRandom(parent, buf, sizeof buf), CKR_CRYPTOKI_NOT_INITIALIZED))
                _exit(1);
            if (check("child", "C_Initialize", C_Initialize(NULL), CKR_OK))
                _exit(1);
            if (work("child", pin, &mine))
                _exit(1);
            for (int j = 0; j < 50; j++)
                if (check("child", "C_GenerateRandom loop", C_GenerateRandom(mine, buf, sizeof buf), CKR_OK))
                    _exit(1);
            if (check("child", "C_Finalize", C_Finalize(NULL), CKR_OK))
                _exit(1);
            _exit(0);
        }
        /* Meanwhile the parent keeps using its own connection. */
        CK_BYTE buf[16];
        for (int j = 0; j < 50; j++)
            if (check("parent", "C_GenerateRandom while a child runs", C_GenerateRandom(parent, buf, sizeof buf), CKR_OK))
                return 1;
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d failed (status %d)\n", i, status);
            return 1;
        }
    }
    CK_BYTE buf[16];
    if (check("parent", "C_GenerateRandom after the children", C_GenerateRandom(parent, buf, sizeof buf), CKR_OK))
        return 1;
    if (check("parent", "C_CloseSession", C_CloseSession(parent), CKR_OK))
        return 1;
    if (check("parent", "C_Finalize", C_Finalize(NULL), CKR_OK))
        return 1;
    printf("fork check passed\n");
    return 0;
}
