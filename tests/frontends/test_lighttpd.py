"""lighttpd quirks, each shown by changing one line of examples/lighttpd.conf.

The matrix (test_matrix.py) runs the example as it is.  lighttpd sends
SCRIPT_NAME and PATH_INFO itself, split at the mount of ``scgi.server``;
scgiwsgi keeps that split unless ``--script-name`` is given.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .common import Deployment, Site
from .lighttpd import Lighttpd
from .test_matrix import MATRIX_APP

Start = Callable[..., Deployment]

FIX_ROOT = '            "fix-root-scriptname" => "enable"\n'
CHECK_LOCAL = '            "check-local" => "disable",\n'


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Start]:
    """Deployments over TCP: these quirks do not depend on the transport."""
    started: list[Deployment] = []

    def start(site: Site, *, script_name: str = "") -> Deployment:
        d = Deployment.start(
            tmp_path / f"d{len(started)}",
            MATRIX_APP,
            Lighttpd,
            transport="tcp",
            site=site,
            script_name=script_name,
        )
        started.append(d)
        return d

    yield start
    for d in reversed(started):
        d.stop()


def _json(d: Deployment, path: str) -> Any:
    result = d.front.request("GET", path)
    assert result.status == 200, f"{result!r}\n{d.describe()}"
    return json.loads(result.body)


def test_root_mount_without_fix_root_scriptname_splits_at_the_first_segment(
    deploy: Start,
) -> None:
    # The line the example has for this, set to lighttpd's default: the first
    # path segment becomes SCRIPT_NAME, and the application routes on the rest.
    site = Site.example("lighttpd.conf").edited(FIX_ROOT, FIX_ROOT.replace("enable", "disable"))
    d = deploy(site)
    seen = _json(d, "/blog/info")  # an app at "/" with an /info route
    assert seen["environ"]["SCRIPT_NAME"] == "/blog"  # lighttpd's split, kept by scgiwsgi
    assert seen["environ"]["PATH_INFO"] == "/info"
    assert seen["url_for_index"] == "/blog/"  # wrong for an app mounted at "/"
    d.assert_clean_logs()


def test_prefix_mount_split_is_used_without_script_name(deploy: Start) -> None:
    d = deploy(Site.example("lighttpd.conf", "/app"))
    seen = _json(d, "/app/p/caf%C3%A9?q=1")
    assert (seen["script_root"], seen["path"]) == ("/app", "/p/café")
    assert seen["url_for_self"] == "/app/p/caf%C3%A9"
    # The bare mount comes with SCRIPT_NAME and no PATH_INFO, the form Apache
    # uses for the whole path; scgiwsgi cannot tell them apart and the app is
    # asked for "/app".  --script-name /app (as in the example) handles it.
    bare = d.front.request("GET", "/app")
    assert bare.status == 404
    d.assert_clean_logs()


def test_check_local_left_on_answers_404_for_everything(deploy: Start) -> None:
    d = deploy(Site.example("lighttpd.conf", "/app").edited(CHECK_LOCAL, ""), script_name="/app")
    result = d.front.request("GET", "/app/info")
    assert result.status == 404
    assert d.scgi.access_log_text() == ""  # lighttpd looked for a file and stopped there


def test_chunked_request_body_is_buffered_and_sent_with_its_length(deploy: Start) -> None:
    d = deploy(Site.example("lighttpd.conf", "/app"), script_name="/app")
    raw = d.front.raw_request(
        b"POST /app/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw[:300]
    assert json.loads(body) == {"a": ["1"], "b": ["2"]}
    d.assert_clean_logs()


@pytest.mark.parametrize("path", ["/app/late-boom", "/app/late-boom-with-length"])
def test_failure_after_the_head_is_hidden_without_content_length(deploy: Start, path: str) -> None:
    # lighttpd buffers the start of a response; when scgiwsgi resets the
    # connection after the first part it usually still sends the client a
    # 200 whose framing covers exactly what it got (Content-Length: 11, or a
    # terminated chunked body), logging the failure only in its own log.  A
    # Content-Length from the application is kept, so a short body is then
    # visible to the client.
    d = deploy(Site.example("lighttpd.conf", "/app"), script_name="/app")
    conn = d.front.connection()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        try:
            body: bytes | None = response.read()
        except http.client.IncompleteRead:
            body = None
    finally:
        conn.close()
    assert response.status == 200
    if path.endswith("with-length"):
        assert response.getheader("Content-Length") == "100"
        assert body is None  # the client sees the short body
    else:
        assert body in (b"first part\n", None)  # None only when lighttpd had started
    d.front.stop()
    assert any("backend returned error" in line for line in d.front.complaints())
