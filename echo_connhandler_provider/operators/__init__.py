"""Operators of the provider: pulls into files (CCEE, Bazefield, ONS) and one HTTP request
(whose arguments, shared with the HTTP sensor, are :class:`HttpRequestArguments`')."""

from echo_connhandler_provider._requests import HttpRequestArguments
from echo_connhandler_provider.operators.http import EchoHttpOperator
from echo_connhandler_provider.operators.pull import (
    BazefieldTimeseriesOperator,
    CceeDatastoreOperator,
    OnsSagerReportOperator,
    OnsSinapseExportOperator,
    PullOperator,
)

__all__ = [
    "BazefieldTimeseriesOperator",
    "CceeDatastoreOperator",
    "EchoHttpOperator",
    "HttpRequestArguments",
    "OnsSagerReportOperator",
    "OnsSinapseExportOperator",
    "PullOperator",
]
