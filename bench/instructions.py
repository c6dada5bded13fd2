"""Instructions per request of a live server, counted by valgrind: a noise-free A/B.

On a shared machine, timings of one revision against another move by more
than the change being measured.  The number of machine instructions a server
runs per request does not: this tool runs a peer under valgrind's callgrind
(every process of it), sends it the same requests nginx sends (from
``bench/micro.py``) over loopback from ``--connections`` clients at once
(each one request per connection, as nginx does), and counts the
user-space instructions of its serving processes.  Two runs, with W and W+N
requests, are subtracted, so start-up and warm-up cancel out::

    python bench/instructions.py                       # scgiwsgi-fork and floor
    python bench/instructions.py --baseline HEAD~3     # and scgiwsgi at HEAD~3
    python bench/instructions.py --peers scgiwsgi-fork,uwsgi --scenarios hello

What it counts: instructions in user space (the interpreter, C extensions,
libc), in the server's processes other than the first one (the arbiter,
master or parent, which does not serve).  What it does not: time in the
kernel, cache misses, waiting.  Read it beside ``bench/run.py``'s CPU per
request, not instead of it.  Under valgrind a server runs about 50 times
slower, so a run takes a minute or two per peer.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import install
from peers import BASELINE, PEERS, Peer, baseline_peer

BENCH_DIR = Path(__file__).resolve().parent
START_TIMEOUT = 180.0
REQUEST_TIMEOUT = 60.0
_TOTALS_RE = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def scenario_requests() -> dict[str, bytes]:
    """The SCGI requests of each scenario: nginx's GET from micro.py, and a 64 KiB POST."""
    sys.argv, argv = sys.argv[:1], sys.argv  # micro.py reads --rev at import
    try:
        import micro
    finally:
        sys.argv = argv
    headers = dict(micro.NGINX_HEADERS)
    body = b"p" * (64 * 1024)
    headers.update(
        {
            b"CONTENT_LENGTH": str(len(body)).encode(),
            b"REQUEST_METHOD": b"POST",
            b"REQUEST_URI": b"/app/post",
            b"DOCUMENT_URI": b"/app/post",
            b"QUERY_STRING": b"",
            b"CONTENT_TYPE": b"application/octet-stream",
        }
    )
    block = b"".join(name + b"\0" + value + b"\0" for name, value in headers.items())
    return {"hello": micro.REQUEST, "post64k": b"%d:%s,%s" % (len(block), block, body)}


def send_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as conn:
        conn.sendall(request)
        parts = []
        while data := conn.recv(65536):
            parts.append(data)
    answer = b"".join(parts)
    if not answer.startswith((b"Status: 200", b"HTTP/1.1 200")):
        raise RuntimeError(f"unexpected answer: {answer[:120]!r}")
    return answer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serving_instructions(out_dir: Path, top_pid: int) -> int:
    """Instructions of every process but ``top_pid`` (the arbiter, master or parent)."""
    total = 0
    for path in out_dir.glob("cg.*"):
        if path.name == f"cg.{top_pid}":
            continue
        match = _TOTALS_RE.search(path.read_bytes())
        if match:
            total += int(match.group(1))
    return total


def count(
    argv: list[str], env: dict[str, str], request: bytes, requests: int, connections: int
) -> int:
    """Run ``argv`` under callgrind, send ``requests`` requests; its serving instructions.

    With one connection the listen queue is empty whenever a request ends,
    as at ``bench/run.py``'s latency scenario; with several it rarely is,
    as under load.
    """
    port = _free_port()
    argv = [part.replace("{port}", str(port)) for part in argv]
    out_dir = Path(tempfile.mkdtemp(prefix="scgiwsgi-ir-"))
    command = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out_dir}/cg.%p",
        *argv,
    ]
    log = open(out_dir / "log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        _wait_ready(port, request, server, out_dir)
        with concurrent.futures.ThreadPoolExecutor(connections) as clients:
            for answer in clients.map(lambda _: send_request(port, request), range(requests)):
                del answer
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        # Children write their counts when they exit, after the top process.
        time.sleep(2)
    try:
        return _serving_instructions(out_dir, server.pid)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _wait_ready(port: int, request: bytes, server: subprocess.Popen[bytes], out_dir: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log = (out_dir / "log").read_text(errors="replace")
            raise RuntimeError(f"the server exited: {log[-2000:]}")
        try:
            send_request(port, request)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server did not answer within {START_TIMEOUT:.0f} s")


def _with_port(peer: Peer, venv: Path) -> list[str]:
    """The peer's command line with ``{port}`` where its port goes."""
    if peer.argv is None:
        raise SystemExit(f"instructions: {peer.name} has no process to count")
    marker = 65531
    return [part.replace(str(marker), "{port}") for part in peer.argv(venv, marker)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="scgiwsgi-fork,floor", help="comma-separated peers")
    parser.add_argument("--scenarios", default="hello,post64k", help="hello, post64k")
    parser.add_argument("--baseline", metavar="GIT-REV", help="add scgiwsgi --fork at this commit")
    parser.add_argument("--rev", metavar="GIT-REV", help="count this commit's scgiwsgi/")
    parser.add_argument("--python", metavar="PATH", help="the peers' interpreter (bench/run.py)")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted (N)")
    parser.add_argument("--warmup", type=int, default=100, help="requests before them (W)")
    parser.add_argument("--connections", type=int, default=4, help="clients at once (1..16)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("instructions: valgrind is not installed (apt-get install valgrind)")
    if not 1 <= args.requests <= 100_000 or not 1 <= args.warmup <= 10_000:
        parser.error("--requests must be 1..100000 and --warmup 1..10000")
    if not 1 <= args.connections <= 16:
        parser.error("--connections must be 1..16")
    requests = scenario_requests()
    scenarios = args.scenarios.split(",")
    unknown = set(scenarios) - set(requests)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    by_name = {peer.name: peer for peer in PEERS}
    temp = Path(tempfile.mkdtemp(prefix="scgiwsgi-ir-src-"))
    try:
        peers = _chosen_peers(args, by_name, temp)
        env = _environment(args.rev, temp)
        print(f"{'scenario':9} {'peer':24} {'instructions/request':>21}")
        for scenario in scenarios:
            for name, peer_argv in peers:
                request = requests[scenario]
                few = count(peer_argv, env, request, args.warmup, args.connections)
                more = count(peer_argv, env, request, args.warmup + args.requests, args.connections)
                print(f"{scenario:9} {name:24} {(more - few) / args.requests:21,.0f}", flush=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


def _chosen_peers(
    args: argparse.Namespace, by_name: dict[str, Peer], temp: Path
) -> list[tuple[str, list[str]]]:
    venv = install.venv_for(args.python)
    chosen: list[tuple[str, list[str]]] = []
    for name in args.peers.split(","):
        if name not in by_name:
            raise SystemExit(f"instructions: unknown peer {name!r}")
        if not all(by_name[name].serves(s) for s in args.scenarios.split(",")):
            only = ", ".join(by_name[name].scenarios)
            raise SystemExit(f"instructions: peer {name} runs only {only}")
        chosen.append((name, _with_port(by_name[name], venv)))
    if args.baseline:
        source = temp / "baseline"
        commit = install.export_revision(args.baseline, source)
        chosen.append((f"{BASELINE}@{commit}", _with_port(baseline_peer(source, commit), venv)))
    return chosen


def _environment(rev: str | None, temp: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts every run
    if rev:
        source = temp / "rev"
        print(f"scgiwsgi/ at {install.export_revision(rev, source)}")
        env["PYTHONPATH"] = str(source)
    return env


if __name__ == "__main__":
    sys.exit(main())
