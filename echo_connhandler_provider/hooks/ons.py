"""``OnsHook``: ONS SAGER / SINAPSE through :class:`echo_connhandler.OnsHttpHandler`."""

from __future__ import annotations

from echo_connhandler import OnsHttpConnProperties, OnsHttpHandler
from echo_connhandler_provider.hooks._base import HandlerHook

__all__ = ["OnsHook"]


class OnsHook(HandlerHook[OnsHttpHandler]):
    """Connection type ``ons``: user/password, ``login_target`` SAGER or SINAPSE.

    ``test_connection()`` runs the whole login (federation page, token, and for SINAPSE the
    profile selection): ONS offers no cheap read-only data call, and the token endpoint is where
    credentials are checked (docs/services/ons.md, "The login (POP identity provider, HIGH)").
    """

    conn_name_attr = "conn_id"
    default_conn_name = "ons_default"
    conn_type = "ons"
    hook_name = "ONS SAGER / SINAPSE"
    handler_class = OnsHttpHandler
    properties_class = OnsHttpConnProperties

    def _probe(self, handler: OnsHttpHandler) -> str:
        handler.reconnect()  # the connect step is the login
        target = handler.props.login_target
        profile = " and profile selected" if target == "SINAPSE" else ""
        return f"{target} login succeeded{profile}"
