"""``CceeHook``: CCEE Dados Abertos through :class:`echo_connhandler.CceeHttpHandler`."""

from __future__ import annotations

from echo_connhandler import CceeHttpHandler
from echo_connhandler_provider.hooks._base import HandlerHook

__all__ = ["CceeHook"]


class CceeHook(HandlerHook[CceeHttpHandler]):
    """Connection type ``ccee``: no credentials; the handler warms up the WAF on connect.

    The host defaults to ``https://dadosabertos.ccee.org.br``. ``test_connection()`` warms up
    and calls the CKAN ``package_list`` action.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "ccee_default"
    conn_type = "ccee"
    hook_name = "CCEE Dados Abertos"
    handler_class = CceeHttpHandler

    def _probe(self, handler: CceeHttpHandler) -> str:
        datasets = handler.package_list()
        return f"WAF warm-up passed and package_list listed {len(datasets)} datasets"
