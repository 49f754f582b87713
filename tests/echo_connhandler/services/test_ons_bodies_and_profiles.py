"""ONS request bodies, date format and profile-list shapes (narrow unit tests)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from echo_connhandler import OnsHttpConnProperties, OnsHttpHandler, ProfileSelectionError
from echo_connhandler._ons import (
    format_ons_datetime,
    profile_header_value,
    sager_report_body,
    sinapse_export_body,
)

BRT = timezone(timedelta(hours=-3))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01", "2024-01-01T00:00:00.000Z"),
        ("2024-01-01T12:30:45.5-03:00", "2024-01-01T15:30:45.500Z"),
        (date(2024, 2, 29), "2024-02-29T00:00:00.000Z"),
        (datetime(2024, 3, 1, 23, 0), "2024-03-01T23:00:00.000Z"),  # naive: taken as UTC
        (datetime(2024, 3, 1, 23, 0, tzinfo=BRT), "2024-03-02T02:00:00.000Z"),
        (datetime(2024, 3, 1, 1, 2, 3, 456789, tzinfo=UTC), "2024-03-01T01:02:03.456Z"),
    ],
)
def test_ons_dates_are_utc_with_milliseconds_and_z(value: Any, expected: str) -> None:
    """SAGER's format: ISO-8601 UTC, milliseconds, Z (docs/services/ons.md, "Exports")."""
    assert format_ons_datetime(value) == expected


def test_sager_body_has_every_field_with_defaults() -> None:
    """The body names every field of exportarRelatorio, filters empty by default."""
    assert sager_report_body("2024-01-01", date(2024, 1, 31), ids_usinas=[7]) == {
        "dataInicio": "2024-01-01T00:00:00.000Z",
        "dataFim": "2024-01-31T00:00:00.000Z",
        "tipoRelatorio": 1,
        "idsConjuntos": [],
        "idsUsinas": [7],
        "idsAgentes": [],
        "idsFontes": [],
        "apenasAgentesFavoritos": False,
        "periodoBase": None,
    }


def test_sager_body_refuses_an_unknown_report_type() -> None:
    """tipo_relatorio is 1 or 2."""
    with pytest.raises(ValueError, match="tipo_relatorio must be 1"):
        sager_report_body("2024-01-01", "2024-01-02", tipo_relatorio=3)


def test_sinapse_body_leaves_out_filters_not_given() -> None:
    """None filters are not sent."""
    body = sinapse_export_body("2024-01-01", "2024-01-02", origem="ONS", destino=None)
    assert body == {
        "periodoInicial": "2024-01-01T00:00:00.000Z",
        "periodoFinal": "2024-01-02T00:00:00.000Z",
        "origem": "ONS",
    }


def _sinapse_with_profiles(answer: Any) -> OnsHttpHandler:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            return httpx.Response(200, json={"access_token": "access-token-321", "expires_in": 900})
        if request.url.path.endswith("/perfis"):
            return httpx.Response(200, json=answer)
        return httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"})

    class Fake(OnsHttpHandler):
        def _client_settings(self) -> dict[str, Any]:
            return {**super()._client_settings(), "transport": httpx.MockTransport(handle)}

    props = OnsHttpConnProperties(
        host="https://sinapse.ons.test/api",
        user="u",
        password="pw-12345",
        login_target="SINAPSE",
        auth_url="https://sinapse.ons.test/ons.pop.federation",
        profile_url="https://sinapse.ons.test/api/perfis",
    )
    return Fake(props, skip_connect=True, max_retries=0, max_conn_retries=0)


@pytest.mark.parametrize(
    "answer",
    [[], {"perfis": []}, {"mensagem": "sem perfis"}, "texto", [{"perfil": "Apurador"}]],
)
def test_unexpected_profile_list_says_how_to_choose(answer: Any) -> None:
    """An empty list, a wrong shape or a profile missing keys: a clear ProfileSelectionError."""
    handler = _sinapse_with_profiles(answer)
    with pytest.raises(ProfileSelectionError, match="selected_profile"):
        handler.reconnect()


def test_profile_missing_keys_names_them() -> None:
    """A profile object without its scope cannot make a header: the error names what lacks."""
    with pytest.raises(ProfileSelectionError, match="tipoEscopo, idEscopo, nomeEscopo"):
        profile_header_value({"perfil": "Apurador"})


def test_profile_list_wrapped_in_an_object_is_accepted() -> None:
    """{"perfis": [one profile]} works like the bare list."""
    profile = {"perfil": "Apurador", "tipoEscopo": "AGENTES", "idEscopo": 9, "nomeEscopo": "E"}
    handler = _sinapse_with_profiles({"perfis": [profile]})
    handler.reconnect()
    assert handler._auth.profile == "Apurador%2FAGENTES%2F9%2FE"  # type: ignore[union-attr]
    handler.close()
