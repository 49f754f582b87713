"""Restart drills on the real local deployment: kill a process in the middle of a pull.

The drills run on the session's shared deployment, after the demo's DAGs and before its stop
(``conftest.py``: ``run_restart_drills``, where the DAGs, the kill moments and the request
counting are): the triggerer killed mid-pull and started again, a task process killed mid-pull
(the retry resumes), and a deferred POST without ``idempotent=True`` refused before deferring.
Each pull's output is compared byte for byte with an uninterrupted pull of the same source.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.deployment, pytest.mark.xdist_group("deployment")]


@pytest.fixture(scope="module")
def drills(shared_deployment: Any) -> dict[str, Any]:
    """What the drills saw on the session's deployment."""
    return dict(shared_deployment.drills_or_fail())


def _report(name: str, drill: Any, drills: dict[str, Any]) -> None:
    refetched = sorted(i for i, key in enumerate(drill.plan) if drill.pages.get(key, 0) > 1)
    print(
        f"\n{name}: killed the {drill.killed} at {len(drill.done_at_kill)}/{len(drill.plan)} "
        f"chunks; try {drill.ti.get('try_number')}, {drill.ti.get('state')}; "
        f"summary: {drill.summary.get('chunks')} chunks, {drill.summary.get('chunks_resumed')} "
        f"resumed, {drill.summary.get('rows')} rows, {drill.summary.get('retries')} retries; "
        f"page requests {sum(drill.pages.values())} (fetched twice: {len(refetched)} chunks "
        f"{refetched}), planning probes {drill.probes}; drills {drills['seconds']:.0f} s, "
        f"blocked-loop warnings {len(drills['blocked_loop_warnings'])}"
    )


def _check_resumed(drill: Any) -> None:
    """The pull finished from its checkpoint: the same bytes as an uninterrupted pull, every
    chunk fetched, the chunks done before the kill never again, fewer than 2 requests per
    chunk."""
    assert drill.ti["state"] == "success", drill.ti
    assert len(drill.plan) == drill.expected_chunks
    assert drill.summary["chunks"] == drill.expected_chunks
    assert drill.summary["rows"] == drill.expected_rows
    assert drill.summary["chunks_resumed"] == len(drill.done_at_kill) > 0
    assert drill.output_bytes, "no output"
    assert drill.output_bytes == drill.reference_bytes
    assert drill.leftovers == [], "a checkpoint or temporary file was left"
    counts = [drill.pages.get(key, 0) for key in drill.plan]
    assert all(n >= 1 for n in counts), counts
    assert all(counts[i] == 1 for i in drill.done_at_kill), counts
    assert all(n <= 2 for n in counts), counts
    assert sum(counts) < 2 * drill.expected_chunks
    assert set(drill.pages) == set(drill.plan), "a page outside the plan was requested"


def test_triggerer_killed_mid_pull_resumes_in_the_same_try(drills: dict[str, Any]) -> None:
    drill = drills["triggerer"]
    _report("triggerer restart", drill, drills)
    assert drill.killed == "triggerer"
    assert drill.deferred, "the pull did not run in the triggerer"
    assert drill.ti["try_number"] == 1, "a triggerer restart must not use a task try"
    _check_resumed(drill)
    # The planning probes (2 per resource) ran once: the resumed trigger read the manifest.
    assert drill.probes == 2 * len(drill.years)


def test_worker_killed_mid_pull_retry_resumes(drills: dict[str, Any]) -> None:
    drill = drills["worker"]
    _report("worker kill", drill, drills)
    assert drill.killed == "task process"
    assert not drill.deferred
    assert drill.try_at_kill == 1
    assert drill.ti["try_number"] == 2, "the retry did not run"
    _check_resumed(drill)
    assert drill.probes == 2 * len(drill.years)


def test_non_idempotent_post_is_never_deferred(drills: dict[str, Any]) -> None:
    """Refused in ``execute`` before deferring: no trigger, so no restart can replay it."""
    drill = drills["post"]
    print(f"\nPOST: {drill.ti.get('state')}, {drills['posts_sent']} POSTs received")
    assert drill.ti["state"] == "failed"
    assert drill.ti["try_number"] == 1
    assert not drill.deferred
    assert "a deferred POST needs idempotent=True" in drills["post_log"]
    assert drills["posts_sent"] == 0
    # No trigger of the drills ever held the POST (the captured rows, decrypted).
    assert not [k for k in drills["trigger_rows"] if "timeseries/aggregated" in k]
