"""Command line: ``python -m echo_connhandler.sandbox``.

Starts the Bazefield, CCEE and ONS emulators on loopback ports, prints their base URLs and the
made-up sandbox credentials, and runs until Ctrl-C or SIGTERM. Options::

    --host 127.0.0.1      address to bind (keep it on loopback)
    --port-base 0         0 = free ports chosen by the OS; N = Bazefield N, CCEE N+1, ONS N+2
    --seed 42             seed of the generated data and of the random faults
    --ccee-rows N         rows of every CCEE datastore table (default: natural size)
    --ons-expires-in S    lifetime of ONS access tokens in seconds (default 1199)
    --latency-ms MS       latency added to every request (default 0)
    --ccee-publish-every S  republish the newest CCEE resources every S seconds (default: never)
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ._config import DEMO_CREDENTIALS, SandboxConfig
from ._faults import MISBEHAVIOURS
from ._server import Sandbox


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m echo_connhandler.sandbox",
        description="Run local emulators of Bazefield, CCEE Dados Abertos and ONS.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument(
        "--port-base",
        type=int,
        default=0,
        help="0 = free ports; N = Bazefield on N, CCEE on N+1, ONS on N+2",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of data and faults")
    parser.add_argument(
        "--ccee-rows", type=int, default=None, help="rows per CCEE table (default: natural)"
    )
    parser.add_argument(
        "--ons-expires-in", type=int, default=1199, help="ONS access token lifetime (s)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency per request")
    parser.add_argument(
        "--ccee-publish-every",
        type=float,
        default=None,
        metavar="S",
        help="republish the newest year's CCEE resources every S seconds (default: never)",
    )
    parser.add_argument(
        "--misbehave",
        action="append",
        default=[],
        metavar="SERVICE:KIND[:KEY=VALUE,...]",
        help=(
            "make an emulator misbehave from the start (repeatable), e.g. ccee:ignore_offset, "
            "ccee:republish:after=5, bazefield:drop_object:object=1001; see docs/sandbox.md"
        ),
    )
    return parser


def _misbehaviour(text: str) -> tuple[str, str, dict[str, object]]:
    """``service:kind[:key=value,...]`` -> (service, kind, options); ValueError when bad."""
    service, _, rest = text.partition(":")
    kind, _, raw = rest.partition(":")
    if not service or not kind:
        raise ValueError(f"--misbehave {text!r}: expected SERVICE:KIND[:KEY=VALUE,...]")
    options: dict[str, object] = {}
    for pair in filter(None, raw.split(",")):
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ValueError(f"--misbehave {text!r}: option {pair!r} is not KEY=VALUE")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    return service, kind, options


def _banner(sandbox: Sandbox) -> str:
    urls = sandbox.urls
    lines = [
        f"echo_connhandler sandbox running (seed {sandbox.config.seed}). Ctrl-C to stop.",
        "",
        "Base URLs:",
        f"  bazefield:       {urls.bazefield}   (API under /BazeField.Services/api/)",
        f"  ccee:            {urls.ccee}   (CKAN under /api/3/action/; warm up with GET /)",
        f"  ons_auth_url:    {urls.ons_auth_url}",
        f"  ons_sager:       {urls.ons_sager}",
        f"  ons_sinapse:     {urls.ons_sinapse}",
        f"  ons_profile_url: {urls.ons_profile_url}",
        "",
        "MADE-UP SANDBOX CREDENTIALS (accepted only by these local emulators, not real accounts):",
    ]
    every = sandbox.config.ccee_publish_every
    if every is not None:
        at = next(i for i, line in enumerate(lines) if line.startswith("  ccee:")) + 1
        lines.insert(
            at, f"                   (newest year's resources republished every {every:g} s)"
        )
    for service, values in DEMO_CREDENTIALS.items():
        pairs = ", ".join(f"{key}={value}" for key, value in values.items()) or "(none needed)"
        lines.append(f"  {service}: {pairs}")
    lines += [
        "",
        "Admin endpoints on every base (no auth): POST /_sandbox/faults, /_sandbox/script,",
        "/_sandbox/expire-tokens, /_sandbox/block-waf, /_sandbox/reset, /_sandbox/reset-stats;",
        "POST /_sandbox/misbehave; GET /_sandbox/stats; on CCEE, POST /_sandbox/publish",
    ]
    active = [
        f"{name}:{kind}"
        for name in ("bazefield", "ccee", "ons")
        for kind in sorted(MISBEHAVIOURS[name])
        if sandbox.faults(name).misbehaviour(kind) is not None
    ]
    if active:
        lines += ["", "MISBEHAVING on purpose (wrong data, answered 200): " + ", ".join(active)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox until Ctrl-C / SIGTERM; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = SandboxConfig(
            host=args.host,
            seed=args.seed,
            ccee_rows_per_resource=args.ccee_rows,
            ons_expires_in=args.ons_expires_in,
            latency_ms=args.latency_ms,
            ccee_publish_every=args.ccee_publish_every,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    sandbox = Sandbox(config, port_base=args.port_base)
    try:
        misbehaviours = [_misbehaviour(text) for text in args.misbehave]
        for service, kind, _ in misbehaviours:
            if service not in MISBEHAVIOURS or kind not in MISBEHAVIOURS[service]:
                known = ", ".join(
                    f"{s}:{k}" for s in MISBEHAVIOURS for k in sorted(MISBEHAVIOURS[s])
                )
                raise ValueError(f"--misbehave {service}:{kind}: unknown; known: {known}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        signal.signal(signal.SIGTERM, previous)
        return 2
    try:
        sandbox.start()
        for service, kind, options in misbehaviours:
            sandbox.faults(service).misbehave(kind, **options)
        print(_banner(sandbox), flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
        signal.signal(signal.SIGTERM, previous)
    print("sandbox stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
