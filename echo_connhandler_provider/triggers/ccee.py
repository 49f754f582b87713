"""Triggers that watch CCEE Dados Abertos publications: one for a sensor, one for asset watchers.

A *publication* is a change of a resource's ``last_modified`` in CKAN's ``package_show``
(docs/services/ccee.md, "Timestamps and publications"): CCEE republishes a dataset by updating
its resources, usually the current year's. Both triggers read the dataset through the CCEE
handler's async path (:meth:`~echo_connhandler.CceeHttpHandler.async_resources`: WAF warm-up,
retries and typed errors included), keep one connection for all their polls, and compare the
timestamps as aware UTC datetimes (CKAN writes them naive, in UTC). A ``last_modified`` that
is not a date, or lies more than :data:`FUTURE_TOLERANCE` in the future, is logged and ignored:
one bad resource neither ends a trigger nor hides the publications that follow.

* :class:`CceeDatasetUpdatedTrigger` (for :class:`~echo_connhandler_provider.sensors.ccee.
  CceeDatasetUpdatedSensor`) polls until a resource was modified after ``updated_after``, and
  fires once: the resources found, or the last error after ``max_consecutive_errors`` failed
  polls in a row.
* :class:`CceePublicationTrigger` (a :class:`~airflow.triggers.base.BaseEventTrigger`, for
  ``Asset(..., watchers=[AssetWatcher(...)])``) runs for as long as the asset is watched and
  fires once per new publication. What it has already fired for (its *watermark*: the newest
  ``last_modified`` it announced) is not in its keyword arguments, which never change (they are
  the watcher's identity, see :meth:`BaseEventTrigger.hash`); it is kept in Airflow's asset state
  store (Airflow >= 3.3, ``self.asset_state_store``, injected by the triggerer into a watcher),
  so a restarted triggerer, which builds the trigger again from the same arguments, does not
  fire again for a publication it has announced. See docs/airflow/sensors.md, "Publication-driven
  scheduling" for the guarantees and their limits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from echo_connhandler import CceeHttpHandler, CkanResource, EchoHttpError, redact
from echo_connhandler_provider._deadline import Deadline
from echo_connhandler_provider.triggers.pull import error_payload, hook_for, parse_moment

__all__ = [
    "FUTURE_TOLERANCE",
    "CceeDatasetUpdatedTrigger",
    "CceePublicationTrigger",
    "dated_resources",
    "find_publication",
    "parse_ckan_time",
    "publication_key",
]

#: Seconds a publication trigger waits, after an event, before it stores its new watermark: by
#: then the triggerer has handed the event to Airflow's database (it syncs about every second),
#: so a restart in between fires the event again rather than losing it.
COMMIT_DELAY_S = 5.0
#: How far after the current UTC time a ``last_modified`` may be and still count. A resource
#: dated later is logged and ignored: a bogus future value would otherwise become the
#: watermark and hide every real publication until that date. An hour absorbs clock skew
#: between CKAN's server and ours; CKAN writes the value from its own UTC clock
#: (docs/services/ccee.md, "Timestamps and publications"), so a real publication is never later.
FUTURE_TOLERANCE = timedelta(hours=1)

_log = logging.getLogger(__name__)


def parse_ckan_time(value: Any, what: str = "time") -> datetime:
    """An aware UTC datetime from a CKAN timestamp, an ISO string, a datetime or a date.

    A naive value is UTC: CKAN writes ``last_modified`` naive, in UTC (docs/services/ccee.md,
    "Timestamps and publications"); a date is its UTC midnight.
    """
    moment = parse_moment(value, what)
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time(), tzinfo=UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _check_year(year: Any) -> int | None:
    if year is None or year == "":
        return None
    if isinstance(year, bool):
        raise ValueError(f"year must be a whole number or None, got {year!r}")
    try:
        return int(str(year).strip())
    except ValueError:
        raise ValueError(f"year must be a whole number or None, got {year!r}") from None


def _check_dataset(dataset: Any) -> str:
    if not isinstance(dataset, str) or not dataset.strip():
        raise ValueError(f"dataset must be a CKAN dataset id or name, got {dataset!r}")
    return dataset.strip()


def _check_interval(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{what} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _check_errors(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_consecutive_errors must be an integer >= 1, got {value!r}")
    return value


def _watched(resources: Iterable[CkanResource], year: int | None) -> list[CkanResource]:
    return [r for r in resources if year is None or r.year == year]


def _excerpt(value: Any) -> str:
    """A bounded ``repr`` of a server's value for a log line (a bogus value may be long)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def dated_resources(
    resources: Iterable[CkanResource],
    year: int | None,
    *,
    log: Any = None,
    now: datetime | None = None,
) -> list[tuple[CkanResource, datetime]]:
    """The watched resources with their ``last_modified`` as aware UTC datetimes.

    A resource without a ``last_modified`` is left out. So is one whose value is not a date,
    and one dated more than :data:`FUTURE_TOLERANCE` after ``now`` (default: the current UTC
    time): either is logged as a warning on ``log`` (this module's logger when None), naming
    the resource and the value, and never becomes a publication. A bogus value must not end a
    trigger (the doc promises that polling goes on) nor, for a future one, become a watermark
    that hides every real publication until that date (docs/services/ccee.md, "Timestamps and
    publications": CKAN's values are naive UTC, so "the future" is measured in UTC).
    """
    logger = log if log is not None else _log
    limit = (now if now is not None else datetime.now(UTC)) + FUTURE_TOLERANCE
    dated = []
    for resource in _watched(resources, year):
        value = resource.last_modified
        if not value:
            continue
        try:
            moment = parse_ckan_time(value, f"last_modified of {resource.name}")
        except (ValueError, OverflowError):
            logger.warning(
                "Resource %s (%s): last_modified %s is not a date; this resource is skipped "
                "until it has one",
                resource.name,
                resource.id,
                _excerpt(value),
            )
            continue
        if moment > limit:
            logger.warning(
                "Resource %s (%s): last_modified %s is more than %s in the future (now %s);"
                " ignored: it is no publication and does not move the watermark",
                resource.name,
                resource.id,
                _excerpt(value),
                FUTURE_TOLERANCE,
                _iso(limit - FUTURE_TOLERANCE),
            )
            continue
        dated.append((resource, moment))
    return dated


def newest_modified(
    resources: Iterable[CkanResource],
    year: int | None,
    *,
    log: Any = None,
    now: datetime | None = None,
) -> datetime | None:
    """The newest usable ``last_modified`` among the watched resources (None: none has one).

    Values that are not dates or too far in the future are skipped (see
    :func:`dated_resources`).
    """
    moments = [moment for _, moment in dated_resources(resources, year, log=log, now=now)]
    return max(moments) if moments else None


def find_publication(
    resources: Sequence[CkanResource],
    *,
    dataset: str,
    year: int | None,
    after: datetime | None,
    log: Any = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The watched resources modified after ``after`` (all of them when None), or None.

    The result is plain JSON (what a trigger event and an XCom carry): ``dataset``, ``year``,
    ``updated_after`` (``after``), ``last_modified`` (the newest, ISO 8601 UTC),
    ``resource_ids`` and ``resources`` (``id``, ``name``, ``year``, ``last_modified``), oldest
    year first. A ``last_modified`` that is not a date, or is more than
    :data:`FUTURE_TOLERANCE` in the future, is logged on ``log`` and ignored (see
    :func:`dated_resources`).
    """
    dated = dated_resources(resources, year, log=log, now=now)
    return _publication(dated, dataset=dataset, year=year, after=after)


def _publication(
    dated: Iterable[tuple[CkanResource, datetime]],
    *,
    dataset: str,
    year: int | None,
    after: datetime | None,
) -> dict[str, Any] | None:
    found = [(resource, moment) for resource, moment in dated if after is None or moment > after]
    if not found:
        return None
    return {
        "dataset": dataset,
        "year": year,
        "updated_after": _iso(after) if after is not None else None,
        "last_modified": _iso(max(moment for _, moment in found)),
        "resource_ids": [resource.id for resource, _ in found],
        "resources": [
            {
                "id": resource.id,
                "name": resource.name,
                "year": resource.year,
                "last_modified": _iso(moment),
            }
            for resource, moment in found
        ],
    }


def publication_key(dataset: str, year: int | None) -> str:
    """The asset state store key of a publication trigger's watermark."""
    return f"echo_connhandler.ccee_publication.{dataset}.{'all' if year is None else year}"


class CceeDatasetUpdatedTrigger(BaseTrigger):
    """Polls a CCEE dataset until a resource was modified after ``updated_after``; fires once.

    Args:
        conn_id: the ``ccee`` connection (None: ``ccee_default``).
        dataset: the CKAN dataset (id or name).
        year: only the resource of this year (None: any resource of the dataset).
        updated_after: an ISO 8601 time (naive: UTC).
        poke_interval: seconds between polls (after every poll, errors included).
        max_consecutive_errors: failed polls in a row that end the wait with the last error.

    The event is ``{"status": "success", "publication": ...}`` (see :func:`find_publication`)
    or an error event (``error_type``, ``message``, ``consecutive_errors``).
    """

    def __init__(
        self,
        *,
        conn_id: str | None,
        dataset: str,
        year: int | None = None,
        updated_after: str,
        poke_interval: float = 60.0,
        max_consecutive_errors: int = 3,
        started_at: str | None = None,
        deadline: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.conn_id = conn_id
        self.dataset = _check_dataset(dataset)
        self.year = _check_year(year)
        self.updated_after = _iso(parse_ckan_time(updated_after, "updated_after"))
        self.poke_interval = _check_interval(poke_interval, "poke_interval")
        self.max_consecutive_errors = _check_errors(max_consecutive_errors)
        self.timing = Deadline(started_at, deadline)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "dataset": self.dataset,
                "year": self.year,
                "updated_after": self.updated_after,
                "poke_interval": self.poke_interval,
                "max_consecutive_errors": self.max_consecutive_errors,
                **self.timing.to_json(),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        after = parse_ckan_time(self.updated_after)
        what = f"{self.dataset}" + (f" ({self.year})" if self.year is not None else "")
        hook = hook_for("ccee", self.conn_id)
        errors = 0
        timing = self.timing
        try:
            while True:
                if timing.passed():
                    self.log.info("%s: the sensor's timeout has passed", what)
                    yield TriggerEvent(timing.timeout_event())  # type: ignore[no-untyped-call]
                    return
                try:
                    handler: CceeHttpHandler = await hook.aget_conn()
                    resources = await handler.async_resources(self.dataset)
                except EchoHttpError as exc:
                    errors += 1
                    payload = error_payload(exc)
                    self.log.warning(
                        "Reading %s failed (%d of %d consecutive errors): %s: %s",
                        what,
                        errors,
                        self.max_consecutive_errors,
                        payload["error_type"],
                        payload["message"],
                    )
                    if errors >= self.max_consecutive_errors:
                        failed = timing.event({**payload, "consecutive_errors": errors})
                        yield TriggerEvent(failed)  # type: ignore[no-untyped-call]
                        return
                else:
                    errors = 0
                    found = find_publication(
                        resources, dataset=self.dataset, year=self.year, after=after, log=self.log
                    )
                    if found is not None:
                        self.log.info(
                            "%s was updated at %s (after %s): %s",
                            what,
                            found["last_modified"],
                            self.updated_after,
                            ", ".join(r["name"] for r in found["resources"]),
                        )
                        success = timing.event({"status": "success", "publication": found})
                        yield TriggerEvent(success)  # type: ignore[no-untyped-call]
                        return
                    self.log.info("%s: not updated after %s yet", what, self.updated_after)
                await timing.sleep(self.poke_interval)
        finally:
            await hook.aclose()


class CceePublicationTrigger(BaseEventTrigger):
    """Fires once per new CCEE publication of a dataset (or of one year's resource).

    For ``Asset(..., watchers=[AssetWatcher(name=..., trigger=CceePublicationTrigger(...))])``:
    each event creates one asset event, whose ``extra["payload"]`` is the publication (see
    :func:`find_publication`, plus ``previous``: the watermark before it).

    It polls ``package_show`` every ``poke_interval`` seconds and fires when the newest
    ``last_modified`` of the watched resources is later than its watermark: the newest
    ``last_modified`` it has announced, kept in the asset state store of the watched asset(s)
    under :func:`publication_key`, or ``updated_after`` if that is later. Without either, the
    first poll only records the current publication (no event).
    The new watermark is stored :data:`COMMIT_DELAY_S` seconds after the event (or at the next
    poll, if sooner): a triggerer restart in that window fires that publication again (at least
    once, never lost). Poll errors are logged and the polling goes on. A ``last_modified``
    that is not a date, or is more than :data:`FUTURE_TOLERANCE` in the future, is logged (a
    warning naming the resource and the value) and ignored at every poll: it is no
    publication and never moves the watermark (see :func:`dated_resources`); a stored
    watermark that far in the future is ignored too.

    Args:
        dataset: the CKAN dataset (id or name).
        conn_id: the ``ccee`` connection (None: ``ccee_default``).
        year: only the resource of this year (None: any resource of the dataset).
        poke_interval: seconds between polls.
        updated_after: an ISO 8601 time (naive: UTC): the watermark when none is stored.
    """

    def __init__(
        self,
        *,
        dataset: str,
        conn_id: str | None = None,
        year: int | None = None,
        poke_interval: float = 300.0,
        updated_after: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.dataset = _check_dataset(dataset)
        self.conn_id = conn_id
        self.year = _check_year(year)
        self.poke_interval = _check_interval(poke_interval, "poke_interval")
        if self.poke_interval <= 0:
            raise ValueError("poke_interval must be > 0 for a publication trigger")
        self.updated_after = (
            None if updated_after is None else _iso(parse_ckan_time(updated_after, "updated_after"))
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dataset": self.dataset,
                "conn_id": self.conn_id,
                "year": self.year,
                "poke_interval": self.poke_interval,
                "updated_after": self.updated_after,
            },
        )

    # -- the watermark ---------------------------------------------------------------------------
    def _accessors(self) -> list[Any]:
        """The asset state store accessors of the watched asset(s) (none outside a watcher)."""
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return []
        by_name = getattr(store, "_by_name", None)
        by_uri = getattr(store, "_by_uri", None)
        if isinstance(by_name, dict) and isinstance(by_uri, dict):
            # One trigger may watch several assets (same arguments): read and write them all.
            return [*by_name.values(), *by_uri.values()]
        return [store]

    async def _stored_watermark(self, accessors: list[Any]) -> datetime | None:
        key = publication_key(self.dataset, self.year)
        limit = datetime.now(UTC) + FUTURE_TOLERANCE
        moments = []
        for accessor in accessors:
            value = await accessor.aget(key)
            if value is None:
                continue
            try:
                moment = parse_ckan_time(value, f"stored {key}")
            except (ValueError, OverflowError):
                self.log.warning("Stored %s %s is not a date; ignored", key, _excerpt(value))
                continue
            if moment > limit:
                # Stored from a bogus future last_modified (before such values were ignored):
                # kept, it would hide every publication until that date.
                self.log.warning(
                    "Stored %s %s is more than %s in the future; ignored",
                    key,
                    _excerpt(value),
                    FUTURE_TOLERANCE,
                )
                continue
            moments.append(moment)
        return max(moments) if moments else None

    async def _store_watermark(self, accessors: list[Any], moment: datetime) -> None:
        key = publication_key(self.dataset, self.year)
        for accessor in accessors:
            await accessor.aset(key, _iso(moment))

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> AsyncIterator[TriggerEvent]:
        what = f"{self.dataset}" + (f" ({self.year})" if self.year is not None else "")
        accessors = self._accessors()
        if not accessors:
            self.log.warning(
                "%s: no asset state store (not run by an AssetWatcher on Airflow >= 3.3): the "
                "publications announced are kept in memory only, and a restart starts again "
                "from updated_after (or from the publication found first)",
                what,
            )
        floor = parse_ckan_time(self.updated_after) if self.updated_after is not None else None
        stored = await self._stored_watermark(accessors)
        candidates = [m for m in (stored, floor) if m is not None]
        watermark = max(candidates) if candidates else None
        to_commit: datetime | None = None
        self.log.info(
            "Watching %s for publications after %s",
            what,
            _iso(watermark) if watermark else "the current one",
        )
        hook = hook_for("ccee", self.conn_id)
        try:
            while True:
                try:
                    handler: CceeHttpHandler = await hook.aget_conn()
                    resources = await handler.async_resources(self.dataset)
                except EchoHttpError as exc:
                    self.log.warning(
                        "Reading %s failed, polling again in %s s: %s: %s",
                        what,
                        self.poke_interval,
                        type(exc).__name__,
                        redact(str(exc)),
                    )
                    resources = None
                # Values that are not dates or lie in the future are logged and left out here,
                # so that they neither end the trigger nor move the watermark.
                dated = (
                    dated_resources(resources, self.year, log=self.log)
                    if resources is not None
                    else []
                )
                newest = max((moment for _, moment in dated), default=None)
                if resources is not None and newest is None:
                    self.log.info("%s: no resource with a usable last_modified yet", what)
                elif newest is not None and watermark is None:
                    watermark = to_commit = newest
                    self.log.info(
                        "%s: the current publication (%s) is the starting point",
                        what,
                        _iso(newest),
                    )
                elif newest is not None and watermark is not None and newest > watermark:
                    found = _publication(
                        dated, dataset=self.dataset, year=self.year, after=watermark
                    )
                    if found is not None:
                        found["previous"] = _iso(watermark)
                        watermark = to_commit = newest
                        self.log.info(
                            "%s: new publication at %s (%s)",
                            what,
                            found["last_modified"],
                            ", ".join(r["name"] for r in found["resources"]),
                        )
                        yield TriggerEvent(found)  # type: ignore[no-untyped-call]
                        # The event is queued: store the watermark once Airflow has it.
                        delay = min(COMMIT_DELAY_S, self.poke_interval)
                        await asyncio.sleep(delay)
                        await self._commit(accessors, to_commit)
                        to_commit = None
                        await asyncio.sleep(self.poke_interval - delay)
                        continue
                if to_commit is not None:
                    await self._commit(accessors, to_commit)
                    to_commit = None
                await asyncio.sleep(self.poke_interval)
        finally:
            await hook.aclose()

    async def _commit(self, accessors: list[Any], moment: datetime) -> None:
        if accessors:
            await self._store_watermark(accessors, moment)
