"""Deterministic data primitives shared by the emulators.

Every generated value in the sandbox (prices, turbine readings, report rows...) is a pure function
of the seed and of the value's coordinates (object, point, timestamp, row number...), computed with
BLAKE2b. Nothing depends on ``PYTHONHASHSEED``, on the order of requests or on the wall clock, so
two sandboxes with the same seed serve byte-identical data and a table can be paged, filtered or
dumped without ever being materialised.

Tokens, session ids and cookies are the exception: they are random (``secrets``), as on the real
services, and only their validity is tracked.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
import uuid
from collections.abc import Mapping

__all__ = [
    "html_page",
    "jwt_like",
    "random_token",
    "stable_choice",
    "stable_int",
    "stable_uuid",
    "unit",
]


def _digest(parts: tuple[object, ...], size: int) -> bytes:
    key = "\x1f".join(str(part) for part in parts).encode("utf-8")
    return hashlib.blake2b(key, digest_size=size).digest()


def unit(*parts: object) -> float:
    """A float in ``[0, 1)`` that depends only on ``parts``."""
    return int.from_bytes(_digest(parts, 8), "big") / 2.0**64


def stable_int(low: int, high: int, *parts: object) -> int:
    """An int in ``[low, high]`` (inclusive) that depends only on ``parts``."""
    return low + int.from_bytes(_digest(parts, 8), "big") % (high - low + 1)


def stable_choice(options: tuple[str, ...], *parts: object) -> str:
    """One of ``options``, chosen by ``parts``."""
    return options[stable_int(0, len(options) - 1, *parts)]


def stable_uuid(*parts: object) -> str:
    """A UUID-looking string (version 4 layout) that depends only on ``parts``."""
    return str(uuid.UUID(bytes=_digest(parts, 16), version=4))


def random_token(nbytes: int = 24) -> str:
    """A random URL-safe token (session ids, refresh tokens, cookies)."""
    return secrets.token_urlsafe(nbytes)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_like(claims: Mapping[str, object]) -> str:
    """A random JWT-shaped token ``header.payload.signature``.

    The payload is real base64url JSON (``iat`` and a random ``jti`` are added) so clients that
    peek at ``exp`` work; the signature is random bytes: nothing can verify it.
    """
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"iat": int(time.time()), "jti": random_token(12), **claims}
    return ".".join(
        (
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(payload, separators=(",", ":")).encode()),
            _b64url(secrets.token_bytes(32)),
        )
    )


def html_page(title: str, body: str, *, escape_body: bool = True) -> str:
    """A small complete HTML document (``body`` is escaped unless ``escape_body=False``)."""
    content = html.escape(body) if escape_body else body
    return (
        '<!DOCTYPE html>\n<html lang="pt-BR">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        f"{content}\n<!-- echo_connhandler sandbox emulator -->\n</body>\n</html>\n"
    )
