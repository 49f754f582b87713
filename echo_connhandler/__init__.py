"""echo_connhandler: HTTP connection handlers for Bazefield, CCEE and ONS, sync and async.

Framework-free (httpx, tenacity, pendulum): importing it never imports Airflow.
The public surface is this module's ``__all__``; the ``_modules`` are private.
"""

from echo_connhandler._auth import BearerAuth, SessionAuth
from echo_connhandler._bazefield import BazefieldLoginAuth, BazeHttpHandler, bazefield_api_root
from echo_connhandler._ccee import CceeHttpHandler, CceeWafAuth, CkanResource, DatastorePage
from echo_connhandler._exceptions import (
    ApiError,
    AuthenticationError,
    DataConsistencyError,
    EchoHttpError,
    HttpResponseError,
    HttpStatusError,
    HttpTransportError,
    ProfileSelectionError,
    ResponseTooLargeError,
    UnexpectedContentError,
    UnsafeRedirectError,
    WafBlockedError,
)
from echo_connhandler._handler import (
    AttemptDeadlineExceeded,
    HttpHandler,
    endpoint_url,
    expect_json,
)
from echo_connhandler._ons import OnsHttpHandler, OnsOAuth2, profile_header_value
from echo_connhandler._properties import HttpConnProperties, OnsHttpConnProperties
from echo_connhandler._publications import (
    FUTURE_TOLERANCE,
    dated_resources,
    find_publication,
    publication_after,
    usable_moment,
)
from echo_connhandler._retry import RetryPolicy
from echo_connhandler._secrets import (
    SecretScope,
    add_secret_hook,
    install_log_redaction,
    is_sensitive_name,
    redact,
    register_secret,
    remove_secret_hook,
)
from echo_connhandler._time import iso_utc, parse_duration, parse_moment, utc_moment

__version__ = "0.1.0"

install_log_redaction()

__all__ = [
    "FUTURE_TOLERANCE",
    "ApiError",
    "AttemptDeadlineExceeded",
    "AuthenticationError",
    "BazeHttpHandler",
    "BazefieldLoginAuth",
    "BearerAuth",
    "CceeHttpHandler",
    "CceeWafAuth",
    "CkanResource",
    "DataConsistencyError",
    "DatastorePage",
    "EchoHttpError",
    "HttpConnProperties",
    "HttpHandler",
    "HttpResponseError",
    "HttpStatusError",
    "HttpTransportError",
    "OnsHttpConnProperties",
    "OnsHttpHandler",
    "OnsOAuth2",
    "ProfileSelectionError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "SecretScope",
    "SessionAuth",
    "UnexpectedContentError",
    "UnsafeRedirectError",
    "WafBlockedError",
    "add_secret_hook",
    "bazefield_api_root",
    "dated_resources",
    "endpoint_url",
    "expect_json",
    "find_publication",
    "is_sensitive_name",
    "iso_utc",
    "parse_duration",
    "parse_moment",
    "profile_header_value",
    "publication_after",
    "redact",
    "register_secret",
    "remove_secret_hook",
    "usable_moment",
    "utc_moment",
]
