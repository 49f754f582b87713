"""Sensors of the provider: an HTTP endpoint through any provider connection, and CCEE
dataset updates."""

from echo_connhandler_provider.sensors.ccee import CceeDatasetUpdatedSensor
from echo_connhandler_provider.sensors.http import EchoHttpSensor

__all__ = ["CceeDatasetUpdatedSensor", "EchoHttpSensor"]
