"""What an HTTP request task and its trigger share: the method check and the headers a result
may show (an XCom, a trigger event stored in Airflow's database)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from echo_connhandler import is_sensitive_name

__all__ = ["http_method", "xcom_headers"]

#: What a credential-carrying header's value becomes (the library's own mask).
MASK = "***"

#: An HTTP method is a token (RFC 9110, section 9.1; tchar of section 5.6.2): no spaces.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def http_method(value: Any, what: str = "method") -> str:
    """``value`` as an upper-case HTTP method; ValueError naming ``what`` if it is no token.

    Refused rather than stripped: ``" POST"`` is a template or a typo to fix, and before this
    check it slipped past the deferred POST/PATCH idempotency check.
    """
    if not isinstance(value, str) or not _METHOD.fullmatch(value):
        raise ValueError(
            f"{what} must be an HTTP method token such as GET or POST (no spaces), got {value!r}"
        )
    return value.upper()


def xcom_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Response headers for an XCom: credential-carrying values replaced by ``***``.

    A header is credential-carrying when its name is by the library's rule
    (:func:`~echo_connhandler.is_sensitive_name`: it contains ``password``, ``passwd``,
    ``secret``, ``token``, ``key``, ``auth``, ``cookie``, ``session`` or ``signature``):
    ``X-Subject-Token``, ``X-Auth-Token``, ``X-Api-Key``, ``X-Session-Id``,
    ``Authentication-Info``, ... A server issues such values (a token minted by a login
    endpoint) that no registry knows, and an XCom is readable by anyone who can read the DAG's
    runs. Cookies and authentication headers and challenges (``Set-Cookie``,
    ``Authorization``, ``WWW-Authenticate``, ...) are not returned at all.
    """
    return {name: MASK if is_sensitive_name(name) else value for name, value in headers.items()}
