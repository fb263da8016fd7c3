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
from cpython.ref cimport Py_TYPE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from layout cimport Event

from types import MemberDescriptorType

cnp.import_array()


cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    PyObject *PyList_GET_ITEM(object, Py_ssize_t)
    bint PyUnicode_CheckExact(object)
    bint PyLong_CheckExact(object)
    bint PyFloat_CheckExact(object)
    PyObject *PyErr_Occurred()
    void PyErr_Clear()
    # Declared without an exception clause: an overflow is a refused field
    # here, checked with PyErr_Occurred and cleared, not raised.
    unsigned long long PyLong_AsUnsignedLongLong(object) noexcept
    long long PyLong_AsLongLong(object) noexcept

cdef extern from "structmember.h":
    enum:
        T_OBJECT_EX


cdef inline PyObject *slot(PyObject *obj, Py_ssize_t offset) noexcept:
    """The object in a slot (NULL when unset), borrowed."""
    return (<PyObject **>(<char *>obj + offset))[0]


# A float ts must round into the i64 range: [-2**63, 2**63).
cdef double TS_LOW = -9223372036854775808.0
cdef double TS_HIGH = 9223372036854775808.0


# Bytes the scan must look at inside an object: quote, backslash, newline,
# braces and brackets; every other byte there is skipped in a tight loop.
cdef uint8_t SPECIAL[256]
for _c in (34, 92, 10, 123, 125, 91, 93):    # " \ newline { } [ ]
    SPECIAL[_c] = 1


cdef Py_ssize_t scan_lines(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """Non-blank lines of ``p[:n]`` when each holds one JSON object that
    starts and ends on it, else -1.  Blank: only spaces, tabs and CRs."""
    cdef Py_ssize_t i = 0, lines = 0, depth = 0
    cdef bint in_string = False, used = False
    cdef uint8_t c
    while i < n:
        c = p[i]
        i += 1
        if depth == 0:
            if c == 10:
                lines += used
                used = False
            elif c == 32 or c == 9 or c == 13:
                pass
            elif used or c != 123:
                # Outside an object only "{" may start one, once per line.
                return -1
            else:
                used = True
                depth = 1
            continue
        if c == 10:
            return -1               # a newline inside an object or a string
        if in_string:
            if c == 92:             # backslash: the next byte is escaped
                if i < n and p[i] == 10:
                    return -1
                i += 1
            elif c == 34:
                in_string = False
        elif c == 34:
            in_string = True
        elif c == 123 or c == 91:   # { [
            depth += 1
        elif c == 125 or c == 93:   # } ]
            depth -= 1
        if depth:
            while i < n and not SPECIAL[p[i]]:
                i += 1
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


cdef class Filler:
    """Writes the parser's line objects into event records.

    Parameters
    ----------
    cls : type
        The parser's line type: fields ``entity``, ``metric``, ``value``
        and ``ts`` held in slots (member descriptors), read here at their
        offsets instead of through attribute lookups.
    entity_hasher, metric_hasher : callable
        Name -> id (``entity_id``, ``metric_id``).
    max_cached : int
        Names cached per kind; a cache is emptied when full.
    strict : bool
        Refuse empty names too.
    hash_names : bool
        False: names are checked (``strict``) but not hashed, and their
        ids are written as 0 (a sender that only checks its lines).
    """

    cdef object cls
    cdef Py_ssize_t offsets[4]
    cdef readonly dict entity_ids, metric_ids
    cdef object entity_hasher, metric_hasher
    cdef Py_ssize_t max_cached
    cdef bint strict, hash_names

    def __cinit__(self, object cls, entity_hasher, metric_hasher, Py_ssize_t max_cached,
                  bint strict=False, bint hash_names=True):
        cdef PyMemberDescrObject *d
        if not isinstance(cls, type):
            raise TypeError(f"cls must be a type, got {cls!r}")
        for k, name in enumerate(("entity", "metric", "value", "ts")):
            desc = cls.__dict__.get(name)
            if type(desc) is not MemberDescriptorType:
                raise TypeError(f"{cls.__name__}.{name} is not a slot")
            d = <PyMemberDescrObject *>desc
            if d.d_member.type != T_OBJECT_EX:
                raise TypeError(f"{cls.__name__}.{name} is not an object slot")
            self.offsets[k] = d.d_member.offset
        self.cls = cls
        self.entity_ids = {}
        self.metric_ids = {}
        self.entity_hasher = entity_hasher
        self.metric_hasher = metric_hasher
        self.max_cached = max_cached
        self.strict = strict
        self.hash_names = hash_names

    def forget(self, list entities, list metrics):
        """Drop ``(id, name)`` pairs from the caches (names of a message
        that was refused, so never registered)."""
        for _, name in entities:
            self.entity_ids.pop(name, None)
        for _, name in metrics:
            self.metric_ids.pop(name, None)

    def fill(self, list items, cnp.ndarray out, list new_entities, list new_metrics,
             int64_t now):
        """Write the events of ``items`` (line objects: ``value`` a float,
        ``ts`` an int, a float, or anything else for none) into
        ``out[:len(items)]``.

        Names are hashed through the caches; new ones are appended to
        ``new_entities`` / ``new_metrics`` as ``(id, name)`` for the caller
        to register in one batch.  A float ts is rounded to the nearest
        integer (ties to even); a non-finite one, or one outside the i64
        range, makes the record invalid (value NaN), which the router
        counts as ``invalid_record``.

        Returns
        -------
        int
            -1 when all were written, else the index of the first item that
            breaks a field rule (an id out of range, an integer ts past
            i64, an unencodable name, or when strict an empty name): the
            caller rejects the message (PROTOCOL.md: ``bad_field``).
        """
        cdef Py_ssize_t i, n = len(items)
        cdef Event *ev
        cdef uint64_t ident
        cdef double d
        cdef PyObject *item
        cdef PyObject *f
        cdef PyObject *cls = <PyObject *>self.cls
        if out.shape[0] < n or out.dtype.itemsize != sizeof(Event) \
                or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writable contiguous event array of len(items)")
        ev = <Event *>cnp.PyArray_DATA(out)
        for i in range(n):
            item = PyList_GET_ITEM(items, i)
            if <PyObject *>Py_TYPE(<object>item) != cls:
                return i
            f = slot(item, self.offsets[0])
            if f is NULL:
                return i
            if PyUnicode_CheckExact(<object>f):
                if not self.hash_names:
                    if self.strict and PyUnicode_GET_LENGTH(<object>f) == 0:
                        return i
                    ident = 0
                elif not name_id(<object>f, self.entity_ids, self.entity_hasher,
                                 new_entities, self.max_cached, self.strict, &ident):
                    return i
            elif not PyLong_CheckExact(<object>f) \
                    or not id_of(<object>f, 0xFFFFFFFFFFFFFFFF, &ident):
                return i
            ev[i].key = ident
            f = slot(item, self.offsets[1])
            if f is NULL:
                return i
            if PyUnicode_CheckExact(<object>f):
                if not self.hash_names:
                    if self.strict and PyUnicode_GET_LENGTH(<object>f) == 0:
                        return i
                    ident = 0
                elif not name_id(<object>f, self.metric_ids, self.metric_hasher,
                                 new_metrics, self.max_cached, self.strict, &ident):
                    return i
            elif not PyLong_CheckExact(<object>f) or not id_of(<object>f, 0xFFFFFFFF, &ident):
                return i
            ev[i].metric = <uint32_t>ident
            ev[i].flags = 0
            f = slot(item, self.offsets[2])
            if f is NULL or not PyFloat_CheckExact(<object>f):
                return i
            ev[i].value = PyFloat_AS_DOUBLE(<object>f)
            f = slot(item, self.offsets[3])
            if f is NULL:
                return i
            if PyLong_CheckExact(<object>f):
                ev[i].ts = PyLong_AsLongLong(<object>f)
                if ev[i].ts == -1 and PyErr_Occurred() is not NULL:
                    PyErr_Clear()
                    return i
            elif PyFloat_CheckExact(<object>f):
                d = PyFloat_AS_DOUBLE(<object>f)
                if isfinite(d) and TS_LOW <= d < TS_HIGH:
                    ev[i].ts = <int64_t>nearbyint(d)
                else:
                    ev[i].ts = 0
                    ev[i].value = NAN
            else:
                ev[i].ts = now       # the parser's marker of an absent field
        return -1
