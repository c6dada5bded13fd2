"""The built-in page served when no application is given: the request's CGI variables.

Each CGI variable of the request (every non-``wsgi.`` key of the environ) is
one ``NAME: 'value'`` line, sorted by name: the classic first test run of an
SCGI deployment, showing exactly what the front end sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["application", "render_cgi_parameters"]


def render_cgi_parameters(environ: dict[str, Any]) -> str:
    """Return the sorted ``NAME: 'value'`` lines for ``environ``'s CGI variables."""
    names = sorted(name for name, value in environ.items() if isinstance(value, str))
    return "".join(f"{name}: {environ[name]!r}\n" for name in names if "." not in name)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI app listing the request's CGI parameters as plain text."""
    body = render_cgi_parameters(environ).encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
