# cython: language_level=3
# Checks of the numpy arrays that callers hand the kernels to write into:
# once an array passes, the kernels write through its data pointer without
# further checks, so these are the only guard against a wrong dtype, a
# strided view or too few rows.

cimport numpy as cnp
from libc.stdint cimport int64_t
from layout cimport StateRow, Alert


cdef inline StateRow *rows_out(cnp.ndarray out, Py_ssize_t need) except NULL:
    """The row buffer of a caller's ``out`` array, once it is known to be a
    writable, C-contiguous STATE_DTYPE array with room for ``need`` rows:
    the kernels write through this pointer without further checks."""
    if out.itemsize != sizeof(StateRow) or out.ndim != 1 or out.dtype.names is None:
        raise ValueError("out must be a 1-d STATE_DTYPE array")
    if not cnp.PyArray_IS_C_CONTIGUOUS(out) or not cnp.PyArray_ISWRITEABLE(out):
        raise ValueError("out must be C-contiguous and writable")
    if out.shape[0] < need:
        raise ValueError(f"out has room for {out.shape[0]} rows, {need} needed")
    return <StateRow *>cnp.PyArray_DATA(out)


cdef inline Alert *alerts_out(object alerts, int64_t *cap) except NULL:
    cdef cnp.ndarray a = alerts
    if a.itemsize != sizeof(Alert) or a.ndim != 1 or a.dtype.names is None:
        raise ValueError("alerts must be a 1-d ALERT_DTYPE array")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError("alerts must be C-contiguous and writable")
    cap[0] = a.shape[0]
    # A zero-length array still needs a valid pointer.
    return <Alert *>cnp.PyArray_DATA(a) if a.shape[0] else <Alert *>8
