"""Secret registry: every credential and every run-time token goes through here.

The handlers call :func:`register_secret` with each password, API key, access/refresh token and
session id they hold or obtain. Registered values are removed from exception messages and from
the library's own log lines by :func:`redact`, and handed to every hook added with
:func:`add_secret_hook`: the Airflow provider adds ``airflow.sdk.log.mask_secret`` there so that
Airflow's task logs mask them too, without this package importing Airflow.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

__all__ = [
    "SIGNED_URL_PARAMS",
    "SecretScope",
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
#: Run-time tokens registered with ``ephemeral=True`` and no :class:`SecretScope` (a caller of
#: this module, not a handler): the latest ones kept, oldest forgotten first. Handlers keep their
#: tokens in a scope instead, for as long as they may send them.
MAX_EPHEMERAL_SECRETS = 256
#: Words that make a header, query parameter, payload field or extra name a credential's (a
#: signature authorises a request too: ``X-Amz-Signature``).
SENSITIVE_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "auth",
    "cookie",
    "session",
    "signature",
)
#: Query parameters of presigned (signed) URLs that authorise whoever holds the URL, masked in
#: URLs and in any text (docs/errors.md, "Secrets"): Azure SAS ``sig``; AWS SigV4
#: ``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``; GCS V4
#: ``X-Goog-Signature``, ``X-Goog-Credential``; CloudFront and S3/GCS V2 ``Signature``,
#: ``Policy``, ``Key-Pair-Id``. Matched in any case. A redirect to object storage carries them,
#: and an error then prints the target URL.
SIGNED_URL_PARAMS = (
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "policy",
    "key-pair-id",
)
_SIGNED_URL_NAMES = frozenset(SIGNED_URL_PARAMS)
#: ``name=value`` of a signed-URL parameter in free text: in a query string (``&`` or ``%26``
#: ends the value; ``=`` may be URL-encoded as ``%3D`` when the URL is itself a query value), in
#: a SigV4 ``Authorization``-like list (``, Signature=...``), and S3's
#: ``<SignatureProvided>...</SignatureProvided>`` in a ``SignatureDoesNotMatch`` error body.
_SIGNED_PARAM_TEXT = re.compile(
    r"(?:(?<![\w-])|(?<=%3F)|(?<=%26))("
    + "|".join(re.escape(name) for name in sorted(SIGNED_URL_PARAMS, key=len, reverse=True))
    + r")(=|%3D)(?:(?!%26)[^&\s\"'<>,;#)\]])+"
    r"|(<SignatureProvided>)[^<]*(</SignatureProvided>)",
    re.IGNORECASE,
)

_lock = threading.Lock()
_credentials: dict[str, None] = {}
#: Unscoped run-time values (the values themselves, bounded) and their forms, counted.
_ephemeral: dict[str, None] = {}
_ephemeral_forms: dict[str, int] = {}
#: Secrets held by live scopes, with the number of scopes holding each (two handlers may share
#: a cookie value); forgotten when the last scope lets go.
_scoped: dict[str, int] = {}
_longest_first: tuple[str, ...] = ()
_hooks: list[Callable[[str], object]] = []


def is_sensitive_name(name: str) -> bool:
    """Whether a header, query parameter or field name looks like it carries a credential."""
    lowered = name.lower().replace("-", "_")
    return any(word in lowered for word in SENSITIVE_WORDS) or lowered in ("ss_id", "ss_pid")


def secret_forms(value: str) -> set[str]:
    """``value`` and the escaped forms it takes in text that may reach a log or a message.

    A secret shows up escaped inside ``repr()`` of str or bytes (httpx's ``Illegal header value
    b'Bearer <key>\\n'``), inside JSON (an excerpt of a body) and URL-encoded (a query string or a
    form body): each form is masked, not only the raw one.
    """
    forms = {
        value,
        repr(value)[1:-1],
        repr(value.encode("utf-8"))[2:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
    }
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _rebuild() -> None:
    """Refresh the longest-first tuple :func:`redact` reads (call with ``_lock`` held)."""
    global _longest_first
    # Longest first, so that a secret containing another is masked whole. Sorting a few
    # hundred strings per change is cheaper than any per-call work in redact().
    known = {**_credentials, **_ephemeral_forms, **_scoped}
    _longest_first = tuple(sorted(known, key=len, reverse=True))


def _known(form: str) -> bool:
    return form in _credentials or form in _ephemeral_forms or form in _scoped


def _notify(value: str, new_forms: Iterable[str]) -> None:
    """Tell the hooks about a new secret: its raw value only.

    A hook (Airflow's masker) matches the value in its own way; giving it every escaped form
    would multiply its cost (Airflow rebuilds a pattern per value) for forms only this
    library's messages can contain, and those are redacted here already.
    """
    if value not in new_forms:
        return
    for hook in list(_hooks):
        hook(value)


def register_secret(value: str | None, *, ephemeral: bool = False) -> None:
    """Remember ``value`` (and its escaped forms) as a secret and pass it to every secret hook.

    ``ephemeral=True`` for tokens obtained at run time by code outside a handler: the registry
    keeps the latest :data:`MAX_EPHEMERAL_SECRETS` of them. Handlers keep theirs in a
    :class:`SecretScope`. Passwords and API keys are kept for the life of the process.
    """
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        forms = secret_forms(value)
        new = [form for form in forms if not _known(form)]
        if ephemeral:
            if value in _ephemeral or not new:
                return
            _ephemeral[value] = None
            for form in forms:
                _ephemeral_forms[form] = _ephemeral_forms.get(form, 0) + 1
            while len(_ephemeral) > MAX_EPHEMERAL_SECRETS:
                oldest = next(iter(_ephemeral))
                del _ephemeral[oldest]
                _forget(_ephemeral_forms, oldest)
        else:
            if not new:
                return
            for form in new:
                _credentials[form] = None
        _rebuild()
    _notify(value, new)


class SecretScope:
    """The run-time secrets (tokens, session ids, cookies) of one handler's auth flow.

    Every value added stays registered while the scope holds it: a token a live handler may
    still send can never fall out of the registry, however long the process runs (a triggerer
    runs for weeks). :meth:`release` (the handler's close) forgets them. A scope keeps its latest
    :attr:`keep` values: a login replaces the credential, so older values are no longer sent.
    """

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._held: dict[str, None] = {}
        # A handler dropped without close() still lets its secrets go.
        self._finalizer = weakref.finalize(self, _drop_scoped, self._held)

    def add(self, value: str | None) -> None:
        """Register ``value`` for as long as this scope holds it."""
        if not value or len(value) < MIN_SECRET_LENGTH or value in self._held:
            return
        with _lock:
            new = []
            for form in secret_forms(value):
                if not _known(form):
                    new.append(form)
                _scoped[form] = _scoped.get(form, 0) + 1
            self._held[value] = None
            while len(self._held) > self.keep:
                oldest = next(iter(self._held))
                del self._held[oldest]
                _drop_forms(oldest)
            _rebuild()
        _notify(value, new)

    def release(self) -> None:
        """Forget every value of this scope (unless another scope or a credential holds it)."""
        with _lock:
            for value in self._held:
                _drop_forms(value)
            self._held.clear()
            _rebuild()

    def __contains__(self, value: object) -> bool:
        return value in self._held

    def __len__(self) -> int:
        return len(self._held)


def _forget(counts: dict[str, int], value: str) -> None:
    """One holder lets go of ``value``'s forms (call with ``_lock`` held)."""
    for form in secret_forms(value):
        count = counts.get(form, 0) - 1
        if count > 0:
            counts[form] = count
        else:
            counts.pop(form, None)


def _drop_forms(value: str) -> None:
    """One scope lets go of ``value`` (call with ``_lock`` held)."""
    _forget(_scoped, value)


def _drop_scoped(held: dict[str, None]) -> None:
    with _lock:
        for value in held:
            _drop_forms(value)
        held.clear()
        _rebuild()


def add_secret_hook(hook: Callable[[str], object]) -> None:
    """Call ``hook(secret)`` for every secret registered from now on and every one known."""
    with _lock:
        if hook in _hooks:
            return
        _hooks.append(hook)
        known = [*_credentials, *_ephemeral_forms, *_scoped]
    for value in known:
        hook(value)


def remove_secret_hook(hook: Callable[[str], object]) -> None:
    """Stop calling ``hook`` (no error if it was not added)."""
    with _lock:
        if hook in _hooks:
            _hooks.remove(hook)


def _mask_signed(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return f"{match.group(1)}{match.group(2)}{MASK}"
    return f"{match.group(3)}{MASK}{match.group(4)}"


def redact(text: str) -> str:
    """``text`` with every registered secret, and every presigned-URL signature, replaced by
    ``***``.

    A substring test per secret (C speed, no regex to rebuild when a token is added) and one
    precompiled pattern for the signed-URL parameters (:data:`SIGNED_URL_PARAMS`): cheap
    enough to run on every log record of the HTTP stack.
    """
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    if "=" in text or "%3" in text or "<SignatureProvided>" in text:
        text = _SIGNED_PARAM_TEXT.sub(_mask_signed, text)
    return text


def _is_masked_param(name: str) -> bool:
    return is_sensitive_name(name) or name.lower() in _SIGNED_URL_NAMES


def redact_url(url: str) -> str:
    """``url`` without user info and with sensitive query values masked (credential names and
    the presigned-URL parameters of :data:`SIGNED_URL_PARAMS`), then :func:`redact`."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = [
            (k, MASK if _is_masked_param(k) else v)
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
