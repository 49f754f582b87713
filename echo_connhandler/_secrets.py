"""Secret registry: every credential and every run-time token goes through here.

The handlers call :func:`register_secret` with each password, API key, access/refresh token and
session id they hold or obtain. Registered values are removed from exception messages and from
the library's own log lines by :func:`redact`, and handed to every hook added with
:func:`add_secret_hook`: the Airflow provider adds ``airflow.sdk.log.mask_secret`` there so that
Airflow's task logs mask them too, without this package importing Airflow.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "add_secret_hook",
    "install_log_redaction",
    "redact",
    "redact_url",
    "register_secret",
    "remove_secret_hook",
]

#: What replaces a secret in messages and logs.
MASK = "***"
#: Values shorter than this are not registered (they would mask ordinary words and digits).
MIN_SECRET_LENGTH = 5
#: The registry forgets the oldest values past this size (a long-lived process refreshes tokens).
MAX_SECRETS = 4096
#: Query parameter names whose values are masked in URLs that reach messages.
SENSITIVE_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "key", "auth")

_lock = threading.Lock()
_secrets: dict[str, None] = {}
_pattern: re.Pattern[str] | None = None
_hooks: list[Callable[[str], object]] = []


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a secret and pass it to every secret hook."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    global _pattern
    with _lock:
        if value in _secrets:
            return
        _secrets[value] = None
        while len(_secrets) > MAX_SECRETS:
            del _secrets[next(iter(_secrets))]
        _pattern = None
        hooks = list(_hooks)
    for hook in hooks:
        hook(value)


def add_secret_hook(hook: Callable[[str], object]) -> None:
    """Call ``hook(secret)`` for every secret registered from now on and every one known."""
    with _lock:
        if hook in _hooks:
            return
        _hooks.append(hook)
        known = list(_secrets)
    for value in known:
        hook(value)


def remove_secret_hook(hook: Callable[[str], object]) -> None:
    """Stop calling ``hook`` (no error if it was not added)."""
    with _lock:
        if hook in _hooks:
            _hooks.remove(hook)


def _compiled() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _secrets:
            # Longest first so that a secret containing another is masked whole.
            alternatives = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(s) for s in alternatives))
        return _pattern


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _compiled()
    return pattern.sub(MASK, text) if pattern is not None else text


def redact_url(url: str) -> str:
    """``url`` without user info and with sensitive query values masked, then :func:`redact`."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = [
            (k, MASK if any(w in k.lower() for w in SENSITIVE_WORDS) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe=MASK)
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


#: ``(b'<header>', b'<value>')`` pairs of httpcore traces whose header carries a credential.
_SENSITIVE_HEADER = re.compile(
    r"""(\(b(['"])[^'"]*(?:cookie|auth|token|secret|key|session|ss-id|ss-pid)[^'"]*\2, b)"""
    r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""",
    re.IGNORECASE,
)


class _RedactingFilter(logging.Filter):
    """Masks secrets in records of the HTTP stack's own loggers.

    httpcore's DEBUG traces print raw headers, ``Set-Cookie`` (session ids, WAF cookies)
    included, *before* the handler has read the response and registered them; httpx's INFO line
    prints URLs whose query may hold a ``payload_kwargs`` token. Credential header values are
    masked by name, everything registered by value.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(_SENSITIVE_HEADER.sub(r"\1'***'", message))
        if masked != message:
            record.msg, record.args = masked, ()
        return True


_FILTER = _RedactingFilter()
HTTP_STACK_LOGGERS = (
    "httpx",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "httpcore.connection",
)


def install_log_redaction() -> None:
    """Add the redacting filter to the httpx/httpcore loggers (idempotent; done on import).

    A logger's filters run only for records it emits, so this costs nothing unless those
    loggers are enabled.
    """
    for name in HTTP_STACK_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
