"""Triggers of the provider: a whole pull in one trigger, and one HTTP request."""

from echo_connhandler_provider.triggers.pull import PullTrigger, RequestTrigger

__all__ = ["PullTrigger", "RequestTrigger"]
