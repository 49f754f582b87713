"""Hooks of the provider, one per connection type (see the table in docs/airflow/hooks.md)."""

from echo_connhandler_provider.hooks.bazefield import BazefieldHook
from echo_connhandler_provider.hooks.ccee import CceeHook
from echo_connhandler_provider.hooks.http import EchoHttpHook
from echo_connhandler_provider.hooks.ons import OnsHook

__all__ = ["BazefieldHook", "CceeHook", "EchoHttpHook", "OnsHook"]
