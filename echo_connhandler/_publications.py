"""CCEE publications: which resources of a dataset were modified after a given time.

A *publication* is a change of a resource's ``last_modified`` in CKAN's ``package_show``
(docs/services/ccee.md, "Timestamps and publications"): CCEE republishes a dataset by updating
its resources, usually the current year's. CKAN writes ``last_modified`` naive, in UTC, so the
values are compared as aware UTC datetimes (:func:`~echo_connhandler._time.utc_moment`).

A ``last_modified`` that is not a date, or lies more than :data:`FUTURE_TOLERANCE` after the
current UTC time, is logged as a warning (naming the resource and the value) and ignored: one
bad resource must neither end a wait nor, for a future value, become a watermark that hides
every real publication until that date. Framework-free: a sensor, a trigger or a script calls
these with the resources of :meth:`~echo_connhandler.CceeHttpHandler.resources`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from echo_connhandler._ccee import CkanResource
from echo_connhandler._time import iso_utc, utc_moment

__all__ = [
    "FUTURE_TOLERANCE",
    "dated_resources",
    "find_publication",
    "publication_after",
    "usable_moment",
]

FUTURE_TOLERANCE = timedelta(hours=1)
"""How far after the current UTC time a ``last_modified`` may be and still count. An hour absorbs
clock skew between CKAN's server and ours; CKAN writes the value from its own UTC clock
(docs/services/ccee.md, "Timestamps and publications"), so a real publication is never later."""

_log = logging.getLogger(__name__)

#: One resource with its ``last_modified`` as an aware UTC datetime.
Dated = tuple[CkanResource, datetime]


def _excerpt(value: Any) -> str:
    """A bounded ``repr`` of a server's value for a log line (a bogus value may be long)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def usable_moment(
    value: Any, what: str, *, log: Any = None, now: datetime | None = None
) -> datetime | None:
    """``value`` as an aware UTC datetime, or None (logged on ``log``) when it is not a date or
    lies more than :data:`FUTURE_TOLERANCE` after ``now`` (default: the current UTC time).

    ``what`` names the value in the warning (``last_modified of pld_horario_2024``, a stored
    watermark's key).
    """
    logger = log if log is not None else _log
    try:
        moment = utc_moment(value, what)
    except (ValueError, OverflowError):
        logger.warning("%s %s is not a date; ignored", what, _excerpt(value))
        return None
    current = now if now is not None else datetime.now(UTC)
    if moment > current + FUTURE_TOLERANCE:
        logger.warning(
            "%s %s is more than %s in the future (now %s); ignored: it is no publication and "
            "does not move a watermark",
            what,
            _excerpt(value),
            FUTURE_TOLERANCE,
            iso_utc(current),
        )
        return None
    return moment


def dated_resources(
    resources: Iterable[CkanResource],
    year: int | None,
    *,
    log: Any = None,
    now: datetime | None = None,
) -> list[Dated]:
    """The resources of ``year`` (every one when None) with a usable ``last_modified``.

    A resource without a ``last_modified`` is left out silently (CKAN has none before the
    first upload); one whose value is not usable (see :func:`usable_moment`) is logged and
    left out.
    """
    dated = []
    for resource in resources:
        if year is not None and resource.year != year:
            continue
        if not resource.last_modified:
            continue
        what = f"Resource {resource.name} ({resource.id}): last_modified"
        moment = usable_moment(resource.last_modified, what, log=log, now=now)
        if moment is not None:
            dated.append((resource, moment))
    return dated


def publication_after(
    dated: Iterable[Dated], *, dataset: str, year: int | None, after: datetime | None
) -> dict[str, Any] | None:
    """The resources of ``dated`` modified after ``after`` (all of them when None), or None.

    The result is plain JSON (what a trigger event and an XCom carry): ``dataset``, ``year``,
    ``updated_after`` (``after``), ``last_modified`` (the newest, ISO 8601 UTC),
    ``resource_ids`` and ``resources`` (``id``, ``name``, ``year``, ``last_modified``), in the
    order of ``dated``.
    """
    found = [(resource, moment) for resource, moment in dated if after is None or moment > after]
    if not found:
        return None
    return {
        "dataset": dataset,
        "year": year,
        "updated_after": iso_utc(after) if after is not None else None,
        "last_modified": iso_utc(max(moment for _, moment in found)),
        "resource_ids": [resource.id for resource, _ in found],
        "resources": [
            {
                "id": resource.id,
                "name": resource.name,
                "year": resource.year,
                "last_modified": iso_utc(moment),
            }
            for resource, moment in found
        ],
    }


def find_publication(
    resources: Iterable[CkanResource],
    *,
    dataset: str,
    year: int | None,
    after: datetime | None,
    log: Any = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """:func:`publication_after` of :func:`dated_resources`: the publication after ``after``
    of the resources of ``year`` (any year when None), or None."""
    dated = dated_resources(resources, year, log=log, now=now)
    return publication_after(dated, dataset=dataset, year=year, after=after)
