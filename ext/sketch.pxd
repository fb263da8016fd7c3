# cython: language_level=3
# The quantile sketch of a row's current window: 22 u16 counters over
# log-spaced buckets (four per power of two), kept in a sliding range of
# bucket indices (docs/health.md, Quantiles).

from libc.stdint cimport int64_t, uint64_t, uint16_t, int16_t
from libc.string cimport memcpy, memset
from libc.math cimport NAN
from layout cimport StateRow, SKETCH_BUCKETS

cdef enum:
    SKETCH_FIRST = 11        # where a window's first value lands
    SKETCH_MAX = 65535

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

cdef inline void sketch_add(StateRow *r, double x) noexcept nogil:
    """Count x in the current window's sketch; the caller has not yet
    counted it in win_count."""
    cdef int64_t b = bucket_of(x)
    cdef int64_t i, j, top, delta, base
    cdef uint64_t low
    if r.win_count == 0:
        memset(r.sketch, 0, sizeof(r.sketch))
        r.sk_shift = 0
        r.sk_base = <int16_t>(b - SKETCH_FIRST)
    i = b - r.sk_base
    if i >= SKETCH_BUCKETS:
        # Above the kept range: move it up, folding what falls off the
        # bottom into bucket 0 (high quantiles stay exact to the bucket).
        delta = i - (SKETCH_BUCKETS - 1)
        low = 0
        for j in range(SKETCH_BUCKETS if delta + 1 > SKETCH_BUCKETS else delta + 1):
            low += r.sketch[j]
        for j in range(1, SKETCH_BUCKETS):
            r.sketch[j] = r.sketch[j + delta] if j + delta < SKETCH_BUCKETS else 0
        while low > SKETCH_MAX:
            # Folding overflowed bucket 0: halve everything (as often as
            # needed) instead of saturating, so the ranks stay proportional.
            low = (low + 1) >> 1
            for j in range(1, SKETCH_BUCKETS):
                r.sketch[j] = <uint16_t>((r.sketch[j] + 1) >> 1)
            r.sk_shift += 1
        r.sketch[0] = <uint16_t>low
        r.sk_base = <int16_t>(b - (SKETCH_BUCKETS - 1))
        i = SKETCH_BUCKETS - 1
    elif i < 0:
        # Below: move the range down as far as its highest bucket allows.
        top = SKETCH_BUCKETS - 1
        while top > 0 and r.sketch[top] == 0:
            top -= 1
        base = r.sk_base + top - (SKETCH_BUCKETS - 1)
        if base < b:
            base = b
        delta = r.sk_base - base
        if delta > 0:
            j = SKETCH_BUCKETS - 1
            while j >= delta:
                r.sketch[j] = r.sketch[j - delta]
                j -= 1
            for j in range(delta):
                r.sketch[j] = 0
            r.sk_base = <int16_t>base
        i = b - r.sk_base
        if i < 0:
            i = 0
    if r.sketch[i] == SKETCH_MAX:
        for j in range(SKETCH_BUCKETS):
            r.sketch[j] = <uint16_t>((r.sketch[j] + 1) >> 1)
        r.sk_shift += 1
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
        for i in range(SKETCH_BUCKETS):
            n += r.sketch[i]
    rank = <uint64_t>(q * <double>(n - 1))
    if rank + rank >= n:
        # A high quantile: from the top, a bucket or two instead of twenty.
        # The bucket holding rank r is the highest i with
        # count(sketch[i:]) >= n - r.
        i = SKETCH_BUCKETS - 1
        while True:
            cum += r.sketch[i]
            if cum >= n - rank or i == 0:
                break
            i -= 1
    else:
        for i in range(SKETCH_BUCKETS):
            cum += r.sketch[i]
            if cum > rank:
                break
    est = bucket_estimate(r.sk_base + i)
    if est < r.win_min:
        est = r.win_min
    if est > r.win_max:
        est = r.win_max
    return est
