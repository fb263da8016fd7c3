# cython: language_level=3
# The atomics, clocks and futex doorbells of rf_atomic.h: the only way the
# extensions touch memory shared between processes with anything stronger
# than a plain load or store.  Extern declarations only, so cimporting this
# file never creates a run-time import between the compiled modules.

from libc.stdint cimport int64_t, uint64_t, uint32_t

cdef extern from "rf_atomic.h" nogil:
    int64_t rf_load_acquire_i64(const int64_t *p)
    void rf_store_release_i64(int64_t *p, int64_t v)
    int64_t rf_load_relaxed_i64(const int64_t *p)
    uint64_t rf_load_acquire_u64(const uint64_t *p)
    uint64_t rf_load_relaxed_u64(const uint64_t *p)
    void rf_store_relaxed_u64(uint64_t *p, uint64_t v)
    void rf_store_release_u64(uint64_t *p, uint64_t v)
    uint64_t rf_fetch_add_u64(uint64_t *p, uint64_t v)
    uint32_t rf_load_acquire_u32(const uint32_t *p)
    void rf_store_seqcst_u32(uint32_t *p, uint32_t v)
    void rf_store_relaxed_u32(uint32_t *p, uint32_t v)
    void rf_store_release_u32(uint32_t *p, uint32_t v)
    void rf_fence_acquire()
    void rf_fence_release()
    void rf_fence_seqcst()
    void rf_compiler_barrier()
    void rf_cpu_relax()
    void rf_prefetch_w(const void *p)
    int64_t rf_now_ns()
    int64_t rf_wall_ns()
    void rf_sleep_ns(int64_t ns)
    void rf_yield()
    int rf_pid_can_run(int64_t pid)
    int rf_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
    void rf_bell_ring(uint32_t *bell)
    uint64_t rf_mix64(uint64_t z)
