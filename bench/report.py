"""Turn samples into the report: plain text for the terminal, RST for the docs.

Per scenario and peer: the median req/s over the rounds, its ratio to flup's
forking server and to uWSGI, the median server CPU per request (its process
tree's user+system time over the run divided by the requests served), nginx's
CPU per request, and every error.  The latency scenario adds p50 and p99.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from harness import Sample, Scenario
from peers import BASELINE, OFFLOAD_PEER, Peer

REFERENCES = ("flup-fork", "uwsgi")
Summary = dict[str, dict[str, dict[str, Any]]]


def one_line(sample: Sample) -> str:
    """A progress line for one sample."""
    cpu = _us(sample.server_cpu_s, sample.requests)
    nginx_cpu = _us(sample.nginx_cpu_s, sample.requests)
    errors = f"  ERRORS {sample.errors} {sample.note}" if sample.error_count else ""
    return (
        f"{sample.scenario:9} {sample.peer:18} {sample.rps:9.0f} req/s"
        f"  server {_fmt(cpu, 0):>5} us/req  nginx {_fmt(nginx_cpu, 0):>4} us/req{errors}"
    )


def _us(seconds: float | None, requests: int) -> float | None:
    if seconds is None or not requests:
        return None
    return seconds / requests * 1e6


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _spread(values: list[float]) -> float | None:
    """Half the range over the median: how much the rounds disagree."""
    middle = _median(values)
    if len(values) < 2 or not middle:
        return None
    return (max(values) - min(values)) / 2 / middle


def summarize(samples: list[Sample]) -> Summary:
    """scenario -> peer -> medians and error totals."""
    grouped: dict[str, dict[str, list[Sample]]] = {}
    for sample in samples:
        grouped.setdefault(sample.scenario, {}).setdefault(sample.peer, []).append(sample)
    summary: Summary = {}
    for scenario, by_peer in grouped.items():
        summary[scenario] = {}
        for peer, runs in by_peer.items():
            summary[scenario][peer] = {
                "rps": _median([run.rps for run in runs]),
                "rps_runs": [round(run.rps) for run in runs],
                "rps_spread": _spread([run.rps for run in runs]),
                "server_us": _median([_us(run.server_cpu_s, run.requests) for run in runs]),
                "sys_share": _median(
                    [
                        run.server_sys_s / run.server_cpu_s
                        if run.server_cpu_s and run.server_sys_s is not None
                        else None
                        for run in runs
                    ]
                ),
                "nginx_us": _median([_us(run.nginx_cpu_s, run.requests) for run in runs]),
                "p50_ms": _median([run.latency_us.get("p50", 0) / 1000 for run in runs]),
                "p99_ms": _median([run.latency_us.get("p99", 0) / 1000 for run in runs]),
                "errors": sum(run.error_count for run in runs),
                "error_detail": [run.errors for run in runs if run.error_count],
                "rounds": len(runs),
            }
    return summary


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}x"


class _Table:
    def __init__(self, headers: list[str]) -> None:
        self.headers = headers
        self.rows: list[list[str]] = []

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def _widths(self) -> list[int]:
        rows = [self.headers, *self.rows]
        return [max(len(row[i]) for row in rows) for i in range(len(self.headers))]

    @staticmethod
    def _line(cells: list[str], widths: list[int]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    def text(self) -> str:
        widths = self._widths()
        lines = [self._line(row, widths).rstrip() for row in [self.headers, *self.rows]]
        lines.insert(1, self._line(["-" * width for width in widths], widths))
        return "\n".join(lines)

    def rst(self) -> str:
        widths = self._widths()
        border = self._line(["=" * width for width in widths], widths)
        body = [self._line(row, widths).rstrip() for row in self.rows]
        return "\n".join([border, self._line(self.headers, widths).rstrip(), border, *body, border])


def _throughput_table(scenario: str, summary: Summary, peers: list[Peer]) -> _Table:
    rows = summary.get(scenario, {})
    flup = rows.get("flup-fork", {}).get("rps")
    uwsgi = rows.get("uwsgi", {})
    table = _Table(
        [
            "server",
            "req/s",
            "+/- rounds",
            "vs flup-fork",
            "vs uWSGI",
            "server CPU us/req",
            "kernel share",
            "CPU vs uWSGI",
            "nginx CPU us/req",
            "errors",
        ]
    )
    for peer in peers:
        row = rows.get(peer.name)
        if row is None:
            continue
        table.add(
            peer.name,
            _fmt(row["rps"], 0),
            _fmt(None if row["rps_spread"] is None else row["rps_spread"] * 100, 0, "%"),
            _ratio(row["rps"], flup),
            _ratio(row["rps"], uwsgi.get("rps")),
            _fmt(row["server_us"], 0),
            _fmt(None if row["sys_share"] is None else row["sys_share"] * 100, 0, "%"),
            _ratio(row["server_us"], uwsgi.get("server_us")),
            _fmt(row["nginx_us"], 0),
            str(row["errors"]) if not row["errors"] else f"{row['errors']} !!",
        )
    return table


def _latency_table(summary: Summary, peers: list[Peer]) -> _Table:
    rows = summary.get("latency", {})
    uwsgi = rows.get("uwsgi", {})
    table = _Table(
        ["server", "p50 ms", "p99 ms", "p50 - uWSGI ms", "req/s", "server CPU us/req", "errors"]
    )
    for peer in peers:
        row = rows.get(peer.name)
        if row is None:
            continue
        delta = (row["p50_ms"] - uwsgi["p50_ms"]) if uwsgi.get("p50_ms") is not None else None
        table.add(
            peer.name,
            _fmt(row["p50_ms"], 3),
            _fmt(row["p99_ms"], 3),
            _fmt(delta, 3),
            _fmt(row["rps"], 0),
            _fmt(row["server_us"], 0),
            str(row["errors"]) if not row["errors"] else f"{row['errors']} !!",
        )
    return table


def _baseline_table(samples: list[Sample], scenarios: list[Scenario]) -> _Table:
    """scgiwsgi-fork over baseline-fork, paired round by round.

    Strategy: on a shared machine whole rounds run fast or slow together;
    the ratio of two peers measured in the same round cancels that, so the
    median of the per-round ratios shows a change the medians hide.
    """
    table = _Table(["scenario", "rounds", "CPU/req ratio", "lowest", "highest", "req/s ratio"])
    by_key = {(s.scenario, s.peer, s.round): s for s in samples if s.requests}
    for scenario in scenarios:
        cpu: list[float] = []
        rps: list[float] = []
        for (name, peer, round_), ours in by_key.items():
            theirs = by_key.get((name, BASELINE, round_))
            if name != scenario.name or peer != "scgiwsgi-fork" or theirs is None:
                continue
            ours_cpu = _us(ours.server_cpu_s, ours.requests)
            theirs_cpu = _us(theirs.server_cpu_s, theirs.requests)
            if ours_cpu and theirs_cpu:
                cpu.append(ours_cpu / theirs_cpu)
            if theirs.rps:
                rps.append(ours.rps / theirs.rps)
        if cpu:
            table.add(
                scenario.name,
                str(len(cpu)),
                f"{_median(cpu):.3f}",
                f"{min(cpu):.3f}",
                f"{max(cpu):.3f}",
                _fmt(_median(rps), 3),
            )
    return table


def _process_table(processes: dict[str, dict[str, Any]]) -> _Table:
    table = _Table(["server", "processes", "RSS per process MiB", "spawn to first 200 s"])
    for name, info in processes.items():
        if info["failure"]:
            table.add(name, info["processes"], "not available", "-")
            continue
        rss = " / ".join(f"{kib / 1024:.1f}" for kib in info["rss_kib"]) or "-"
        table.add(name, info["processes"], rss, _fmt(info["ready_s"], 2))
    return table


def _subject(summary: Summary) -> str:
    for name in ("scgiwsgi-fork", "scgiwsgi-threaded"):
        if any(name in rows for rows in summary.values()):
            return name
    return "scgiwsgi-fork"


def _targets(summary: Summary, processes: dict[str, dict[str, Any]]) -> _Table:
    """The issue's targets, checked for the best scgiwsgi backend that ran.

    Beside each figure is the floor's, measured the same way in the same
    run (when the floor ran): what a pure-Python server that checks nothing
    reaches against the same target.
    """
    me = _subject(summary)
    table = _Table(["target (" + me + ")", "measured", "met", "the floor"])

    def get(scenario: str, peer: str, key: str) -> float | None:
        value = summary.get(scenario, {}).get(peer, {}).get(key)
        return value if isinstance(value, (int, float)) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def vs(scenario: str, key: str, reference: str) -> Callable[[str], float | None]:
        return lambda peer: ratio(get(scenario, peer, key), get(scenario, reference, key))

    def less_than_flup(peer: str) -> float | None:
        return ratio(get("hello", "flup-fork", "server_us"), get("hello", peer, "server_us"))

    def p50_delta(peer: str) -> float | None:
        p50, ref = get("latency", peer, "p50_ms"), get("latency", "uwsgi", "p50_ms")
        return p50 - ref if p50 is not None and ref is not None else None

    def worker_rss(peer: str) -> float | None:
        # A worker's size: the children when there is a parent (arbiter), else the process.
        sizes = processes.get(peer, {}).get("rss_kib") or []
        workers = sizes[1:] or sizes
        return max(workers) / 1024 if workers else None

    def ready(peer: str) -> float | None:
        value = processes.get(peer, {}).get("ready_s")
        return value if isinstance(value, (int, float)) else None

    # (label, the figure of a peer, limit, whether the figure must stay below it, format)
    targets: list[tuple[str, Callable[[str], float | None], float, bool, str]] = [
        ("hello CPU/req <= 1.5x uWSGI", vs("hello", "server_us", "uwsgi"), 1.5, True, "{:.2f}x"),
        ("hello CPU/req 2.5x less than flup-fork", less_than_flup, 2.5, False, "{:.2f}x less"),
        ("hello req/s >= 0.9x uWSGI", vs("hello", "rps", "uwsgi"), 0.9, False, "{:.2f}x"),
    ]
    for scenario in ("post64k", "chunks1m"):
        label = f"{scenario} CPU/req <= 1.3x uWSGI"
        targets.append((label, vs(scenario, "server_us", "uwsgi"), 1.3, True, "{:.2f}x"))
    relayed = vs("file10m", "rps", "nginx")
    targets.append(("file10m req/s >= 0.8x nginx alone", relayed, 0.8, False, "{:.2f}x"))
    if get("file10m", OFFLOAD_PEER, "rps") is not None:

        def offloaded(peer: str) -> float | None:
            # The offload peer is scgiwsgi's; the floor has no such mode.
            return relayed(OFFLOAD_PEER) if peer == me else None

        label = "file10m req/s >= 0.8x nginx alone, --offload"
        targets.append((label, offloaded, 0.8, False, "{:.2f}x"))
    targets += [
        ("c=1 p50 within 0.05 ms of uWSGI", p50_delta, 0.05, True, "{:+.3f} ms"),
        ("idle worker RSS < 20 MiB", worker_rss, 20, True, "{:.1f} MiB"),
        ("spawn to first request < 0.5 s", ready, 0.5, True, "{:.2f} s"),
    ]
    for label, figure, limit, below, shown in targets:
        value, floor = figure(me), figure("floor")
        met = (
            "-"
            if value is None
            else ("yes" if (value <= limit if below else value >= limit) else "NO")
        )
        table.add(
            label,
            "-" if value is None else shown.format(value),
            met,
            "-" if floor is None else shown.format(floor),
        )
    return table


def render(
    meta: dict[str, Any],
    samples: list[Sample],
    processes: dict[str, dict[str, Any]],
    problems: list[dict[str, Any]],
    peers: list[Peer],
    scenarios: list[Scenario],
) -> tuple[str, str]:
    """Return the report as (plain text, RST fragment)."""
    summary = summarize(samples)
    sections: list[tuple[str, _Table | None, str]] = []
    for scenario in scenarios:
        table = (
            _latency_table(summary, peers)
            if scenario.name == "latency"
            else _throughput_table(scenario.name, summary, peers)
        )
        sections.append((f"{scenario.name}: {scenario.title}", table, ""))
    if any(sample.peer == BASELINE for sample in samples):
        title = "scgiwsgi-fork / baseline-fork, per round (below 1: this revision is cheaper)"
        sections.append((title, _baseline_table(samples, scenarios), ""))
    sections.append(("Processes", _process_table(processes), ""))
    sections.append(("Targets of issue 7", _targets(summary, processes), ""))
    lines = [f"- {p['peer']}: {p['what']}" for p in problems] or ["none"]
    sections.append(("Problems", None, "\n".join(lines)))
    header = [f"{key}: {value}" for key, value in meta.items()]
    text = ["\n".join(header)]
    rst = []
    for title, maybe_table, extra in sections:
        text.append(f"\n== {title}\n" + (maybe_table.text() if maybe_table else extra))
        rst_body = maybe_table.rst() if maybe_table else extra
        rst.append(f"{title}\n{'~' * len(title)}\n\n{rst_body}")
    return "\n".join(text), "\n\n".join(rst) + "\n"
