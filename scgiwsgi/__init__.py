"""scgiwsgi: a production WSGI server that speaks SCGI to a front web server."""

from __future__ import annotations

__version__ = "0.1.0"
