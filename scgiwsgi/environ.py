"""Build the PEP 3333 environ from the SCGI headers of one request.

Pure functions: no socket, no global state.  Every SCGI header is already a
CGI variable, so it becomes an environ key as it is (decoded as latin-1);
the server only fills what PEP 3333 requires and the front end left out.
:func:`environ_from_variables` takes the variables already decoded (what the
parser produces); :func:`build_environ` takes raw bytes and decodes them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "ServerInfo",
    "build_environ",
    "environ_from_variables",
    "is_apache_proxy",
    "split_script_name",
    "url_scheme",
]

WSGI_VERSION = (1, 0)

# A client header named Content-Type or Content-Length reaches the app as
# CONTENT_TYPE / CONTENT_LENGTH; the HTTP_ twins are forbidden by PEP 3333.
_FORBIDDEN_KEYS = ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH")
_ENCODED_SLASH_RE = re.compile("%2f", re.IGNORECASE)
_SCHEMES = ("http", "https")


class ServerInfo:
    """What the server knows of itself, for the variables a front end omits.

    ``server_name`` and ``server_port`` are the listening socket's address;
    ``multithread`` and ``multiprocess`` come from the backend class.
    """

    __slots__ = ("_wsgi_constants", "script_name", "server_name", "server_port")

    def __init__(
        self,
        *,
        server_name: str = "localhost",
        server_port: str = "80",
        multithread: bool = False,
        multiprocess: bool = False,
        script_name: str = "",
    ) -> None:
        self.server_name = server_name
        self.server_port = server_port
        self.script_name = script_name
        # The wsgi.* keys that are the same for every request, copied into
        # each environ in one step.
        self._wsgi_constants: dict[str, Any] = {
            "wsgi.version": WSGI_VERSION,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    @property
    def multithread(self) -> bool:
        """``wsgi.multithread`` of every environ built with this server."""
        return bool(self._wsgi_constants["wsgi.multithread"])

    @multithread.setter
    def multithread(self, value: bool) -> None:
        self._wsgi_constants["wsgi.multithread"] = value

    @property
    def multiprocess(self) -> bool:
        """``wsgi.multiprocess`` of every environ built with this server."""
        return bool(self._wsgi_constants["wsgi.multiprocess"])

    @multiprocess.setter
    def multiprocess(self, value: bool) -> None:
        self._wsgi_constants["wsgi.multiprocess"] = value


def environ_from_variables(
    variables: Mapping[str, str],
    *,
    server: ServerInfo,
    wsgi_input: IO[bytes] | Any,
    wsgi_errors: IO[str] | None = None,
    file_wrapper: Any = None,
) -> dict[str, Any]:
    """Return the WSGI environ for a request with the given CGI variables.

    ``variables`` maps names to values already decoded as latin-1, as
    :attr:`scgiwsgi.protocol.RequestHead.variables` carries them; every one
    becomes an environ key as it is.  The mapping is copied, never changed.
    Never raises for any latin-1 content: odd values are passed through,
    missing ones defaulted.
    """
    environ: dict[str, Any] = {**variables, **server._wsgi_constants}
    if "HTTP_CONTENT_TYPE" in environ or "HTTP_CONTENT_LENGTH" in environ:
        for key in _FORBIDDEN_KEYS:
            environ.pop(key, None)
    # The request line's defaults are filled here, not in a helper: this
    # runs once per request, and a call costs more than the lines.
    if "REQUEST_METHOD" not in environ:
        environ["REQUEST_METHOD"] = "GET"
    if "SERVER_PROTOCOL" not in environ:
        environ["SERVER_PROTOCOL"] = "HTTP/1.1"
    if "QUERY_STRING" not in environ:
        uri = environ.get("REQUEST_URI")
        environ["QUERY_STRING"] = uri.partition("?")[2] if uri else ""
    if environ.get("CONTENT_TYPE") == "":
        del environ["CONTENT_TYPE"]
    # The scheme as nginx and Apache send it needs no call to url_scheme().
    scheme = environ.get("REQUEST_SCHEME")
    if scheme not in _SCHEMES or "HTTPS" in environ:
        scheme = url_scheme(environ)
    # A request with SERVER_NAME and SERVER_PORT (Apache; nginx with a
    # server_name) needs no _fill_server_address() call, and one as nginx
    # sends it (no PATH_INFO, no SCRIPT_FILENAME) no _fill_paths() call.
    if not (environ.get("SERVER_NAME") and environ.get("SERVER_PORT")):
        _fill_server_address(environ, server, scheme)
    prefix = server.script_name
    if prefix or "PATH_INFO" in environ or "SCRIPT_FILENAME" in environ:
        _fill_paths(environ, prefix)
    else:  # what _fill_paths() does for these, without the call
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = "", _request_path(environ)
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = wsgi_input
    environ["wsgi.errors"] = wsgi_errors if wsgi_errors is not None else sys.stderr
    if file_wrapper is not None:
        environ["wsgi.file_wrapper"] = file_wrapper
    return environ


def build_environ(
    headers: Mapping[bytes, bytes],
    *,
    server: ServerInfo,
    wsgi_input: IO[bytes] | Any,
    wsgi_errors: IO[str] | None = None,
    file_wrapper: Any = None,
) -> dict[str, Any]:
    """Return the WSGI environ for a request with the given SCGI headers.

    ``headers`` maps raw names to raw values, as
    :attr:`scgiwsgi.protocol.RequestHead.headers` carries them; they are
    decoded as latin-1 and passed to :func:`environ_from_variables` (the
    faster entry point when the variables are already decoded).  Never raises
    for any header content: odd values are passed through, missing ones
    defaulted.
    """
    return environ_from_variables(
        {name.decode("latin-1"): value.decode("latin-1") for name, value in headers.items()},
        server=server,
        wsgi_input=wsgi_input,
        wsgi_errors=wsgi_errors,
        file_wrapper=file_wrapper,
    )


def url_scheme(environ: Mapping[str, Any]) -> str:
    """``https`` when HTTPS is ``on``/``1`` (any case), else REQUEST_SCHEME, else ``http``."""
    https = environ.get("HTTPS")
    if https is not None and str(https).strip().lower() in ("on", "1"):
        return "https"
    scheme = str(environ.get("REQUEST_SCHEME") or "").strip().lower()
    return scheme if scheme in _SCHEMES else "http"


def split_script_name(path: str, prefix: str) -> tuple[str, str]:
    """Split a decoded request path into ``(SCRIPT_NAME, PATH_INFO)``.

    The split happens only at a segment boundary: ``/app/x`` under ``/app``
    gives ``("/app", "/x")``; ``/application`` is outside the prefix and gives
    ``("", "/application")``.
    """
    if not prefix:
        return "", path
    if path == prefix or path.startswith(prefix + "/"):
        return prefix, path[len(prefix) :]
    return "", path


def _fill_server_address(environ: dict[str, Any], server: ServerInfo, scheme: str) -> None:
    # The Host header's name and port, where the front end sent no (or an
    # empty) SERVER_NAME or SERVER_PORT (nginx leaves SERVER_NAME empty when
    # its server block has no server_name).
    name = environ.get("SERVER_NAME")
    port = environ.get("SERVER_PORT")
    host_header = environ.get("HTTP_HOST", "")
    if host_header.startswith("["):
        host, _, rest = host_header.partition("]")
        host += "]"
        host_port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, host_port = host_header.partition(":")
    if not name:
        environ["SERVER_NAME"] = host or server.server_name
    if not port:
        if not host:
            environ["SERVER_PORT"] = server.server_port
        else:
            environ["SERVER_PORT"] = host_port or ("443" if scheme == "https" else "80")


def _fill_paths(environ: dict[str, Any], prefix: str) -> None:
    # Strategy: a front end that sends PATH_INFO (lighttpd) knows its mount;
    # keep what it sent unless the operator set --script-name.  Otherwise
    # (nginx, Apache) the truth is REQUEST_URI: strip the query,
    # percent-decode, decode latin-1.
    apache = "SCRIPT_FILENAME" in environ and is_apache_proxy(environ)
    if "PATH_INFO" in environ and not prefix and not apache:
        environ.setdefault("SCRIPT_NAME", "")
        return
    path = (_apache_current_path(environ) if apache else None) or _request_path(environ)
    if prefix:
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = split_script_name(path, prefix)
    else:  # what split_script_name() gives without a prefix, without the call
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = "", path


def is_apache_proxy(environ: Mapping[str, Any]) -> bool:
    """Whether the request came through Apache's ``mod_proxy_scgi``.

    mod_proxy names the backend URL as ``SCRIPT_FILENAME``
    (``proxy:scgi://host:port/path``).  Its ``SCRIPT_NAME`` is the whole
    decoded path being served, so it says nothing about the mount; the
    ``PATH_INFO`` that the ``proxy-scgi-pathinfo`` variable adds (set with
    ``SetEnvIf``) is still percent-encoded while SCRIPT_NAME is cut by its
    length (``/caf%C3%A9`` leaves SCRIPT_NAME ``/app/caf\xc3\xa9``).
    """
    filename = environ.get("SCRIPT_FILENAME")
    return filename is not None and str(filename).startswith("proxy:")


def _apache_current_path(environ: Mapping[str, Any]) -> str | None:
    # Strategy: Apache's SCRIPT_NAME is the URI it is serving now, decoded.
    # After an internal redirect (a 200 with a local Location, ErrorDocument)
    # or a mod_rewrite [PT] rewrite it differs from REQUEST_URI, which stays
    # the client's original: then SCRIPT_NAME is the path to serve.  When the
    # two agree, REQUEST_URI wins (AllowEncodedSlashes NoDecode leaves "%2F"
    # encoded in SCRIPT_NAME only).  A PATH_INFO (proxy-scgi-pathinfo) makes
    # SCRIPT_NAME a fragment: REQUEST_URI then.
    current = environ.get("SCRIPT_NAME")
    if "PATH_INFO" in environ or not isinstance(current, str) or not current.startswith("/"):
        return None
    if "REQUEST_URI" not in environ:
        return current
    original = _request_path(environ)
    if original in (current, _ENCODED_SLASH_RE.sub("/", current)):
        return original
    return current


def _request_path(environ: Mapping[str, Any]) -> str:
    uri = environ.get("REQUEST_URI")
    if uri is None:
        return str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    raw_path: str = uri.partition("?")[0].partition("#")[0]
    if "://" in raw_path and not raw_path.startswith("/"):
        # An absolute-form request target (proxy style): keep only its path.
        raw_path = "/" + raw_path.split("://", 1)[1].partition("/")[2]
    if "%" not in raw_path:
        return raw_path
    # unquote_to_bytes() would encode a str as UTF-8: give it the wire bytes.
    return unquote_to_bytes(raw_path.encode("latin-1")).decode("latin-1")
