"""The servers the benchmark runs, and how their processes are watched.

Each :class:`Peer` knows its command line (run from ``bench/.venv``), how
nginx reaches it (``scgi_pass``, ``proxy_pass`` or nginx answering itself)
and how many processes serve requests.  CPU time is read from
``/proc/PID/stat`` for the whole process tree of a peer.

Run as a script, this module is the launcher of flup's servers, which have
no command line of their own::

    python bench/peers.py flup-fork 127.0.0.1 4001
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

from apps import FILE_ENV
from nginx import offload_uri

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
APPS_FILE = BENCH_DIR / "apps.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Argv = Callable[[Path, int], list[str]]
OFFLOAD_PEER = "scgiwsgi-offload"
"""scgiwsgi handing wsgi.file_wrapper files to nginx (X-Accel-Redirect)."""


@dataclasses.dataclass(frozen=True)
class Peer:
    """One server under test.

    ``via`` is ``scgi`` (``scgi_pass``), ``scgi-offload`` (``scgi_pass``,
    and nginx sends the files the peer names with X-Accel-Redirect), ``http``
    (``proxy_pass``) or ``static`` (nginx answers by itself: no process).
    ``argv(venv, port)`` is the command line; ``processes`` says what serves
    requests.
    """

    name: str
    label: str
    via: str
    argv: Argv | None = None
    processes: str = ""
    scenarios: tuple[str, ...] = ()
    """The only scenarios this peer runs; empty: all of them."""

    def serves(self, scenario: str) -> bool:
        """Whether this peer runs ``scenario``."""
        return not self.scenarios or scenario in self.scenarios


def _scgiwsgi(*backend: str) -> Argv:
    def argv(venv: Path, port: int) -> list[str]:
        return [
            str(venv / "bin" / "scgi-wsgi"),
            f"{APPS_FILE}:application",
            *backend,
            "--bind",
            f"127.0.0.1:{port}",
        ]

    return argv


def _scgiwsgi_offload(venv: Path, port: int) -> list[str]:
    # The static files' directory is known only in the child, from FILE_ENV
    # (as apps.py reads it): a launcher puts --offload before the arguments.
    uri = offload_uri(OFFLOAD_PEER)
    prelude = (
        f"import os, sys; static = os.path.dirname(os.environ[{FILE_ENV!r}]); "
        f"sys.argv[1:1] = ['--offload', 'x-accel-redirect:' + static + '={uri}']; "
    )
    return _fork_launched(prelude, venv, port)


def _fork_launched(prelude: str, venv: Path, port: int) -> list[str]:
    """``scgi-wsgi --fork --workers 2`` run as ``python -c``, after ``prelude``'s code."""
    launcher = prelude + "from scgiwsgi.cli import main; main()"
    scgiwsgi = _scgiwsgi("--fork", "--workers", "2")(venv, port)
    return [str(venv / "bin" / "python"), "-c", launcher, *scgiwsgi[1:]]


def _flup(kind: str) -> Argv:
    def argv(venv: Path, port: int) -> list[str]:
        launcher = str(Path(__file__).resolve())
        return [str(venv / "bin" / "python"), launcher, kind, "127.0.0.1", str(port)]

    return argv


def _uwsgi(venv: Path, port: int) -> list[str]:
    return [
        str(venv / "bin" / "uwsgi"),
        "--scgi-socket",
        f"127.0.0.1:{port}",
        "--master",
        "--processes",
        "2",
        "--wsgi-file",
        str(APPS_FILE),
        "--callable",
        "application",
        "--need-app",
        "--die-on-term",
        # uWSGI logs every request by default; the others log none.
        "--disable-logging",
    ]


def _floor(venv: Path, port: int) -> list[str]:
    floor = str(BENCH_DIR / "floor.py")
    return [str(venv / "bin" / "python"), floor, "127.0.0.1", str(port), "2"]


def _gunicorn(venv: Path, port: int) -> list[str]:
    return [
        str(venv / "bin" / "gunicorn"),
        "--workers",
        "2",
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(BENCH_DIR),
        "apps:application",
    ]


PEERS: tuple[Peer, ...] = (
    Peer("nginx", "nginx answering by itself (upper bound)", "static", None, "nginx only"),
    Peer(
        "scgiwsgi-fork",
        "scgiwsgi --fork --workers 2",
        "scgi",
        _scgiwsgi("--fork", "--workers", "2"),
        "arbiter + 2 workers",
    ),
    Peer(
        OFFLOAD_PEER,
        "scgiwsgi --fork --workers 2 --offload x-accel-redirect (nginx sends the file)",
        "scgi-offload",
        _scgiwsgi_offload,
        "arbiter + 2 workers",
        scenarios=("file10m",),
    ),
    Peer(
        "scgiwsgi-threaded",
        "scgiwsgi --threaded (8 threads)",
        "scgi",
        _scgiwsgi("--threaded"),
        "1 process, 8 threads",
    ),
    Peer(
        "flup-fork",
        "flup 1.0.3 scgi_fork.WSGIServer",
        "scgi",
        _flup("flup-fork"),
        "parent + 2 children",
    ),
    Peer(
        "flup-threaded",
        "flup 1.0.3 scgi.WSGIServer (threaded)",
        "scgi",
        _flup("flup-threaded"),
        "1 process, thread pool",
    ),
    Peer("uwsgi", "uWSGI --scgi-socket --processes 2", "scgi", _uwsgi, "master + 2 workers"),
    Peer("gunicorn", "gunicorn -w 2 (sync), proxy_pass", "http", _gunicorn, "arbiter + 2 workers"),
    Peer(
        "floor",
        "bench/floor.py: a bare prefork loop, the pure-Python floor",
        "scgi",
        _floor,
        "parent + 2 children",
    ),
)
PEER_NAMES = tuple(peer.name for peer in PEERS)
BASELINE = "baseline-fork"
"""The peer that ``bench/run.py --baseline REV`` adds: scgiwsgi --fork at REV."""


def baseline_peer(source: Path | None, revision: str) -> Peer:
    """``scgi-wsgi --fork --workers 2`` run from ``source``, an export of ``revision``.

    The export goes first on ``sys.path``, ahead of the ``PYTHONPATH`` that
    ``--rev`` (or the editable install) gives the other scgiwsgi peers, so
    two revisions run side by side in one run.  ``source`` None (a saved
    run printed again) gives a peer that is never started.
    """

    def argv(venv: Path, port: int) -> list[str]:
        return _fork_launched(f"import sys; sys.path.insert(0, {str(source)!r}); ", venv, port)

    label = f"scgiwsgi --fork --workers 2 at {revision}"
    return Peer(BASELINE, label, "scgi", argv if source else None, "arbiter + 2 workers")


# -- /proc ---------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def process_group(pgid: int) -> list[int]:
    """Living processes whose process group is ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def process_tree(root: int) -> list[int]:
    """``root`` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def tree_cpu_seconds(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process tree under ``root``.

    Each living process counts its own time plus that of its reaped children
    (``cutime``/``cstime``), so a worker that exited and was waited for by its
    parent during the run is still counted, and nothing twice.
    """
    user = system = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
            user += utime + cutime
            system += stime + cstime
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def tree_rss_kib(root: int) -> list[int]:
    """Resident set size (KiB) of each process in the tree under ``root``."""
    sizes = []
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]))
    return sizes


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (read from /proc/net/tcp).

    Reading the table instead of connecting keeps a half-started server from
    seeing (and perhaps logging) an empty connection.
    """
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(
        line.split()[1] == wanted and line.split()[3] == "0A" for line in lines if line.strip()
    )


# -- the flup launcher -----------------------------------------------------------


def _serve_flup(kind: str, host: str, port: int) -> None:
    sys.path.insert(0, str(BENCH_DIR))
    from apps import application

    if kind == "flup-fork":
        from flup.server.scgi_fork import WSGIServer

        # Two children, like every other peer: the pool never grows past
        # maxSpare anyway.  No scriptName: flup then takes PATH_INFO from
        # REQUEST_URI (passing one makes it read a SCRIPT_NAME nginx never sends).
        server = WSGIServer(
            application,
            bindAddress=(host, port),
            minSpare=2,
            maxSpare=2,
            maxChildren=2,
        )
    else:
        from flup.server.scgi import WSGIServer

        server = WSGIServer(application, bindAddress=(host, port))
    server.run()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("flup-fork", "flup-threaded"):
        sys.exit("usage: peers.py flup-fork|flup-threaded HOST PORT")
    _serve_flup(sys.argv[1], sys.argv[2], int(sys.argv[3]))
