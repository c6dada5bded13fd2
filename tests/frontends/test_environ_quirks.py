"""What each front end really sends, replayed through build_environ without sockets.

The variables are the ones observed from nginx 1.22, Apache 2.4 and
lighttpd 1.4 (see docs/deployment.rst); the live tests next to this file
check the same behaviour through the real servers.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from scgiwsgi.environ import ServerInfo, build_environ, is_apache_proxy


def environ_for(headers: dict[str, str], script_name: str = "") -> dict[str, Any]:
    raw = {b"CONTENT_LENGTH": b"0", b"SCGI": b"1"}
    raw.update({k.encode("latin-1"): v.encode("latin-1") for k, v in headers.items()})
    return build_environ(raw, server=ServerInfo(script_name=script_name), wsgi_input=io.BytesIO())


APACHE_PATHINFO = {
    # ProxyPass /app/ scgi://127.0.0.1:4000/ with SetEnv proxy-scgi-pathinfo:
    # PATH_INFO still percent-encoded, SCRIPT_NAME cut by its length.
    "SCRIPT_FILENAME": "proxy:scgi://127.0.0.1:4000/caf%C3%A9/ab",
    "REQUEST_URI": "/app/caf%C3%A9/ab?x=1",
    "SCRIPT_NAME": "/app/caf\xc3\xa9",
    "PATH_INFO": "/caf%C3%A9/ab",
    "SERVER_SOFTWARE": "Apache/2.4.62 (Debian)",
}


def test_apache_proxy_is_recognised_by_its_script_filename() -> None:
    assert is_apache_proxy(APACHE_PATHINFO)
    assert not is_apache_proxy({"SCRIPT_FILENAME": "/var/www/html/app"})  # lighttpd
    assert not is_apache_proxy({})  # nginx


@pytest.mark.parametrize(
    ("script_name", "expected"),
    [("", ("", "/app/caf\xc3\xa9/ab")), ("/app", ("/app", "/caf\xc3\xa9/ab"))],
)
def test_apache_proxy_scgi_pathinfo_is_not_trusted(
    script_name: str, expected: tuple[str, str]
) -> None:
    environ = environ_for(APACHE_PATHINFO, script_name)
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == expected


def test_apache_whole_path_script_name_without_path_info() -> None:
    environ = environ_for(
        {
            "SCRIPT_FILENAME": "proxy:scgi://127.0.0.1:4000/app/x",
            "REQUEST_URI": "/app/x%20y",
            "SCRIPT_NAME": "/app/x y",
        },
        "/app",
    )
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/x y")


def test_lighttpd_mount_split_is_kept_without_script_name() -> None:
    environ = environ_for(
        {
            "SCRIPT_FILENAME": "/var/www/html/app",
            "REQUEST_URI": "/app/caf%C3%A9",
            "SCRIPT_NAME": "/app",
            "PATH_INFO": "/caf\xc3\xa9",
            "SERVER_SOFTWARE": "lighttpd/1.4.69",
        }
    )
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/caf\xc3\xa9")


@pytest.mark.parametrize("script_name", ["", "/app"])
def test_apache_internal_redirect_serves_the_redirect_target(script_name: str) -> None:
    # Observed after a 200 with "Location: /app/caf%C3%A9/target?x=1": the
    # backend is asked again with the client's REQUEST_URI and the new
    # SCRIPT_NAME and QUERY_STRING.
    environ = environ_for(
        {
            "SCRIPT_FILENAME": "proxy:scgi://127.0.0.1:4557/caf%C3%A9/target",
            "REDIRECT_URL": "/app/start",
            "REDIRECT_STATUS": "200",
            "QUERY_STRING": "x=1",
            "REQUEST_URI": "/app/start?y=2",
            "SCRIPT_NAME": "/app/caf\xc3\xa9/target",
        },
        script_name,
    )
    path = "/app/caf\xc3\xa9/target"
    expected = (script_name, path[len(script_name) :])
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == expected
    assert environ["QUERY_STRING"] == "x=1"


def test_apache_mod_rewrite_passthrough_serves_the_rewritten_path() -> None:
    # RewriteRule ^/old/(.*)$ /app/new/$1 [PT] then ProxyPass /app/ ...
    environ = environ_for(
        {
            "SCRIPT_FILENAME": "proxy:scgi://127.0.0.1:4557/new/caf%C3%A9",
            "QUERY_STRING": "z=3",
            "REQUEST_URI": "/old/caf%C3%A9?z=3",
            "SCRIPT_NAME": "/app/new/caf\xc3\xa9",
        },
        "/app",
    )
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/new/caf\xc3\xa9")


def test_apache_encoded_slash_left_by_nodecode_follows_request_uri() -> None:
    # AllowEncodedSlashes NoDecode: SCRIPT_NAME keeps "%2F", REQUEST_URI agrees.
    environ = environ_for(
        {
            "SCRIPT_FILENAME": "proxy:scgi://127.0.0.1:4000/p/a%252Fb",
            "REQUEST_URI": "/app/p/a%2Fb",
            "SCRIPT_NAME": "/app/p/a%2Fb",
        },
        "/app",
    )
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/p/a/b")
