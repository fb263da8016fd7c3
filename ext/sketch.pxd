# cython: language_level=3
# The quantile sketch of a row's current window: SKETCH_BUCKETS (85) u16
# counters over log-spaced buckets (four per power of two), kept in a
# sliding range of bucket indices, with the lowest and highest non-zero
# counters (sk_lo, sk_hi) so that a new window clears, and a quantile scans,
# only the counters in use (docs/health.md, "The quantile sketch").

from libc.stdint cimport int64_t, uint64_t, uint16_t, int16_t, uint8_t
from libc.string cimport memcpy, memset
from libc.math cimport NAN
from layout cimport StateRow, SKETCH_BUCKETS, SKETCH_FIRST, ROW_SKETCH_OFFSET
from params cimport Params
from undo cimport undo_sketch, undo_counter, undo_line2

cdef enum:
    SKETCH_MAX = 65535
    # The counters in the row's line 2 (bytes 128-191), where a window's
    # first value lands (SKETCH_FIRST).
    SK_LINE2_LO = (128 - ROW_SKETCH_OFFSET + 1) // 2
    SK_LINE2_HI = (192 - ROW_SKETCH_OFFSET) // 2 - 1

cdef inline int64_t bucket_of(double x) noexcept nogil:
    # Exponent and top two mantissa bits: four buckets per power of two,
    # integer work only.  Zero, negative and subnormal values share 0.
    cdef uint64_t bits
    if not (x > 0.0):
        return 0
    memcpy(&bits, &x, 8)
    if (bits >> 52) == 0:
        return 0
    return <int64_t>(bits >> 50)

cdef inline double bucket_estimate(int64_t b) noexcept nogil:
    # The harmonic mean of the bucket's bounds: within 1/9 of any value in
    # the bucket.  Taken on the mantissas and scaled after: 2 * lo * hi
    # overflows for values above 1e154.
    cdef double lo, hi, scale
    cdef uint64_t bits
    if b < 4:
        return 0.0
    lo = 1.0 + <double>(b & 3) * 0.25
    hi = lo + 0.25
    # 2 ** (E - 1023) built from its bits: exact, and cheaper than ldexp.
    bits = (<uint64_t>(b >> 2)) << 52
    memcpy(&scale, &bits, 8)
    return (2.0 * lo * hi / (lo + hi)) * scale

cdef inline void sketch_halve(StateRow *r) noexcept nogil:
    # Rounding up: a non-zero counter stays non-zero, so sk_lo and sk_hi
    # still hold.
    cdef int64_t j
    for j in range(r.sk_lo, r.sk_hi + 1):
        r.sketch[j] = <uint16_t>((r.sketch[j] + 1) >> 1)
    r.sk_shift += 1

cdef inline void sketch_add(StateRow *r, double x, const Params *p) noexcept nogil:
    """Count x in the current window's sketch; the caller has not yet
    counted it in win_count."""
    cdef int64_t b = bucket_of(x)
    cdef int64_t i, j, delta, base
    cdef uint64_t low
    if r.win_count == 0:
        # A new window: only the counters the last one used are non-zero.
        if r.sk_lo >= SK_LINE2_LO and r.sk_hi <= SK_LINE2_HI:
            # The last window's counters all in line 2 (the common case):
            # save and clear the whole line, constant sizes, no libc call.
            undo_line2(p, r)
            memset((<char *>r) + 128, 0, 64)
        else:
            undo_sketch(p, r)
            memset(&r.sketch[r.sk_lo], 0, <size_t>(r.sk_hi - r.sk_lo + 1) * 2)
        r.sk_shift = 0
        r.sk_base = <int16_t>(b - SKETCH_FIRST)
        r.sk_lo = SKETCH_FIRST
        r.sk_hi = SKETCH_FIRST
        r.sketch[SKETCH_FIRST] = 1
        return
    i = b - r.sk_base
    if <uint64_t>i < SKETCH_BUCKETS:
        # In the kept range: the common path, one counter.
        if r.sketch[i] == SKETCH_MAX:
            undo_sketch(p, r)
            sketch_halve(r)
        else:
            undo_counter(p, r, i)
        r.sketch[i] += 1
        if i < r.sk_lo:
            r.sk_lo = <uint8_t>i
        if i > r.sk_hi:
            r.sk_hi = <uint8_t>i
        return
    undo_sketch(p, r)
    if i >= SKETCH_BUCKETS:
        # Above the kept range: move it up, folding what falls off the
        # bottom into bucket 0 (high quantiles stay exact to the bucket).
        delta = i - (SKETCH_BUCKETS - 1)
        low = 0
        j = r.sk_lo
        while j <= r.sk_hi and j <= delta:
            low += r.sketch[j]
            j += 1
        for j in range(1, SKETCH_BUCKETS):
            r.sketch[j] = r.sketch[j + delta] if j + delta < SKETCH_BUCKETS else 0
        if r.sk_lo > delta:
            r.sk_lo = <uint8_t>(r.sk_lo - delta)
        else:
            r.sk_lo = 0
        r.sk_hi = SKETCH_BUCKETS - 1
        r.sketch[0] = 0
        while low > SKETCH_MAX:
            # Folding overflowed bucket 0: halve everything (as often as
            # needed) instead of saturating, so the ranks stay proportional.
            low = (low + 1) >> 1
            sketch_halve(r)
        r.sketch[0] = <uint16_t>low
        r.sk_base = <int16_t>(b - (SKETCH_BUCKETS - 1))
        i = SKETCH_BUCKETS - 1
    else:
        # Below: move the range down as far as its highest counter allows.
        base = r.sk_base + r.sk_hi - (SKETCH_BUCKETS - 1)
        if base < b:
            base = b
        delta = r.sk_base - base
        if delta > 0:
            j = r.sk_hi + delta
            if j > SKETCH_BUCKETS - 1:
                j = SKETCH_BUCKETS - 1
            while j >= delta:
                r.sketch[j] = r.sketch[j - delta]
                j -= 1
            for j in range(delta if delta < r.sk_hi + 1 else r.sk_hi + 1):
                r.sketch[j] = 0
            r.sk_base = <int16_t>base
            r.sk_lo = <uint8_t>(r.sk_lo + delta)
            r.sk_hi = <uint8_t>(r.sk_hi + delta)
        i = b - r.sk_base
        if i < 0:
            i = 0
        if i < r.sk_lo:
            r.sk_lo = <uint8_t>i
    if r.sketch[i] == SKETCH_MAX:
        sketch_halve(r)
    r.sketch[i] += 1

cdef inline double sketch_quantile(const StateRow *r, double q) noexcept nogil:
    cdef uint64_t n = 0, rank, cum = 0
    cdef int64_t i
    cdef double est
    if r.win_count == 0:
        return NAN
    if r.sk_shift == 0:
        # Never halved: the counters add up to the window's count.
        n = r.win_count
    else:
        for i in range(r.sk_lo, r.sk_hi + 1):
            n += r.sketch[i]
    rank = <uint64_t>(q * <double>(n - 1))
    if rank + rank >= n:
        # A high quantile: from the highest counter down.  The bucket
        # holding rank r is the highest i with count(sketch[i:]) >= n - r.
        i = r.sk_hi
        while True:
            cum += r.sketch[i]
            if cum >= n - rank or i <= r.sk_lo:
                break
            i -= 1
    else:
        i = r.sk_lo
        while i < r.sk_hi:
            cum += r.sketch[i]
            if cum > rank:
                break
            i += 1
    est = bucket_estimate(r.sk_base + i)
    if est < r.win_min:
        est = r.win_min
    if est > r.win_max:
        est = r.win_max
    return est
