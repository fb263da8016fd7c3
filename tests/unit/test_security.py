"""Key loading and the loopback check of engine.net.security."""

from __future__ import annotations

import pytest
import zmq

from engine.errors import EngineError, SecurityError
from engine.net import security as S


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:7710", "tcp://127.3.2.1:1", "tcp://[::1]:7710",
                                 "tcp://localhost:7710", "ipc:///tmp/x", "inproc://x"])
def test_loopback_urls(url):
    assert S.is_loopback(url)


@pytest.mark.parametrize("url", ["tcp://*:7710", "tcp://0.0.0.0:7710", "tcp://[::]:7710",
                                 "tcp://10.0.0.5:7710", "tcp://[2001:db8::1]:1",
                                 "tcp://eth0:7710", "tcp://example.com:7710", "tcp://*", "bogus"])
def test_non_loopback_urls(url):
    assert not S.is_loopback(url)


def test_check_exposure():
    local = {"ingest": "tcp://127.0.0.1:1", "query": "tcp://[::1]:2"}
    assert S.check_exposure(local, None, False) == []
    wide = {**local, "alerts": "tcp://*:3"}
    with pytest.raises(SecurityError, match="--insecure") as info:
        S.check_exposure(wide, None, False)
    assert isinstance(info.value, EngineError)
    assert S.check_exposure(wide, None, True) == ["tcp://*:3"]


def test_key_files_round_trip(tmp_path):
    pub_file, sec_file = S.create_keys(tmp_path, "a")
    public, secret = S.load_secret_key(sec_file)
    assert S.load_public_key(pub_file) == public == zmq.curve_public(secret)
    # Bytes: Z85 or raw.
    assert S.load_secret_key(secret) == (public, secret)
    assert S.load_secret_key(zmq.utils.z85.decode(secret)) == (public, secret)
    assert S.load_public_key(public) == public
    with pytest.raises(SecurityError, match="no secret key"):
        S.load_secret_key(pub_file)
    with pytest.raises(SecurityError, match="cannot load"):
        S.load_secret_key(tmp_path / "missing.key_secret")
    with pytest.raises(SecurityError, match="40 bytes"):
        S.load_public_key(b"short")
    with pytest.raises(SecurityError, match="--force"):
        S.create_keys(tmp_path, "a")
    assert S.load_public_key(S.create_keys(tmp_path, "a", force=True)[0]) != public


def test_key_dirs_and_admins(tmp_path):
    server = S.create_keys(tmp_path / "s", "server")[1]
    c = S.load_public_key(S.create_keys(tmp_path / "clients", "c")[0])
    a = S.load_public_key(S.create_keys(tmp_path / "admins", "a")[0])
    curve = S.CurveServer.from_files(server, tmp_path / "clients", tmp_path / "admins")
    assert curve.allowed == {a, c} and curve.admins == {a}
    assert curve.callback(S.ZAP_DOMAIN, c) and not curve.callback(S.ZAP_DOMAIN, b"x" * 40)
    assert curve.is_admin(a) and curve.is_admin(a.decode()) and not curve.is_admin(c)
    assert not curve.is_admin(None)
    with pytest.raises(SecurityError, match="not found"):
        S.load_key_dir(tmp_path / "nowhere")
    with pytest.raises(SecurityError, match="no client or admin key"):
        S.CurveServer(server)


def test_client_keys_need_both(tmp_path):
    sec = S.create_keys(tmp_path, "c")[1]
    srv = S.create_keys(tmp_path, "s")[0]
    assert S.client_keys() is None
    with pytest.raises(SecurityError, match="both"):
        S.client_keys(curve_secret=sec)
    public, secret, server = S.client_keys(sec, srv)
    assert server == S.load_public_key(srv)
