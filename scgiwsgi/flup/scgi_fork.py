"""flup's forking SCGI server (``flup.server.scgi_fork``) on scgiwsgi's fork backend.

::

    from scgiwsgi.flup.scgi_fork import WSGIServer   # was: flup.server.scgi_fork
    from wsgi_app import application
    server = WSGIServer(application, bindAddress=("", 8040), scriptName="/blog")
    ret = server.run()
    sys.exit(ret and 42 or 0)
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ._base import FlupServer

__all__ = ["WSGIServer"]


class WSGIServer(FlupServer):
    """flup's forking ``WSGIServer``, same arguments, one request per process at a time.

    The pool is ``max(maxSpare, maxChildren)`` worker processes (default 50),
    so that many requests are served at once, as flup promised (its own pool
    never grew past the spare count); ``minSpare`` and ``maxSpare`` are
    checked as flup did.  ``maxRequests`` retires a worker after that many
    requests; ``timeout`` (seconds) kills a worker whose request runs longer,
    logging its stack (None: never); ``sockTimeout`` bounds each wait on the
    front end.  The other arguments are those of :mod:`scgiwsgi.flup.scgi`.
    The constructor, in flup's order, is :class:`~scgiwsgi.flup._base.FlupServer`'s.
    """

    backend = "fork"
    flup_keywords = ("timeout", "minSpare", "maxSpare", "maxChildren", "maxRequests", "sockTimeout")
    ignored_keywords = ("multithreaded", "multiprocess", "jobClass", "jobArgs")

    def backend_options(self, **kw: Any) -> dict[str, Any]:
        return _prefork_options(**kw)


def _prefork_options(
    *,
    timeout: float | None = None,
    minSpare: int = 1,
    maxSpare: int = 5,
    maxChildren: int = 50,
    maxRequests: int = 0,
    sockTimeout: float = 0,
) -> dict[str, Any]:
    if minSpare < 1:
        raise ConfigError("minSpare must be at least 1")
    if maxSpare < minSpare:
        raise ConfigError("maxSpare must be greater than, or equal to, minSpare")
    if sockTimeout < 0:
        raise ConfigError("sockTimeout must be >= 0")
    options: dict[str, Any] = {
        "workers": max(maxSpare, maxChildren),
        "threads": 1,
        "max_requests": maxRequests,
        "timeout": timeout or 0,
    }
    if sockTimeout > 0:
        options["header_timeout"] = options["body_timeout"] = sockTimeout
    return options
