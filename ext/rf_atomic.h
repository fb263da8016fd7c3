/* rf_atomic.h: the one place where ringflow touches memory shared between
 * processes with anything stronger than a plain load or store.
 *
 * Sequences (ring cursors) are published with store-release and read with
 * load-acquire, so the records written before a publish are visible to the
 * consumer that sees the new cursor.  Doorbells are 32-bit futex words: a
 * sleeping side parks on one, the other side bumps it and wakes it only when
 * the sleeping flag says somebody is there, so an awake peer costs one load.
 *
 * The futexes are shared (not FUTEX_PRIVATE) because the words live in
 * /dev/shm mappings seen by several processes.
 */
#ifndef RF_ATOMIC_H
#define RF_ATOMIC_H

#include <stdint.h>
#include <time.h>
#include <errno.h>
#include <sched.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>

static inline int64_t rf_load_acquire_i64(const int64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void rf_store_release_i64(int64_t *p, int64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline int64_t rf_load_relaxed_i64(const int64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline uint64_t rf_load_acquire_u64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline uint64_t rf_load_relaxed_u64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void rf_store_relaxed_u64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static inline void rf_store_release_u64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline uint64_t rf_fetch_add_u64(uint64_t *p, uint64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline uint32_t rf_load_acquire_u32(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void rf_store_seqcst_u32(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}
static inline void rf_store_release_u32(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void rf_store_relaxed_u32(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static inline void rf_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void rf_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void rf_fence_seqcst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/* No instruction: keeps the compiler from moving later stores above a commit
   point (a release store only holds earlier ones back), which is what a
   process killed at any instruction sees (docs/faults.md); x86 keeps stores
   in order itself. */
static inline void rf_compiler_barrier(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

static inline void rf_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

static inline void rf_prefetch_w(const void *p) { __builtin_prefetch(p, 1, 3); }

static inline int64_t rf_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t rf_wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void rf_sleep_ns(int64_t ns) {
    struct timespec ts;
    ts.tv_sec = ns / 1000000000LL;
    ts.tv_nsec = ns % 1000000000LL;
    nanosleep(&ts, NULL);
}

static inline void rf_yield(void) { sched_yield(); }

/* Whether process pid can still run: 1 when the kernel has it running or
 * runnable (R) or in an uninterruptible wait (D, a page fault), 0 when it
 * is stopped, traced, a zombie, sleeping or gone.  Seqlock readers ask this
 * of a table's writer before they give up on a row it holds mid-write: a
 * writer descheduled inside a write is waiting for a core, not dead.  Only
 * called on a read's slow path (a system call or three). */
static inline int rf_pid_can_run(int64_t pid) {
    char path[48], buf[512], *p;
    int fd;
    ssize_t n;
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    /* "pid (comm) S ...": comm may hold spaces and parentheses. */
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return 0;
    return p[2] == 'R' || p[2] == 'D';
}

/* Park on *word while it still equals expected, for at most timeout_ns.
 * Returns 0 on wake-up or value change, ETIMEDOUT, or EINTR. */
static inline int rf_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts;
    ts.tv_sec = timeout_ns / 1000000000LL;
    ts.tv_nsec = timeout_ns % 1000000000LL;
    long r = syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
    if (r == 0) return 0;
    if (errno == EAGAIN) return 0;
    return errno;
}

static inline void rf_futex_wake_all(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

/* A doorbell is {sleeping, bell} on its own cache line.  The sleeper reads
 * bell, raises sleeping (seq_cst), re-checks its condition, then parks on
 * bell.  The ringer publishes, issues a seq_cst fence, and bumps and wakes
 * only when it sees sleeping: the two seq_cst operations form a Dekker pair,
 * so one side always sees the other and no wake-up is lost. */
static inline void rf_bell_ring(uint32_t *bell_word /* [0]=sleeping, [1]=bell */) {
    rf_fence_seqcst();
    if (__atomic_load_n(&bell_word[0], __ATOMIC_RELAXED)) {
        __atomic_fetch_add(&bell_word[1], 1, __ATOMIC_SEQ_CST);
        rf_futex_wake_all(&bell_word[1]);
    }
}

/* 64-bit finaliser from SplitMix64 / Stafford's variant 13: every input bit
 * reaches every output bit, so `mix64(key) % workers` spreads sequential ids. */
static inline uint64_t rf_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#endif
