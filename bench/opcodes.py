"""Bytecodes and Python calls per request, by function, in a live in-process server.

``bench/instructions.py`` says how many instructions a request costs; this
says which Python functions run them.  It serves the requests of
``bench/instructions.py`` with scgiwsgi's single backend (a prefork
worker's loop, without the worker's timeout stamps) in a thread of this
process, on loopback, from ``--connections`` clients at once (1 by
default), and traces that thread with ``sys.settrace`` (opcode events)::

    python bench/opcodes.py                      # hello, top 40 functions
    python bench/opcodes.py --scenario post64k --top 60
    python bench/opcodes.py --connections 4      # clients at once, as under load

What a function runs per call is exact and the same on every run, but
which way the accept loop goes is not: whether the next connection is
queued when a request ends depends on timing, so the loop's functions
(``Backend._turn``, ``_accept_waiting``) move from run to run, by up to
10% of the total.  With 4 clients the queue is rarely empty, as under
load: the loop polls about once in 5 requests instead of every time
(about 1,580 bytecodes per hello against 1,705 with one client).
Nor is what one bytecode costs (a dict lookup is one, so is ``str.split``
of 50 fields).  The code measured is this checkout's
``scgiwsgi/``.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]

from apps import application  # noqa: E402
from instructions import scenario_requests, send_request  # noqa: E402

from scgiwsgi.backends.single import SingleBackend  # noqa: E402
from scgiwsgi.config import Config  # noqa: E402
from scgiwsgi.handler import ConnectionHandler  # noqa: E402
from scgiwsgi.sockets import bind_all  # noqa: E402

WARMUP = 50
SETTLE_SECONDS = 0.2


class _Counter:
    """A trace function counting opcodes and calls per code object, while on."""

    def __init__(self) -> None:
        self.on = False
        self.opcodes: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if not self.on:
            return None
        code = frame.f_code
        name = f"{Path(code.co_filename).name}:{code.co_qualname}"
        self.calls[name] += 1
        frame.f_trace_opcodes = True
        opcodes = self.opcodes

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                opcodes[name] += 1
            return local

        return local


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="hello", choices=("hello", "post64k"))
    parser.add_argument("--requests", type=int, default=300, help="requests traced (1..10000)")
    parser.add_argument("--top", type=int, default=40, help="functions listed")
    parser.add_argument("--connections", type=int, default=1, help="clients at once (1..16)")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 10_000:
        parser.error("--requests must be 1..10000")
    if not 1 <= args.connections <= 16:
        parser.error("--connections must be 1..16")
    request = scenario_requests()[args.scenario]
    config = Config()
    # Bound as the server binds (deferred accept included).
    listeners = bind_all(["127.0.0.1:0"], backlog=config.backlog, defer_accept=config.defer_accept)
    port = int(listeners[0].sock.getsockname()[1])
    handler = ConnectionHandler(application, config, multithread=False, multiprocess=True)
    backend = SingleBackend(listeners, handler, config)
    backend.shares_listeners = True
    counter = _Counter()

    def serve() -> None:
        sys.settrace(counter.trace)
        backend.serve_forever()

    def send(count: int) -> None:
        # With several clients the listen queue is rarely empty when a
        # request ends, as under load; with one it always is.
        with concurrent.futures.ThreadPoolExecutor(args.connections) as clients:
            for answer in clients.map(lambda _: send_request(port, request), range(count)):
                del answer

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        send(WARMUP)
        time.sleep(SETTLE_SECONDS)  # the loop waits in poll() again
        counter.on = True
        send(args.requests)
        # The server's work after the last answer (close, the next turn).
        time.sleep(SETTLE_SECONDS)
        counter.on = False
    finally:
        backend.shutdown()
        thread.join(10)
    total = sum(counter.opcodes.values()) / args.requests
    calls = sum(counter.calls.values()) / args.requests
    print(f"{args.scenario}: {total:.0f} bytecodes and {calls:.0f} Python calls per request")
    print(f"{'bytecodes':>9}  {'calls':>5}  function")
    for name, count in counter.opcodes.most_common(args.top):
        print(f"{count / args.requests:9.1f}  {counter.calls[name] / args.requests:5.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
