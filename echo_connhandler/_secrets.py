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
    "is_sensitive_name",
    "redact",
    "redact_url",
    "register_secret",
    "remove_secret_hook",
]

#: What replaces a secret in messages and logs.
MASK = "***"
#: Values shorter than this are not registered (they would mask ordinary words and digits).
MIN_SECRET_LENGTH = 5
#: Run-time tokens kept (oldest forgotten first): a long-lived process refreshes tokens every
#: ~20 min, and an expired token matters less than a live one. Credentials are never forgotten.
MAX_EPHEMERAL_SECRETS = 256
#: Words that make a header, query parameter, payload field or extra name a credential's.
SENSITIVE_WORDS = ("password", "passwd", "secret", "token", "key", "auth", "cookie", "session")

_lock = threading.Lock()
_credentials: dict[str, None] = {}
_ephemeral: dict[str, None] = {}
_longest_first: tuple[str, ...] = ()
_hooks: list[Callable[[str], object]] = []


def is_sensitive_name(name: str) -> bool:
    """Whether a header, query parameter or field name looks like it carries a credential."""
    lowered = name.lower().replace("-", "_")
    return any(word in lowered for word in SENSITIVE_WORDS) or lowered in ("ss_id", "ss_pid")


def register_secret(value: str | None, *, ephemeral: bool = False) -> None:
    """Remember ``value`` as a secret and pass it to every secret hook.

    ``ephemeral=True`` for tokens, session ids and cookies obtained at run time: the registry
    keeps the latest :data:`MAX_EPHEMERAL_SECRETS` of them. Passwords and API keys are kept for
    the life of the process.
    """
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    global _longest_first
    with _lock:
        if value in _credentials or value in _ephemeral:
            return
        if ephemeral:
            _ephemeral[value] = None
            while len(_ephemeral) > MAX_EPHEMERAL_SECRETS:
                del _ephemeral[next(iter(_ephemeral))]
        else:
            _credentials[value] = None
        # Longest first, so that a secret containing another is masked whole. Sorting a few
        # hundred strings per registration is cheaper than any per-call work in redact().
        _longest_first = tuple(sorted({**_credentials, **_ephemeral}, key=len, reverse=True))
        hooks = list(_hooks)
    for hook in hooks:
        hook(value)


def add_secret_hook(hook: Callable[[str], object]) -> None:
    """Call ``hook(secret)`` for every secret registered from now on and every one known."""
    with _lock:
        if hook in _hooks:
            return
        _hooks.append(hook)
        known = [*_credentials, *_ephemeral]
    for value in known:
        hook(value)


def remove_secret_hook(hook: Callable[[str], object]) -> None:
    """Stop calling ``hook`` (no error if it was not added)."""
    with _lock:
        if hook in _hooks:
            _hooks.remove(hook)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``.

    A substring test per secret (C speed, no regex to rebuild when a token is added): cheap
    enough to run on every log record of the HTTP stack.
    """
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """``url`` without user info and with sensitive query values masked, then :func:`redact`."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = [
            (k, MASK if is_sensitive_name(k) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe=MASK)
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


#: ``(b'<header>', b'<value>')`` pairs of httpcore traces whose header carries a credential.
_SENSITIVE_HEADER = re.compile(
    r"""(\(b(['"])[^'"]*(?:"""
    + "|".join(re.escape(word) for word in (*SENSITIVE_WORDS, "ss-id", "ss-pid"))
    + r""")[^'"]*\2, b)(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""",
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
