"""Hardening of the retry settings: validated at construction, bounded waits, a time budget.

- Every numeric handler argument is checked when the handler is built (NaN, infinity, negative
  values, booleans, fractions where a count is expected): ``ValueError`` naming the argument.
- ``RetryPolicy`` refuses the same values for its own fields.
- A large ``max_retries`` with a multiplier above 1 never overflows the backoff.
- ``retry_time_budget``: no new attempt starts once it would begin past the budget (a long
  ``Retry-After`` ends the request at once, with a note); ``None`` disables the budget.
- ``retry_after_cap`` bounds what a server's ``Retry-After`` can make the handler wait.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from echo_connhandler import HttpConnProperties, HttpHandler, HttpStatusError, RetryPolicy

HOST = "https://api.example.com"
NAN = float("nan")
INF = float("inf")


@pytest.fixture
def props() -> HttpConnProperties:
    return HttpConnProperties(host=HOST)


# -- handler arguments, checked at construction --------------------------------------------------
BAD_HANDLER_SETTINGS = [
    ("retry_wait_time", NAN),
    ("retry_wait_time", INF),
    ("retry_wait_time", -1),
    ("exponential_min_retry_wait_time", NAN),
    ("exponential_min_retry_wait_time", -0.5),
    ("exponential_multiplier", INF),
    ("exponential_multiplier", NAN),
    ("retry_after_cap", NAN),
    ("retry_after_cap", INF),
    ("retry_after_cap", -1),
    ("retry_time_budget", NAN),
    ("retry_time_budget", INF),
    ("retry_time_budget", -1),
    ("max_response_bytes", 0),
    ("max_response_bytes", -5),
    ("max_response_bytes", 1.5),
    ("max_response_bytes", True),
    ("max_response_bytes", NAN),
    ("max_retries", True),
    ("max_retries", -1),
    ("max_retries", 2.5),
    ("max_retries", NAN),
    ("max_conn_retries", -1),
    ("max_conn_retries", False),
    ("max_conn_retries", 1.5),
    ("retry_wait_time", "30"),
    ("retry_wait_time", None),
]


@pytest.mark.parametrize(("name", "value"), BAD_HANDLER_SETTINGS)
def test_bad_handler_setting_is_refused_at_construction(
    props: HttpConnProperties, name: str, value: object
) -> None:
    """ValueError at construction (skip_connect: nothing is sent), naming the argument."""
    with pytest.raises(ValueError) as info:
        HttpHandler(props, skip_connect=True, **{name: value})
    assert type(info.value) is ValueError
    assert str(info.value).startswith(name), str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("retry_time_budget", None),
        ("retry_time_budget", 0),
        ("retry_time_budget", 0.25),
        ("max_response_bytes", None),
        ("max_response_bytes", 1),
        ("max_retries", 0),
        ("max_conn_retries", 0),
        ("retry_after_cap", 0),
        ("retry_wait_time", 0),
        ("exponential_multiplier", 0.5),
    ],
)
def test_good_handler_settings_are_accepted(
    props: HttpConnProperties, name: str, value: object
) -> None:
    """The edge values that are meaningful stay accepted."""
    handler = HttpHandler(props, skip_connect=True, **{name: value})
    handler.close()


def test_settings_reach_the_policy(props: HttpConnProperties) -> None:
    """The handler's arguments become its RetryPolicy's fields."""
    handler = HttpHandler(
        props,
        skip_connect=True,
        max_retries=4,
        max_conn_retries=2,
        retry_wait_time=7,
        exponential_min_retry_wait_time=0.5,
        exponential_multiplier=1.5,
        retry_after_cap=12,
        retry_time_budget=60,
        max_response_bytes=1000,
    )
    policy = handler.retry_policy
    assert (policy.max_retries, policy.max_login_retries) == (4, 2)
    assert (policy.max_wait, policy.min_wait, policy.multiplier) == (7, 0.5, 1.5)
    assert (policy.retry_after_cap, policy.time_budget) == (12, 60)
    assert handler.max_response_bytes == 1000
    handler.close()


# -- RetryPolicy ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("retry_after_cap", INF),
        ("retry_after_cap", NAN),
        ("max_wait", NAN),
        ("max_wait", INF),
        ("min_wait", NAN),
        ("multiplier", INF),
        ("time_budget", NAN),
        ("time_budget", -1),
        ("max_retries", True),
        ("max_retries", 1.5),
        ("max_login_retries", -1),
    ],
)
def test_retry_policy_refuses_non_finite_and_negative_values(name: str, value: object) -> None:
    """RetryPolicy(retry_after_cap=inf), (max_wait=nan), ...: ValueError naming the field."""
    with pytest.raises(ValueError) as info:
        RetryPolicy(**{name: value})
    assert type(info.value) is ValueError
    assert str(info.value).startswith(name), str(info.value)


@pytest.mark.parametrize("attempt", [1, 2, 64, 65, 100, 1024, 1025, 5000, 10**6])
def test_backoff_with_many_retries_never_overflows(attempt: int) -> None:
    """multiplier * 2**(n-1) overflows a float past n=1024: the backoff must stay bounded."""
    policy = RetryPolicy(max_retries=5000, multiplier=1.5)
    for _ in range(20):  # jittered: sample a few times
        wait = policy.backoff(attempt)
        assert math.isfinite(wait)
        assert 0 <= policy.min_wait <= wait <= policy.max_wait


def test_wait_for_without_retry_after_uses_bounded_backoff() -> None:
    """wait_for falls back to the same bounded backoff for a large attempt number."""
    policy = RetryPolicy(max_retries=5000, multiplier=1.5, max_wait=3)
    assert 0 <= policy.wait_for(None, 5000) <= 3


def test_handler_with_many_retries_and_multiplier_constructs(props: HttpConnProperties) -> None:
    handler = HttpHandler(props, max_retries=5000, exponential_multiplier=1.5, skip_connect=True)
    assert handler.retry_policy.max_retries == 5000
    assert handler.retry_policy.backoff(5000) <= handler.retry_policy.max_wait
    handler.close()


# -- the time budget, over loopback --------------------------------------------------------------
def _check_budget_error(exc: HttpStatusError) -> None:
    assert exc.status_code == 503
    notes = getattr(exc, "__notes__", [])
    assert any("time budget" in note for note in notes), notes


def test_time_budget_stops_before_a_retry_after_beyond_it_sync(
    make_handler: Any, server: Any, key: str
) -> None:
    """Retry-After: 2 with a 0.5 s budget: one request, then HttpStatusError with a note."""
    handler = make_handler(retry_time_budget=0.5, max_retries=5)
    with pytest.raises(HttpStatusError) as info:
        handler.get(f"flaky/{key}/5", params={"retry_after": 2})
    assert server.hits(key) == 1
    _check_budget_error(info.value)


async def test_time_budget_stops_before_a_retry_after_beyond_it_async(
    make_async_handler: Any, server: Any, key: str
) -> None:
    handler = make_async_handler(retry_time_budget=0.5, max_retries=5)
    with pytest.raises(HttpStatusError) as info:
        await handler.async_get(f"flaky/{key}/5", params={"retry_after": 2})
    assert server.hits(key) == 1
    _check_budget_error(info.value)


def test_no_time_budget_still_retries_sync(make_handler: Any, server: Any, key: str) -> None:
    """retry_time_budget=None: the ordinary retry path (503 then 200) is unchanged."""
    handler = make_handler(retry_time_budget=None, max_retries=5)
    response = handler.get(f"flaky/{key}/1", params={"retry_after": 0})
    assert response.json()["attempt"] == 2
    assert server.hits(key) == 2


async def test_no_time_budget_still_retries_async(
    make_async_handler: Any, server: Any, key: str
) -> None:
    handler = make_async_handler(retry_time_budget=None, max_retries=5)
    response = await handler.async_get(f"flaky/{key}/1", params={"retry_after": 0})
    assert response.json()["attempt"] == 2
    assert server.hits(key) == 2


def test_default_time_budget_still_retries_sync(make_handler: Any, server: Any, key: str) -> None:
    """The default budget (900 s) does not get in the way of short waits."""
    handler = make_handler(max_retries=2)
    response = handler.get(f"flaky/{key}/1", params={"retry_after": 0})
    assert response.json()["attempt"] == 2
    assert server.hits(key) == 2


# -- retry_after_cap -----------------------------------------------------------------------------
def test_retry_after_cap_is_honoured_sync(make_handler: Any, server: Any, key: str) -> None:
    """Retry-After: 999999 with retry_after_cap=0.01: the handler waits 0.01 s, not 11 days."""
    handler = make_handler(retry_after_cap=0.01, max_retries=1)
    response = handler.get(f"flaky/{key}/1", params={"retry_after": 999999})
    assert response.status_code == 200
    assert server.hits(key) == 2


async def test_retry_after_cap_is_honoured_async(
    make_async_handler: Any, server: Any, key: str
) -> None:
    handler = make_async_handler(retry_after_cap=0.01, max_retries=1)
    response = await handler.async_get(f"flaky/{key}/1", params={"retry_after": 999999})
    assert response.status_code == 200
    assert server.hits(key) == 2


def test_retry_after_is_capped_in_the_policy() -> None:
    """wait_for itself cuts a huge Retry-After to the cap."""
    request = httpx.Request("GET", f"{HOST}/x")
    response = httpx.Response(503, headers={"Retry-After": "999999"}, request=request)
    error = HttpStatusError("failed", response=response)
    assert RetryPolicy(retry_after_cap=0.01).wait_for(error, 1) == 0.01
