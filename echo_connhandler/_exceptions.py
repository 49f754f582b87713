"""One exception tree for every handler, on the sync and the async path alike.

```
EchoHttpError                       base of everything the handlers raise
├── HttpTransportError              no usable response (connect/read/write/pool errors, timeouts)
├── HttpResponseError (RuntimeError) a response arrived and is wrong; carries request + response
│   ├── HttpStatusError             status code not in ``response_ok``
│   ├── ApiError                    the service reported an error inside the body (often HTTP 200)
│   ├── UnexpectedContentError      HTML (a login, WAF or maintenance page) where JSON was expected
│   │   └── WafBlockedError         CCEE's WAF answered "Acesso bloqueado" even after a re-warm
│   ├── AuthenticationError         a login was refused: bad credentials, never retried
│   ├── UnsafeRedirectError         a redirect would carry a login or a request body elsewhere
│   └── ResponseTooLargeError       a body beyond the handler's max_response_bytes
├── ProfileSelectionError (ValueError)  SINAPSE profile cannot be chosen without user input
└── DataConsistencyError            a paged pull would lose or duplicate rows
```

Messages carry a short excerpt of the response body with every registered secret removed
(see :mod:`echo_connhandler._secrets`); the full response stays available as ``.response``.
Transport errors keep the original httpx exception as ``__cause__``.
"""

from __future__ import annotations

from typing import Any, Self

import httpx

from echo_connhandler._secrets import redact, redact_url

__all__ = [
    "ApiError",
    "AuthenticationError",
    "DataConsistencyError",
    "EchoHttpError",
    "HttpResponseError",
    "HttpStatusError",
    "HttpTransportError",
    "ProfileSelectionError",
    "ResponseTooLargeError",
    "UnexpectedContentError",
    "UnsafeRedirectError",
    "WafBlockedError",
    "body_excerpt",
]

#: How many characters of a response body an exception message shows.
EXCERPT_CHARS = 300


_TEXTUAL_SUBTYPES = frozenset(
    {"json", "xml", "html", "xhtml+xml", "javascript", "x-www-form-urlencoded", "csv"}
)


def _is_textual(content_type: str) -> bool:
    if not content_type:
        return True
    main, _, subtype = content_type.partition("/")
    return main == "text" or subtype in _TEXTUAL_SUBTYPES or subtype.endswith(("+json", "+xml"))


def body_excerpt(response: httpx.Response, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, redacted excerpt of the response body (``""`` when unread)."""
    try:
        content = response.content
    except httpx.ResponseNotRead:
        return ""
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content and not _is_textual(content_type):
        # An .xlsx or an image would put garbage into the message (httpx decodes with replace).
        return f"<{len(content)} bytes of {content_type or 'unknown type'}>"
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError):
        return f"<{len(content)} bytes of undecodable text>"
    text = " ".join(redact(text).split())
    if len(text) > limit:
        text = text[:limit] + "…"
    return text


def _rebuild(cls: type[EchoHttpError], message: str) -> EchoHttpError:
    """An error of the tree from its message; ``copy``/``pickle`` restore its attributes."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


class EchoHttpError(Exception):
    """Base class of every error raised by :mod:`echo_connhandler`."""


class HttpTransportError(EchoHttpError):
    """The request got no usable response (connection refused, reset, timeout, protocol error).

    The original ``httpx`` exception is chained as ``__cause__``. ``legacy_tls_renegotiation``
    says whether the TLS handshake failed because the server needs legacy renegotiation
    (decided once, from the ``ssl.SSLError``'s ``reason``).
    """

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        legacy_tls_renegotiation: bool = False,
    ) -> None:
        super().__init__(redact(message))
        self.request = request
        self.legacy_tls_renegotiation = legacy_tls_renegotiation

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: copy and pickle need to be told how to rebuild the error.
        return (_rebuild, (type(self), self.args[0]), self.__dict__)


class HttpResponseError(EchoHttpError, RuntimeError):
    """A response arrived but cannot be used. Carries ``status_code``, ``request``, ``response``."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        self.response = response
        self.request: httpx.Request | None = response._request
        self.status_code = response.status_code
        super().__init__(redact(message))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args[0]), self.__dict__)

    @classmethod
    def from_response(cls, response: httpx.Response, reason: str) -> Self:
        """Build the error with a standard message: method, URL, status, reason and excerpt."""
        request = response._request
        where = f"{request.method} {redact_url(str(request.url))}" if request else "response"
        excerpt = body_excerpt(response)
        message = f"{where} -> HTTP {response.status_code}: {reason}"
        if excerpt:
            message += f" | body: {excerpt}"
        return cls(message, response=response)


class HttpStatusError(HttpResponseError):
    """The status code is not one of the accepted ones (``response_ok``)."""


class ApiError(HttpResponseError):
    """The service reported an error in the body, often with HTTP 200 (never retried)."""


class UnexpectedContentError(HttpResponseError):
    """The body is not what the endpoint serves (an HTML page where JSON was expected)."""


class WafBlockedError(UnexpectedContentError):
    """CCEE's web application firewall blocked the client even after a fresh warm-up."""


class AuthenticationError(HttpResponseError):
    """The service refused the credentials. Bad credentials are never retried."""


class UnsafeRedirectError(HttpResponseError):
    """A redirect was refused: it would carry a login's credentials, or a request body, to
    another origin (scheme, host, port). The message names the target host."""


class ResponseTooLargeError(HttpResponseError):
    """The response body (decoded) is larger than the handler's ``max_response_bytes``."""


class ProfileSelectionError(EchoHttpError, ValueError):
    """The SINAPSE ``Perfil-Selecionado`` value cannot be determined without the user's choice."""


class DataConsistencyError(EchoHttpError):
    """A paged pull cannot be completed without losing or duplicating rows (never retried)."""
