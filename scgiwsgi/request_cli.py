"""``scgi-request``: send one SCGI request to any SCGI server and print the answer.

What ``cgi-fcgi -bind -connect`` is to FastCGI: the way to check a
deployment with no web server in front::

    scgi-request 127.0.0.1:4000 /health
    scgi-request unix:/run/app.sock /api/items -X POST \\
        -H 'Content-Type: application/json' -d @item.json -i
    echo 'a=1' | scgi-request 127.0.0.1:4000 /form -d - -e HTTPS=on

The request carries the CGI variables nginx's stock ``scgi_params`` sends
(see :func:`scgiwsgi.client.request`); ``-e NAME=VALUE`` sets or overrides
any of them.  The response body goes to standard output, preceded by the
``Status`` line and the headers with ``-i``.

Exit statuses: 0 for a 1xx, 2xx or 3xx answer, 1 for 4xx and 5xx, 2 when no
valid answer came (connection refused, timeout, a malformed response) or
for a bad option, with one line on standard error saying why.
``python -m scgiwsgi.request_cli`` is the same command.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO, NoReturn

import click

from . import __version__
from .client import ResponseFormatError, SCGIResponse, request

__all__ = ["EXIT_ERROR_STATUS", "EXIT_NO_RESPONSE", "EXIT_OK", "command", "main"]

EXIT_OK = 0
"""The server answered with a status below 400."""
EXIT_ERROR_STATUS = 1
"""The server answered with a 4xx or 5xx status."""
EXIT_NO_RESPONSE = 2
"""No valid answer (or a bad option): nothing was printed to standard output."""

_PROG = "scgi-request"


def _header(value: str) -> tuple[str, str]:
    name, colon, rest = value.partition(":")
    if not colon or not name.strip() or name != name.strip():
        raise click.BadParameter(f"{value!r} is not 'Name: value'", param_hint="'-H'")
    return name, rest.strip(" \t")


def _variable(value: str) -> tuple[str, str]:
    name, equals, rest = value.partition("=")
    if not equals or not name:
        raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint="'-e'")
    return name, rest


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit status: 0 for a status below 400, 1 for 4xx/5xx, 2 when no valid "
    "response came (connection refused, timeout, malformed answer) or for a bad option.",
)
@click.argument("address")
@click.argument("path", default="/")
@click.option(
    "-X",
    "--method",
    metavar="METHOD",
    help="Request method. [default: GET, or POST with -d]",
)
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="An HTTP request header, sent as HTTP_NAME (Content-Type as CONTENT_TYPE); repeatable.",
)
@click.option(
    "-d",
    "--data",
    metavar="DATA|@FILE|-",
    help="The request body: DATA itself, the contents of FILE, or standard input.",
)
@click.option(
    "-e",
    "--env",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a CGI variable (HTTPS=on, SCRIPT_NAME=/app, ...); repeatable.",
)
@click.option(
    "-i",
    "--include",
    is_flag=True,
    help="Print the Status line and the response headers before the body.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Time allowed for the whole exchange.",
)
@click.version_option(__version__, "-V", "--version", prog_name=_PROG)
def command(
    address: str,
    path: str,
    method: str | None,
    headers: tuple[str, ...],
    data: str | None,
    variables: tuple[str, ...],
    include: bool,
    timeout: float,
) -> None:
    """Send one request to the SCGI server at ADDRESS and print the response body.

    ADDRESS is HOST:PORT, [IPv6]:PORT, unix:/path or /path.  PATH is the
    percent-encoded request path, with an optional ?query. [default: /]
    """
    parsed_headers = [_header(value) for value in headers]
    parsed_variables = dict(_variable(value) for value in variables)
    with _body(data) as body:
        try:
            response = request(
                address,
                method=method or ("POST" if data is not None else "GET"),
                path=path,
                headers=_merge(parsed_headers),
                environ=parsed_variables,
                body=body,
                timeout=timeout,
            )
        except ValueError as exc:
            _fail(str(exc))
        except TimeoutError:
            _fail(f"no complete response from {address} within {timeout:g}s")
        except ResponseFormatError as exc:
            _fail(f"invalid response from {address}: {exc}")
        except OSError as exc:
            _fail(f"cannot talk to {address}: {exc.strerror or exc}")
    _write(response, include)
    sys.exit(EXIT_OK if response.status < 400 else EXIT_ERROR_STATUS)


def _merge(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Repeated ``-H`` names joined the way nginx joins repeated headers."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in merged:
            value = merged[key] + ("; " if key == "cookie" else ", ") + value
        merged[key] = value
    return merged


@contextlib.contextmanager
def _body(data: str | None) -> Iterator[bytes | BinaryIO]:
    if data is None:
        yield b""
    elif data == "-":
        yield sys.stdin.buffer.read()
    elif data.startswith("@"):
        try:
            file = open(data[1:], "rb")  # noqa: SIM115 - closed below, errors reported first
        except OSError as exc:
            _fail(f"cannot read the body file {data[1:]!r}: {exc.strerror}")
        with file:
            yield file
    else:
        yield data.encode("utf-8", "surrogateescape")


def _write(response: SCGIResponse, include: bool) -> None:
    out = sys.stdout.buffer
    try:
        if include:
            head = io.BytesIO()
            head.write(f"Status: {response.status_line}\r\n".encode("latin-1"))
            for name, value in response.headers:
                head.write(f"{name}: {value}\r\n".encode("latin-1"))
            head.write(b"\r\n")
            out.write(head.getvalue())
        out.write(response.body)
        out.flush()
    except BrokenPipeError:
        # The reader went away (| head): no traceback, and point stdout at
        # /dev/null so that the interpreter's last flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _fail(message: str) -> NoReturn:
    click.echo(f"{_PROG}: error: {message}", err=True)
    sys.exit(EXIT_NO_RESPONSE)


def main() -> None:
    """Console-script entry point."""
    command(prog_name=_PROG)


if __name__ == "__main__":
    main()
