"""HTTPS detection behind each front end: real TLS, and a front end that is told.

With TLS the front end itself marks the request (nginx's stock
``scgi_params`` sends ``HTTPS $https``, Apache's mod_ssl and lighttpd's
mod_openssl send ``HTTPS=on``).  Behind a TLS terminator the front end
speaks plain HTTP and the configuration says so: nginx
``scgi_param HTTPS on;``, Apache ``SetEnv HTTPS on``, lighttpd
``setenv.add-environment = ( "HTTPS" => "on" )``.  Either way the
application must see ``https`` with no change to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .apache import Apache
from .common import Deployment, FrontEnd, Site, TLSFiles
from .lighttpd import Lighttpd
from .nginx import Nginx, debian_host_param
from .test_matrix import MATRIX_APP

FRONT_ENDS: dict[str, type[FrontEnd]] = {"nginx": Nginx, "apache": Apache, "lighttpd": Lighttpd}


@pytest.fixture(params=list(FRONT_ENDS))
def front_end(request: pytest.FixtureRequest) -> type[FrontEnd]:
    return FRONT_ENDS[str(request.param)]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Deployment]]:
    deployments: list[Deployment] = []
    yield deployments
    for deployment in reversed(deployments):
        deployment.stop()


def _host(front: FrontEnd) -> str:
    if front.name == "nginx" and debian_host_param():
        return "127.0.0.1"  # Debian's scgi_params: HTTP_HOST is $host, without the port
    return f"127.0.0.1:{front.port}"


def _check_https(d: Deployment) -> None:
    result = d.front.request("GET", "/app/info?x=1")
    assert result.status == 200, d.describe()
    seen = json.loads(result.body)
    assert seen["environ"]["HTTPS"] == "on"
    assert seen["scheme"] == "https"
    assert seen["is_secure"] is True
    assert seen["url"] == f"https://{_host(d.front)}/app/info?x=1"
    assert seen["url_for_external"] == f"https://{_host(d.front)}/app/"
    d.assert_clean_logs()


def test_tls_at_the_front_end(
    front_end: type[FrontEnd],
    transport: str,
    tls_files: TLSFiles,
    tmp_path: Path,
    started: list[Deployment],
) -> None:
    if front_end is Lighttpd:
        Lighttpd.require_tls()
    d = Deployment.start(
        tmp_path,
        MATRIX_APP,
        front_end,
        transport=transport,
        site=Site.example(f"{front_end.name}.conf", "/app"),
        script_name="/app",
        tls=tls_files,
    )
    started.append(d)
    assert d.front.base_url.startswith("https://")
    _check_https(d)


def test_tls_terminated_in_front_and_marked_in_config(
    front_end: type[FrontEnd], tmp_path: Path, started: list[Deployment]
) -> None:
    d = Deployment.start(
        tmp_path,
        MATRIX_APP,
        front_end,
        transport="tcp",
        site=Site.example(f"{front_end.name}.conf", "/app"),
        script_name="/app",
        https_flag=True,
    )
    started.append(d)
    assert d.front.base_url.startswith("http://")  # the client speaks plain HTTP here
    # The app builds https:// URLs; the test client still talks plain HTTP to
    # the front end, as a TLS terminator would.
    _check_https(d)
