# cython: language_level=3
# Event-time windows of a row (current and previous, with the allowed
# lateness) and the sliding views that finished windows fold into
# (docs/health.md, Windows and Views).

from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t
from libc.math cimport INFINITY, pow
from layout cimport StateRow, ROW_PREV_FINAL, NVIEWS, FOLD_NONE, FOLD_CAP
from params cimport Params, BatchCounters
from sketch cimport sketch_add
from undo cimport undo_cold

cdef inline void view_fold(StateRow *r, uint32_t count, double sum, int64_t t,
                           const Params *p) noexcept nogil:
    """Fold a finished window (t windows before the current one) into the
    views."""
    cdef double m, dg
    cdef int64_t g
    cdef int j
    if count == 0:
        return
    undo_cold(p, r)
    m = sum / <double>count
    if r.fold_age == FOLD_NONE:
        for j in range(NVIEWS):
            r.view[j] = <float>m
    else:
        g = <int64_t>r.fold_age - t
        for j in range(NVIEWS):
            dg = pow(p.view_decay[j], <double>g)
            r.view[j] = <float>(dg * <double>r.view[j] + (1.0 - dg) * m)
    r.fold_age = <uint16_t>t

cdef inline void prev_final(StateRow *r, const Params *p) noexcept nogil:
    """The previous window can no longer change: fold it, once."""
    if not (r.flags & ROW_PREV_FINAL):
        undo_cold(p, r)
        view_fold(r, r.prev_count, r.prev_sum, 1, p)
        r.flags |= ROW_PREV_FINAL


cdef inline void window_roll(StateRow *r, int64_t start, int64_t ts, int64_t wm,
                             const Params *p) noexcept nogil:
    cdef int64_t k = (start - r.win_start) // p.window
    cdef int64_t age
    undo_cold(p, r)
    prev_final(r, p)
    if k == 1:
        r.prev_count = r.win_count
        r.prev_sum = r.win_sum
        r.prev_min = r.win_min
        r.prev_max = r.win_max
    else:
        view_fold(r, r.win_count, r.win_sum, 0, p)
        r.prev_count = 0
        r.prev_sum = 0.0
        r.prev_min = INFINITY
        r.prev_max = -INFINITY
    # The new previous window is open for late events until the watermark
    # passes its end plus the lateness.
    r.flags &= ~ROW_PREV_FINAL
    if r.fold_age != FOLD_NONE:
        age = <int64_t>r.fold_age + k
        r.fold_age = <uint16_t>(age if age < FOLD_CAP else FOLD_CAP)
    r.win_start = start
    r.win_count = 0
    r.win_sum = 0.0
    r.win_min = INFINITY
    r.win_max = -INFINITY
    if start + p.lateness <= ts:
        # With no lateness allowed, the window just closed is final at once.
        prev_final(r, p)

cdef inline void window_add(StateRow *r, int64_t ts, double x, int64_t wm,
                            bint fresh, const Params *p, BatchCounters *c) noexcept nogil:
    cdef int64_t start
    cdef bint check_prev = False
    # Most events fall in the current window: no division for them.
    if not fresh and ts >= r.win_start and <uint64_t>(ts - r.win_start) < <uint64_t>p.window:
        start = r.win_start
    else:
        start = ts - ts % p.window
    if fresh:
        r.win_start = start
        undo_cold(p, r)
        # The window before the first one is empty: nothing to fold.
        r.flags |= ROW_PREV_FINAL if start + p.lateness <= ts else 0
    elif start > r.win_start:
        window_roll(r, start, ts, wm, p)
    elif start == r.win_start:
        check_prev = ts > wm
    elif (start == r.win_start - p.window and r.win_start + p.lateness > wm
            and not (r.flags & ROW_PREV_FINAL)):
        undo_cold(p, r)
        r.prev_count += 1
        r.prev_sum += x
        if x < r.prev_min:
            r.prev_min = x
        if x > r.prev_max:
            r.prev_max = x
        return
    else:
        undo_cold(p, r)
        r.late += 1
        c.late += 1
        return
    sketch_add(r, x, p)
    r.win_count += 1
    r.win_sum += x
    if x < r.win_min:
        r.win_min = x
    if x > r.win_max:
        r.win_max = x
    if check_prev and wm < r.win_start + p.lateness <= ts:
        # The watermark just passed the previous window's end plus the
        # lateness: it can no longer change.  (The flags' cold line is read
        # only here, not for every event.)
        prev_final(r, p)
