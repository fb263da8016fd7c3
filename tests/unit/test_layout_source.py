"""engine/core/layout.py is the one source of the shared layouts: the
generator refuses a record that C would pad, and the numpy dtypes and the
generated Cython declarations both follow the same table."""

import subprocess
import sys
from pathlib import Path

import pytest

from engine.core import layout


def test_layout_needs_no_compiled_module_as_setup_py_does():
    """setup.py imports the module before anything is built: in a fresh
    interpreter it must load no engine._* module and no NumPy."""
    code = (
        "import sys; from engine.core import layout; text = layout.cython_declarations(); "
        "bad = sorted(m for m in sys.modules if m.startswith('engine._') or m == 'numpy'); "
        "print(len(text), bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(layout.__file__).parents[2]).stdout.split(" ", 1)
    assert int(out[0]) == len(layout.cython_declarations())
    assert out[1].strip() == "[]"


@pytest.mark.parametrize("name", sorted(layout.STRUCTS))
def test_every_record_is_packed_and_declared(name):
    spec = layout.STRUCTS[name]
    dtype = layout.numpy_dtype(name)
    assert dtype.itemsize == layout.struct_size(name) == spec.size
    text = layout.cython_declarations()
    assert f"ctypedef struct {name}:" in text
    for f in spec.fields:
        assert dtype.fields[f.name][1] == layout.field_offset(name, f.name)


@pytest.mark.parametrize(
    "fields,size,match",
    [
        ((layout.Field("a", "u4"), layout.Field("b", "u8")), 16, "padding before it"),
        ((layout.Field("a", "u8"), layout.Field("b", "u4")), 12, "pad its end"),
        ((layout.Field("a", "u8"),), 16, "its layout says 16"),
    ],
)
def test_the_generator_refuses_a_record_c_would_lay_out_differently(monkeypatch, fields, size,
                                                                   match):
    monkeypatch.setitem(layout.STRUCTS, "Bad", layout.Struct(fields, size))
    with pytest.raises(layout.LayoutError, match=match):
        layout.cython_declarations()


def test_codes_and_counters_reach_the_declarations():
    text = layout.cython_declarations()
    for i, name in enumerate(layout.WORKER_COUNTERS):
        assert f"WK_{name.upper()} = {i}\n" in text
    for i, name in enumerate(layout.STATUS_NAMES):
        assert f"ST_{name} = {i}\n" in text
    assert f"RF_BUSY = {layout.STATUS_BUSY}\n" in text
    assert f"TABLE_MAGIC = {layout.TABLE_MAGIC:#x}\n" in text


def test_the_wire_frame_layout_is_the_layout_s():
    """PROTOCOL.md's frame header and lookup record: the struct module's
    format, the numpy dtype and the C drain all come from one spec."""
    import numpy as np

    from engine import _wire
    from engine.net import protocol

    header = np.zeros(1, layout.numpy_dtype("FrameHeader"))
    header["magic"] = list(layout.FRAME_MAGIC)
    header["version"], header["type"], header["count"] = layout.FRAME_VERSION, 3, 7
    assert header.tobytes() == protocol.HEADER.pack(b"RF", 1, 3, 7)
    assert protocol.HEADER.size == layout.struct_size("FrameHeader") == 8
    assert protocol.LOOKUP_DTYPE.itemsize == layout.struct_size("LookupRecord") == 16
    assert _wire.REASON_NAMES == protocol.REASONS[:len(_wire.REASON_NAMES)]
    assert _wire.REASON_NAMES[-1] == "too_large"
