"""The smallest WSGI application: answers every request with "Hello, world!".

Run it from the repository root with::

    scgi-wsgi examples.hello
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answer 200 with a plain-text greeting."""
    body = b"Hello, world!\n"
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]
