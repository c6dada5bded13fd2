"""python-scgi's handler API (``scgi.scgi_server``) served by scgiwsgi.

A python-scgi launcher runs with its imports changed from ``scgi`` to
``scgiwsgi``::

    import time
    import scgiwsgi.scgi_server

    class TimeHandler(scgiwsgi.scgi_server.SCGIHandler):
        def produce(self, env, bodysize, input, output):
            output.write("Content-Type: text/plain\\r\\n\\r\\n")
            output.write(time.ctime() + "\\n")

    scgiwsgi.scgi_server.SCGIServer(handler_class=TimeHandler, port=4000).serve()

The handler class becomes a WSGI application (:class:`HandlerApp`) run by
scgiwsgi's own server, so what python-scgi got wrong is fixed without
touching the handler: its CGI-style output (``str`` or bytes, ``\\n`` or
``\\r\\n``) is parsed and answered with a proper ``Status:`` line; a handler
that raises gets a 500 and a logged traceback while the server keeps
serving; ``input`` never reads past CONTENT_LENGTH; SIGTERM and SIGINT stop
gracefully.

``max_children`` is the number of requests served at once: threads of the
threaded backend, or worker processes with ``backend="fork"``.  Each thread
(or process) keeps its own handler instance across requests, as each
python-scgi child did; SIGHUP makes every thread start over with a new one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from types import FrameType
from typing import Any

from .cgi_output import CGIOutputParser
from .demo import render_cgi_parameters
from .errors import ConfigError
from .server import WSGIServer

__all__ = ["DEFAULT_PORT", "HandlerApp", "HandlerOutput", "SCGIHandler", "SCGIServer", "main"]

log = logging.getLogger("scgiwsgi.error")

DEFAULT_PORT = 4000


class SCGIHandler:
    """Base class of request handlers: override :meth:`produce` or :meth:`produce_cgilike`.

    One instance serves many requests, one at a time, so it may keep state
    between them.  ``parent_fd`` exists for python-scgi compatibility and is
    always None here.
    """

    def __init__(self, parent_fd: int | None = None) -> None:
        self.parent_fd = parent_fd

    def produce(
        self, env: dict[str, str], bodysize: int, input: Any, output: HandlerOutput
    ) -> None:
        """Answer one request; the method subclasses normally override.

        ``env`` holds the request's CGI variables, ``bodysize`` its body
        length; ``input`` is a binary file over exactly ``bodysize`` bytes
        of body; write the CGI-style answer (headers, a blank line, the
        body) to ``output``.  An exception becomes a 500 answer.

        The default calls :meth:`produce_cgilike` with ``sys.stdin``,
        ``sys.stdout`` and ``os.environ`` redirected to the request, for the
        calling thread only.
        """
        stdin = io.TextIOWrapper(io.BufferedReader(input), encoding="utf-8")
        try:
            with _redirect(stdin, output, env):
                self.produce_cgilike(env, bodysize)
        finally:
            stdin.detach()  # never close the server's wsgi.input

    def produce_cgilike(self, env: dict[str, str], bodysize: int) -> None:
        """Answer one request CGI style: read ``sys.stdin``, print to ``sys.stdout``.

        The default prints the request's CGI variables as plain text.
        """
        print("Content-Type: text/plain; charset=utf-8")
        print()
        print(render_cgi_parameters(env), end="")

    def handle_connection(self, conn: Any) -> None:
        """Not supported: scgiwsgi owns the connection; override :meth:`produce`."""
        raise NotImplementedError("override produce() or produce_cgilike()")


class HandlerOutput:
    """The ``output`` file of :meth:`SCGIHandler.produce`: the CGI-style answer.

    ``write`` takes ``str`` (encoded as UTF-8) or bytes.  The head is parsed
    as soon as its blank line arrives and sent with a proper ``Status:``
    line; body bytes then stream straight to the front end.  ``buffer`` is
    the file itself, for code that writes ``sys.stdout.buffer``.
    """

    encoding = "utf-8"

    def __init__(self, start_response: Callable[..., Any]) -> None:
        self._start_response = start_response
        self._parser = CGIOutputParser()
        self._send: Callable[[bytes], Any] | None = None
        self.closed = False

    @property
    def buffer(self) -> HandlerOutput:
        return self

    def write(self, data: str | bytes) -> int:
        """Take more output; raises CGIOutputError for a malformed head."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        raw = data.encode(self.encoding) if isinstance(data, str) else bytes(data)
        body = self._parser.feed(raw)
        if self._send is None and self._parser.head is not None:
            head = self._parser.head
            if head.dropped:
                log.warning(
                    "handler output: dropped hop-by-hop header(s) %s", ", ".join(head.dropped)
                )
            self._send = self._start_response(head.status, head.headers)
        if body and self._send is not None:
            self._send(body)
        return len(data)

    def writelines(self, lines: Iterable[str | bytes]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Nothing to do: every body write goes to the front end at once."""

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def finish(self) -> None:
        """The handler returned: raise CGIOutputError if no complete head was written."""
        self._parser.close()


class HandlerApp:
    """A WSGI application running a :class:`SCGIHandler` subclass.

    Raises :class:`~scgiwsgi.errors.ConfigError` when ``handler_class`` does
    not derive from :class:`SCGIHandler` (an import left unchanged) or
    overrides ``handle_connection`` (it wants the raw socket).
    """

    def __init__(self, handler_class: type[SCGIHandler]) -> None:
        _check_handler_class(handler_class)
        self.handler_class = handler_class
        self._local = threading.local()
        self._generation = 0

    def restart(self) -> None:
        """Make every thread use a new handler instance from its next request on."""
        self._generation += 1

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        env = {name: value for name, value in environ.items() if "." not in name}
        output = HandlerOutput(start_response)
        self._handler().produce(env, _body_size(env), environ["wsgi.input"], output)
        output.finish()
        return []

    def _handler(self) -> SCGIHandler:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.handler = self.handler_class(None)
            local.generation = self._generation
        handler: SCGIHandler = local.handler
        return handler


def _check_handler_class(handler_class: object) -> None:
    if not (isinstance(handler_class, type) and issubclass(handler_class, SCGIHandler)):
        raise ConfigError(
            f"handler_class {handler_class!r} must derive from scgiwsgi.scgi_server.SCGIHandler"
            " (replace scgi.scgi_server by scgiwsgi.scgi_server in the launcher)"
        )
    if handler_class.handle_connection is not SCGIHandler.handle_connection:
        raise ConfigError(
            f"{handler_class.__qualname__} overrides handle_connection(), which needs the raw"
            " socket; override produce(self, env, bodysize, input, output) instead"
        )


def _body_size(env: dict[str, str]) -> int:
    length = env.get("CONTENT_LENGTH", "")
    return int(length) if length.isdigit() else 0


class SCGIServer:
    """python-scgi's server: serve ``handler_class`` on ``host``:``port``.

    ``host`` ``""`` means every IPv4 interface.  As in python-scgi, sockets
    passed by systemd socket activation are used instead (scgiwsgi's
    :mod:`~scgiwsgi.systemd` takes them).  ``options`` are further scgiwsgi
    options (``backend="fork"``, ``script_name``, ``max_body_size``...).
    """

    DEFAULT_PORT = DEFAULT_PORT

    def __init__(
        self,
        handler_class: type[SCGIHandler] = SCGIHandler,
        host: str = "",
        port: int = DEFAULT_PORT,
        max_children: int = 5,
        **options: Any,
    ) -> None:
        self.handler_class = handler_class
        self.host = host
        self.port = port
        self.max_children = max_children
        self.options = options
        self.app: HandlerApp | None = None

    def make_server(self) -> WSGIServer:
        """The scgiwsgi server :meth:`serve` runs (not bound yet); raises ConfigError."""
        self.app = HandlerApp(self.handler_class)
        options = dict(self.options)
        backend = options.setdefault("backend", "threaded")
        if backend == "fork":
            options.setdefault("workers", self.max_children)
            options.setdefault("threads", 1)
        elif backend == "threaded":
            options.setdefault("threads", self.max_children)
        name = f"{self.handler_class.__module__}:{self.handler_class.__qualname__}"
        return WSGIServer(self.app, bind=self.bind_address(), app_name=name, **options)

    def bind_address(self) -> str:
        """``host``:``port`` as an scgiwsgi address."""
        host = self.host or "0.0.0.0"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def serve(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully.

        Raises :class:`~scgiwsgi.errors.ConfigError` or
        :class:`~scgiwsgi.errors.BindError` when the server cannot start.
        """
        server = self.make_server()
        with self._sighup_restarts():
            server.serve_forever()

    @contextlib.contextmanager
    def _sighup_restarts(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_hup(signum: int, frame: FrameType | None) -> None:
            log.info("received SIGHUP: handlers are created anew for the next requests")
            if self.app is not None:
                self.app.restart()

        previous = signal.signal(signal.SIGHUP, on_hup)
        try:
            yield
        finally:
            signal.signal(signal.SIGHUP, previous)


# -- per-thread sys.stdin, sys.stdout and os.environ for produce_cgilike() ------


class _Redirection:
    """Installs proxies while any request runs; each thread sees its own streams.

    Strategy: python-scgi swapped ``sys.stdout`` and ``os.environ`` for the
    whole process, which is only safe with one request per process.  Here
    the globals are replaced by proxies that forward to the current
    thread's request, or to the saved originals in threads outside a
    request; the originals come back when the last request ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._local = threading.local()
        self._originals: tuple[Any, Any, Any] = (None, None, None)
        self._proxies: tuple[Any, Any, Any] = (None, None, None)

    def current(self, index: int) -> Any:
        streams = getattr(self._local, "streams", None)
        return streams[index] if streams is not None else self._originals[index]

    @contextlib.contextmanager
    def __call__(self, stdin: Any, stdout: Any, env: dict[str, str]) -> Iterator[None]:
        self._acquire()
        self._local.streams = (stdin, stdout, env)
        try:
            yield
        finally:
            self._local.streams = None
            self._release()

    def _acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                self._originals = (sys.stdin, sys.stdout, os.environ)
                self._proxies = (_StreamProxy(0), _StreamProxy(1), _EnvironProxy())
                sys.stdin, sys.stdout, os.environ = self._proxies  # type: ignore[assignment]
            self._users += 1

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users:
                return
            # Put back only what is still ours: code may have replaced it meanwhile.
            stdin, stdout, environ = self._originals
            if sys.stdin is self._proxies[0]:
                sys.stdin = stdin
            if sys.stdout is self._proxies[1]:
                sys.stdout = stdout
            if os.environ is self._proxies[2]:
                os.environ = environ  # noqa: B003 - restoring the saved object
            self._originals = self._proxies = (None, None, None)


_redirect = _Redirection()


class _StreamProxy:
    def __init__(self, index: int) -> None:
        self._index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(_redirect.current(self._index), name)


class _EnvironProxy(MutableMapping[str, str]):
    def _target(self) -> MutableMapping[str, str]:
        target: MutableMapping[str, str] = _redirect.current(2)
        return target

    def __getitem__(self, key: str) -> str:
        return self._target()[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._target()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._target()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._target())

    def __len__(self) -> int:
        return len(self._target())

    def copy(self) -> dict[str, str]:
        return dict(self._target())


def main(argv: list[str] | None = None) -> None:
    """``python -m scgiwsgi.scgi_server [PORT]``: serve the default handler."""
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0]) if args else DEFAULT_PORT
    SCGIServer(port=port).serve()


if __name__ == "__main__":
    main()
