"""``EchoHttpHook``: any REST API through :class:`echo_connhandler.HttpHandler`."""

from __future__ import annotations

from echo_connhandler import HttpHandler
from echo_connhandler_provider.hooks._base import HandlerHook

__all__ = ["EchoHttpHook"]


class EchoHttpHook(HandlerHook[HttpHandler]):
    """Connection type ``echo_http``: base URL, API key or user/password, headers, payload.

    ``test_connection()`` GETs the ``health_endpoint`` extra (default: the base URL) and
    accepts any 2xx/3xx answer.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "echo_http_default"
    conn_type = "echo_http"
    hook_name = "Echo HTTP"
    handler_class = HttpHandler
