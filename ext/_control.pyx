# cython: language_level=3
"""Atomic access to the words of a control segment from Python (private
module): counters and cursors another process writes, flags it polls, and
doorbells it sleeps on.  The engine, its gateway and its alert thread use
these; the hot paths never do (they live in the kernels)."""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from libc.stdint cimport uint64_t, uint32_t
from atomic cimport rf_load_acquire_u64, rf_store_release_u64, rf_bell_ring


def load_u64(buffer, Py_ssize_t offset, Py_ssize_t count=1):
    """Load-acquire ``count`` consecutive u64 words at ``offset``; returns a
    list of ints (counters and cursors of another process)."""
    cdef Py_buffer view
    PyObject_GetBuffer(buffer, &view, PyBUF_C_CONTIGUOUS)
    try:
        if offset < 0 or offset % 8 or offset + count * 8 > view.len:
            raise ValueError("u64 words outside the buffer or misaligned")

        p = <uint64_t *>((<char *>view.buf) + offset)
        return [rf_load_acquire_u64(&p[i]) for i in range(count)]
    finally:
        PyBuffer_Release(&view)


def store_u64(buffer, Py_ssize_t offset, uint64_t value):
    """Store-release one u64 word at ``offset`` (a flag another process polls)."""
    cdef Py_buffer view
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    try:
        if offset < 0 or offset % 8 or offset + 8 > view.len:
            raise ValueError("u64 word outside the buffer or misaligned")
        rf_store_release_u64(<uint64_t *>((<char *>view.buf) + offset), value)
    finally:
        PyBuffer_Release(&view)


def ring_bell(buffer, Py_ssize_t offset):
    """Wake whoever sleeps on the doorbell at ``offset``."""
    cdef Py_buffer view
    PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    try:
        if offset < 0 or offset % 8 or offset + 8 > view.len:
            raise ValueError("doorbell outside the buffer or misaligned")
        rf_bell_ring(<uint32_t *>((<char *>view.buf) + offset))
    finally:
        PyBuffer_Release(&view)
