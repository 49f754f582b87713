"""Streamed downloads: the body goes to the sink, every attempt starts it afresh, errors are
raised and never written."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from echo_connhandler import HttpStatusError, UnexpectedContentError


def test_download_streams_the_final_answer_only(make_handler: Any, key: str) -> None:
    """A 503 first (retried), then the body: the sink holds exactly the answer that succeeded."""
    handler = make_handler()
    sink = io.BytesIO(b"stale bytes from before")
    response = handler.download("GET", f"flaky/{key}/1", sink)
    assert response.status_code == 200
    body = json.loads(sink.getvalue())
    assert body["attempt"] == 2
    assert not response.is_closed or response.is_stream_consumed


async def test_async_download_streams_the_final_answer_only(
    make_async_handler: Any, key: str
) -> None:
    handler = make_async_handler()
    sink = io.BytesIO()
    response = await handler.async_download("GET", f"flaky/{key}/2", sink)
    assert response.status_code == 200
    assert json.loads(sink.getvalue())["attempt"] == 3


def test_an_error_status_is_raised_not_written(make_handler: Any) -> None:
    handler = make_handler(max_retries=0)
    sink = io.BytesIO()
    with pytest.raises(HttpStatusError) as info:
        handler.download("GET", "status/404", sink)
    assert info.value.status_code == 404
    assert '"status"' in str(info.value)  # the excerpt was read for the message
    assert sink.getvalue() == b""


async def test_an_html_page_is_not_a_file(make_async_handler: Any) -> None:
    handler = make_async_handler(max_retries=0)
    sink = io.BytesIO()
    with pytest.raises(UnexpectedContentError, match="HTML"):
        await handler.async_download("GET", "html", sink)
    assert sink.getvalue() == b""


def test_a_large_body_arrives_whole(make_handler: Any, key: str) -> None:
    """A 3 MB request body echoed back is streamed to the sink byte for byte."""
    handler = make_handler()
    payload = "x" * 3_000_000
    sink = io.BytesIO()
    handler.download("POST", f"echo-{key}", sink, content=payload)
    assert json.loads(sink.getvalue())["body"] == payload
