"""A polling trigger's deadline: the sensor's timeout, carried by the trigger itself.

Deployed, Airflow ends a deferral at its timeout and fails the task with
:class:`AirflowSensorTimeout`. ``airflow dags test`` runs a trigger inline with no deferral
timeout, and resumes the task with the event alone (its next method gets no ``started_at``): a
sensor that is never satisfied would poll forever there. So the sensor gives its trigger the
first poke's time and the deadline (``started_at`` + ``timeout``); the trigger sleeps no later
than the deadline and, once it has passed, fires ``{"status": "timeout", ...}``; every event
carries ``started_at``, so the next method needs nothing else (docs/airflow/sensors.md,
"Timeouts").
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from echo_connhandler import utc_moment

__all__ = ["Deadline"]


def _moment(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be an ISO 8601 time or None, got {value!r}")
    return utc_moment(value, what)


class Deadline:
    """``started_at`` and ``deadline`` of a polling trigger (both optional ISO 8601 text)."""

    def __init__(self, started_at: str | None, deadline: str | None) -> None:
        self.started = _moment(started_at, "started_at")
        self.deadline = _moment(deadline, "deadline")

    def to_json(self) -> dict[str, str | None]:
        return {
            "started_at": None if self.started is None else self.started.isoformat(),
            "deadline": None if self.deadline is None else self.deadline.isoformat(),
        }

    def passed(self) -> bool:
        return self.deadline is not None and datetime.now(UTC) >= self.deadline

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, but not past the deadline."""
        if self.deadline is not None:
            seconds = min(seconds, max(0.0, (self.deadline - datetime.now(UTC)).total_seconds()))
        if seconds > 0:
            await asyncio.sleep(seconds)

    def event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` with the first poke's time, for the next method."""
        if self.started is not None:
            payload = {**payload, "started_at": self.started.isoformat()}
        return payload

    def timeout_event(self) -> dict[str, Any]:
        assert self.deadline is not None
        return self.event({"status": "timeout", "deadline": self.deadline.isoformat()})
