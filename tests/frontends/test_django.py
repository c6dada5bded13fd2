"""examples/django_site behind real front ends, at ``/`` and under ``/app``.

The site is used as shipped: ``collectstatic`` into a temporary
``STATIC_ROOT`` that the front end serves (examples/<front end>.conf),
scgiwsgi runs ``guestsite.wsgi:application`` with ``--script-name`` for
the prefix, and no FORCE_SCRIPT_NAME anywhere.  One test walks the whole
visit: the form page and its stylesheet, POST with the CSRF token, the
redirect, the thank-you page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from .apache import Apache
from .common import EXAMPLES, Deployment, FrontEnd, HTTPResult, Site
from .lighttpd import Lighttpd
from .nginx import Nginx

SITE_DIR = EXAMPLES / "django_site"
CASES: list[tuple[type[FrontEnd], str]] = [
    (Nginx, ""),
    (Nginx, "/app"),
    (Apache, "/app"),
    (Lighttpd, "/app"),
]
NAME = "Zoë"


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``manage.py collectstatic`` into a fresh STATIC_ROOT, once."""
    pytest.importorskip("django", reason="Django is in the test extra: pip install -e '.[test]'")
    root = tmp_path_factory.mktemp("django-static")
    env = {**os.environ, "DJANGO_STATIC_ROOT": str(root)}
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=SITE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (root / "guestbook" / "style.css").is_file()
    return root


def _cookie(result: HTTPResult, name: str) -> str:
    for header in result.headers.get_all("Set-Cookie") or []:
        match = re.match(rf"{name}=([^;]+)", header)
        if match:
            return match.group(1)
    raise AssertionError(f"no {name} cookie in {result.headers}")


@pytest.mark.parametrize(
    ("front_end", "prefix"),
    CASES,
    ids=[f"{front_end.name}-{prefix.strip('/') or 'root'}" for front_end, prefix in CASES],
)
def test_visit(front_end: type[FrontEnd], prefix: str, static_root: Path, tmp_path: Path) -> None:
    d = Deployment.start(
        tmp_path,
        "guestsite.wsgi:application",
        front_end,
        transport="tcp",
        site=Site.example(f"{front_end.name}.conf", prefix, static_dir=static_root),
        script_name=prefix,
        scgi_args=["--pythonpath", str(SITE_DIR)],
        scgi_env={"DJANGO_STATIC_ROOT": str(static_root)},
    )
    try:
        _visit(d, prefix)
        d.assert_clean_logs()
    finally:
        d.stop()


def _visit(d: Deployment, prefix: str) -> None:
    front = d.front
    where = json.loads(front.request("GET", f"{prefix}/where/").body)
    assert where["reverse_sign"] == f"{prefix}/"
    assert where["reverse_thanks"] == f"{prefix}/thanks/Zo%C3%AB/"
    assert where["static"] == f"{prefix}/static/guestbook/style.css"
    assert (where["script_name"], where["path_info"]) == (prefix, "/where/")
    assert where["path"] == f"{prefix}/where/"

    page = front.request("GET", f"{prefix}/")
    assert page.status == 200, d.describe()
    html = page.text
    assert f'action="{prefix}/"' in html
    assert f'href="{prefix}/static/guestbook/style.css"' in html

    css = front.request("GET", f"{prefix}/static/guestbook/style.css")
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert "Served by the front end" in css.text

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token is not None, html
    body = urlencode({"csrfmiddlewaretoken": token.group(1), "name": NAME, "message": "hi"})
    posted = front.request(
        "POST",
        f"{prefix}/",
        body=body.encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={_cookie(page, 'csrftoken')}",
        },
    )
    assert posted.status == 302, f"{posted!r}\n{d.describe()}"
    location = posted.headers["Location"]
    assert location == f"{prefix}/thanks/{quote(NAME)}/"

    thanks = front.request("GET", location)
    assert thanks.status == 200
    assert f"Thank you, {NAME}!" in thanks.text
    assert f'<a href="{prefix}/">Sign again</a>' in thanks.text

    forged = front.request(
        "POST",
        f"{prefix}/",
        body=b"name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert forged.status == 403  # Django's CSRF check runs behind the front end too

    log = d.scgi.access_log_text()
    assert f"POST {prefix}/ HTTP/1.1" in log
    assert "/static/" not in log  # the stylesheet never reached Python
