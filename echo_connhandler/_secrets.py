"""Secret registry: every credential and every run-time token goes through here.

The handlers call :func:`register_secret` with each password and API key, and keep the tokens and
session ids they obtain at run time in a :class:`SecretScope`. Registered values are removed from
exception messages and from log records by :func:`redact` (on the loggers that may print them:
:func:`install_log_redaction`), and handed to the hooks added with :func:`add_secret_hook`: the
Airflow provider adds Airflow's masker there for the long-lived credentials only
(``run_time=False``), so that a login does not grow Airflow's pattern (docs/airflow/hooks.md,
"Secret masking").
"""

from __future__ import annotations

import contextlib
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
#: Every form known, whoever holds it: what :func:`redact` looks for.
_forms: dict[str, None] = {}
#: The index :func:`redact` reads, changed per form that enters or leaves :data:`_forms`: never
#: sorted, joined or compiled as a whole, so adding a token costs microseconds however many
#: secrets are known (Airflow's masker recompiles one pattern of all of them: 0.7 s at 5,000,
#: benchmarks/masker.py). A form of at least ``_GRAM + _STEP - 1`` characters is found from any
#: ``_GRAM``-character slice of the text that starts at a multiple of ``_STEP`` (every occurrence
#: covers one), so the text is probed at one position in ``_STEP``: ``_grams`` maps each of the
#: form's first ``_STEP`` slices to ``(form, offset)``. Shorter forms (a short password) are
#: searched for whole, in ``_short``. Values are tuples, replaced, never changed in place:
#: :func:`redact` reads them from any thread without the lock.
_GRAM = 8
_STEP = 8
_grams: dict[str, tuple[tuple[str, int], ...]] = {}
_short: tuple[str, ...] = ()
#: ``(hook, run_time)``: ``run_time=False`` hooks are given long-lived credentials only.
_hooks: list[tuple[Callable[[str], object], bool]] = []


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


def _known(form: str) -> bool:
    return form in _credentials or form in _ephemeral_forms or form in _scoped


def _enter(form: str) -> None:
    """``form`` is now held: index it if it was not (call with ``_lock`` held)."""
    global _short
    if form in _forms:
        return
    _forms[form] = None
    if len(form) < _GRAM + _STEP - 1:
        # Longest first, so that a secret containing another is masked whole.
        _short = tuple(sorted((*_short, form), key=len, reverse=True))
        return
    for offset in range(_STEP):
        gram = form[offset : offset + _GRAM]
        _grams[gram] = (*_grams.get(gram, ()), (form, offset))


def _leave(form: str) -> None:
    """One holder let go of ``form``: unindex it if nobody holds it (call with ``_lock`` held)."""
    global _short
    if form not in _forms or _known(form):
        return
    del _forms[form]
    if len(form) < _GRAM + _STEP - 1:
        _short = tuple(known for known in _short if known != form)
        return
    for offset in range(_STEP):
        gram = form[offset : offset + _GRAM]
        kept = tuple(entry for entry in _grams.get(gram, ()) if entry[0] != form)
        if kept:
            _grams[gram] = kept
        else:
            _grams.pop(gram, None)


def _notify(value: str, new_forms: Iterable[str], *, run_time: bool) -> None:
    """Tell the hooks about a new secret: its raw value only.

    A hook (Airflow's masker) matches the value in its own way; giving it every escaped form
    would multiply its cost (Airflow rebuilds a pattern per value) for forms only this
    library's messages can contain, and those are redacted here already. A run-time value goes
    only to the hooks that asked for them (``run_time=True``).
    """
    if run_time:
        install_log_redaction()  # the loggers created since the last token get the filter
    if value not in new_forms:
        return
    for hook, wants_run_time in list(_hooks):
        if wants_run_time or not run_time:
            hook(value)


def register_secret(value: str | None, *, ephemeral: bool = False) -> None:
    """Remember ``value`` (and its escaped forms) as a secret and pass it to the secret hooks.

    ``ephemeral=True`` for tokens obtained at run time by code outside a handler: the registry
    keeps the latest :data:`MAX_EPHEMERAL_SECRETS` of them, and only the hooks added with
    ``run_time=True`` are told. Handlers keep theirs in a :class:`SecretScope`. Passwords and
    API keys are kept for the life of the process and go to every hook.
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
                _enter(form)
            while len(_ephemeral) > MAX_EPHEMERAL_SECRETS:
                oldest = next(iter(_ephemeral))
                del _ephemeral[oldest]
                _forget(_ephemeral_forms, oldest)
        else:
            if not new:
                return
            for form in new:
                _credentials[form] = None
                _enter(form)
    _notify(value, new, run_time=ephemeral)


class SecretScope:
    """The run-time secrets (tokens, session ids, cookies) of one handler's auth flow.

    Every value added stays registered while the scope holds it: a token a live handler may
    still send can never fall out of the registry, however long the process runs (a triggerer
    runs for weeks). :meth:`release` (the handler's close) forgets them, so a process that ran
    5,000 pulls knows the secrets of its live handlers only. A scope keeps its latest
    :attr:`keep` values: a login replaces the credential, so older values are no longer sent.
    Only the hooks added with ``run_time=True`` are told about these values.
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
                _enter(form)
            self._held[value] = None
            while len(self._held) > self.keep:
                oldest = next(iter(self._held))
                del self._held[oldest]
                _drop_forms(oldest)
        _notify(value, new, run_time=True)

    def release(self) -> None:
        """Forget every value of this scope (unless another scope or a credential holds it)."""
        with _lock:
            for value in self._held:
                _drop_forms(value)
            self._held.clear()

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
            _leave(form)


def _drop_forms(value: str) -> None:
    """One scope lets go of ``value`` (call with ``_lock`` held)."""
    _forget(_scoped, value)


def _drop_scoped(held: dict[str, None]) -> None:
    with _lock:
        for value in held:
            _drop_forms(value)
        held.clear()


def add_secret_hook(hook: Callable[[str], object], *, run_time: bool = True) -> None:
    """Call ``hook(secret)`` for every secret registered from now on and every one known.

    ``run_time=False``: only long-lived credentials (passwords, API keys), never the tokens,
    session ids and cookies of logins, which come and go by the thousand in a long-lived
    process: the choice for a masker that rebuilds a pattern per secret and never forgets one
    (Airflow's). Adding a hook again changes its ``run_time``.
    """
    with _lock:
        _hooks[:] = [entry for entry in _hooks if entry[0] != hook]
        _hooks.append((hook, run_time))
        known = [*_credentials]
        if run_time:
            known += [*_ephemeral_forms, *_scoped]
    for value in known:
        hook(value)


def remove_secret_hook(hook: Callable[[str], object]) -> None:
    """Stop calling ``hook`` (no error if it was not added)."""
    with _lock:
        _hooks[:] = [entry for entry in _hooks if entry[0] != hook]


def _mask_signed(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return f"{match.group(1)}{match.group(2)}{MASK}"
    return f"{match.group(3)}{MASK}{match.group(4)}"


def _spans(text: str) -> list[tuple[int, int]]:
    """Where registered secrets occur in ``text``: ``(start, end)`` pairs, unsorted."""
    found = []
    grams, short = _grams, _short
    if grams:
        last = len(text) - _GRAM + 1
        # Probe first at C speed: most texts hold no secret.
        probes = map(
            text.__getitem__, map(slice, range(0, last, _STEP), range(_GRAM, last + _GRAM, _STEP))
        )
        if any(map(grams.__contains__, probes)):
            for position in range(0, last, _STEP):
                for form, offset in grams.get(text[position : position + _GRAM], ()):
                    start = position - offset
                    if start >= 0 and text.startswith(form, start):
                        found.append((start, start + len(form)))
    for form in short:
        start = text.find(form)
        while start >= 0:
            found.append((start, start + len(form)))
            start = text.find(form, start + len(form))
    return found


def _mask_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each run of overlapping spans replaced by one ``***``."""
    parts = []
    done = 0
    for start, end in sorted(spans):
        if end <= done:
            continue
        if start >= done:
            parts.append(text[done:start])
            parts.append(MASK)
        done = end
    parts.append(text[done:])
    return "".join(parts)


#: Words one of which is in each signed-URL parameter name (and in ``<SignatureProvided>``):
#: a text without any of them needs no pass of :data:`_SIGNED_PARAM_TEXT`.
_SIGNED_HINTS = ("sig", "x-amz-", "x-goog-", "policy", "key-pair-id")


def redact(text: str) -> str:
    """``text`` with every registered secret, and every presigned-URL signature, replaced by
    ``***``.

    Secrets are looked up in an index probed at one position in eight (see :data:`_grams`),
    never through one pattern of them all, so that registering a token costs no rebuild; and
    the signed-URL pattern (:data:`SIGNED_URL_PARAMS`) runs only on a text that names one of
    the parameters: cheap enough to run on every log record that may hold a token.
    """
    if _grams or _short:
        spans = _spans(text)
        if spans:
            text = _mask_spans(text, spans)
    if "=" in text or "%3" in text or "<" in text:
        lowered = text.lower()
        if any(hint in lowered for hint in _SIGNED_HINTS):
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
#: Exceptions of one chain looked at, at most (a cycle or a very long chain stops there).
_MAX_CHAIN = 16


def _redact_chain(exc: BaseException) -> None:
    """Mask registered secrets in the ``args`` of ``exc`` and of what it was raised from or
    while handling, in place: a traceback printed later shows them masked.

    The library's own exceptions are redacted when made; this is for the others in a chain (an
    httpx error's message) and for whatever a caller raised with a token in it.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        args = current.args
        masked = tuple(redact(a) if isinstance(a, str) else a for a in args)
        if masked != args:
            # Some exception classes refuse new args (a C extension's): the chain goes on.
            with contextlib.suppress(AttributeError, TypeError):
                current.args = masked
        current = current.__cause__ or current.__context__


class _RedactingFilter(logging.Filter):
    """Masks secrets in records of the loggers that may print them.

    httpcore's DEBUG traces print raw headers, ``Set-Cookie`` (session ids, WAF cookies)
    included, *before* the handler has read the response and registered them; httpx's INFO line
    prints URLs whose query may hold a ``payload_kwargs`` token; the library's and the
    provider's own loggers print messages and tracebacks. Credential header values are masked
    by name, everything registered by value, in the message and in the exception chain.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(_SENSITIVE_HEADER.sub(r"\1'***'", message))
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[1] is not None:
            _redact_chain(record.exc_info[1])
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
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
#: Loggers whose name starts so get the filter too: the library's (``echo_connhandler``,
#: ``echo_connhandler.retry``, ...) and the Airflow provider's (``echo_connhandler_provider.*``).
LIBRARY_LOGGER_PREFIX = "echo_connhandler"
#: How many loggers the process had when the library's were last looked for.
_loggers_seen = -1


def install_log_redaction() -> None:
    """Add the redacting filter to the httpx/httpcore loggers and to every logger of the
    library's namespace (:data:`LIBRARY_LOGGER_PREFIX`). Idempotent; done on import and each
    time a run-time token is registered, which catches the loggers created since at the cost of
    one length test when there are none.

    A logger's filters run only for records it emits (not for its children's), hence one per
    logger; they cost nothing unless the logger is enabled.
    """
    global _loggers_seen
    manager = logging.Logger.manager
    if len(manager.loggerDict) == _loggers_seen:
        return
    _loggers_seen = len(manager.loggerDict)
    names = [
        name
        for name, logger in list(manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name.startswith(LIBRARY_LOGGER_PREFIX)
    ]
    for name in (*HTTP_STACK_LOGGERS, LIBRARY_LOGGER_PREFIX, *names):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
