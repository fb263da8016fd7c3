# cython: language_level=3
# Sharding: which worker owns a key (DESIGN.md, "shard").  The router
# scatters events by it and every reader finds a series' table by it, so it
# is written once.

from libc.stdint cimport uint64_t
from atomic cimport rf_mix64

cdef inline uint64_t shard_of(uint64_t key, uint64_t shards) noexcept nogil:
    return rf_mix64(key) % shards
