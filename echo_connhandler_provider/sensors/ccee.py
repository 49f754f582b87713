"""``CceeDatasetUpdatedSensor``: wait until a CCEE dataset (or one year's resource) is updated.

Each poll reads the dataset's resources (``package_show`` through the ``ccee`` connection's
handler: WAF warm-up, retries and typed errors included) and is done when a watched resource's
``last_modified`` is later than ``updated_after``. CKAN writes ``last_modified`` naive, in UTC
(docs/services/ccee.md, "Timestamps and publications"): it is compared as UTC, and a naive
``updated_after`` is UTC too. A year whose resource does not exist yet is "not yet". A
``last_modified`` that is not a date, or is more than :data:`~echo_connhandler.FUTURE_TOLERANCE`
(an hour) in the future, is logged as a warning and ignored: the sensor neither fails on it nor
is done because of it.

The task's XCom says what was found (see :func:`echo_connhandler.publication_after`):
``dataset``, ``year``, ``updated_after``, ``last_modified`` (the newest), ``resource_ids`` and
``resources`` (``id``, ``name``, ``year``, ``last_modified``), so that a downstream
:class:`~echo_connhandler_provider.operators.CceeDatastoreOperator` can read exactly those
resources (``resource_ids="{{ ti.xcom_pull('wait')['resource_ids'] }}"``).

Deferred, a :class:`~echo_connhandler_provider.triggers.ccee.CceeDatasetUpdatedTrigger` polls
from the triggerer on the handler's async path and fires once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from airflow.sdk import Context, PokeReturnValue

from echo_connhandler import EchoHttpError, find_publication, utc_moment
from echo_connhandler_provider._checks import check_dataset, year_or_none
from echo_connhandler_provider._defaults import default_deferrable
from echo_connhandler_provider.hooks import CceeHook
from echo_connhandler_provider.sensors._base import EchoSensor, utcnow
from echo_connhandler_provider.triggers.ccee import CceeDatasetUpdatedTrigger

__all__ = ["CceeDatasetUpdatedSensor"]


class CceeDatasetUpdatedSensor(EchoSensor):
    """Waits until a CCEE dataset (or one year's resource) was modified after a given time.

    Args:
        dataset: the CKAN dataset (``pld_horario``).
        conn_id: a ``ccee`` connection (default ``ccee_default``).
        year: only the resource of this year (an int, or text from a template); None: any
            resource of the dataset.
        updated_after: the time to beat: a datetime, a date (its UTC midnight) or an ISO 8601
            string (a template: ``"{{ data_interval_end }}"``); naive means UTC. None (default):
            the run's ``data_interval_end``.
        max_consecutive_errors: failed polls in a row after which the task fails with the last
            error (default 3).
        deferrable: poll from the triggerer.
        **kwargs: the arguments of ``BaseSensorOperator`` (``poke_interval``, ``timeout``,
            ``soft_fail``, ``mode``, ...) and ``BaseOperator``.

    Returns (XCom): the resources modified after ``updated_after`` and the newest
    ``last_modified`` (see the module).
    """

    template_fields: Sequence[str] = ("conn_id", "dataset", "year", "updated_after")
    ui_color = "#e6f2ec"

    def __init__(
        self,
        *,
        dataset: str,
        conn_id: str | None = None,
        year: int | str | None = None,
        updated_after: datetime | date | str | None = None,
        max_consecutive_errors: int = 3,
        deferrable: bool = default_deferrable(),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            max_consecutive_errors=max_consecutive_errors, deferrable=deferrable, **kwargs
        )
        check_dataset(dataset)
        if not (year is None or isinstance(year, str)):
            year_or_none(year)  # a bad value fails when the DAG is parsed
        if updated_after is not None and not isinstance(updated_after, datetime | date | str):
            raise TypeError(
                "updated_after must be a datetime, a date, an ISO 8601 string or None, got "
                f"{updated_after!r}"
            )
        if isinstance(updated_after, datetime | date):
            utc_moment(updated_after, "updated_after")
        self.dataset = dataset
        self.conn_id = conn_id
        self.year = year
        self.updated_after = updated_after

    def _after(self, context: Context) -> datetime:
        value: Any = self.updated_after
        if value is None or (isinstance(value, str) and not value.strip()):
            value = context.get("data_interval_end")
        if value is None:
            raise ValueError(
                f"{type(self).__name__}: give updated_after (this run has no data interval end "
                "to take it from)"
            )
        return utc_moment(value, "updated_after")

    def _what(self) -> str:
        year = year_or_none(self.year)
        return f"{self.dataset}" + (f" ({year})" if year is not None else "")

    # -- in the worker ---------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        if self.deferrable:
            after = self._after(context)
            self.log.info("Deferring: waiting for %s to be updated after %s", self._what(), after)
            started = utcnow()
            self.defer_polling(self._trigger(after, started), started)
        return super().execute(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        after = self._after(context)
        year = year_or_none(self.year)
        try:
            if self._hook is None:
                self._hook = CceeHook(self.conn_id)
            resources = self._hook.get_conn().resources(self.dataset)
        except EchoHttpError as exc:
            self.poll_failed(context, exc)
            return False
        self.poll_answered(context)
        # A last_modified that is not a date or lies in the future is logged and ignored
        # there: the sensor neither crashes on it nor fires for it.
        found = find_publication(
            resources, dataset=self.dataset, year=year, after=after, log=self.log
        )
        if found is None:
            self.log.info("%s: not updated after %s yet", self._what(), after.isoformat())
            return False
        self.log.info(
            "%s was updated at %s: %s",
            self._what(),
            found["last_modified"],
            ", ".join(r["name"] for r in found["resources"]),
        )
        return PokeReturnValue(is_done=True, xcom_value=found)

    # -- deferred --------------------------------------------------------------------------------
    def _trigger(self, after: datetime, started: datetime) -> CceeDatasetUpdatedTrigger:
        return CceeDatasetUpdatedTrigger(
            conn_id=self.conn_id,
            dataset=self.dataset,
            year=year_or_none(self.year),
            updated_after=after.isoformat(),
            polling=self.polling(started),
        )

    def execute_complete(
        self,
        context: Context,
        event: Mapping[str, Any] | None = None,
        started_at: str | None = None,
    ) -> dict[str, Any]:
        """Resume after the trigger: what was found, or the last poll's error raised again."""
        if event is None:
            raise RuntimeError(f"{type(self).__name__} resumed without a trigger event")
        self.resumed(event, started_at)
        found: dict[str, Any] = dict(event["publication"])
        self.log.info("%s was updated at %s", self._what(), found["last_modified"])
        return found
