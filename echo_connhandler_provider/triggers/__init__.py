"""Triggers of the provider: a whole pull in one trigger, one HTTP request, an HTTP sensor's
polling, and CCEE publications (a sensor's wait, and an asset watcher's events). Their bases
(:class:`~echo_connhandler_provider.triggers.base.EchoTrigger`,
:class:`~echo_connhandler_provider.triggers.base.PollingTrigger`) are in
:mod:`echo_connhandler_provider.triggers.base`."""

from echo_connhandler_provider.triggers.base import EchoTrigger, PollingTrigger
from echo_connhandler_provider.triggers.ccee import (
    CceeDatasetUpdatedTrigger,
    CceePublicationTrigger,
)
from echo_connhandler_provider.triggers.http import EchoHttpSensorTrigger
from echo_connhandler_provider.triggers.pull import PullTrigger, RequestTrigger

__all__ = [
    "CceeDatasetUpdatedTrigger",
    "CceePublicationTrigger",
    "EchoHttpSensorTrigger",
    "EchoTrigger",
    "PollingTrigger",
    "PullTrigger",
    "RequestTrigger",
]
