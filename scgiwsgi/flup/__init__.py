"""flup's SCGI launcher API, served by scgiwsgi.

A launcher written for flup runs with its import changed::

    from scgiwsgi.flup.scgi_fork import WSGIServer   # was: flup.server.scgi_fork
    from wsgi_app import application

    ret = WSGIServer(application, bindAddress=("", 8040), scriptName="/blog").run()
    sys.exit(ret and 42 or 0)

:mod:`scgiwsgi.flup.scgi` is the threaded server, :mod:`scgiwsgi.flup.scgi_fork`
the forking one.  Their constructors take flup's arguments and map them onto
scgiwsgi's options; the request handling is scgiwsgi's, so flup's bugs
(``wsgi.input.read()`` waiting for EOF, undecoded ``PATH_INFO``,
case-sensitive ``HTTPS``, CR/LF passing into headers, a silently truncated
200 after a late error, an IPv4-only peer allow-list, ``cgitb``) are gone.
"""

from __future__ import annotations

__all__ = ["NoDefault"]


class NoDefault:
    """flup's marker for "no scriptName given": take the front end's paths."""
