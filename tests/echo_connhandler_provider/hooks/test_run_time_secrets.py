"""Run-time tokens are masked by the library in the process that logs them, not by Airflow.

Each scenario runs in a fresh interpreter whose logging Airflow configured as its trigger runner
and task runner do (``configure_logging(..., sending_to_supervisor=True)``: the records go to
the supervisor as JSON lines and this process masks nothing with Airflow's masker), with the
loggers cached on first use as outside tests. A real login against the sandbox obtains the
tokens; they are then printed through a trigger's ``self.log``, httpx's logger, the library's
and the provider's loggers, in messages, fields and tracebacks. The output must hold none of
them, and Airflow's masker must have gained no pattern.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import asyncio, io, json, logging, os, sys

from airflow.sdk.log import configure_logging

out = io.BytesIO() if JSON else io.StringIO()
configure_logging(
    json_output=JSON, output=out, sending_to_supervisor=True, colored_console_log=False
)

from airflow.sdk._shared.secrets_masker import _secrets_masker
from airflow.triggers.base import BaseTrigger, TriggerEvent

from echo_connhandler.sandbox import DEMO_CREDENTIALS, Sandbox
from echo_connhandler_provider.hooks import BazefieldHook


class ProbeTrigger(BaseTrigger):
    def serialize(self):
        return ("probe.ProbeTrigger", {})

    async def run(self):
        yield TriggerEvent({})


trigger = ProbeTrigger()
trigger.log.info("before any login")  # the logger is cached now, before our processor exists
patterns = len(_secrets_masker().patterns)


async def login(url):
    baze = DEMO_CREDENTIALS["bazefield"]
    os.environ["AIRFLOW_CONN_BAZE"] = json.dumps(
        {"conn_type": "bazefield", "host": url, "login": baze["user"], "password": baze["password"]}
    )
    hook = BazefieldHook("baze")
    handler = await hook.aget_conn()
    auth = handler._auth
    tokens = [auth._bearer, auth._session_id, *(c.value for c in auth.cookies.jar)]
    return hook, [t for t in tokens if t and len(t) >= 5]


with Sandbox() as sb:
    hook, tokens = asyncio.run(login(sb.urls.bazefield))
    with_password = len(_secrets_masker().patterns)
    token = tokens[0]
    trigger.log.info("bearer %s", token)  # a JWT: Airflow's redact_jwt masks it too
    trigger.log.info("session id %s", tokens[1])
    trigger.log.warning("session", session=tokens[1], cookies=tokens[2:], nested={"t": [token]})
    try:
        raise RuntimeError(f"refused: {token}") from ValueError(f"cause {tokens[1]}")
    except RuntimeError:
        trigger.log.exception("request failed")
    logging.getLogger("httpx").warning("HTTP Request: GET /x?sid=%s", token)
    logging.getLogger("echo_connhandler.retry").warning("retrying after %s", tokens[1])
    late = logging.getLogger("echo_connhandler_provider.triggers.created_late")
    asyncio.run(hook.aclose())
    hook2 = BazefieldHook("baze")
    handler2 = asyncio.run(hook2.aget_conn())  # a new login: the late logger is covered now
    late.warning("token %s", handler2._auth._bearer)
    tokens.append(handler2._auth._bearer)
    asyncio.run(hook2.aclose())

text = out.getvalue().decode() if JSON else out.getvalue()
print(json.dumps({
    "text": text,
    "tokens": tokens,
    "patterns_before_login": patterns,
    "patterns_with_password": with_password,
    "patterns_after": len(_secrets_masker().patterns),
}))
"""


def _run(airflow_home: str, json_output: bool) -> dict[str, object]:
    env = {
        key: value for key, value in os.environ.items() if key not in ("PYTEST_VERSION",)
    }  # outside tests, Airflow caches each logger on first use: the case to cover
    env.update(
        {
            "AIRFLOW_HOME": airflow_home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        }
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", f"JSON = {json_output!r}\n{SCRIPT}"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("json_output", [True, False], ids=["json-to-supervisor", "console"])
def test_run_time_tokens_masked_on_every_logger(airflow_home: str, json_output: bool) -> None:
    """Trigger's self.log (message, fields, traceback), httpx, library and provider loggers."""
    found = _run(airflow_home, json_output)
    text = str(found["text"])
    tokens = [str(t) for t in found["tokens"]]  # type: ignore[attr-defined]
    assert len(tokens) >= 4  # bearer, session id, cookies; the second login's bearer
    # Every line was written (the capture works), each with the token masked.
    for expected in (
        "session id ***",
        "request failed",
        "refused: ***",
        "sid=***",
        "retrying after ***",
        "token ***",
    ):
        assert expected in text, expected
    assert not [t[:6] for t in tokens if t in text]
    # The password went to Airflow's masker; no run-time token did, over two logins.
    assert found["patterns_with_password"] == found["patterns_after"]
