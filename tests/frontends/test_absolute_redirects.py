"""``--absolute-redirects`` behind each front end: POST, then an absolute redirect.

Without the option the matrix shows the relative Location passing through;
with it the client gets ``http://host/app/...`` built from what the front
end sent (scheme, HTTP_HOST, the mount), and following it works.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .apache import Apache
from .common import Deployment, FrontEnd, Site
from .lighttpd import Lighttpd
from .nginx import Nginx, debian_host_param
from .test_matrix import MATRIX_APP

FRONT_ENDS: dict[str, type[FrontEnd]] = {"nginx": Nginx, "apache": Apache, "lighttpd": Lighttpd}


@pytest.mark.parametrize("kind", list(FRONT_ENDS))
def test_post_then_absolute_redirect(kind: str, tmp_path: Path) -> None:
    front_end = FRONT_ENDS[kind]
    d = Deployment.start(
        tmp_path,
        MATRIX_APP,
        front_end,
        transport="tcp",
        site=Site.example(f"{kind}.conf", "/app"),
        script_name="/app",
        scgi_args=["--absolute-redirects"],
    )
    try:
        posted = d.front.request(
            "POST",
            "/app/login",
            body=b"user=caf%C3%A9",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert posted.status == 302, d.describe()
        location = posted.headers["Location"]
        if kind == "nginx" and debian_host_param():
            # Debian's scgi_params sends HTTP_HOST=$host: the port is lost, as
            # it is for every absolute URL the app builds (docs/deployment.rst).
            assert location == "http://127.0.0.1/app/welcome?user=caf%C3%A9"
            location = location.replace("127.0.0.1", f"127.0.0.1:{d.front.port}")
        else:
            assert location == f"http://127.0.0.1:{d.front.port}/app/welcome?user=caf%C3%A9"
        assert location.startswith(d.front.base_url)
        followed = d.front.request("GET", location[len(d.front.base_url) :])
        assert followed.status == 200
        assert followed.text == "welcome café\n"
        d.assert_clean_logs()
    finally:
        d.stop()
