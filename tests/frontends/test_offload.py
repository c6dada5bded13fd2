"""File offload: ``--offload`` hands ``wsgi.file_wrapper`` files to the front end.

nginx gets ``X-Accel-Redirect`` (an internal location aliased to the
directory), Apache ``X-Sendfile`` (``ProxySCGISendfile On``), lighttpd
``X-Sendfile`` (``"x-sendfile" => "enable"``).  The client must get the
file's exact bytes while scgiwsgi's access log shows no body sent; a file
outside the directory is still sent by scgiwsgi.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from .apache import Apache
from .common import Deployment, FrontEnd, Site
from .lighttpd import Lighttpd
from .nginx import Nginx

FILES_APP = str(Path(__file__).parent / "apps" / "files.py") + ":app"
SIZE = 3 * 1024 * 1024 + 7


def _site(front_end: type[FrontEnd], files: Path) -> tuple[Site, str]:
    """The example with the offload lines of docs/deployment.rst, and the --offload value."""
    site = Site.example(f"{front_end.name}.conf", "/app")
    if front_end is Nginx:
        internal = (
            f"    location /_offload/ {{\n        internal;\n        alias {files}/;\n    }}\n\n"
        )
        site = site.edited(
            "    location {{prefix}}/ {\n", internal + "    location {{prefix}}/ {\n"
        )
        return site, f"x-accel-redirect:{files}=/_offload"
    if front_end is Apache:
        site = site.edited(
            "    ProxySCGIInternalRedirect Off\n",
            "    ProxySCGIInternalRedirect Off\n    ProxySCGISendfile On\n",
        )
        site.template += f"<Directory {files}>\n    Require all granted\n</Directory>\n"
        return site, f"x-sendfile:{files}"
    site = site.edited(
        '            "check-local" => "disable",\n',
        '            "check-local" => "disable",\n'
        '            "x-sendfile" => "enable",\n'
        f'            "x-sendfile-docroot" => ( "{files}" ),\n',
    )
    return site, f"x-sendfile:{files}"


@pytest.mark.parametrize("front_end", [Nginx, Apache, Lighttpd], ids=lambda f: f.name)
def test_file_wrapper_is_sent_by_the_front_end(front_end: type[FrontEnd], tmp_path: Path) -> None:
    files, outside = tmp_path / "files", tmp_path / "outside"
    files.mkdir()
    outside.mkdir()
    data = os.urandom(SIZE)
    (files / "big file.bin").write_bytes(data)
    (outside / "small.bin").write_bytes(data[:1000])
    site, spec = _site(front_end, files)
    d = Deployment.start(
        tmp_path / "d",
        FILES_APP,
        front_end,
        transport="tcp",
        site=site,
        script_name="/app",
        scgi_args=["--offload", spec],
        scgi_env={"SCGIWSGI_TEST_FILES": str(files), "SCGIWSGI_TEST_OUTSIDE": str(outside)},
    )
    try:
        result = d.front.request("GET", "/app/files/big%20file.bin")
        assert result.status == 200, d.describe()
        assert len(result.body) == SIZE
        assert hashlib.sha256(result.body).digest() == hashlib.sha256(data).digest()
        assert "X-Sendfile" not in result.headers and "X-Accel-Redirect" not in result.headers

        small = d.front.request("GET", "/app/outside/small.bin")
        assert small.status == 200
        assert small.body == data[:1000]
        d.assert_clean_logs()
        log = d.scgi.access_log_text()
        assert re.search(r'"GET /app/files/big%20file\.bin HTTP/1\.1" 200 (0|-) ', log), log
        assert '"GET /app/outside/small.bin HTTP/1.1" 200 1000 ' in log
    finally:
        d.stop()
