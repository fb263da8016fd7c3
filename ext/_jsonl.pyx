# cython: language_level=3
"""JSON lines into event records, in C (private module; issue 16).

msgspec parses a type-2 body (PROTOCOL.md) in one call into one small
object per line; :func:`fill` walks those objects with the C API straight
into an EVENT_DTYPE array (no NumPy scalar per field, no dict per line),
and :func:`count_lines` checks, in one pass over the bytes, that every
non-blank line holds exactly one object, as the protocol requires (the
parser alone would also take two objects on a line, or one spread over
two lines).  engine.net.protocol.JsonLinesDecoder ties them together and
falls back to a line-by-line Python reference path for anything this one
does not take, so that every error message names its line.
"""

cimport numpy as cnp
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.math cimport NAN, isfinite, nearbyint
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from layout cimport Event

cnp.import_array()

cdef extern from "Python.h":
    bint PyUnicode_CheckExact(object)
    bint PyLong_CheckExact(object)
    bint PyFloat_CheckExact(object)
    PyObject *PyErr_Occurred()
    void PyErr_Clear()
    # Declared without an exception clause: an overflow is a refused field
    # here, checked with PyErr_Occurred and cleared, not raised.
    unsigned long long PyLong_AsUnsignedLongLong(object) noexcept
    long long PyLong_AsLongLong(object) noexcept

# A float ts must round into the i64 range: [-2**63, 2**63).
cdef double TS_LOW = -9223372036854775808.0
cdef double TS_HIGH = 9223372036854775808.0


cdef Py_ssize_t scan_lines(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """Non-blank lines of ``p[:n]`` when each holds one JSON object that
    starts and ends on it, else -1.  Blank: only spaces, tabs and CRs."""
    cdef Py_ssize_t i, lines = 0, depth = 0
    cdef bint in_string = False, escaped = False, used = False
    cdef uint8_t c
    for i in range(n):
        c = p[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == 92:           # backslash
                escaped = True
            elif c == 34:           # quote
                in_string = False
            elif c == 10:
                return -1
            continue
        if c == 10:
            if depth:
                return -1
            if used:
                lines += 1
                used = False
            continue
        if c == 32 or c == 9 or c == 13:
            continue
        if depth == 0:
            # Outside an object only "{" may start one, once per line.
            if used or c != 123:
                return -1
            used = True
            depth = 1
            continue
        if c == 34:
            in_string = True
        elif c == 123 or c == 91:   # { [
            depth += 1
        elif c == 125 or c == 93:   # } ]
            depth -= 1
    if in_string or depth:
        return -1
    return lines + used


def count_lines(const uint8_t[::1] body) -> int:
    """Number of non-blank lines of ``body``, or -1 when a line holds
    anything but one JSON object (or an object spans lines)."""
    cdef Py_ssize_t lines = 0
    if body.shape[0] == 0:
        return 0
    with nogil:
        lines = scan_lines(&body[0], body.shape[0])
    return lines


cdef inline int name_id(object name, dict cache, object hasher, list new_names,
                        Py_ssize_t max_cached, bint strict, uint64_t *out) except -1:
    """The id of a name: from ``cache``, else hashed (and cached, and noted
    in ``new_names`` as ``(id, name)``).  Returns 1, or 0 for a name the
    protocol refuses (not encodable, or empty when ``strict``)."""
    cdef PyObject *hit = PyDict_GetItem(cache, name)
    if hit is not NULL:
        out[0] = PyLong_AsUnsignedLongLong(<object>hit)
        return 1
    if strict and PyUnicode_GET_LENGTH(name) == 0:
        return 0
    try:
        ident = hasher(name)
    except UnicodeEncodeError:
        return 0
    if PyUnicode_GET_LENGTH(name) <= 64:
        if len(cache) >= max_cached:
            # Bounded: a stream of ever new names costs a hash each, not memory.
            cache.clear()
        PyDict_SetItem(cache, name, ident)
    new_names.append((ident, name))
    out[0] = PyLong_AsUnsignedLongLong(ident)
    return 1


cdef inline int id_of(object v, uint64_t limit, uint64_t *out) except -1:
    """An integer id in ``0..limit``: 1, or 0 when out of range."""
    cdef uint64_t x = PyLong_AsUnsignedLongLong(v)
    if x == <uint64_t>-1 and PyErr_Occurred() is not NULL:
        PyErr_Clear()            # negative, or past 2**64 - 1
        return 0
    if x > limit:
        return 0
    out[0] = x
    return 1


def fill(list items, cnp.ndarray out, dict entity_cache, dict metric_cache,
         list new_entities, list new_metrics, object entity_hasher, object metric_hasher,
         int64_t now, Py_ssize_t max_cached, bint strict=False) -> int:
    """Write the events of ``items`` (objects with ``entity``, ``metric``,
    ``value`` (float) and ``ts`` (int, float, or any other object for
    none), as the parser made them) into ``out[:len(items)]``.

    Names are hashed through the caches; new ones are appended to
    ``new_entities`` / ``new_metrics`` for the caller to register in one
    batch.  A float ts is rounded to the nearest integer (ties to even); a
    non-finite one, or one outside the i64 range, makes the record invalid
    (value NaN), which the router counts as ``invalid_record``.

    Returns
    -------
    int
        -1 when all were written, else the index of the first item that
        breaks a field rule (an id out of range, an integer ts past i64, an
        unencodable name, or with ``strict`` an empty name): the caller
        rejects the message (PROTOCOL.md: ``bad_field``).
    """
    cdef Py_ssize_t i, n = len(items)
    cdef Event *ev
    cdef uint64_t ident
    cdef double d
    if out.shape[0] < n or out.dtype.itemsize != sizeof(Event) \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writable contiguous event array of len(items) or more")
    ev = <Event *>cnp.PyArray_DATA(out)
    for i in range(n):
        item = items[i]
        v = item.entity
        if PyUnicode_CheckExact(v):
            if not name_id(v, entity_cache, entity_hasher, new_entities, max_cached, strict,
                           &ident):
                return i
        elif not PyLong_CheckExact(v) or not id_of(v, 0xFFFFFFFFFFFFFFFF, &ident):
            return i
        ev[i].key = ident
        v = item.metric
        if PyUnicode_CheckExact(v):
            if not name_id(v, metric_cache, metric_hasher, new_metrics, max_cached, strict,
                           &ident):
                return i
        elif not PyLong_CheckExact(v) or not id_of(v, 0xFFFFFFFF, &ident):
            return i
        ev[i].metric = <uint32_t>ident
        ev[i].flags = 0
        v = item.value
        if not PyFloat_CheckExact(v):
            return i
        ev[i].value = PyFloat_AS_DOUBLE(v)
        v = item.ts
        if PyLong_CheckExact(v):
            ev[i].ts = PyLong_AsLongLong(v)
            if ev[i].ts == -1 and PyErr_Occurred() is not NULL:
                PyErr_Clear()
                return i
        elif PyFloat_CheckExact(v):
            d = PyFloat_AS_DOUBLE(v)
            if isfinite(d) and TS_LOW <= d < TS_HIGH:
                ev[i].ts = <int64_t>nearbyint(d)
            else:
                ev[i].ts = 0
                ev[i].value = NAN
        else:
            ev[i].ts = now       # the parser's marker of an absent field
    return -1
