"""Triggers that watch CCEE Dados Abertos publications: one for a sensor, one for asset watchers.

Both are :class:`~echo_connhandler_provider.triggers.base.PollingTrigger`\\ s over the ``ccee``
connection: each poll reads the dataset through the CCEE handler's async path
(:meth:`~echo_connhandler.CceeHttpHandler.async_resources`: WAF warm-up, retries and typed errors
included), and what counts as a publication is the library's
(:func:`echo_connhandler.find_publication`: ``last_modified`` compared in UTC; a value that is
not a date, or lies more than :data:`~echo_connhandler.FUTURE_TOLERANCE` in the future, is
logged and ignored, so one bad resource neither ends a trigger nor hides the publications that
follow).

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
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseEventTrigger

from echo_connhandler import (
    CceeHttpHandler,
    dated_resources,
    find_publication,
    iso_utc,
    publication_after,
    usable_moment,
    utc_moment,
)
from echo_connhandler_provider._checks import check_dataset, year_or_none
from echo_connhandler_provider.triggers.base import PollingTrigger

__all__ = [
    "COMMIT_DELAY_S",
    "CceeDatasetUpdatedTrigger",
    "CceePublicationTrigger",
    "publication_key",
    "watched_state_stores",
]

#: Seconds a publication trigger waits, after an event, before it stores its new watermark: by
#: then the triggerer has handed the event to Airflow's database (it syncs about every second),
#: so a restart in between fires the event again rather than losing it.
COMMIT_DELAY_S = 5.0


def publication_key(dataset: str, year: int | None) -> str:
    """The asset state store key of a publication trigger's watermark."""
    return f"echo_connhandler.ccee_publication.{dataset}.{'all' if year is None else year}"


def watched_state_stores(store: Any) -> list[Any]:
    """The asset state store accessors of every asset a watcher watches (none: no store).

    The triggerer gives a watcher one ``AssetStateStoreAccessors`` for all the assets it
    watches (one trigger may serve several assets with the same arguments). Its public calls
    (``aget``/``aset``) serve a single asset only and it has no public list of its assets, so
    the accessors are read from its ``_by_name``/``_by_uri`` mappings, private in Airflow
    3.3: ``tests/echo_connhandler_provider/triggers/test_airflow_private_api.py`` pins that use
    to the Airflow versions pyproject.toml allows. Anything else is used as one accessor.
    """
    if store is None:
        return []
    by_name = getattr(store, "_by_name", None)
    by_uri = getattr(store, "_by_uri", None)
    if isinstance(by_name, dict) and isinstance(by_uri, dict):
        return [*by_name.values(), *by_uri.values()]
    return [store]


class _CceeTrigger(PollingTrigger):
    """The dataset (and year) a CCEE trigger polls."""

    conn_type = "ccee"
    dataset: str
    year: int | None

    @property
    def what(self) -> str:
        return self.dataset + (f" ({self.year})" if self.year is not None else "")

    async def resources(self, handler: CceeHttpHandler) -> list[Any]:
        return list(await handler.async_resources(self.dataset))


class CceeDatasetUpdatedTrigger(_CceeTrigger):
    """Polls a CCEE dataset until a resource was modified after ``updated_after``; fires once.

    Args:
        conn_id: the ``ccee`` connection (None: ``ccee_default``).
        dataset: the CKAN dataset (id or name).
        year: only the resource of this year (None: any resource of the dataset).
        updated_after: an ISO 8601 time (naive: UTC).
        polling: the polling's arguments (:class:`~echo_connhandler_provider.triggers.base.
            PollingTrigger`: ``poke_interval``, ``max_consecutive_errors``, ``started_at``,
            ``deadline``), as the sensor gives them.

    The event is ``{"status": "success", "publication": ...}`` (see
    :func:`echo_connhandler.publication_after`) or an error event (``error_type``, ``message``,
    ``consecutive_errors``).
    """

    def __init__(
        self,
        *,
        conn_id: str | None,
        dataset: str,
        year: int | None = None,
        updated_after: str,
        polling: Mapping[str, Any],
    ) -> None:
        super().__init__(conn_id=conn_id, **polling)
        self.dataset = check_dataset(dataset)
        self.year = year_or_none(year)
        self.updated_after = iso_utc(utc_moment(updated_after, "updated_after"))

    async def poll(self, handler: CceeHttpHandler) -> dict[str, Any] | None:
        found = find_publication(
            await self.resources(handler),
            dataset=self.dataset,
            year=self.year,
            after=utc_moment(self.updated_after, "updated_after"),
            log=self.log,
        )
        if found is None:
            self.log.info("%s: not updated after %s yet", self.what, self.updated_after)
            return None
        self.log.info(
            "%s was updated at %s (after %s): %s",
            self.what,
            found["last_modified"],
            self.updated_after,
            ", ".join(r["name"] for r in found["resources"]),
        )
        return {"status": "success", "publication": found}


class CceePublicationTrigger(_CceeTrigger, BaseEventTrigger):
    """Fires once per new CCEE publication of a dataset (or of one year's resource).

    For ``Asset(..., watchers=[AssetWatcher(name=..., trigger=CceePublicationTrigger(...))])``:
    each event creates one asset event, whose ``extra["payload"]`` is the publication (see
    :func:`echo_connhandler.publication_after`, plus ``previous``: the watermark before it).

    It polls ``package_show`` every ``poke_interval`` seconds and fires when the newest
    ``last_modified`` of the watched resources is later than its watermark: the newest
    ``last_modified`` it has announced, kept in the asset state store of the watched asset(s)
    under :func:`publication_key`, or ``updated_after`` if that is later. Without either, the
    first poll only records the current publication (no event).
    The new watermark is stored :data:`COMMIT_DELAY_S` seconds after the event (or at the next
    poll, if sooner): a triggerer restart in that window fires that publication again (at least
    once, never lost). Poll errors are logged and the polling goes on. A ``last_modified``
    that is not a date, or is more than :data:`~echo_connhandler.FUTURE_TOLERANCE` in the
    future, is logged (a warning naming the resource and the value) and ignored at every poll:
    it is no publication and never moves the watermark; a stored watermark that far in the
    future is ignored too.

    Args:
        dataset: the CKAN dataset (id or name).
        conn_id: the ``ccee`` connection (None: ``ccee_default``).
        year: only the resource of this year (None: any resource of the dataset).
        poke_interval: seconds between polls.
        updated_after: an ISO 8601 time (naive: UTC): the watermark when none is stored.
    """

    fires_once = False

    def __init__(
        self,
        *,
        dataset: str,
        conn_id: str | None = None,
        year: int | None = None,
        poke_interval: float = 300.0,
        updated_after: str | None = None,
    ) -> None:
        super().__init__(conn_id=conn_id, poke_interval=poke_interval, max_consecutive_errors=None)
        if self.poke_interval <= 0:
            raise ValueError("poke_interval must be > 0 for a publication trigger")
        self.dataset = check_dataset(dataset)
        self.year = year_or_none(year)
        self.updated_after = (
            None if updated_after is None else iso_utc(utc_moment(updated_after, "updated_after"))
        )
        self._accessors: list[Any] = []
        self._watermark: datetime | None = None
        self._to_commit: datetime | None = None

    # -- the watermark ---------------------------------------------------------------------------
    async def prepare(self) -> None:
        self._accessors = watched_state_stores(getattr(self, "asset_state_store", None))
        if not self._accessors:
            self.log.warning(
                "%s: no asset state store (not run by an AssetWatcher on Airflow >= 3.3): the "
                "publications announced are kept in memory only, and a restart starts again "
                "from updated_after (or from the publication found first)",
                self.what,
            )
        key = publication_key(self.dataset, self.year)
        stored = []
        for accessor in self._accessors:
            value = await accessor.aget(key)
            # A stored value that is no date, or lies in the future (stored from a bogus
            # last_modified before such values were ignored), would hide every publication.
            moment = None if value is None else usable_moment(value, f"Stored {key}", log=self.log)
            if moment is not None:
                stored.append(moment)
        floor = utc_moment(self.updated_after, "updated_after") if self.updated_after else None
        candidates = [m for m in (*stored, floor) if m is not None]
        self._watermark = max(candidates) if candidates else None
        self.log.info(
            "Watching %s for publications after %s",
            self.what,
            iso_utc(self._watermark) if self._watermark else "the current one",
        )

    async def _commit(self) -> None:
        if self._to_commit is not None:
            key = publication_key(self.dataset, self.year)
            for accessor in self._accessors:
                await accessor.aset(key, iso_utc(self._to_commit))
            self._to_commit = None

    async def poll(self, handler: CceeHttpHandler) -> dict[str, Any] | None:
        await self._commit()  # a watermark left from the previous poll (never before its event)
        dated = dated_resources(await self.resources(handler), self.year, log=self.log)
        newest = max((moment for _, moment in dated), default=None)
        watermark = self._watermark
        if newest is None:
            self.log.info("%s: no resource with a usable last_modified yet", self.what)
            return None
        if watermark is None:
            self._watermark = self._to_commit = newest
            self.log.info(
                "%s: the current publication (%s) is the starting point", self.what, iso_utc(newest)
            )
            await self._commit()
            return None
        found = publication_after(dated, dataset=self.dataset, year=self.year, after=watermark)
        if found is None:
            return None
        found["previous"] = iso_utc(watermark)
        self._watermark = self._to_commit = newest
        self.log.info(
            "%s: new publication at %s (%s)",
            self.what,
            found["last_modified"],
            ", ".join(r["name"] for r in found["resources"]),
        )
        return found

    async def fired(self) -> float:
        # The event is queued: store the watermark once Airflow has it.
        delay = min(COMMIT_DELAY_S, self.poke_interval)
        await asyncio.sleep(delay)
        await self._commit()
        return delay
