"""Apache httpd quirks, each shown by leaving one line out of examples/apache.conf.

The matrix (test_matrix.py) runs the example as it is; here every test
removes or changes one line, shows what goes wrong without it, and where
scgiwsgi has an answer (``--script-name``, ``--absolute-redirects``, not
trusting ``proxy-scgi-pathinfo``) shows that too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .apache import Apache
from .common import Deployment, Site
from .test_matrix import MATRIX_APP

Start = Callable[..., Deployment]

PASS_AUTH = "    CGIPassAuth On\n"
NO_INTERNAL_REDIRECT = "    ProxySCGIInternalRedirect Off\n"
ENCODED_SLASHES = "AllowEncodedSlashes NoDecode\n"


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Start]:
    """Deployments over TCP: these quirks do not depend on the transport (the
    matrix runs the example over both)."""
    started: list[Deployment] = []

    def start(
        site: Site | None = None,
        *,
        prefix: str = "/app",
        script_name: str | None = None,
        scgi_args: tuple[str, ...] = (),
    ) -> Deployment:
        d = Deployment.start(
            tmp_path / f"d{len(started)}",
            MATRIX_APP,
            Apache,
            transport="tcp",
            site=site or Site.example("apache.conf", prefix),
            script_name=prefix if script_name is None else script_name,
            scgi_args=scgi_args,
        )
        started.append(d)
        return d

    yield start
    for d in reversed(started):
        d.stop()


def _json(d: Deployment, path: str, **headers: str) -> Any:
    result = d.front.request("GET", path, headers=headers)
    assert result.status == 200, f"{result!r}\n{d.describe()}"
    return json.loads(result.body)


def test_without_cgipassauth_the_app_never_sees_authorization(deploy: Start) -> None:
    d = deploy(Site.example("apache.conf", "/app").edited(PASS_AUTH, ""))
    seen = _json(d, "/app/auth", Authorization="Basic dXNlcjpzM2NyM3Q=")
    assert seen == {"header": None, "username": None, "password": None}
    d.assert_clean_logs()


def test_internal_redirect_of_a_200_with_location(deploy: Start) -> None:
    # ProxySCGIInternalRedirect is On by default: status 200 with
    # "Location: /app/welcome?..." is served as an internal GET of that path.
    # Apache then sends the client's REQUEST_URI again (/app/redirect-200)
    # with the new SCRIPT_NAME and QUERY_STRING; scgiwsgi serves the new path
    # (following REQUEST_URI would loop until Apache gives up with a 500).
    d = deploy(Site.example("apache.conf", "/app").edited(NO_INTERNAL_REDIRECT, ""))
    result = d.front.request("GET", "/app/redirect-200")
    assert result.status == 200, d.describe()
    assert result.body == b"welcome internal\n"  # the redirect target, not the app's page
    requests = d.scgi.access_log_text().splitlines()
    assert len(requests) == 2, requests  # the original and the internal one
    # A real redirect (302) is never followed by mod_proxy_scgi: POST then
    # redirect reaches the client as a redirect (the old mod_scgi bug is gone).
    posted = d.front.request(
        "POST",
        "/app/login",
        body=b"user=bob",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status == 302
    assert posted.headers["Location"] == "/app/welcome?user=bob"
    d.assert_clean_logs()


def test_absolute_redirects_are_never_followed_internally(deploy: Start) -> None:
    d = deploy(
        Site.example("apache.conf", "/app").edited(NO_INTERNAL_REDIRECT, ""),
        scgi_args=("--absolute-redirects",),
    )
    base = f"http://127.0.0.1:{d.front.port}"
    result = d.front.request("GET", "/app/redirect-200")
    assert result.status == 200
    assert result.body == b"not followed\n"
    assert result.headers["Location"] == f"{base}/app/welcome?user=internal"
    posted = d.front.request(
        "POST",
        "/app/login",
        body=b"user=bob",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status == 302
    assert posted.headers["Location"] == f"{base}/app/welcome?user=bob"
    d.assert_clean_logs()


def test_encoded_slash_is_a_404_without_allow_encoded_slashes(deploy: Start) -> None:
    d = deploy(Site.example("apache.conf", "/app").edited(ENCODED_SLASHES, ""))
    result = d.front.request("GET", "/app/p/a%2Fb")
    assert result.status == 404
    assert b"<title>404 Not Found</title>" in result.body  # Apache's page, not Flask's
    assert d.scgi.access_log_text() == ""  # never reached scgiwsgi
    d.front.stop()
    assert any("AH00026: found %2f" in line for line in d.front.error_log_text().splitlines())


@pytest.mark.parametrize("prefix", ["", "/app"])
def test_proxy_scgi_pathinfo_is_not_trusted(deploy: Start, prefix: str) -> None:
    # With proxy-scgi-pathinfo Apache sends PATH_INFO still percent-encoded
    # and a SCRIPT_NAME cut by its length; scgiwsgi uses REQUEST_URI instead.
    site = Site.example("apache.conf", prefix).edited(
        ENCODED_SLASHES, ENCODED_SLASHES + "SetEnvIf Request_URI . proxy-scgi-pathinfo=1\n"
    )
    d = deploy(site, prefix=prefix)
    seen = _json(d, f"{prefix}/p/caf%C3%A9/x")
    assert seen["environ"]["SCRIPT_NAME"] == prefix
    assert seen["environ"]["PATH_INFO"] == "/p/caf\xc3\xa9/x"
    assert seen["rest"] == "café/x"
    d.assert_clean_logs()


def test_under_a_prefix_without_script_name_the_app_sees_the_whole_path(deploy: Start) -> None:
    # Apache's SCRIPT_NAME is the whole path, so it says nothing about the
    # mount: without --script-name the app is asked for /app/info.
    d = deploy(script_name="")
    result = d.front.request("GET", "/app/info")
    assert result.status == 404  # Flask has no /app/info route
    assert b"<title>404 Not Found</title>" in result.body
    assert d.front.request("GET", "/app/").status == 404
    d.assert_clean_logs()


def test_response_header_line_over_8k_is_a_500(deploy: Start) -> None:
    # mod_proxy_scgi reads each backend header line into an 8 KiB buffer.
    d = deploy()
    result = d.front.request("GET", "/app/big-header?size=9000")
    assert result.status == 500
    assert b"Internal Server Error" in result.body
    d.front.stop()
    assert "Premature end of script headers: big-header" in d.front.error_log_text()


def test_chunked_request_body_is_refused_with_411(deploy: Start) -> None:
    d = deploy()
    raw = d.front.raw_request(
        b"POST /app/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\na=1\r\n0\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 411 Length Required\r\n"), raw[:300]
    assert d.scgi.access_log_text() == ""  # never reached scgiwsgi


def test_mod_rewrite_passthrough_is_served_at_the_rewritten_path(deploy: Start) -> None:
    site = Site.example("apache.conf", "/app").edited(
        ENCODED_SLASHES,
        ENCODED_SLASHES + "RewriteEngine On\nRewriteRule ^/old/(.*)$ /app/p/$1 [PT]\n",
    )
    d = deploy(site)
    seen = _json(d, "/old/caf%C3%A9?q=1")
    assert seen["environ"]["REQUEST_URI"] == "/old/caf%C3%A9?q=1"  # the client's, unchanged
    assert (seen["script_root"], seen["path"]) == ("/app", "/p/café")
    assert seen["args"] == {"q": ["1"]}
    d.assert_clean_logs()
