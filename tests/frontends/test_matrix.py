"""The front-end matrix: nginx, Apache httpd and lighttpd, at ``/`` and under ``/app``.

Each combination of front end, transport (TCP, unix socket) and mount runs
one scgiwsgi process (``tests/frontends/apps/matrix.py``, a Flask app with
no deployment-specific code) behind one front end configured by the
repository's example (``examples/<front end>.conf``), for the whole module.
The last test of each combination checks the front end's error log.

Observed quirks are asserted as such (and documented in
docs/deployment.rst), so a front end that changes its behaviour fails here.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .apache import Apache
from .apps.matrix import stream_bytes
from .common import Deployment, FrontEnd, HTTPResult, Site
from .lighttpd import Lighttpd
from .nginx import Nginx, debian_host_param

MATRIX_APP = str(Path(__file__).parent / "apps" / "matrix.py") + ":app"
FRONT_ENDS: dict[str, type[FrontEnd]] = {"nginx": Nginx, "apache": Apache, "lighttpd": Lighttpd}
STATIC_TEXT = "served by the front end\n"
UPLOAD_SIZE = 10 * 1024 * 1024
LARGE_HEADER = 7000  # Apache's limit for one backend header line is 8 KiB


class Mounted:
    """One deployment of the matrix and where its app is mounted."""

    def __init__(self, deployment: Deployment, prefix: str) -> None:
        self.d = deployment
        self.front = deployment.front
        self.prefix = prefix

    @property
    def kind(self) -> str:
        return self.front.name

    def get(self, path: str, **headers: str) -> HTTPResult:
        return self.front.request("GET", self.prefix + path, headers=headers)

    def post(self, path: str, body: bytes, content_type: str) -> HTTPResult:
        return self.front.request(
            "POST", self.prefix + path, body=body, headers={"Content-Type": content_type}
        )

    def json(self, result: HTTPResult) -> Any:
        assert result.status == 200, f"{result!r}\n{self.d.describe()}"
        return json.loads(result.body)

    @property
    def host(self) -> str:
        """The Host the app sees: Debian's scgi_params sends nginx's $host, without the port."""
        if self.kind == "nginx" and debian_host_param():
            return "127.0.0.1"
        return f"127.0.0.1:{self.front.port}"


COMBINATIONS = [
    (kind, transport, prefix)
    for kind in FRONT_ENDS
    for transport in ("tcp", "unix")
    for prefix in ("", "/app")
]


@pytest.fixture(
    scope="module",
    params=COMBINATIONS,
    ids=[f"{kind}-{tr}-{prefix.strip('/') or 'root'}" for kind, tr, prefix in COMBINATIONS],
)
def site(request: pytest.FixtureRequest, frontends_tmp: Path) -> Iterator[Mounted]:
    kind, transport, prefix = request.param
    front_end = FRONT_ENDS[kind]
    front_end.find()
    workdir = frontends_tmp / f"matrix-{kind}-{transport}-{prefix.strip('/') or 'root'}"
    static_dir = workdir / "static"
    static_dir.mkdir(parents=True)
    (static_dir / "hello.txt").write_text(STATIC_TEXT)
    deployment = Deployment.start(
        workdir,
        MATRIX_APP,
        front_end,
        transport=transport,
        site=Site.example(f"{kind}.conf", prefix, static_dir=static_dir),
        script_name=prefix,
    )
    try:
        yield Mounted(deployment, prefix)
    finally:
        deployment.stop()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "scgiwsgi-" + os.urandom(12).hex()
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, (filename, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


# -- URLs ----------------------------------------------------------------------------


def test_index(site: Mounted) -> None:
    result = site.get("/")
    assert result.status == 200, site.d.describe()
    assert result.body == b"Hello from the matrix app!\n"
    assert result.headers["Server"].lower().startswith(site.kind + "/")  # answered by the front end


def test_url_for_path_and_script_root(site: Mounted) -> None:
    seen = site.json(site.get("/info?x=1"))
    assert seen["path"] == "/info"
    assert seen["script_root"] == site.prefix
    assert seen["url_for_index"] == site.prefix + "/"
    assert seen["url"] == f"http://{site.host}{site.prefix}/info?x=1"
    assert seen["url_for_external"] == f"http://{site.host}{site.prefix}/"
    assert seen["environ"]["SCRIPT_NAME"] == site.prefix
    assert seen["environ"]["PATH_INFO"] == "/info"
    assert seen["scheme"] == "http"
    assert seen["is_secure"] is False


def test_percent_encoded_non_ascii_path_and_query(site: Mounted) -> None:
    seen = site.json(site.get("/p/caf%C3%A9/x%20y?q=caf%C3%A9&r=a+b&s=%26"))
    # PEP 3333: PATH_INFO is decoded, as latin-1 code points of the UTF-8 bytes;
    # QUERY_STRING stays as sent.
    assert seen["environ"]["PATH_INFO"] == "/p/caf\xc3\xa9/x y"
    assert seen["environ"]["QUERY_STRING"] == "q=caf%C3%A9&r=a+b&s=%26"
    assert (
        seen["environ"]["REQUEST_URI"] == site.prefix + "/p/caf%C3%A9/x%20y?q=caf%C3%A9&r=a+b&s=%26"
    )
    assert seen["rest"] == "café/x y"
    assert seen["path"] == "/p/café/x y"
    assert seen["args"] == {"q": ["café"], "r": ["a b"], "s": ["&"]}
    assert seen["url_for_self"] == f"{site.prefix}/p/caf%C3%A9/x%20y"


def test_encoded_slash_in_a_segment(site: Mounted) -> None:
    # CGI decodes PATH_INFO, so "%2F" and "/" look the same there; the raw
    # form stays in REQUEST_URI.  Apache answers 404 to "%2F" by default:
    # the example sets "AllowEncodedSlashes NoDecode".
    seen = site.json(site.get("/p/a%2Fb/c"))
    assert seen["environ"]["PATH_INFO"] == "/p/a/b/c"
    assert seen["environ"]["REQUEST_URI"] == f"{site.prefix}/p/a%2Fb/c"
    assert seen["environ"]["SCRIPT_NAME"] == site.prefix


# -- bodies --------------------------------------------------------------------------


def test_post_form(site: Mounted) -> None:
    body = b"name=caf%C3%A9&multi=1&multi=2&space=a+b&empty="
    seen = site.json(site.post("/echo", body, "application/x-www-form-urlencoded"))
    assert seen == {"name": ["café"], "multi": ["1", "2"], "space": ["a b"], "empty": [""]}


def test_multipart_upload_10mb(site: Mounted) -> None:
    data = os.urandom(UPLOAD_SIZE)
    content_type, body = multipart({"note": "ten megabytes"}, {"file": ("random.bin", data)})
    seen = site.json(site.post("/upload", body, content_type))
    assert seen == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": UPLOAD_SIZE,
        "filename": "random.bin",
        "note": "ten megabytes",
    }


def test_streamed_response_1mib(site: Mounted) -> None:
    result = site.get("/stream")
    assert result.status == 200, site.d.describe()
    expected = b"".join(stream_bytes())
    assert len(expected) == 1024 * 1024
    assert len(result.body) == len(expected)
    assert hashlib.sha256(result.body).digest() == hashlib.sha256(expected).digest()


def test_head(site: Mounted) -> None:
    raw = site.front.raw_request(
        f"HEAD {site.prefix}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    )
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, raw
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), raw
    assert rest == b""
    assert re.search(rb"(?i)\r\ncontent-type: text/html; charset=utf-8", head), head


# -- status and headers --------------------------------------------------------------


def test_status_418_with_reason(site: Mounted) -> None:
    result = site.get("/teapot")
    assert result.status == 418
    assert result.body == b"short and stout\n"
    if site.kind == "lighttpd":
        # lighttpd writes its own reason phrase and has none for 418.
        assert result.reason == ""
    else:
        assert result.reason == "Short And Stout"


def test_several_set_cookie_headers(site: Mounted) -> None:
    result = site.get("/cookies")
    assert result.status == 200
    cookies = result.headers.get_all("Set-Cookie")
    assert cookies is not None
    assert sorted(cookies) == [
        "first=1; Path=/",
        "second=2; Path=/somewhere",
        "third=3; HttpOnly; Path=/",
    ]


def test_large_response_header(site: Mounted) -> None:
    result = site.get(f"/big-header?size={LARGE_HEADER}")
    assert result.status == 200, site.d.describe()
    assert result.headers["X-Big"] == "b" * LARGE_HEADER


def test_authorization_reaches_the_app(site: Mounted) -> None:
    # Apache passes it only with "CGIPassAuth On" (in the example).
    seen = site.json(site.get("/auth", Authorization="Basic dXNlcjpzM2NyM3Q="))
    assert seen == {"header": "Basic dXNlcjpzM2NyM3Q=", "username": "user", "password": "s3cr3t"}


def test_post_then_redirect_reaches_the_client(site: Mounted) -> None:
    result = site.post("/login", b"user=bob", "application/x-www-form-urlencoded")
    assert result.status == 302, site.d.describe()
    assert result.headers["Location"] == f"{site.prefix}/welcome?user=bob"
    followed = site.front.request("GET", result.headers["Location"])
    assert followed.status == 200
    assert followed.body == b"welcome bob\n"


# -- failures ------------------------------------------------------------------------


def test_malformed_header_is_a_500_from_scgiwsgi_not_a_502(site: Mounted) -> None:
    result = site.get("/bad-header")
    assert result.status == 500
    assert result.body == b"500 Internal Server Error\n"  # scgiwsgi's page
    assert "Injected" not in result.headers
    assert "header X-Bad has a control character" in site.d.scgi.log_text()


# -- static files --------------------------------------------------------------------


def test_static_files_are_served_by_the_front_end(site: Mounted) -> None:
    result = site.get("/static/hello.txt")
    assert result.status == 200, site.d.describe()
    assert result.text == STATIC_TEXT
    assert result.headers["Content-Type"].startswith("text/plain")
    site.get("/")  # a request that does reach scgiwsgi, logged after the static one
    log = site.d.scgi.access_log_text()
    assert f'"GET {site.prefix}/ HTTP/1.1" 200' in log
    assert "/static/" not in log


def test_exception_before_the_head_is_scgiwsgis_500(site: Mounted) -> None:
    result = site.get("/raw-boom")
    assert result.status == 500
    assert result.body == b"500 Internal Server Error\n"  # scgiwsgi's page, no traceback
    log = site.d.scgi.log_text()
    assert "RuntimeError: raw-boom-8c2d: raised before the response head" in log
    assert "Traceback (most recent call last)" in log


def test_zz_front_end_error_log_is_clean(site: Mounted) -> None:
    assert site.front.complaints() == [], site.d.describe()


# Runs after the log check (pytest keeps the order of definition): the front
# ends log the aborted upstream connection, as they should.


def test_zzz_exception_after_the_head(site: Mounted) -> None:
    conn = site.front.connection()
    try:
        conn.request("GET", f"{site.prefix}/late-boom")
        response = conn.getresponse()
        try:
            body: bytes | None = response.read()
        except http.client.IncompleteRead:
            body = None
        status = response.status
    finally:
        conn.close()
    assert "RuntimeError: late-boom-4e7a" in site.d.scgi.log_text()
    if site.kind == "lighttpd":
        # lighttpd usually hides it: test_lighttpd.py, docs/deployment.rst.
        assert status == 200
        assert body in (b"first part\n", None)
    elif site.d.scgi.transport == "tcp":
        # scgiwsgi resets the connection: the client is told, by a chunked
        # body without its last chunk (or, from Apache at times, a 500).
        assert body is None or status >= 500, (status, body)
    else:
        # A unix socket has no reset: the front end sees an ordinary end and
        # the truncated response looks complete (docs/deployment.rst).
        assert (status, body) == (200, b"first part\n")
