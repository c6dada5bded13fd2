"""scgiwsgi: a production WSGI server that speaks SCGI to a front web server.

::

    from scgiwsgi import WSGIServer
    WSGIServer(application, bind="127.0.0.1:4000").serve_forever()
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .config import Config
from .errors import (
    AppImportError,
    BindError,
    BodyTooLarge,
    ConfigError,
    HeaderTooLarge,
    MalformedRequest,
    ProtocolError,
    ResponseError,
    SCGIError,
    StartupError,
)
from .gateway import WSGIApp
from .server import WSGIServer

__all__ = [
    "AppImportError",
    "BindError",
    "BodyTooLarge",
    "Config",
    "ConfigError",
    "HeaderTooLarge",
    "MalformedRequest",
    "ProtocolError",
    "ResponseError",
    "SCGIError",
    "StartupError",
    "WSGIServer",
    "__version__",
    "serve",
]


def serve(app: WSGIApp | None = None, **options: Any) -> None:
    """Serve ``app`` until SIGTERM/SIGINT: ``WSGIServer(app, **options).serve_forever()``.

    Raises :class:`ConfigError` for a bad option and :class:`BindError` when an
    address cannot be bound.
    """
    WSGIServer(app, **options).serve_forever()
