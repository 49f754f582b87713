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
from echo_connhandler._handler import AttemptDeadlineExceeded, HttpHandler, expect_json
from echo_connhandler._ons import OnsHttpHandler, OnsOAuth2, profile_header_value
from echo_connhandler._properties import HttpConnProperties, OnsHttpConnProperties
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

__version__ = "0.1.0"

install_log_redaction()

__all__ = [
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
    "expect_json",
    "is_sensitive_name",
    "profile_header_value",
    "redact",
    "register_secret",
    "remove_secret_hook",
]
