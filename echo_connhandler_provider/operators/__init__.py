"""Operators of the provider: pulls into files (CCEE, Bazefield, ONS) and one HTTP request."""

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
    "OnsSagerReportOperator",
    "OnsSinapseExportOperator",
    "PullOperator",
]
