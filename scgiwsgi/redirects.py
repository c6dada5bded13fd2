"""Absolute ``Location`` headers, built from the request (``--absolute-redirects``).

Applications often answer a POST with ``302`` and a relative ``Location``
such as ``/app/done``.  Browsers resolve it, but some front ends treat a
local ``Location`` themselves: Apache's ``mod_proxy_scgi`` serves a status
200 response with ``Location: /path`` as an internal GET redirect
(``ProxySCGIInternalRedirect``, on by default), and the old Apache
``mod_scgi`` did so for any status, which turned POST-then-redirect into a
page the browser never asked for.  With :class:`AbsoluteRedirects` around
the application every relative ``Location`` leaves as
``scheme://host/path``, which no front end follows internally.

The base is the request as the client sent it: ``wsgi.url_scheme``, then
``HTTP_HOST`` (else ``SERVER_NAME`` and ``SERVER_PORT``), then the raw path of
``REQUEST_URI`` (else the quoted ``SCRIPT_NAME`` + ``PATH_INFO``), then the
query string.  A relative reference is resolved against it as RFC 3986
says, so ``done`` next to ``/app/form`` gives ``/app/done``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

__all__ = ["AbsoluteRedirects", "absolute_location", "request_base_url"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def request_base_url(environ: dict[str, Any]) -> str:
    """The URL the client requested, from a WSGI environ (never raises)."""
    scheme = str(environ.get("wsgi.url_scheme") or "http")
    return f"{scheme}://{_host(environ, scheme)}{_path_and_query(environ)}"


def _host(environ: dict[str, Any], scheme: str) -> str:
    host = str(environ.get("HTTP_HOST") or "")
    if host:
        return host
    name = str(environ.get("SERVER_NAME") or "localhost")
    port = str(environ.get("SERVER_PORT") or "")
    if port and port != _DEFAULT_PORTS.get(scheme):
        return f"{name}:{port}"
    return name


def _path_and_query(environ: dict[str, Any]) -> str:
    uri = str(environ.get("REQUEST_URI") or "")
    if uri.startswith("/"):
        return uri.partition("#")[0]
    # Without a usable REQUEST_URI, rebuild the path from the decoded parts;
    # they are latin-1 code points of the wire bytes (PEP 3333).
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    path = quote(path.encode("latin-1", "replace"), safe="/;=,~!$&'()*+@:") or "/"
    query = str(environ.get("QUERY_STRING") or "")
    return f"{path}?{query}" if query else path


def absolute_location(location: str, environ: dict[str, Any]) -> str:
    """``location`` resolved against the request URL; absolute ones are returned as is."""
    if urlsplit(location).scheme:
        return location
    return urljoin(request_base_url(environ), location)


class AbsoluteRedirects:
    """WSGI middleware: every ``Location`` header the app sends leaves absolute.

    Used by the server when ``Config.absolute_redirects`` is set; it can also
    wrap an application directly.  Headers other than ``Location``, the
    status and the body pass through unchanged.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        def start(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Any:
            if type(headers) is list:  # anything else is the server's to reject
                headers = [_absolute_header(header, environ) for header in headers]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def _absolute_header(header: Any, environ: dict[str, Any]) -> Any:
    if (
        type(header) is tuple
        and len(header) == 2
        and type(header[0]) is str
        and header[0].lower() == "location"
        and type(header[1]) is str
    ):
        return (header[0], absolute_location(header[1], environ))
    return header
