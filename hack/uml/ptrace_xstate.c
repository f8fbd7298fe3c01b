/*
 * LD_PRELOAD wrapper around ptrace() for User-Mode Linux (hack/run-in-v2.sh).
 *
 * UML keeps each thread's FP state in a fixed buffer (832 bytes for its 6.1 kernel) and moves
 * it with PTRACE_GETREGSET/PTRACE_SETREGSET(NT_X86_XSTATE). On a CPU whose XSAVE area is
 * larger (AMX), the host kernel refuses a SETREGSET shorter than the full area, and UML dies
 * at its first process with "ptrace set fp regs failed, errno = 14".
 *
 * So: on every GET, keep the full XSAVE image, keyed by UML's buffer address (one buffer a
 * UML thread), and give UML its first bytes; on every SET, write back the full image with
 * UML's bytes on top (read the image first if that buffer was never seen).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NT_X86_XSTATE 0x202
#define MAX_XSTATE (64 * 1024)
#define SLOTS 4096

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

struct slot { void *key; size_t size; unsigned char *image; };
static struct slot slots[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ptrace_fn real_ptrace(void) {
    static ptrace_fn fn;
    if (!fn) fn = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    return fn;
}

/* the slot of a buffer (a new one if it has none); NULL when the table is full */
static struct slot *slot_of(void *key) {
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].key == key) return &slots[i];
    for (int i = 0; i < SLOTS; i++)
        if (!slots[i].key) {
            slots[i].image = malloc(MAX_XSTATE);
            if (!slots[i].image) return NULL;
            slots[i].key = key;
            slots[i].size = 0;
            return &slots[i];
        }
    return NULL;
}

/* read the full image of `pid` into the slot */
static long fetch(pid_t pid, struct slot *s) {
    struct iovec full = { s->image, MAX_XSTATE };
    long r = real_ptrace()(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &full);
    if (r == 0) s->size = full.iov_len;
    return r;
}

long ptrace(enum __ptrace_request request, ...) {
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if ((request != PTRACE_GETREGSET && request != PTRACE_SETREGSET) || (long)addr != NT_X86_XSTATE || !data)
        return real_ptrace()(request, pid, addr, data);
    struct iovec *iov = data;
    long r;
    pthread_mutex_lock(&lock);
    struct slot *s = slot_of(iov->iov_base);
    if (!s) {
        pthread_mutex_unlock(&lock);
        return real_ptrace()(request, pid, addr, data);
    }
    if (request == PTRACE_GETREGSET) {
        r = fetch(pid, s);
        if (r == 0) {
            size_t n = iov->iov_len < s->size ? iov->iov_len : s->size;
            memcpy(iov->iov_base, s->image, n);
            iov->iov_len = n;
        }
    } else {
        r = s->size ? 0 : fetch(pid, s);
        if (r == 0) {
            size_t n = iov->iov_len < s->size ? iov->iov_len : s->size;
            memcpy(s->image, iov->iov_base, n);
            struct iovec full = { s->image, s->size };
            r = real_ptrace()(PTRACE_SETREGSET, pid, (void *)NT_X86_XSTATE, &full);
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}
