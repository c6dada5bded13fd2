"""Soak: many requests against one fork worker; its memory must stay flat.

``--fork --workers 1`` serves a mix of requests (GETs, 1 KiB POSTs, a
streamed generator response, an application that raises, a malformed
request) from two client threads.  The worker's RSS (``VmRSS`` in
/proc/PID/status) is read after a 2,000-request warm-up and at the end;
it must grow by less than 5 MiB.  Every response is compared byte for byte
with the first one of its kind, which was checked by parsing it, and the
worker must be the same process at the end (no crash, no recycling).

By default 10,000 requests follow the warm-up; ``SCGIWSGI_SLOW=1`` runs the
full 100,000 of the hardening issue.  Each run is bounded in time.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

from reliability_support import raw_request, rss_kib, run_clients, server_processes, wait_for

from scgiwsgi.client import parse_response
from scgiwsgi.protocol import encode_request

SLOW = os.environ.get("SCGIWSGI_SLOW") == "1"
WARM_UP = 2_000
REQUESTS = 100_000 if SLOW else 10_000
CLIENTS = 2
TIME_LIMIT = 240.0 if SLOW else 60.0
"""Seconds the measured requests may take (the run fails, not hangs, past it)."""
MAX_GROWTH_KIB = 5 * 1024

POST_BODY = bytes(range(256)) * 4
KINDS: dict[str, tuple[bytes, int]] = {
    "get": (encode_request({"REQUEST_URI": "/get?q=1", "QUERY_STRING": "q=1"}), 200),
    "post": (
        encode_request({"REQUEST_URI": "/post", "REQUEST_METHOD": "POST"}, POST_BODY),
        200,
    ),
    "stream": (encode_request({"REQUEST_URI": "/stream"}), 200),
    "raise": (encode_request({"REQUEST_URI": "/raise"}), 500),
    "malformed": (b"5:abcde,", 400),
}
# One cycle of 20 requests: 12 GET, 4 POST, 2 streamed, 1 raising app, 1 malformed.
CYCLE = ["get"] * 12 + ["post"] * 4 + ["stream"] * 2 + ["raise", "malformed"]


def _expected_responses(address: str) -> dict[str, bytes]:
    """The first response of each kind, checked by parsing it."""
    expected = {}
    for kind, (data, status) in KINDS.items():
        raw = raw_request(address, data)
        response = parse_response(raw)
        assert response.status == status, (kind, raw[:300])
        expected[kind] = raw
    assert parse_response(expected["stream"]).body == b"".join(
        b"part %d\n" % number for number in range(8)
    )
    return expected


def _hammer(address: str, count: int, expected: dict[str, bytes], seconds: float) -> list[str]:
    """Send ``count`` requests from CLIENTS threads; return what went wrong."""
    problems: list[str] = []
    kinds = itertools.cycle(CYCLE)
    lock = threading.Lock()
    remaining = [count]
    deadline = time.monotonic() + seconds

    def next_kind() -> str | None:
        with lock:
            if remaining[0] <= 0:
                return None
            remaining[0] -= 1
            return next(kinds)

    def client(_: int) -> None:
        while (kind := next_kind()) is not None and len(problems) < 10:
            if time.monotonic() > deadline:
                problems.append(f"time limit: {remaining[0]} requests not sent in {seconds}s")
                return
            try:
                raw = raw_request(address, KINDS[kind][0], timeout=10.0)
            except OSError as exc:
                problems.append(f"{kind}: {exc!r}")
                continue
            if raw != expected[kind]:
                problems.append(f"{kind}: unexpected response {raw[:200]!r}")

    problems.extend(repr(error) for error in run_clients(CLIENTS, client, seconds + 15.0))
    return problems


def test_worker_rss_stays_flat(tmp_path: Path) -> None:
    with server_processes(tmp_path) as start:
        server = start("--fork", "--workers", "1", app="tests/reliability_apps.py:soak")
        assert wait_for(lambda: len(server.workers()) == 1, 10.0), server.log
        (worker,) = server.workers()
        expected = _expected_responses(server.address)
        assert _hammer(server.address, WARM_UP, expected, TIME_LIMIT) == []
        before, arbiter_before = rss_kib(worker), rss_kib(server.pid)
        started = time.monotonic()
        problems = _hammer(server.address, REQUESTS, expected, TIME_LIMIT)
        took = time.monotonic() - started
        after, arbiter_after = rss_kib(worker), rss_kib(server.pid)
        assert server.workers() == {worker}, "the worker was replaced during the soak"
        tracebacks = server.log.count("RuntimeError: soak: the application failed on purpose")
    assert problems == []
    raising = sum(1 for kind in CYCLE if kind == "raise") / len(CYCLE)
    assert tracebacks == round((WARM_UP + REQUESTS) * raising) + 1
    growth = after - before
    print(
        f"\nsoak: {REQUESTS} requests in {took:.1f}s ({REQUESTS / took:.0f}/s) after "
        f"{WARM_UP} warm-up; worker RSS {before} -> {after} KiB ({growth:+d} KiB), "
        f"arbiter RSS {arbiter_before} -> {arbiter_after} KiB"
    )
    assert growth < MAX_GROWTH_KIB, f"the worker's RSS grew by {growth} KiB"
