"""The engine's discovery record (engine.core.discovery): sized for any
number of workers, readable back, never left behind."""

from __future__ import annotations

import os

from engine.core.discovery import EngineInfo, read_info


def test_a_record_naming_256_tables_fits_and_reads_back():
    record = {"pid": os.getpid(), "tables": [f"ringflow-{os.getpid()}-table-{i:03d}-abcdef"
                                             for i in range(256)]}
    info = EngineInfo(record)
    try:
        got = read_info(os.getpid())
        assert got is not None and got["tables"] == record["tables"]
        info.update({"endpoints": {"query": "tcp://127.0.0.1:7712"}})
        assert read_info(os.getpid())["endpoints"]["query"] == "tcp://127.0.0.1:7712"
    finally:
        shm = info.shm
        info.drop()
        shm.close()
        shm.unlink()
    assert read_info(os.getpid()) is None


def test_another_users_record_is_skipped(tmp_path, monkeypatch):
    import engine.core.discovery as discovery

    locked = tmp_path / "record"
    locked.write_bytes(b"{}")
    monkeypatch.setattr(discovery, "_path", lambda pid: str(locked))
    monkeypatch.setattr(discovery.os, "open", lambda *a, **k: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied")))
    assert read_info(12345) is None
