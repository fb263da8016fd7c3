"""CURVE authentication of the gateway's endpoints (issue 17).

Keys are the certificate files :func:`zmq.auth.create_certificates` writes
(``NAME.key``: the public key, ``NAME.key_secret``: both keys), so any
ZeroMQ binding can use them.  The server loads its secret key and the public
keys of two directories: *clients* (may connect) and *admins* (may connect
and may also run the admin-only ops, :data:`ADMIN_OPS`).  A ZAP
authenticator thread per ZeroMQ context (:class:`Authenticators`) lets in
exactly those keys; an unknown key fails the handshake and gets nothing.

Without CURVE, :func:`check_exposure` refuses endpoints that are not on
loopback unless ``insecure`` is set.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..errors import SecurityError

__all__ = ["ADMIN_OPS", "ZAP_DOMAIN", "CurveServer", "Authenticators", "is_loopback",
           "exposed", "check_exposure", "load_secret_key", "load_public_key",
           "load_key_dir", "client_keys", "configure_client", "create_keys"]

log = logging.getLogger("ringflow.security")

#: Query ops that change the server's state: refused to non-admin keys.
ADMIN_OPS = frozenset({"reload", "names"})
#: ZAP domain every gateway socket sets; the authenticator answers it.
ZAP_DOMAIN = "ringflow"

_URL_RE = re.compile(r"^tcp://(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:/]*))(?::(?P<port>\d+|\*))?$")


def is_loopback(url: str) -> bool:
    """Whether ``url`` binds loopback only: ``tcp://127.x.y.z``,
    ``tcp://[::1]``, ``tcp://localhost``, or a local transport (``ipc://``,
    ``inproc://``).  ``tcp://*``, ``[::]``, names and other addresses: False."""
    if url.startswith(("ipc://", "inproc://")):
        return True
    m = _URL_RE.match(url)
    if m is None:
        return False
    host = m.group("v6") if m.group("v6") is not None else m.group("host")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed(endpoints: dict) -> list[str]:
    """The endpoint URLs that are not loopback-only."""
    return [url for url in endpoints.values() if not is_loopback(url)]


def check_exposure(endpoints: dict, curve: CurveServer | None, insecure: bool) -> list[str]:
    """Refuse to expose endpoints beyond loopback without CURVE.

    Returns
    -------
    list of str
        The endpoints beyond loopback (bound without CURVE only with ``insecure``).

    Raises
    ------
    SecurityError
        An endpoint is beyond loopback, CURVE is off and ``insecure`` is false.
    """
    out = exposed(endpoints)
    if out and curve is None and not insecure:
        raise SecurityError(
            f"refusing to bind {', '.join(out)} without CURVE: anyone who reaches it could "
            "ingest, read every series and replace the alert rules.  Give --curve-secret "
            "and --curve-clients (keys from `ringflow keys`), bind 127.0.0.1, or pass "
            "--insecure to accept the risk")
    return out


def _z85(key: bytes, what: str) -> bytes:
    if len(key) == 32:
        return zmq.utils.z85.encode(key)
    if len(key) == 40:
        return key
    raise SecurityError(f"{what} must be a key file path, 40 bytes of Z85 or 32 raw bytes; "
                        f"got {len(key)} bytes")


def _load(path, what: str) -> tuple[bytes | None, bytes | None]:
    try:
        return zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot load the {what} from {path}: {exc}") from None


def load_secret_key(source) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys from a ``.key_secret`` file or a secret key.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A certificate file holding a secret key, or the secret key itself.
    """
    if isinstance(source, (bytes, bytearray)):
        secret = _z85(bytes(source), "a secret key")
        return zmq.curve_public(secret), secret
    public, secret = _load(source, "secret key")
    if secret is None:
        raise SecurityError(f"{source} holds no secret key: give NAME.key_secret, "
                            "not the public NAME.key")
    return public, secret


def load_public_key(source) -> bytes:
    """A Z85 public key from a ``.key`` (or ``.key_secret``) file, or the key."""
    if isinstance(source, (bytes, bytearray)):
        return _z85(bytes(source), "a public key")
    public, _ = _load(source, "public key")
    if public is None:
        raise SecurityError(f"{source} holds no public key")
    return public


def load_key_dir(path) -> frozenset:
    """The Z85 public keys of every ``*.key`` file in a directory."""
    if not os.path.isdir(path):
        raise SecurityError(f"key directory not found: {path}")
    try:
        return frozenset(zmq.auth.load_certificates(os.fspath(path)))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot load the public keys in {path}: {exc}") from None


class CurveServer:
    """The server side of CURVE: its keys and the keys it lets in.

    Parameters
    ----------
    secret : str, os.PathLike or bytes
        The server's secret key (file or key).
    clients, admins : iterable of bytes
        Z85 public keys allowed to connect; admins may also run :data:`ADMIN_OPS`.
    """

    def __init__(self, secret, clients=(), admins=()) -> None:
        self.public, self.secret = load_secret_key(secret)
        self.admins = frozenset(admins)
        self.allowed = frozenset(clients) | self.admins
        if not self.allowed:
            raise SecurityError("CURVE is on but no client or admin key is allowed: "
                                "put public keys (NAME.key) in --curve-clients/--curve-admins")

    @classmethod
    def from_files(cls, secret, clients_dir=None, admins_dir=None) -> CurveServer:
        """From ``--curve-secret FILE``, ``--curve-clients DIR``, ``--curve-admins DIR``."""
        clients = load_key_dir(clients_dir) if clients_dir else frozenset()
        admins = load_key_dir(admins_dir) if admins_dir else frozenset()
        return cls(secret, clients, admins)

    def configure(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server of this key (before it binds)."""
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public

    def callback(self, domain: str, key: bytes) -> bool:
        """The authenticator's question: may this Z85 key connect?"""
        return key in self.allowed

    def is_admin(self, user_id) -> bool:
        """Whether a message's ZAP User-Id (the Z85 key) is an admin key."""
        if isinstance(user_id, str):
            user_id = user_id.encode()
        return user_id in self.admins


class Authenticators:
    """One ZAP authenticator thread per context, answering :data:`ZAP_DOMAIN`
    with :meth:`CurveServer.callback`.  Started before any socket binds:
    without a ZAP handler libzmq would let in any client that knows the
    server's public key."""

    def __init__(self, contexts, curve: CurveServer) -> None:
        self._auths = []
        try:
            for ctx in contexts:
                auth = ThreadAuthenticator(ctx, log=logging.getLogger("ringflow.zap"))
                auth.start()
                auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=curve)
                self._auths.append(auth)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the threads (before their contexts are terminated)."""
        for auth in self._auths:
            auth.stop()
        self._auths = []


def client_keys(curve_secret=None, curve_server=None) -> tuple | None:
    """``(public, secret, server_public)`` from a client's two arguments, or
    None when neither is given."""
    if curve_secret is None and curve_server is None:
        return None
    if curve_secret is None or curve_server is None:
        raise SecurityError("CURVE needs both curve_secret (this client's secret key) and "
                            "curve_server (the server's public key)")
    public, secret = load_secret_key(curve_secret)
    return public, secret, load_public_key(curve_server)


def configure_client(sock: zmq.Socket, keys: tuple | None) -> None:
    """Make ``sock`` a CURVE client with ``keys`` from :func:`client_keys`
    (before it connects); nothing when ``keys`` is None."""
    if keys is None:
        return
    public, secret, server = keys
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server


def create_keys(directory, name: str, force: bool = False) -> tuple[str, str]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) in ``directory``.

    Raises
    ------
    SecurityError
        The pair exists already and ``force`` is false, or ``name`` is not a
        plain file name.
    """
    if not name or os.sep in name or name.startswith("."):
        raise SecurityError(f"--name must be a plain file name, got {name!r}")
    os.makedirs(directory, exist_ok=True)
    public = os.path.join(directory, f"{name}.key")
    secret = public + "_secret"
    there = [p for p in (public, secret) if os.path.exists(p)]
    if there and not force:
        raise SecurityError(f"{' and '.join(there)} exist already; --force overwrites "
                            "(clients and servers holding the old key lose access)")
    if os.path.exists(secret):
        # Rewritten in place, the old file's mode would decide who reads it.
        os.unlink(secret)
    # The secret file is created under this umask: never readable by others,
    # not even between its creation and the chmod.
    old_umask = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(os.fspath(directory), name)
    finally:
        os.umask(old_umask)
    os.chmod(public, 0o644)
    os.chmod(secret, 0o600)
    return public, secret
