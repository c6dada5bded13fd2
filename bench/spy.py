"""Where a live server spends its time under load, behind the real nginx.

Starts nginx and one peer (as ``bench/run.py`` does), drives one scenario
with wrk, and profiles the server in one of two ways::

    python bench/spy.py                    # py-spy on every process of scgiwsgi-fork
    python bench/spy.py --peer uwsgi --scenario post64k --top 30
    python bench/spy.py --cprofile         # CPU-time cProfile of scgiwsgi in-process
    python bench/spy.py --strace           # system calls per request (any peer)

``py-spy`` (any peer) samples wall-clock stacks of threads that are not
asleep.  A worker that is runnable but not on a CPU still counts, so on a
busy 2-core machine the frame that woke nginx (``sock.sendall``) collects
samples while nginx runs: read it as "where the worker waits for a CPU" as
much as "where it burns one".  Known idle frames (the accept loop's poll,
the arbiter's sleep) are left out of the percentages.

``--cprofile`` runs scgiwsgi's ``single`` backend (one process, one request
at a time, as a prefork worker) under :mod:`cProfile` with a CPU-time clock,
so only time on a CPU counts, system calls included.  cProfile's own cost
per call inflates small Python functions; compare functions with each other,
not with the req/s of ``bench/run.py``.

``--strace`` counts the system calls of every process of the peer
(``strace -c -f``) and divides by the requests served.  strace slows the
server down many times: the counts are right, the times are not.

``--rev GIT-REV`` profiles that commit's ``scgiwsgi/`` instead of the
working tree.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import install
from harness import SCENARIO_BY_NAME, Bench
from peers import PEER_NAMES, PEERS, Peer, process_tree

SPY_RATE = 200
IDLE_FRAMES = (
    "(selectors.py:",
    "Poller.poll (",
    "Arbiter._sleep",
    "(threading.py:",
    "sleep (",
)


def _aggregate(raw_files: list[Path]) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in raw_files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            if any(idle in frames[-1] for idle in IDLE_FRAMES):
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    return own, inclusive, total


def _print(title: str, counts: Counter[str], total: int, top: int, only: str = "") -> None:
    print(f"\n{title}")
    shown = 0
    for frame, count in counts.most_common():
        if only and only not in frame:
            continue
        print(f"{count / total:7.1%}  {frame}")
        shown += 1
        if shown >= top:
            break


def _spy(pids: list[int], seconds: int, out: Path) -> list[Path]:
    spy = str(install.VENV / "bin" / "py-spy")
    procs, files = [], []
    for pid in pids:
        path = out / f"{pid}.txt"
        argv = [spy, "record", "-p", str(pid), "-d", str(seconds), "-r", str(SPY_RATE)]
        argv += ["-f", "raw", "-o", str(path)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        files.append(path)
    for proc in procs:
        try:
            proc.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return [path for path in files if path.exists()]


def _serve_profiled(host: str, port: int, out: str) -> None:
    """The ``--cprofile`` server: scgiwsgi's single backend under cProfile."""
    import cProfile
    import time as clock

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from apps import application

    from scgiwsgi import WSGIServer

    server = WSGIServer(application, bind=f"{host}:{port}", backend="single")
    profiler = cProfile.Profile(clock.process_time)
    profiler.enable()
    try:
        server.serve_forever()
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def _profiled_peer(stats: Path) -> Peer:
    def argv(venv: Path, port: int) -> list[str]:
        script = str(Path(__file__).resolve())
        return [str(venv / "bin" / "python"), script, "--serve-profiled", str(port), str(stats)]

    return Peer("scgiwsgi-cprofile", "scgiwsgi single backend under cProfile", "scgi", argv)


def _run_cprofile(args: argparse.Namespace, out: Path, source: Path | None) -> int:
    import pstats

    stats = out / "profile.pstats"
    peer = _profiled_peer(stats)
    scenario = SCENARIO_BY_NAME[args.scenario]
    with Bench(install.VENV, [peer], [scenario], source) as bench:
        bench.start()
        if not bench.usable(peer.name, scenario.name):
            sys.exit(f"bench: the profiled server cannot serve {scenario.name}: {bench.problems()}")
        sample = bench.measure(peer.name, scenario.name, args.seconds, args.connections)
    # Leaving the block stopped the server, which wrote its statistics.
    print(f"scgiwsgi single backend under cProfile, {scenario.name}: {sample.requests} requests")
    if not stats.exists() or not sample.requests:
        return 1
    report = pstats.Stats(str(stats)).strip_dirs()
    report.sort_stats("tottime").print_stats(args.top)
    report.sort_stats("cumulative").print_stats(args.top)
    print(f"per request: divide the times above by {sample.requests}")
    return 0


def _run_strace(args: argparse.Namespace, source: Path | None) -> int:
    peer = next(p for p in PEERS if p.name == args.peer)
    scenario = SCENARIO_BY_NAME[args.scenario]
    with Bench(install.VENV, [peer], [scenario], source) as bench:
        bench.start()
        if not bench.usable(peer.name, scenario.name):
            sys.exit(f"bench: {peer.name} cannot serve {scenario.name}: {bench.problems()}")
        process = bench.procs[peer.name].proc
        assert process is not None
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            argv = ["strace", "-c", "-f", "-o", out.name]
            for pid in process_tree(process.pid):
                argv += ["-p", str(pid)]
            tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
            time.sleep(1)
            sample = bench.measure(peer.name, scenario.name, args.seconds, args.connections)
            tracer.send_signal(signal.SIGINT)
            try:
                tracer.wait(30)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait(10)
            table = out.read()
    print(f"{peer.name}, {scenario.name}: {sample.requests} requests under strace")
    if not sample.requests:
        return 1
    print(f"{'syscall':16} per request")
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            print(f"{fields[-1]:16} {int(fields[3]) / sample.requests:6.2f}")
        elif fields and fields[-1] == "total":
            print(f"{'total':16} {int(fields[3]) / sample.requests:6.2f}")
    return 0


def _run_py_spy(args: argparse.Namespace, source: Path | None) -> int:
    if not (install.VENV / "bin" / "py-spy").exists():
        sys.exit("bench: py-spy is not installed in bench/.venv")
    peer = next(p for p in PEERS if p.name == args.peer)
    scenario = SCENARIO_BY_NAME[args.scenario]
    with (
        Bench(install.VENV, [peer], [scenario], source) as bench,
        tempfile.TemporaryDirectory() as out,
    ):
        bench.start()
        if not bench.usable(peer.name, scenario.name):
            sys.exit(f"bench: {peer.name} cannot serve {scenario.name}: {bench.problems()}")
        process = bench.procs[peer.name].proc
        assert process is not None
        pids = process_tree(process.pid)
        load_seconds = args.seconds + 3
        url = f"http://127.0.0.1:{bench.port}/p/{peer.name}/{scenario.path}"
        wrk = subprocess.Popen(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{load_seconds}s", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        files = _spy(pids, args.seconds, Path(out))
        wrk_out, _ = wrk.communicate(timeout=load_seconds + 60)
        own, inclusive, total = _aggregate(files)
    rate = next((ln for ln in wrk_out.splitlines() if ln.startswith("Requests/sec")), "")
    print(f"{peer.name}, {scenario.name}: {total} busy samples from {len(files)} processes; {rate}")
    if not total:
        return 1
    _print("self (the function itself)", own, total, args.top)
    _print("inclusive, scgiwsgi frames", inclusive, total, args.top, only="scgiwsgi/")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-profiled"]:
        _serve_profiled("127.0.0.1", int(argv[1]), argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", default="scgiwsgi-fork", choices=PEER_NAMES[1:])
    parser.add_argument("--scenario", default="hello", choices=sorted(SCENARIO_BY_NAME))
    parser.add_argument("--seconds", type=int, default=8, help="sampling time (1..60)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--rev", metavar="GIT-REV", help="profile that commit's scgiwsgi/")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--cprofile", action="store_true", help="CPU-time cProfile of scgiwsgi (single backend)"
    )
    mode.add_argument("--strace", action="store_true", help="system calls per request")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 60:
        parser.error("--seconds must be 1..60")
    install.ensure_tools()
    install.ensure_venv()
    with tempfile.TemporaryDirectory(prefix="scgiwsgi-spy-") as out:
        source = None
        if args.rev:
            source = Path(out) / "src"
            print(f"scgiwsgi/ at {install.export_revision(args.rev, source)}")
        if args.cprofile:
            return _run_cprofile(args, Path(out), source)
        if args.strace:
            return _run_strace(args, source)
        return _run_py_spy(args, source)


if __name__ == "__main__":
    sys.exit(main())
