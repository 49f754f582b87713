"""Configuration objects shared by the three emulators and the server.

``SandboxConfig`` holds every knob of the sandbox (seed, CCEE table sizes, ONS token lifetime,
Bazefield login flavour...). ``SandboxUrls`` is what a running :class:`~.Sandbox` hands out.
``DEMO_CREDENTIALS`` are the made-up, sandbox-only credentials the emulators accept; they are
not real accounts anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

__all__ = ["DEMO_CREDENTIALS", "SandboxConfig", "SandboxUrls"]


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of a sandbox run (all three emulators).

    Attributes:
        host: loopback address the servers bind to.
        seed: seed of every generated value and of the random fault sequences.
        ccee_rows_per_resource: rows of every CCEE datastore table; ``None`` gives the natural
            size (one row per hour, or day, and submarket of the resource's year: 8760 or 8784
            hours x 4 submarkets for the hourly tables, i.e. more than the 32 000 row cap).
        ccee_years: one CCEE resource per year and dataset.
        ccee_max_limit: the ``datastore_search`` limit cap (CKAN's
            ``ckan.datastore.search.rows_max``).
        ons_expires_in: lifetime in seconds of ONS access tokens (``expires_in``).
        baze_issue_bearer_token: Bazefield login returns a ``bearerToken`` besides ``sessionId``.
        ons_require_origin: the ONS token endpoint rejects requests without an ``Origin`` header.
        latency_ms: latency added to every (non-admin) request of every emulator.
        ccee_publish_every: the CCEE publication clock, in seconds: ``None`` (default) keeps
            every ``last_modified`` fixed; a number republishes the newest year's resource of
            every dataset every that many seconds (``last_modified`` = the sandbox's start +
            k x ``ccee_publish_every``, UTC, in CKAN's naive format).
    """

    host: str = "127.0.0.1"
    seed: int = 42
    ccee_rows_per_resource: int | None = None
    ccee_years: tuple[int, ...] = (2021, 2022, 2023, 2024, 2025)
    ccee_max_limit: int = 32000
    ons_expires_in: int = 1199
    baze_issue_bearer_token: bool = True
    ons_require_origin: bool = True
    latency_ms: float = 0.0
    ccee_publish_every: float | None = None

    def __post_init__(self) -> None:
        if self.ccee_rows_per_resource is not None and self.ccee_rows_per_resource < 0:
            raise ValueError("ccee_rows_per_resource must be >= 0 or None")
        if self.ccee_max_limit < 1:
            raise ValueError("ccee_max_limit must be >= 1")
        if self.ons_expires_in < 1:
            raise ValueError("ons_expires_in must be >= 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if not self.ccee_years:
            raise ValueError("ccee_years must not be empty")
        every = self.ccee_publish_every
        if every is not None and (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or not every > 0
            or every == float("inf")
        ):
            raise ValueError(
                f"ccee_publish_every must be a number of seconds > 0 or None, got {every!r}"
            )


@dataclass(frozen=True)
class SandboxUrls:
    """Base URLs of a running sandbox.

    Attributes:
        bazefield: Bazefield host root; the API lives under ``/BazeField.Services/api/``.
        ccee: CCEE portal root (HTML warm-up page); CKAN actions under ``/api/3/action/``.
        ons_auth_url: ONS POP identity provider (``.../ons.pop.federation``).
        ons_sager: SAGER renováveis API base.
        ons_sinapse: SINAPSE API base.
        ons_profile_url: the SINAPSE "list my profiles" endpoint.
    """

    bazefield: str
    ccee: str
    ons_auth_url: str
    ons_sager: str
    ons_sinapse: str
    ons_profile_url: str

    @property
    def ons(self) -> str:
        """Root of the ONS emulator (``scheme://host:port``), e.g. for the admin endpoints."""
        parts = urlsplit(self.ons_auth_url)
        return f"{parts.scheme}://{parts.netloc}"


def _frozen(data: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType({key: MappingProxyType(dict(value)) for key, value in data.items()})


#: Made-up credentials accepted by the sandbox emulators only. They are not real accounts.
DEMO_CREDENTIALS: Mapping[str, Mapping[str, str]] = _frozen(
    {
        "bazefield": {
            "user": "demo.user",
            "password": "demo-password",
            "api_key": "sandbox-baze-api-key",
        },
        "ons": {
            "user": "demo.user",
            "password": "demo-password",
            "multi_profile_user": "multi.user",
            "multi_profile_password": "demo-password",
        },
        "ccee": {},
    }
)
