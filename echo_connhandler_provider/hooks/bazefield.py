"""``BazefieldHook``: Bazefield through :class:`echo_connhandler.BazeHttpHandler`."""

from __future__ import annotations

from echo_connhandler import BazeHttpHandler, bazefield_api_root
from echo_connhandler_provider.hooks._base import HandlerHook

__all__ = ["BazefieldHook"]


class BazefieldHook(HandlerHook[BazeHttpHandler]):
    """Connection type ``bazefield``: API key, or user/password (login on connect).

    ``test_connection()`` logs in (user/password) and reads ``allocationTypes``.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "bazefield_default"
    conn_type = "bazefield"
    hook_name = "Bazefield"
    handler_class = BazeHttpHandler

    def _probe(self, handler: BazeHttpHandler) -> str:
        # A full URL: the host may be the tenant root or the API root itself.
        response = handler.get(f"{bazefield_api_root(handler.props.host)}/allocationTypes")
        return f"login and allocationTypes read (HTTP {response.status_code})"
