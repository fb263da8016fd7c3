"""PROTOCOL.md stays true: its raw-pyzmq example runs against a live gateway
without importing ringflow, and its tables match the code."""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.net import gateway, protocol

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_MD = ROOT / "PROTOCOL.md"

# Runs the example as __main__, then fails if it pulled in ringflow.
_RUNNER = (
    "import runpy, sys\n"
    "runpy.run_path(sys.argv[1], run_name='__main__')\n"
    "bad = sorted(m for m in sys.modules if m == 'engine' or m.startswith('engine.'))\n"
    "assert not bad, f'the example imported ringflow: {bad}'\n"
)


def _text() -> str:
    return PROTOCOL_MD.read_text(encoding="utf-8")


def _example() -> str:
    section = _text().split("## Complete example", 1)[1]
    match = re.search(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert match, "no python code block under '## Complete example' in PROTOCOL.md"
    return match.group(1)


def _port_base() -> int:
    """First of four consecutive free TCP ports on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        socks = []
        try:
            for port in range(base, base + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no four consecutive free ports")


@pytest.mark.timeout(90)
def test_example_runs_against_a_live_gateway(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_example(), encoding="utf-8")
    assert not re.search(r"^\s*(import|from)\s+engine\b", script.read_text(), re.M)
    base = _port_base()
    names = ("ingest", "acked", "query", "alerts")
    endpoints = {name: f"tcp://127.0.0.1:{base + i}" for i, name in enumerate(names)}
    env = {**os.environ, "RINGFLOW_HOST": "127.0.0.1", "RINGFLOW_PORT_BASE": str(base)}
    with engine.Engine(workers=1) as eng:
        gw = eng.serve(endpoints=endpoints)
        run = subprocess.run([sys.executable, "-c", _RUNNER, str(script)], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
        assert run.stdout.rstrip().endswith("ok"), run.stdout
        stats = gw.stats()
    assert stats["rejected"]["bad_field"] == 1
    assert stats["rejected"]["invalid_record"] == 1
    assert stats["accepted"] == 12


def test_every_reason_and_op_is_documented():
    text = _text()
    for reason in protocol.REASONS:
        assert f"| `{reason}`" in text, f"rejection reason {reason!r} missing from PROTOCOL.md"
    for op in gateway._QUERY_OPS:
        assert f"| `{op}`" in text, f"query op {op!r} missing from PROTOCOL.md"
    for name, port in protocol.DEFAULT_PORTS.items():
        assert f"| `{name}`" in text and f"tcp://127.0.0.1:{port}" in text


@pytest.mark.parametrize("heading, dtype", [
    ("### Event", engine.EVENT_DTYPE),
    ("### Lookup pair", protocol.LOOKUP_DTYPE),
    ("### State row", engine.STATE_DTYPE),
])
def test_layout_tables_match_the_dtypes(heading, dtype):
    section = _text().split(heading, 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (\d+)\s*\| (\d+)\s*\| (\w+)\s*\| `(\w+)`", section, re.M)
    kinds = {"u": "u", "i": "i", "f": "f"}
    documented = [(name, int(off), int(size), kind) for off, size, kind, name in rows]
    # .base: the element type of an array field (the row's view and sketch).
    actual = [(name, dtype.fields[name][1], dtype.fields[name][0].itemsize,
               f"{kinds[dtype.fields[name][0].base.kind]}"
               f"{8 * dtype.fields[name][0].base.itemsize}")
              for name in dtype.names]
    assert documented == actual
    fmt = re.search(r'`struct` format: `"([^"]+)"`', section).group(1)
    assert struct.calcsize(fmt) == dtype.itemsize
