"""flup's threaded SCGI server (``flup.server.scgi``) on scgiwsgi's threaded backend.

::

    from scgiwsgi.flup.scgi import WSGIServer   # was: from flup.server.scgi import WSGIServer
    ret = WSGIServer(application, bindAddress=("127.0.0.1", 4000)).run()
    sys.exit(ret and 42 or 0)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..gateway import WSGIApp
from . import NoDefault
from ._base import BindAddress, FlupServer

__all__ = ["WSGIServer"]


class WSGIServer(FlupServer):
    """flup's threaded ``WSGIServer``, same arguments.

    ``maxThreads`` is the number of requests served at once (scgiwsgi's
    ``threads``; default 8 rather than flup's unbounded pool);
    ``multithreaded=False`` serves one request at a time.  ``minSpare`` and
    ``maxSpare`` are accepted for compatibility: the pool is fixed.
    ``bindAddress`` is ``(host, port)`` or a unix socket path (its mode is
    ``0o777`` minus ``umask``, as flup's).  ``allowedServers`` lists the
    front-end addresses allowed to connect (IPv4 and IPv6); None allows all.
    """

    backend = "threaded"
    flup_keywords = ("minSpare", "maxSpare", "maxThreads")

    def __init__(
        self,
        application: WSGIApp,
        scriptName: object = NoDefault,
        environ: Mapping[str, Any] | None = None,
        multithreaded: bool = True,
        multiprocess: bool = False,
        bindAddress: BindAddress = ("localhost", 4000),
        umask: int | None = None,
        allowedServers: Sequence[str] | None = None,
        loggingLevel: int = logging.INFO,
        debug: bool = False,
        **kw: Any,
    ) -> None:
        self.multithreaded = multithreaded
        self.multiprocess = multiprocess
        super().__init__(
            application,
            scriptName=scriptName,
            environ=environ,
            bindAddress=bindAddress,
            umask=umask,
            allowedServers=allowedServers,
            loggingLevel=loggingLevel,
            debug=debug,
            **kw,
        )

    def backend_options(self, **kw: Any) -> dict[str, Any]:
        if not self.multithreaded:
            return {"threads": 1}
        if "maxThreads" in kw:
            return {"threads": int(kw["maxThreads"])}
        return {}
