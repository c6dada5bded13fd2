"""build_environ, url_scheme and split_script_name, without sockets."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from scgiwsgi.environ import (
    ServerInfo,
    build_environ,
    environ_from_variables,
    split_script_name,
    url_scheme,
)
from scgiwsgi.protocol import RequestHead, RequestParser

BASE = {"CONTENT_LENGTH": "0", "SCGI": "1", "REQUEST_METHOD": "GET"}


def environ_for(
    headers: dict[str, str],
    *,
    server: ServerInfo | None = None,
    base: bool = True,
) -> dict[str, Any]:
    """build_environ over ``headers`` (str, encoded latin-1 like the wire)."""
    merged = {**BASE, **headers} if base else dict(headers)
    raw = {name.encode("latin-1"): value.encode("latin-1") for name, value in merged.items()}
    return build_environ(
        raw,
        server=server or ServerInfo(),
        wsgi_input=io.BytesIO(),
        wsgi_errors=io.StringIO(),
    )


# -- headers become environ keys ------------------------------------------------


def test_every_header_becomes_a_native_str_key() -> None:
    environ = environ_for({"HTTP_X_CUSTOM": "yes", "REMOTE_ADDR": "10.0.0.1", "DOCUMENT_ROOT": ""})
    assert environ["HTTP_X_CUSTOM"] == "yes"
    assert environ["REMOTE_ADDR"] == "10.0.0.1"
    assert environ["DOCUMENT_ROOT"] == ""
    assert environ["SCGI"] == "1"
    assert environ["CONTENT_LENGTH"] == "0"
    for key, value in environ.items():
        assert type(key) is str
        if not key.startswith("wsgi."):
            assert type(value) is str, key


def test_high_bytes_round_trip_through_latin1() -> None:
    every_high_byte = bytes(range(0x80, 0x100))
    raw = {
        b"CONTENT_LENGTH": b"0",
        b"SCGI": b"1",
        b"HTTP_X_RAW": every_high_byte,
        b"X_\xe9": b"v",
    }
    environ = build_environ(raw, server=ServerInfo(), wsgi_input=io.BytesIO())
    assert environ["HTTP_X_RAW"].encode("latin-1") == every_high_byte
    assert environ["HTTP_X_RAW"] == every_high_byte.decode("latin-1")
    assert environ["X_\xe9"] == "v"


def test_wsgi_keys() -> None:
    errors = io.StringIO()
    body = io.BytesIO(b"")
    environ = build_environ(
        {b"CONTENT_LENGTH": b"0", b"SCGI": b"1"},
        server=ServerInfo(multithread=True, multiprocess=False),
        wsgi_input=body,
        wsgi_errors=errors,
    )
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.errors"] is errors
    assert environ["wsgi.input"] is body
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False


def test_multiprocess_flag_comes_from_server_info() -> None:
    environ = environ_for({}, server=ServerInfo(multithread=False, multiprocess=True))
    assert environ["wsgi.multithread"] is False
    assert environ["wsgi.multiprocess"] is True


def test_file_wrapper_only_when_given() -> None:
    assert "wsgi.file_wrapper" not in environ_for({})
    marker = object()
    environ = build_environ(
        {b"CONTENT_LENGTH": b"0"}, server=ServerInfo(), wsgi_input=None, file_wrapper=marker
    )
    assert environ["wsgi.file_wrapper"] is marker


def test_http_content_type_and_length_twins_are_dropped() -> None:
    environ = environ_for(
        {
            "CONTENT_TYPE": "text/plain",
            "HTTP_CONTENT_TYPE": "text/plain",
            "HTTP_CONTENT_LENGTH": "0",
        }
    )
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "0"


# -- wsgi.url_scheme ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["on", "ON", "On", "1"])
def test_https_on_means_https(value: str) -> None:
    assert environ_for({"HTTPS": value})["wsgi.url_scheme"] == "https"
    # HTTPS wins over a contradicting REQUEST_SCHEME.
    assert environ_for({"HTTPS": value, "REQUEST_SCHEME": "http"})["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("value", ["off", "OFF", "", "0", "no"])
def test_https_off_means_http(value: str) -> None:
    assert environ_for({"HTTPS": value})["wsgi.url_scheme"] == "http"


def test_request_scheme_when_no_https() -> None:
    assert environ_for({"REQUEST_SCHEME": "https"})["wsgi.url_scheme"] == "https"
    assert environ_for({"REQUEST_SCHEME": "http"})["wsgi.url_scheme"] == "http"


def test_no_scheme_information_means_http() -> None:
    assert environ_for({})["wsgi.url_scheme"] == "http"


def test_url_scheme_function() -> None:
    assert url_scheme({"HTTPS": "On"}) == "https"
    assert url_scheme({"HTTPS": "off"}) == "http"
    assert url_scheme({"REQUEST_SCHEME": "https"}) == "https"
    assert url_scheme({}) == "http"


# -- SERVER_NAME, SERVER_PORT, SERVER_PROTOCOL --------------------------------------


def test_server_variables_from_headers_win() -> None:
    environ = environ_for(
        {
            "SERVER_NAME": "front.example",
            "SERVER_PORT": "8443",
            "SERVER_PROTOCOL": "HTTP/2.0",
            "HTTP_HOST": "other.example:9999",
        }
    )
    assert environ["SERVER_NAME"] == "front.example"
    assert environ["SERVER_PORT"] == "8443"
    assert environ["SERVER_PROTOCOL"] == "HTTP/2.0"


def test_server_name_and_port_from_host_header() -> None:
    environ = environ_for({"HTTP_HOST": "www.example.org:8080"})
    assert environ["SERVER_NAME"] == "www.example.org"
    assert environ["SERVER_PORT"] == "8080"


def test_host_header_without_port_uses_the_scheme_default() -> None:
    assert environ_for({"HTTP_HOST": "example.org"})["SERVER_PORT"] == "80"
    environ = environ_for({"HTTP_HOST": "example.org", "HTTPS": "on"})
    assert environ["SERVER_NAME"] == "example.org"
    assert environ["SERVER_PORT"] == "443"


def test_ipv6_host_header() -> None:
    environ = environ_for({"HTTP_HOST": "[::1]:8080"})
    assert environ["SERVER_NAME"] == "[::1]"
    assert environ["SERVER_PORT"] == "8080"
    environ = environ_for({"HTTP_HOST": "[2001:db8::2]"})
    assert environ["SERVER_NAME"] == "[2001:db8::2]"
    assert environ["SERVER_PORT"] == "80"


def test_server_info_fallbacks_without_host() -> None:
    environ = environ_for({}, server=ServerInfo(server_name="backend.local", server_port="4000"))
    assert environ["SERVER_NAME"] == "backend.local"
    assert environ["SERVER_PORT"] == "4000"
    assert environ["SERVER_PROTOCOL"].startswith("HTTP/")


def test_only_the_missing_server_variable_is_filled() -> None:
    environ = environ_for({"SERVER_NAME": "front.example", "HTTP_HOST": "h.example:81"})
    assert environ["SERVER_NAME"] == "front.example"
    assert environ["SERVER_PORT"] == "81"


# -- request line -------------------------------------------------------------------


def test_query_string_derived_from_request_uri() -> None:
    environ = environ_for({"REQUEST_URI": "/search?q=a%20b&x=1"})
    assert environ["QUERY_STRING"] == "q=a%20b&x=1"
    assert environ_for({"REQUEST_URI": "/plain"})["QUERY_STRING"] == ""
    assert environ_for({})["QUERY_STRING"] == ""


def test_query_string_sent_by_front_end_is_kept() -> None:
    environ = environ_for({"REQUEST_URI": "/a?from=uri", "QUERY_STRING": "from=header"})
    assert environ["QUERY_STRING"] == "from=header"


def test_request_method_kept() -> None:
    assert environ_for({"REQUEST_METHOD": "PATCH"})["REQUEST_METHOD"] == "PATCH"


# -- SCRIPT_NAME / PATH_INFO ----------------------------------------------------------


def test_lighttpd_style_path_info_is_kept() -> None:
    environ = environ_for(
        {"SCRIPT_NAME": "/app", "PATH_INFO": "/x y", "REQUEST_URI": "/app/x%20y?z=1"}
    )
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/x y")


def test_path_info_without_script_name_gets_an_empty_one() -> None:
    environ = environ_for({"PATH_INFO": "/only", "REQUEST_URI": "/only"})
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/only")


@pytest.mark.parametrize(
    ("uri", "path_info"),
    [
        ("/", "/"),
        ("/a/b?q=1", "/a/b"),
        ("/caf%C3%A9", "/caf\xc3\xa9"),
        ("/a%2Fb", "/a/b"),
        ("/sp%20ace?x=%2F", "/sp ace"),
        ("/raw\xe9", "/raw\xe9"),
        ("http://example.org/abs?x", "/abs"),
    ],
)
def test_nginx_style_path_from_request_uri(uri: str, path_info: str) -> None:
    environ = environ_for({"REQUEST_URI": uri})
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == path_info


@pytest.mark.parametrize("script_filename", [None, "/srv/www/app.scgi"])
def test_a_script_filename_of_a_file_leaves_the_path_to_request_uri(
    script_filename: str | None,
) -> None:
    # Only Apache's "proxy:" SCRIPT_FILENAME changes where the path comes from.
    extra = {} if script_filename is None else {"SCRIPT_FILENAME": script_filename}
    environ = environ_for({"REQUEST_URI": "/a%20b?q", "SCRIPT_NAME": "/a b", **extra})
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/a b")


def test_raw_and_percent_encoded_utf8_paths_agree() -> None:
    # A client may send UTF-8 unencoded; the wire bytes must not be re-encoded.
    raw = {b"CONTENT_LENGTH": b"0", b"REQUEST_URI": b"/caf\xc3\xa9?x"}
    environ = build_environ(raw, server=ServerInfo(), wsgi_input=io.BytesIO())
    assert environ["PATH_INFO"] == "/caf\xc3\xa9"
    assert environ["PATH_INFO"] == environ_for({"REQUEST_URI": "/caf%C3%A9"})["PATH_INFO"]


def test_apache_style_whole_path_script_name_is_replaced() -> None:
    # mod_proxy_scgi sends the whole path as SCRIPT_NAME and no PATH_INFO.
    environ = environ_for({"SCRIPT_NAME": "/a/b", "REQUEST_URI": "/a/b?x=1"})
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/a/b")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/app/x", ("/app", "/x")),
        ("/app/x/y?q=1", ("/app", "/x/y")),
        ("/app", ("/app", "")),
        ("/app/", ("/app", "/")),
        ("/application", ("", "/application")),
        ("/other", ("", "/other")),
        ("/app%2Fx", ("/app", "/x")),
    ],
)
def test_nginx_style_with_script_name(uri: str, expected: tuple[str, str]) -> None:
    environ = environ_for({"REQUEST_URI": uri}, server=ServerInfo(script_name="/app"))
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == expected


def test_script_name_option_applies_even_when_path_info_was_sent() -> None:
    # lighttpd mounted at "/" splits at the next slash; --script-name fixes it.
    environ = environ_for(
        {"SCRIPT_NAME": "/app", "PATH_INFO": "/x", "REQUEST_URI": "/app/x/y?q"},
        server=ServerInfo(script_name="/app"),
    )
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/x/y")
    environ = environ_for(
        {"SCRIPT_NAME": "", "PATH_INFO": "/other", "REQUEST_URI": "/other"},
        server=ServerInfo(script_name="/app"),
    )
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/other")


def test_without_request_uri_the_sent_paths_are_split() -> None:
    environ = environ_for(
        {"SCRIPT_NAME": "", "PATH_INFO": "/app/z"}, server=ServerInfo(script_name="/app")
    )
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/z")


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/app/x", "/app", ("/app", "/x")),
        ("/app", "/app", ("/app", "")),
        ("/application", "/app", ("", "/application")),
        ("/other", "/app", ("", "/other")),
        ("/x", "", ("", "/x")),
        ("/a/b/c", "/a/b", ("/a/b", "/c")),
    ],
)
def test_split_script_name(path: str, prefix: str, expected: tuple[str, str]) -> None:
    assert split_script_name(path, prefix) == expected


# -- environ_from_variables ----------------------------------------------------------

VALID = Path(__file__).parent / "data" / "valid"


def _corpus_heads() -> list[tuple[str, RequestHead]]:
    heads = []
    for path in sorted(VALID.glob("*.scgi")):
        limits = json.loads(path.with_suffix(".json").read_text(encoding="ascii")).get("limits", {})
        parser = RequestParser(**limits)
        parser.receive_data(path.read_bytes())
        head = parser.next_event()
        assert isinstance(head, RequestHead), path.name
        heads.append((path.stem, head))
    return heads


CORPUS_HEADS = _corpus_heads()
EXTRA_VARIABLES = [
    {},
    {"HTTPS": "on", "HTTP_HOST": "example.com:8443", "SERVER_NAME": "", "SERVER_PORT": ""},
    {"REQUEST_URI": "/app/caf%C3%A9/%2Fx?q=1", "HTTP_CONTENT_TYPE": "a", "CONTENT_TYPE": ""},
    {"SCRIPT_FILENAME": "proxy:scgi://127.0.0.1:4000/", "SCRIPT_NAME": "/app/x"},
    {"PATH_INFO": "/app/lighttpd", "SCRIPT_NAME": "", "REQUEST_SCHEME": " HTTPS "},
]


@pytest.mark.parametrize("extra", EXTRA_VARIABLES)
@pytest.mark.parametrize("script_name", ["", "/app"])
@pytest.mark.parametrize(("name", "head"), CORPUS_HEADS, ids=[n for n, _ in CORPUS_HEADS])
def test_environ_from_variables_matches_build_environ(
    name: str, head: RequestHead, script_name: str, extra: dict[str, str]
) -> None:
    server = ServerInfo(server_name="10.0.0.1", server_port="4000", script_name=script_name)
    variables = {**head.variables, **extra}
    raw = {k.encode("latin-1"): v.encode("latin-1") for k, v in variables.items()}
    body, errors = io.BytesIO(), io.StringIO()
    options: dict[str, Any] = {"server": server, "wsgi_input": body, "wsgi_errors": errors}
    from_bytes = build_environ(raw, **options, file_wrapper=object)
    from_str = environ_from_variables(variables, **options, file_wrapper=object)
    assert from_str == from_bytes
    assert from_str["wsgi.input"] is body
    assert from_str["wsgi.errors"] is errors
    assert from_str["wsgi.file_wrapper"] is object


def test_environ_from_variables_does_not_change_the_callers_mapping() -> None:
    variables = {
        **BASE,
        "HTTP_CONTENT_TYPE": "text/plain",
        "HTTP_CONTENT_LENGTH": "0",
        "CONTENT_TYPE": "",
        "REQUEST_URI": "/x%20y?a=b",
    }
    before = dict(variables)
    environ = environ_from_variables(variables, server=ServerInfo(), wsgi_input=io.BytesIO())
    assert variables == before
    assert list(variables) == list(before)
    assert environ is not variables
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["PATH_INFO"] == "/x y"
    assert environ["QUERY_STRING"] == "a=b"


def test_environ_from_variables_takes_a_read_only_mapping() -> None:
    variables = types.MappingProxyType({**BASE, "HTTP_HOST": "h:81", "CONTENT_TYPE": ""})
    environ = environ_from_variables(variables, server=ServerInfo(), wsgi_input=io.BytesIO())
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("h", "81")
    assert "CONTENT_TYPE" not in environ
    assert variables["CONTENT_TYPE"] == ""


def test_wsgi_keys_from_variables_and_defaults() -> None:
    environ = environ_from_variables(
        {"wsgi.version": "forged", "wsgi.url_scheme": "ftp", **BASE},
        server=ServerInfo(multithread=True),
        wsgi_input=None,
    )
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.errors"] is sys.stderr
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.input_terminated"] is True
    assert "wsgi.file_wrapper" not in environ


def test_server_info_flags_can_change_after_construction() -> None:
    server = ServerInfo()
    server.multithread = True
    server.multiprocess = True
    assert (server.multithread, server.multiprocess) == (True, True)
    environ = environ_from_variables(BASE, server=server, wsgi_input=None)
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is True
    # Environs already built keep their own copy of the flags.
    server.multithread = False
    assert environ["wsgi.multithread"] is True
