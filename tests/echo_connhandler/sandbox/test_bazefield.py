"""The Bazefield emulator: login flavours, auth, the HTML preview quirk, errors in HTTP 200."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox, SandboxConfig, bazefield_app

API = "/BazeField.Services/api"
CREDENTIALS = DEMO_CREDENTIALS["bazefield"]
JSON = {"Accept": "application/json"}
API_KEY = {"Accept": "application/json", "Authorization": f"Bearer {CREDENTIALS['api_key']}"}


@pytest.fixture
def client(sb: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sb.urls.bazefield, timeout=30) as http:
        yield http


def login(client: httpx.Client, password: str = CREDENTIALS["password"]) -> httpx.Response:
    return client.post(
        f"{API}/auth/baze",
        params={"format": "json"},
        json={"UserName": CREDENTIALS["user"], "Password": password, "RememberMe": True},
        headers=JSON,
    )


def aggregated(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/objects/timeseries/aggregated", params=params, headers=API_KEY)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_login_returns_session_bearer_and_cookies(sb: Sandbox, client: httpx.Client) -> None:
    response = login(client)
    assert response.status_code == 200
    body = response.json()
    assert body["sessionId"]
    assert body["bearerToken"].count(".") == 2
    assert body["userName"] == CREDENTIALS["user"]
    assert response.cookies["ss-id"] == body["sessionId"]
    assert "ss-pid" in response.cookies
    assert sb.faults("bazefield").stats["logins"] == {"password": 1}


def test_bad_login_is_401(client: httpx.Client) -> None:
    response = login(client, password="wrong")
    assert response.status_code == 401
    status = response.json()["responseStatus"]
    assert status["errorCode"] == "Unauthorized"
    assert status["message"] == "Invalid UserName or Password"


async def test_login_without_bearer_token() -> None:
    app = bazefield_app(SandboxConfig(baze_issue_bearer_token=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://baze") as client:
        response = await client.post(
            f"{API}/auth/baze?format=json",
            json={"UserName": "demo.user", "Password": "demo-password", "RememberMe": True},
        )
        assert response.status_code == 200
        assert "bearerToken" not in response.json()
        assert response.cookies["ss-id"] == response.json()["sessionId"]
        structure = await client.get(f"{API}/objects/structure?type=1", headers=JSON)
        assert structure.status_code == 200  # the ss-id cookie authenticates


def test_every_auth_flavour(client: httpx.Client) -> None:
    body = login(client).json()
    client.cookies.clear()
    path = f"{API}/allocationTypes"
    assert client.get(path, headers=JSON).status_code == 401
    unauthorized = client.get(path, headers=JSON).json()
    assert unauthorized["responseStatus"]["errorCode"] == "Unauthorized"
    assert client.get(path, headers=API_KEY).status_code == 200
    bearer = {**JSON, "Authorization": f"Bearer {body['bearerToken']}"}
    assert client.get(path, headers=bearer).status_code == 200
    assert client.get(path, headers={**JSON, "x-ss-id": body["sessionId"]}).status_code == 200
    cookie = {**JSON, "Cookie": f"ss-id={body['sessionId']}"}
    assert client.get(path, headers=cookie).status_code == 200
    assert client.get(path, headers={**JSON, "Authorization": "Bearer nope"}).status_code == 401


def test_expire_tokens_invalidates_sessions_but_not_api_key(
    sb: Sandbox, client: httpx.Client
) -> None:
    body = login(client).json()
    client.cookies.clear()
    bearer = {**JSON, "Authorization": f"Bearer {body['bearerToken']}"}
    session = {**JSON, "x-ss-id": body["sessionId"]}
    sb.faults("bazefield").expire_tokens()
    path = f"{API}/allocationTypes"
    assert client.get(path, headers=bearer).status_code == 401
    assert client.get(path, headers=session).status_code == 401
    assert client.get(path, headers=API_KEY).status_code == 200
    fresh = login(client).json()
    assert client.get(path, headers={**JSON, "x-ss-id": fresh["sessionId"]}).status_code == 200


def test_without_accept_json_an_html_preview_comes_back(client: httpx.Client) -> None:
    auth = {"Authorization": API_KEY["Authorization"]}
    response = client.get(f"{API}/allocationTypes", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text
    with_format = client.get(f"{API}/allocationTypes?format=json", headers=auth)
    assert with_format.headers["content-type"].startswith("application/json")


def test_paths_are_case_insensitive(client: httpx.Client) -> None:
    response = client.get("/bazefield.services/API/ALLOCATIONTYPES", headers=API_KEY)
    assert response.status_code == 200
    types = response.json()["allocationTypes"]
    assert {"id": 1, "name": "Disponível"} in types
    assert len(types) >= 3


def test_structure(client: httpx.Client) -> None:
    sites = client.get(f"{API}/objects/structure", params={"type": 1}, headers=API_KEY).json()
    assert len(sites["objects"]) == 3
    turbines = client.get(f"{API}/objects/structure?type=2", headers=API_KEY).json()["objects"]
    assert 30 <= len(turbines) <= 120
    assert {"objectId", "objectKey", "name", "type"} <= set(turbines[0])
    for bad in ("", "?type=abc"):
        response = client.get(f"{API}/objects/structure{bad}", headers=API_KEY)
        assert response.status_code == 200  # the error comes inside HTTP 200
        assert response.json()["responseStatus"]["errorCode"] == "ArgumentException"


def test_small_endpoints(client: httpx.Client) -> None:
    site = client.get(f"{API}/objects/structure?type=1", headers=API_KEY).json()["objects"][0]
    by_key = client.get(f"{API}/turbines/{site['objectKey']}", headers=API_KEY).json()
    by_id = client.get(f"{API}/turbines/{site['objectId']}", headers=API_KEY).json()
    assert by_key == by_id
    assert all(turbine["type"] == 2 for turbine in by_key["turbines"])
    assert client.get(f"{API}/turbines/NOPE", headers=API_KEY).status_code == 404
    ids = ",".join(turbine["objectId"] for turbine in by_key["turbines"][:2])
    schemas = client.get(f"{API}/objects/getschemas", params={"objectIds": ids}, headers=API_KEY)
    assert len(schemas.json()["schemas"]) == 2
    assert schemas.json()["schemas"][0]["points"]
    active = client.get(f"{API}/objects/allocations/active", headers=API_KEY).json()
    allocation = active["allocations"][0]
    one = client.get(f"{API}/allocations/{allocation['allocationId']}", headers=API_KEY).json()
    assert one["allocation"] == allocation


def test_timeseries_shape_and_determinism(client: httpx.Client) -> None:
    params = {
        "ObjectIds": "1001,1002",
        "Points": "ActivePower,WindSpeed",
        "Aggregates": "AVG,MAX",
        "From": "2024-03-01T00:00:00Z",
        "To": "2024-03-02T00:00:00Z",
        "Interval": "1h",
        "TimeZone": "America/Sao_Paulo",
    }
    body = aggregated(client, **params)
    assert set(body["objects"]) == {"1001", "1002"}
    series = body["objects"]["1001"]["points"]["ActivePower"]
    assert [item["aggregate"] for item in series] == ["AVG", "MAX"]
    values = series[0]["timeSeries"]
    assert len(values) == 24
    assert values[0]["t"] == int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
    assert values[0]["t_local"].startswith("2024-02-29T21:00:00")
    assert values[0]["q"] in (0, 1)
    assert aggregated(client, **params) == body
    posted = client.post(
        f"{API}/objects/timeseries/aggregated",
        json={**params, "ObjectIds": ["1001", "1002"], "Points": ["ActivePower", "WindSpeed"]},
        headers=API_KEY,
    )
    assert posted.json() == body


def test_timeseries_dates_and_intervals(client: httpx.Client) -> None:
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    end = int(datetime(2024, 1, 8, tzinfo=UTC).timestamp() * 1000)
    common = {"ObjectIds": "1000", "Points": "ActivePower", "Aggregates": "AVG"}
    daily = aggregated(client, **common, From=start, To=end, Interval="1d")
    assert len(daily["objects"]["1000"]["points"]["ActivePower"][0]["timeSeries"]) == 7
    ten_minutes = aggregated(client, **common, From="*d-1d", To="*d", Interval="10m")
    assert len(ten_minutes["objects"]["1000"]["points"]["ActivePower"][0]["timeSeries"]) == 144
    week = aggregated(client, **common, From="*-7d", To="*", Interval="1d")
    assert 7 <= len(week["objects"]["1000"]["points"]["ActivePower"][0]["timeSeries"]) <= 8


def test_timeseries_has_some_non_numeric_values(client: httpx.Client) -> None:
    body = aggregated(
        client,
        ObjectIds="1001",
        Points="WindSpeed",
        Aggregates="AVG",
        From="2024-01-01T00:00:00Z",
        To="2024-02-01T00:00:00Z",
        Interval="10m",
    )
    values = [item["v"] for item in body["objects"]["1001"]["points"]["WindSpeed"][0]["timeSeries"]]
    assert len(values) == 31 * 144
    strings = [value for value in values if isinstance(value, str)]
    assert strings
    assert set(strings) <= {"NaN", "Bad", "No Data"}
    assert len(strings) < len(values) / 100


def test_timeseries_errors_inside_http_200(client: httpx.Client) -> None:
    base = {"ObjectIds": "1001", "Points": "ActivePower", "From": "*-1d", "To": "*"}
    missing = aggregated(client, **base)
    assert missing["responseStatus"]["errorCode"] == "ArgumentException"
    assert "Aggregates" in missing["responseStatus"]["message"]
    unknown = aggregated(client, **{**base, "ObjectIds": "1001,999999", "Aggregates": "AVG"})
    assert unknown == {"replyInfo": {"error": "Object 999999 not found"}}
    too_many = aggregated(
        client, **{**base, "Aggregates": "AVG", "From": "2020-01-01", "To": "2024-01-01"}
    )
    assert "Too many values" in too_many["responseStatus"]["message"]
    bad_date = aggregated(client, **{**base, "Aggregates": "AVG", "From": "yesterday"})
    assert bad_date["responseStatus"]["errorCode"] == "ArgumentException"


# ---------------------------------------------------------------------- misbehaviours

SERIES = {
    "ObjectIds": "1001,1002",
    "Points": "ActivePower",
    "Aggregates": "AVG",
    "From": "2024-03-01T00:00:00Z",
    "To": "2024-03-01T06:00:00Z",
    "Interval": "1h",
}
MARCH_1 = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000


def _series(body: dict[str, Any], object_id: str = "1001") -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = body["objects"][object_id]["points"]["ActivePower"][0][
        "timeSeries"
    ]
    return values


def test_label_interval_end_shifts_every_timestamp_by_one_step(
    sb: Sandbox, client: httpx.Client
) -> None:
    normal = aggregated(client, **SERIES, TimeZone="America/Sao_Paulo")
    sb.faults("bazefield").misbehave("label_interval_end")
    shifted = aggregated(client, **SERIES, TimeZone="America/Sao_Paulo")
    for object_id in ("1001", "1002"):
        before, after = _series(normal, object_id), _series(shifted, object_id)
        assert [item["t"] for item in before] == [MARCH_1 + n * HOUR_MS for n in range(6)]
        assert [item["t"] for item in after] == [MARCH_1 + n * HOUR_MS for n in range(1, 7)]
        assert [item["v"] for item in after] == [item["v"] for item in before]
        assert after[0]["t_local"] == "2024-02-29T22:00:00-03:00"


def test_epoch_seconds_and_duplicate_timestamps(sb: Sandbox, client: httpx.Client) -> None:
    normal = _series(aggregated(client, **SERIES))
    faults = sb.faults("bazefield")
    faults.misbehave("epoch_seconds")
    seconds = _series(aggregated(client, **SERIES))
    assert [item["t"] * 1000 for item in seconds] == [item["t"] for item in normal]
    faults.behave("epoch_seconds")
    faults.misbehave("duplicate_timestamps")
    twice = _series(aggregated(client, **SERIES))
    assert twice == [item for item in normal for _ in range(2)]
    faults.behave()
    assert _series(aggregated(client, **SERIES)) == normal


def test_drop_object_empties_one_window_of_the_object(sb: Sandbox, client: httpx.Client) -> None:
    """The first request asking for the object whose range holds ``at`` loses it, and so does
    every later request of that window (a retry, another point group); others keep it."""
    faults = sb.faults("bazefield")
    faults.misbehave("drop_object", object="1002", at="2024-03-01T07:30:00Z")
    first = aggregated(client, **SERIES)  # 00:00-06:00 does not hold 07:30
    assert set(first["objects"]) == {"1001", "1002"}
    late = {**SERIES, "From": "2024-03-01T06:00:00Z", "To": "2024-03-01T12:00:00Z"}
    assert aggregated(client, **{**late, "ObjectIds": "1001"})["objects"].keys() == {"1001"}
    dropped = aggregated(client, **late)
    assert set(dropped["objects"]) == {"1001"}
    assert len(_series(dropped)) == 6
    assert set(aggregated(client, **{**late, "Points": "WindSpeed"})["objects"]) == {"1001"}
    assert set(aggregated(client, **SERIES)["objects"]) == {"1001", "1002"}
    assert faults.misbehaviour("drop_object") == {
        "object": "1002",
        "at": "2024-03-01T07:30:00Z",
        "dropped": "1002",
        "window": ["2024-03-01T06:00:00+00:00", "2024-03-01T12:00:00+00:00"],
    }


def test_drop_object_by_key_or_by_default_the_first_requested(
    sb: Sandbox, client: httpx.Client
) -> None:
    faults = sb.faults("bazefield")
    faults.misbehave("drop_object", object="aur-wtg02")  # the key of 1002, any case
    assert set(aggregated(client, **SERIES)["objects"]) == {"1001"}
    faults.reset()
    answer = client.post("/_sandbox/misbehave", json={"kind": "drop_object"})
    assert answer.json() == {"ok": True}
    assert set(aggregated(client, **SERIES)["objects"]) == {"1002"}
    assert set(aggregated(client, **{**SERIES, "ObjectIds": "1002,1001"})["objects"]) == {"1002"}
