"""Fixtures shared by the pull tests.

Each test module starts the sandbox it needs (its own ``sandbox`` fixture, module scope: the
rows per resource differ between modules); ``sb`` hands it to a test with its faults,
misbehaviours and counters reset before and after.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from echo_connhandler.sandbox import Sandbox


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.reset()
    yield sandbox
    sandbox.reset()
