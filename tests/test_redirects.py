"""scgiwsgi.redirects: relative Location headers made absolute from the request."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import pytest

from scgiwsgi.config import Config
from scgiwsgi.redirects import AbsoluteRedirects, absolute_location, request_base_url

NGINX_LIKE = {
    "wsgi.url_scheme": "http",
    "HTTP_HOST": "example.org:8080",
    "REQUEST_URI": "/app/form/edit?id=7",
    "SCRIPT_NAME": "/app",
    "PATH_INFO": "/form/edit",
    "QUERY_STRING": "id=7",
    "SERVER_NAME": "ignored",
    "SERVER_PORT": "1",
}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (NGINX_LIKE, "http://example.org:8080/app/form/edit?id=7"),
        ({**NGINX_LIKE, "wsgi.url_scheme": "https"}, "https://example.org:8080/app/form/edit?id=7"),
        # No Host header: SERVER_NAME, and SERVER_PORT unless it is the default.
        (
            {**NGINX_LIKE, "HTTP_HOST": "", "SERVER_NAME": "h", "SERVER_PORT": "80"},
            "http://h/app/form/edit?id=7",
        ),
        (
            {**NGINX_LIKE, "HTTP_HOST": "", "SERVER_NAME": "h", "SERVER_PORT": "8443"},
            "http://h:8443/app/form/edit?id=7",
        ),
        # No REQUEST_URI: rebuilt from the decoded parts (latin-1 code points of UTF-8).
        (
            {
                "wsgi.url_scheme": "http",
                "HTTP_HOST": "h",
                "SCRIPT_NAME": "/app",
                "PATH_INFO": "/caf\xc3\xa9 x",
                "QUERY_STRING": "a=1",
            },
            "http://h/app/caf%C3%A9%20x?a=1",
        ),
        ({"HTTP_HOST": "h"}, "http://h/"),
    ],
)
def test_request_base_url(environ: dict[str, Any], expected: str) -> None:
    assert request_base_url(environ) == expected


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/app/done", "http://example.org:8080/app/done"),
        ("done", "http://example.org:8080/app/form/done"),
        ("../list?page=2", "http://example.org:8080/app/list?page=2"),
        ("?id=8", "http://example.org:8080/app/form/edit?id=8"),
        ("//cdn.example.org/x", "http://cdn.example.org/x"),
        ("https://other.example/x", "https://other.example/x"),
        ("mailto:someone@example.org", "mailto:someone@example.org"),
        ("/caf%C3%A9", "http://example.org:8080/caf%C3%A9"),
    ],
)
def test_absolute_location(location: str, expected: str) -> None:
    assert absolute_location(location, NGINX_LIKE) == expected


def _app(status: str, headers: list[tuple[str, str]]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response(status, headers)
        return [b"body"]

    return app


def test_middleware_rewrites_only_location() -> None:
    calls: list[tuple[str, list[tuple[str, str]], Any]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        calls.append((status, headers, exc_info))
        return lambda data: None

    headers = [("Content-Type", "text/plain"), ("location", "/app/done"), ("X-Other", "/x")]
    body = AbsoluteRedirects(_app("302 Found", headers))(dict(NGINX_LIKE), start_response)
    assert list(body) == [b"body"]
    assert calls == [
        (
            "302 Found",
            [
                ("Content-Type", "text/plain"),
                ("location", "http://example.org:8080/app/done"),
                ("X-Other", "/x"),
            ],
            None,
        )
    ]


def test_middleware_passes_exc_info_and_odd_headers_through() -> None:
    seen: list[Any] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen.append((headers, exc_info))
        return None

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            raise ValueError("x")
        except ValueError:
            # Not a list of tuples: left for the server's own validation to reject.
            start_response("500 Oops", (("Location", "/x"),), sys.exc_info())
        return []

    AbsoluteRedirects(app)(dict(NGINX_LIKE), start_response)
    headers, exc_info = seen[0]
    assert headers == (("Location", "/x"),)
    assert exc_info[0] is ValueError


def test_config_option_defaults_off() -> None:
    assert Config().absolute_redirects is False
    assert Config(absolute_redirects=True).absolute_redirects is True
