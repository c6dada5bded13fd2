"""Graceful reload with ``--preload``: re-execute the arbiter, keep the sockets.

With ``--preload`` the application's code lives in the arbiter, so new code
needs a new arbiter.  On SIGHUP the arbiter runs its own command line again
with :func:`reexec` (same pid): the listening sockets and the pipe that tells
the old workers their arbiter is alive stay open across ``exec``, and an
environment variable describes them.  The new arbiter adopts them
(:func:`take_inherited`), imports the application afresh, forks new workers,
and stops the old workers (still its children) once the new ones accept.
Connections that arrive meanwhile wait in the kernel's listen queue.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import NoReturn

from .sockets import BindSpec, Listener

__all__ = ["ENV_NAME", "CodeCheck", "Inherited", "reexec", "start_code_check", "take_inherited"]

ENV_NAME = "SCGIWSGI_REEXEC"
_START_DIR = os.getcwd()


@dataclasses.dataclass(frozen=True)
class Inherited:
    """What a re-executed arbiter takes over from its previous image."""

    listeners: list[Listener]
    old_workers: list[int]
    alive_fd: int
    target: int | None = None
    """The worker count the previous image had (after TTIN/TTOU)."""


def reexec(
    listeners: Sequence[Listener],
    old_workers: Sequence[int],
    alive_fd: int,
    target: int | None = None,
) -> NoReturn:
    """Replace this process with a fresh run of its own command line.

    Raises ``OSError`` when ``exec`` fails (the caller keeps running).
    """
    described = []
    for listener in listeners:
        listener.sock.set_inheritable(True)
        described.append(_describe(listener))
    os.set_inheritable(alive_fd, True)
    state = {
        "pid": os.getpid(),
        "listeners": described,
        "old_workers": list(old_workers),
        "alive_fd": alive_fd,
        "target": target,
    }
    os.environ[ENV_NAME] = json.dumps(state)
    os.chdir(_START_DIR)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *sys.orig_argv[1:]]
    os.execv(sys.executable, argv)


class CodeCheck:
    """This server's own command line run with ``--check-config``, in the background.

    Checking first means a reload to broken code never replaces an arbiter
    that serves; running it in the background keeps the arbiter's loop
    (respawns, timeouts, signals) going meanwhile.
    """

    def __init__(self, argv: list[str], timeout: float) -> None:
        self._errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - outlives this call
        self._deadline = time.monotonic() + timeout
        self.process = subprocess.Popen(
            [sys.executable, *argv, "--check-config"],
            cwd=_START_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
        )

    def result(self) -> tuple[bool, str | None]:
        """``(done, problem)``: problem is None when the new code imports."""
        code = self.process.poll()
        if code is None:
            if time.monotonic() < self._deadline:
                return False, None
            self.cancel()
            return True, "the check took too long"
        self._errors.seek(0)
        lines = [line for line in self._errors.read().splitlines() if line.strip()]
        self._errors.close()
        if code == 0:
            return True, None
        return True, lines[-1] if lines else f"the check exited with status {code}"

    def cancel(self) -> None:
        """Stop the check (the server is stopping)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._errors.close()


def start_code_check(timeout: float = 120.0) -> CodeCheck | None:
    """Start checking the new code, or None when there is no command to run.

    Only a process started by the ``scgi-wsgi`` command (or ``python -m
    scgiwsgi``) can be checked; a launcher script of the user's cannot.
    Raises ``OSError`` when the check cannot be started.
    """
    argv = sys.orig_argv[1:]
    ours = argv[:2] == ["-m", "scgiwsgi"] or os.path.basename(sys.argv[0]) == "scgi-wsgi"
    return CodeCheck(argv, timeout) if ours else None


def take_inherited() -> Inherited | None:
    """Adopt what a previous image of this process left, if anything.

    Returns None in a process that was not re-executed (the variable is
    absent, or names another pid: a child that inherited the environment).
    """
    raw = os.environ.pop(ENV_NAME, None)
    if raw is None:
        return None
    state = json.loads(raw)
    if state.get("pid") != os.getpid():
        return None
    listeners = [_adopt(entry) for entry in state["listeners"]]
    os.set_inheritable(state["alive_fd"], False)
    target = state.get("target")
    return Inherited(
        listeners,
        [int(pid) for pid in state["old_workers"]],
        state["alive_fd"],
        int(target) if target is not None else None,
    )


def _describe(listener: Listener) -> dict[str, object]:
    owned = listener.owned_file
    return {
        "fd": listener.sock.fileno(),
        "spec": str(listener.spec),
        "kind": listener.spec.kind,
        "path": listener.spec.path,
        "display": listener.display,
        "server_name": listener.server_name,
        "server_port": listener.server_port,
        "owned": list(owned) if owned is not None else None,
    }


def _adopt(entry: dict[str, object]) -> Listener:
    sock = socket.socket(fileno=int(str(entry["fd"])))
    sock.set_inheritable(False)
    sock.setblocking(False)
    kind = str(entry["kind"])
    spec = BindSpec(kind="unix", path=str(entry["path"])) if kind == "unix" else _tcp_spec(sock)
    owned = entry.get("owned")
    return Listener(
        sock,
        spec,
        display=str(entry["display"]),
        server_name=str(entry["server_name"]),
        server_port=str(entry["server_port"]),
        owned_file=(int(owned[0]), int(owned[1])) if isinstance(owned, list) else None,
    )


def _tcp_spec(sock: socket.socket) -> BindSpec:
    address = sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return BindSpec(kind="tcp", host=str(address[0]), port=int(address[1]))
    return BindSpec(kind="fd", fd=sock.fileno())
