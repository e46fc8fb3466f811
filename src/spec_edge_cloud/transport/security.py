"""CurveZMQ keys and policy: encrypted and authenticated whenever an endpoint leaves this host.

Keys are ZeroMQ certificate files (`zmq.auth`): `NAME.key` holds a public key, `NAME.key_secret`
the pair. The server loads its own pair and a directory of client public keys; the ZAP handler
(`ThreadAuthenticator`) admits only those, so a client without a key, with a key not on the list, or
speaking plaintext, never completes the handshake and gets nothing at all. Plaintext is allowed on
loopback only, unless the operator says `insecure` in so many words.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not the kind needed."""


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1, localhost or the `lo` interface."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp" or not rest:
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_security(endpoint: str, have_keys: bool, insecure: bool, role: str) -> None:
    if not have_keys and not insecure and not is_loopback(endpoint):
        raise ValueError(f"{role} endpoint {endpoint} is not loopback: CurveZMQ keys are required "
                         "(generate them with `spec-edge-cloud keys`), or pass insecure to send plaintext")


def load_pair(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a `.key_secret` file."""
    public, secret = _load(path)
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key: pass the NAME.key_secret file of a key pair")
    return public, secret


def load_public(path: str | Path) -> bytes:
    return _load(path)[0]


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"key file {p} not found")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"{p} is not a ZeroMQ certificate file: {exc}") from None
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise KeyFileError(f"{p}: CURVE keys are 40 Z85 characters")
    return public, secret


def secure_server(ctx: zmq.Context, socket: zmq.Socket, secret_key: str | Path,
                  clients_dir: str | Path) -> ThreadAuthenticator:
    """Make `socket` a CURVE server admitting only the public keys found in `clients_dir`."""
    clients = Path(clients_dir)
    if not clients.is_dir() or not any(clients.glob("*.key")):
        raise KeyFileError(f"authorized clients directory {clients} is missing or holds no *.key file: "
                        "a CURVE server with no client keys would admit nobody")
    public, secret = load_pair(secret_key)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(clients))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return auth


def secure_client(socket: zmq.Socket, secret_key: str | Path, server_key: str | Path) -> None:
    public, secret = load_pair(secret_key)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = load_public(server_key)


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def _write_key(path: Path, public: bytes, secret: bytes | None = None) -> None:
    """One certificate file in zmq.auth's format, created with its final mode: a secret is 0600 from
    its first byte (written, then chmod-ed, another user could read it in between)."""
    text = "#   ZeroMQ CURVE %s certificate (spec-edge-cloud keys)\n\nmetadata\ncurve\n" % (
        "**Secret**" if secret is not None else "Public")
    text += f'    public-key = "{public.decode()}"\n'
    if secret is not None:
        text += f'    secret-key = "{secret.decode()}"\n'
    path.unlink(missing_ok=True)  # a fresh file: never a replaced one's mode, never through a link
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret is not None else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def generate(directory: str | Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret in `directory` (never overwriting a secret unless forced).

    NAME is a plain file name (letters, digits, `_.-`): nothing that leaves `directory`."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"key name {name!r}: use 1..64 letters, digits, '_', '.' or '-' (no path, no '..')")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = directory / f"{name}.key", directory / f"{name}.key_secret"
    if secret_file.exists() and not force:
        raise FileExistsError(f"{secret_file} exists; pass --force to replace the key pair")
    public, secret = zmq.curve_keypair()
    _write_key(secret_file, public, secret)
    _write_key(public_file, public)
    return public_file, secret_file


def authorize(public_key: str | Path, clients_dir: str | Path) -> Path:
    """Copy a client's public key into the server's list of admitted clients."""
    load_public(public_key)
    clients = Path(clients_dir)
    clients.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(public_key, clients / Path(public_key).name))
