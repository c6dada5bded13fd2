"""Run plain CGI programs (RFC 3875) behind an SCGI front end.

:class:`CGIApp` is a WSGI application, ``scgi-wsgi --cgi TARGET`` its command
form.  TARGET is either

* a directory: the request path names a script inside it
  (``/app/tools/report.cgi/extra`` runs ``DIR/tools/report.cgi`` with
  ``PATH_INFO=/extra``).  Nothing outside the directory is ever run: ``..``
  segments, hidden names and symlinks leading out are refused (403), a
  missing script is a 404 and a file that is not executable a 403;
* or one script: every request runs it, the whole path being its
  ``PATH_INFO``.

The script gets the RFC 3875 environment (the front end's CGI variables,
``GATEWAY_INTERFACE``, ``SCRIPT_NAME``, ``SCRIPT_FILENAME``, ``PATH_INFO``...;
never ``HTTP_PROXY``, the "httpoxy" hole; of the server's own environment
only ``PATH``, ``LANG``, ``LC_ALL`` and ``TZ``), its working directory is its
own, the request body streams to its stdin, and a query without ``=`` becomes
its command-line arguments (RFC 3875, 4.4).  Its stdout is parsed as CGI
output and answered with a ``Status:`` line of its own (200 when the script
wrote none); its stderr goes to the error log, line by line.  A script
running longer than ``timeout`` seconds is killed with its whole process
group: 504 if it had not answered yet, an aborted connection otherwise.
Output that is not a valid CGI head is a 502.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from . import __version__
from .cgi_output import CGIOutputError, CGIOutputParser
from .errors import ConfigError

__all__ = ["DEFAULT_PASS_ENV", "DEFAULT_TIMEOUT", "CGIApp", "ScriptTimeout"]

log = logging.getLogger("scgiwsgi.error")

DEFAULT_TIMEOUT = 60.0
DEFAULT_PASS_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
_CHUNK = 64 * 1024
_STDERR_LINE = 8192
_REAP_SECONDS = 5.0
_LINGER_SECONDS = 3.0
_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class ScriptTimeout(Exception):
    """The script ran past its time limit and was killed."""


class _Refused(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Target:
    """A resolved request: the script, its command line and its path variables."""

    def __init__(self, path: str, script_name: str, path_info: str) -> None:
        self.path = path
        self.script_name = script_name
        self.path_info = path_info


class CGIApp:
    """A WSGI application running CGI scripts from a directory, or one script.

    ``target`` is the directory or the script.  ``timeout`` is the time
    limit of one run in seconds; ``pass_env`` names the variables of the
    server's environment the scripts inherit; ``extra_env`` adds fixed
    ones.  Raises :class:`~scgiwsgi.errors.ConfigError` when ``target``
    is neither a directory nor an executable file.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pass_env: Sequence[str] = DEFAULT_PASS_ENV,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.target = os.path.realpath(target)
        self.directory_mode = os.path.isdir(self.target)
        if not self.directory_mode and not _is_executable_file(self.target):
            raise ConfigError(f"--cgi {target}: not a directory nor an executable file")
        if timeout <= 0:
            raise ConfigError("the CGI time limit must be positive")
        self.timeout = timeout
        self.pass_env = tuple(pass_env)
        self.extra_env = dict(extra_env or {})

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            target = self.resolve(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
        except _Refused as refused:
            log.warning("%s: %s", environ.get("PATH_INFO", ""), refused.reason)
            start_response(refused.status, list(_TEXT))
            return [refused.status.encode("ascii") + b"\n"]
        return _Run(self, target, environ, start_response).responses()

    def resolve(self, script_name: str, path_info: str) -> _Target:
        """Find the script for a request; raises _Refused (403/404)."""
        if not self.directory_mode:
            return _Target(self.target, script_name, path_info)
        segments = path_info.split("/")
        if segments[0]:
            raise _Refused("404 Not Found", f"path {path_info!r} does not start with /")
        current = self.target
        for index, segment in enumerate(segments[1:], start=1):
            if not segment and index == len(segments) - 1:
                break  # a trailing slash: the path names a directory
            if segment in ("", ".", "..") or segment.startswith(".") or "\0" in segment:
                raise _Refused("403 Forbidden", f"refused path segment {segment!r}")
            current = os.path.join(current, segment)
            real = os.path.realpath(current)
            if os.path.commonpath([self.target, real]) != self.target:
                raise _Refused("403 Forbidden", f"{current} leads out of {self.target}")
            if os.path.isdir(real):
                continue
            if not os.path.exists(real):
                raise _Refused("404 Not Found", f"no script {current}")
            if not _is_executable_file(real):
                raise _Refused("403 Forbidden", f"{current} is not an executable file")
            rest = segments[index + 1 :]
            name = script_name + "/" + "/".join(segments[1 : index + 1])
            return _Target(real, name, "/" + "/".join(rest) if rest else "")
        raise _Refused("404 Not Found", f"{path_info!r} names a directory, not a script")

    def script_environment(self, target: _Target, environ: Mapping[str, Any]) -> dict[str, str]:
        """The environment of one run (RFC 3875, section 4.1), as text.

        Values are the latin-1 text of the wire bytes, like the environ's;
        the script gets those very bytes (see :func:`_environment_bytes`).
        """
        env = {name: os.environ[name] for name in self.pass_env if name in os.environ}
        env.update(
            (name, value)
            for name, value in environ.items()
            if isinstance(value, str) and "." not in name and name != "HTTP_PROXY"
        )
        if env.get("CONTENT_LENGTH") in ("", "0"):
            del env["CONTENT_LENGTH"]
        env.update(
            GATEWAY_INTERFACE="CGI/1.1",
            SERVER_SOFTWARE=f"scgiwsgi/{__version__}",
            SCRIPT_NAME=target.script_name,
            SCRIPT_FILENAME=target.path,
            PATH_INFO=target.path_info,
        )
        env.pop("PATH_TRANSLATED", None)
        root = env.get("DOCUMENT_ROOT")
        if target.path_info and root:
            env["PATH_TRANSLATED"] = root.rstrip("/") + target.path_info
        env.update(self.extra_env)
        return env


def _environment_bytes(env: Mapping[str, str], own: Sequence[str]) -> dict[bytes, bytes]:
    # Request variables hold wire bytes as latin-1 text: give the script those
    # bytes.  Our own values (the server's environment, file names) are
    # ordinary text in the file system encoding.
    result: dict[bytes, bytes] = {}
    for name, value in env.items():
        text = os.fsencode if name in own else _latin1
        result[name.encode("latin-1")] = text(value)
    return result


def _latin1(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return os.fsencode(value)


def _is_executable_file(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and os.access(path, os.X_OK)


def _arguments(query: str) -> list[bytes]:
    """RFC 3875, 4.4: a query without ``=`` is a list of ``+``-separated words."""
    if not query or "=" in query:
        return []
    return [unquote_to_bytes(word.encode("latin-1")) for word in query.split("+")]


class _Run:
    """One run of a script: feeds its stdin, logs its stderr, yields its answer."""

    def __init__(
        self,
        app: CGIApp,
        target: _Target,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> None:
        self.app = app
        self.target = target
        self.environ = environ
        self.start_response = start_response
        self.name = target.script_name or target.path
        self.proc: subprocess.Popen[bytes] | None = None
        self.threads: list[threading.Thread] = []

    def responses(self) -> Iterator[bytes]:
        try:
            self._start()
        except OSError as exc:
            log.error("%s: cannot run %s: %s", self.name, self.target.path, exc)
            yield from self._error("500 Internal Server Error")
            return
        try:
            yield from self._relay()
        except ScriptTimeout:
            log.error("%s: ran longer than %ss; killed", self.name, self.app.timeout)
            yield from self._error("504 Gateway Timeout", sys.exc_info())
        except CGIOutputError as exc:
            log.error("%s: invalid output: %s", self.name, exc)
            yield from self._error("502 Bad Gateway", sys.exc_info())
        finally:
            self._cleanup()

    def _start(self) -> None:
        query = str(self.environ.get("QUERY_STRING", ""))
        env = self.app.script_environment(self.target, self.environ)
        own = (*self.app.pass_env, *self.app.extra_env, "SCRIPT_FILENAME")
        self.proc = subprocess.Popen(
            [os.fsencode(self.target.path), *_arguments(query)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_environment_bytes(env, own),
            cwd=os.path.dirname(self.target.path),
            close_fds=True,
            start_new_session=True,  # one process group: a kill reaches its children
        )
        self.deadline = time.monotonic() + self.app.timeout
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self._thread(self._feed_stdin, self.proc.stdin)
        self._thread(self._log_stderr, self.proc.stderr)

    def _thread(self, target: Callable[[Any], None], stream: IO[bytes]) -> None:
        thread = threading.Thread(target=target, args=(stream,), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _relay(self) -> Iterator[bytes]:
        assert self.proc is not None and self.proc.stdout is not None
        parser = CGIOutputParser()
        started = False
        for data in _read_until_eof(self.proc.stdout, lambda: self.deadline):
            body = parser.feed(data)
            if parser.head is not None and not started:
                started = True
                self._start_response(parser.head.status, parser.head.headers, parser.head.dropped)
            if body:
                yield body
        head = parser.close()
        if not started:
            self._start_response(head.status, head.headers, head.dropped)
        self._reap_after_output()

    def _reap_after_output(self) -> None:
        # The answer is complete, but the front end sees its end only when the
        # connection closes: a script lingering past a short grace is killed.
        assert self.proc is not None
        grace = min(max(self.deadline - time.monotonic(), 0.0), _LINGER_SECONDS)
        try:
            status = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s: still running after closing its output; killed", self.name)
            return
        if status:
            log.warning("%s: exited with status %d", self.name, status)

    def _start_response(self, status: str, headers: list[tuple[str, str]], dropped: Any) -> None:
        if dropped:
            log.warning("%s: dropped hop-by-hop header(s) %s", self.name, ", ".join(dropped))
        self.start_response(status, headers)

    def _error(self, status: str, exc_info: Any = None) -> Iterator[bytes]:
        # With exc_info, start_response re-raises when the head is already out:
        # the server then aborts the connection, the only honest signal left.
        self.start_response(status, list(_TEXT), exc_info)
        yield status.encode("ascii") + b"\n"

    def _feed_stdin(self, stdin: IO[bytes]) -> None:
        body = self.environ["wsgi.input"]
        try:
            while chunk := body.read(_CHUNK):
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # the script does not read its whole body: its choice
        except (OSError, ValueError) as exc:
            log.info("%s: request body not passed on: %s", self.name, exc)
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _log_stderr(self, stderr: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while line := stderr.readline(_STDERR_LINE):
                text = line.decode("utf-8", "backslashreplace").rstrip("\r\n")
                log.warning("%s: stderr: %s", self.name, text)

    def _cleanup(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            # Timed out, failed, or the front end went away: end the whole group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(_REAP_SECONDS)
        for thread in self.threads:
            thread.join(_REAP_SECONDS)
            if thread.is_alive():
                log.warning("%s: request body still being read; left to time out", self.name)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _read_until_eof(stream: IO[bytes], deadline: Callable[[], float]) -> Iterator[bytes]:
    """Yield what ``stream`` gives until EOF; raise ScriptTimeout at the deadline."""
    fd = stream.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline() - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise ScriptTimeout
            data = os.read(fd, _CHUNK)
            if not data:
                return
            yield data


def describe_target(target: str) -> str:
    """A few words for the startup line: ``CGI directory /srv/cgi-bin``."""
    kind = "directory" if Path(target).is_dir() else "script"
    return f"CGI {kind} {os.path.realpath(target)}"
