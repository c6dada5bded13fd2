"""Side-by-side benchmark of scgiwsgi and its peers behind one nginx.

One command installs what is missing, runs everything on loopback, stops
every process it started and prints the report::

    python bench/run.py                # 3 rounds of 5 s per peer and scenario (~12 min)
    python bench/run.py --quick        # 1 short round: a smoke test
    python bench/run.py --rounds 5 --duration 10 --peers scgiwsgi-threaded,uwsgi
    python bench/run.py --peers scgiwsgi-fork --baseline HEAD~3   # two revisions, one run
    python bench/run.py --python /usr/bin/python3.11   # the peers on another interpreter
    python bench/run.py --report bench/results/run-XXXX.json   # print a saved run again

Peers alternate inside every round (the order rotates from round to round)
so machine drift spreads over all of them.  Each measurement is one wrk run
against nginx; the CPU time of the peer's process tree and of nginx's is
read from /proc before and after.  Raw samples and the report go to
``bench/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import install
import report
from harness import SCENARIOS, Bench, Sample
from peers import BASELINE, BENCH_DIR, PEER_NAMES, PEERS, REPO_ROOT, baseline_peer

RESULTS = BENCH_DIR / "results"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s: a smoke test")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--warmup", type=int, default=1, help="warm-up seconds per peer and scenario (0: none)"
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="wrk connections (default 8; latency: 1)"
    )
    parser.add_argument("--peers", default=",".join(PEER_NAMES), help="comma-separated peers")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated scenarios",
    )
    parser.add_argument(
        "--rev",
        metavar="GIT-REV",
        help="measure scgiwsgi/ as of this commit (default: the working tree)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT-REV",
        help=f"add peer {BASELINE}: scgiwsgi --fork as of this commit, to compare two revisions",
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="run the Python peers on this interpreter (default: the one running this)",
    )
    parser.add_argument("--no-install", action="store_true", help="never install anything")
    parser.add_argument(
        "--report", metavar="JSON", help="print a saved run (bench/results/run-*.json) again"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=25.0, help="stop starting runs after this long"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2, 1
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60 or not 0 <= args.warmup <= 10:
        parser.error("--rounds must be 1..20, --duration 1..60 s, --warmup 0..10 s")
    known = set(PEER_NAMES)
    args.peer_list = [name for name in args.peers.split(",") if name]
    if args.baseline and BASELINE not in args.peer_list:
        args.peer_list.append(BASELINE)
    known.add(BASELINE)
    if unknown := set(args.peer_list) - known:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEER_NAMES)}")
    names = {s.name for s in SCENARIOS}
    args.scenario_list = [name for name in args.scenarios.split(",") if name]
    if unknown := set(args.scenario_list) - names:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(names)}")
    return args


def _git_revision(exported: str | None) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip()

    if exported:
        return f"{exported} (exported with --rev)"
    dirty = (
        " + uncommitted changes in scgiwsgi/" if git("status", "--porcelain", "scgiwsgi") else ""
    )
    return "working tree at " + git("rev-parse", "--short", "HEAD") + dirty


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "?"


def _meta(
    args: argparse.Namespace, versions: dict[str, str | None], exported: str | None
) -> dict[str, object]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPUs, {_cpu_model()}; Linux {platform.release()}",
        "python": versions.get("python") or platform.python_version(),
        "scgiwsgi_revision": _git_revision(exported),
        "versions": {
            **{k: v for k, v in versions.items() if k not in ("scgiwsgi_path", "python")},
            **install.tool_versions(),
        },
        "load_average_at_start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "rounds": args.rounds,
        "duration": args.duration,
        "connections": args.connections,
    }


def _schedule(args: argparse.Namespace, bench: Bench, round_index: int) -> list[tuple[str, str]]:
    # Rotate the peer order each round, and alternate peers inside a scenario,
    # so slow drift of the shared machine lands on every peer alike.
    peers = [name for name in args.peer_list if bench.available(name)]
    shift = round_index % len(peers) if peers else 0
    peers = peers[shift:] + peers[:shift]
    return [(scenario, peer) for scenario in args.scenario_list for peer in peers]


def _measure_all(args: argparse.Namespace, bench: Bench, deadline: float) -> list[Sample]:
    samples: list[Sample] = []
    if args.warmup > 0:
        print(f"warm-up: {args.warmup}s per peer and scenario", flush=True)
        for scenario, peer in _schedule(args, bench, 0):
            if scenario != "latency" and bench.usable(peer, scenario):
                bench.measure(peer, scenario, args.warmup, args.connections)
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}", flush=True)
        for scenario, peer in _schedule(args, bench, round_index):
            if time.monotonic() > deadline:
                print("time limit reached: remaining runs skipped", flush=True)
                return samples
            if not bench.usable(peer, scenario):
                continue
            sample = bench.measure(peer, scenario, args.duration, args.connections)
            sample = dataclasses.replace(sample, round=round_index + 1)
            samples.append(sample)
            print(f"  {report.one_line(sample)}", flush=True)
    return samples


def _rerender(path: Path) -> int:
    """Print the report of a saved run (``bench/results/run-*.json``) again."""
    raw = json.loads(path.read_text())
    fields = {field.name for field in dataclasses.fields(Sample)}
    samples = [Sample(**{k: v for k, v in item.items() if k in fields}) for item in raw["samples"]]
    names = {sample.peer for sample in samples} | set(raw["processes"])
    peers = [peer for peer in PEERS if peer.name in names]
    if BASELINE in names:
        peers.append(baseline_peer(None, raw["meta"].get("baseline_revision", "?")))
    scenarios = [s for s in SCENARIOS if any(sample.scenario == s.name for sample in samples)]
    text, rst = report.render(
        raw["meta"], samples, raw["processes"], raw["problems"], peers, scenarios
    )
    print(text)
    path.with_suffix(".rst").write_text(rst)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.report:
        return _rerender(Path(args.report))
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    venv = install.venv_for(args.python)
    if not args.no_install:
        install.ensure_tools()
        versions = install.ensure_venv(args.python)
    else:
        versions = install.probe(venv)
    if not versions:
        sys.exit(f"bench: no virtualenv at {venv}; run without --no-install")
    # SIGTERM must reach the cleanup below, which stops every process started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    peers = [peer for peer in PEERS if peer.name in args.peer_list]
    scenarios = [s for s in SCENARIOS if s.name in args.scenario_list]
    with (
        tempfile.TemporaryDirectory(prefix="scgiwsgi-src-") as source,
        tempfile.TemporaryDirectory(prefix="scgiwsgi-base-") as base_source,
    ):
        exported = install.export_revision(args.rev, Path(source)) if args.rev else None
        meta = _meta(args, versions, exported)
        if args.baseline:
            base = install.export_revision(args.baseline, Path(base_source))
            meta["baseline_revision"] = base
            peers.append(baseline_peer(Path(base_source), base))
        with Bench(venv, peers, scenarios, Path(source) if exported else None) as bench:
            bench.start()
            samples = _measure_all(args, bench, deadline)
            problems = bench.problems()
            processes = bench.process_info()
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["load_average_at_end"] = " ".join(f"{load:.2f}" for load in os.getloadavg())
    text, rst = report.render(meta, samples, processes, problems, peers, scenarios)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"run-{stamp}.rst").write_text(rst)
    raw = {
        "meta": meta,
        "processes": processes,
        "problems": problems,
        "samples": [dataclasses.asdict(sample) for sample in samples],
    }
    (RESULTS / f"run-{stamp}.json").write_text(json.dumps(raw, indent=1))
    print(f"\nraw samples: {RESULTS / f'run-{stamp}.json'}; RST tables: run-{stamp}.rst")
    return 1 if any(problem["fatal"] for problem in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
