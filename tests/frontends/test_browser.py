"""A real browser, headless Chromium, through nginx in front of the examples.

The visits a person would make.  Django: open the guest book under ``/app``,
type a name into the form, submit it (the browser keeps the CSRF cookie and
sends its Origin), follow the redirect and see the thank-you page, styled by
the stylesheet nginx served.  Flask, at ``/`` and under ``/app``: open the
login page, get the password wrong and see the error, log in, follow the
relative redirect under the prefix and see the greeting (the session cookie
kept by the browser).  Needs Debian's ``chromium`` and ``chromium-driver``
and the ``selenium`` package (test extra); skipped without them.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from .common import EXAMPLES, Deployment, Site
from .nginx import SCGI_PARAMS, Nginx, debian_host_param
from .test_django import SITE_DIR, static_root  # noqa: F401  (the fixture)

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

NAME = "Zoë"
FLASK_STATIC = EXAMPLES / "flask_app" / "static"
# The demo credentials of examples/flask_app (its docstring).
DEMO_USER, DEMO_PASSWORD = "demo", "scgiwsgi"


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (Debian package: chromium)")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip("chromedriver not installed (Debian package: chromium-driver)")
    return chromium, driver


@contextlib.contextmanager
def _chromium(chromium: str, chromedriver: str, tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium driven by chromedriver, quit on the way out."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.set_page_load_timeout(30)
        yield browser
    finally:
        browser.quit()


def _params_keeping_the_port(directory: Path) -> Path:
    # A browser sends Origin: http://127.0.0.1:PORT with the POST, and Django
    # compares it with the host it was given.  Debian's scgi_params sends
    # HTTP_HOST without the port, so the form would fail Django's CSRF check
    # on this non-default port: use the copy docs/deployment.rst describes.
    path = directory / "scgi_params_with_host"
    path.write_text(
        "".join(
            line
            for line in SCGI_PARAMS.read_text().splitlines(keepends=True)
            if not re.match(r"\s*scgi_param\s+HTTP_HOST\s", line)
        )
    )
    return path


@pytest.mark.parametrize("params", ["without-port", "keeping-port"])
def test_sign_the_guest_book_in_chromium(
    params: str,
    static_root: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    chromium, chromedriver = _binaries()
    if params == "without-port" and not debian_host_param():
        pytest.skip("this scgi_params sends no HTTP_HOST line (not Debian's)")
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    site = Site.example("nginx.conf", "/app", static_dir=static_root)
    if params == "keeping-port":
        site = site.edited(
            "        include scgi_params;\n",
            f"        include {_params_keeping_the_port(tmp_path)};\n",
        )
    d = Deployment.start(
        tmp_path / "d",
        "guestsite.wsgi:application",
        Nginx,
        transport="unix",
        site=site,
        script_name="/app",
        scgi_args=["--pythonpath", str(SITE_DIR)],
        scgi_env={"DJANGO_STATIC_ROOT": str(static_root)},
    )
    (d.front.html_dir / "favicon.ico").write_bytes(b"")  # the browser asks for it
    try:
        with _chromium(chromium, chromedriver, tmp_path) as browser:
            base = d.front.base_url
            browser.get(f"{base}/app/")
            assert browser.title == "Guest book"
            browser.find_element(By.NAME, "name").send_keys(NAME)
            browser.find_element(By.NAME, "message").send_keys("Hello from a real browser")
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            if params == "without-port":
                # Debian's HTTP_HOST lacks the port, the browser's Origin has it:
                # Django refuses the POST (docs/deployment.rst, nginx).
                WebDriverWait(browser, 30).until(
                    expected_conditions.title_contains("403 Forbidden")
                )
                assert "CSRF verification failed" in browser.page_source
                return
            WebDriverWait(browser, 30).until(
                expected_conditions.presence_of_element_located((By.ID, "thanks"))
            )
            assert browser.current_url == f"{base}/app/thanks/Zo%C3%AB/"
            assert browser.find_element(By.ID, "thanks").text == f"Thank you, {NAME}!"
            color = browser.execute_script(
                "return getComputedStyle(document.getElementById('thanks')).color"
            )
            assert color == "rgb(34, 170, 102)"  # style.css, served by nginx
        log = d.scgi.access_log_text()
        assert '"POST /app/ HTTP/1.1" 302' in log, log
        assert '"GET /app/thanks/Zo%C3%AB/ HTTP/1.1" 200' in log, log
        assert "/static/" not in log
        d.assert_clean_logs()
    finally:
        d.stop()


@pytest.mark.parametrize(
    ("prefix", "transport"), [("", "tcp"), ("/app", "unix")], ids=["root-tcp", "app-unix"]
)
def test_log_in_to_the_flask_example_in_chromium(
    prefix: str, transport: str, tmp_path: Path
) -> None:
    chromium, chromedriver = _binaries()
    pytest.importorskip("flask", reason="Flask is in the test extra: pip install -e '.[test]'")
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    d = Deployment.start(
        tmp_path / "d",
        "examples.flask_app:app",
        Nginx,
        transport=transport,
        site=Site.example("nginx.conf", prefix, static_dir=FLASK_STATIC),
        script_name=prefix,
    )
    (d.front.html_dir / "favicon.ico").write_bytes(b"")  # the browser asks for it
    try:
        with _chromium(chromium, chromedriver, tmp_path) as browser:
            base = d.front.base_url
            browser.get(f"{base}{prefix}/login")
            assert browser.title == "Sign in"
            browser.find_element(By.NAME, "username").send_keys(DEMO_USER)
            browser.find_element(By.NAME, "password").send_keys("not the password")
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            WebDriverWait(browser, 30).until(
                expected_conditions.presence_of_element_located((By.ID, "error"))
            )
            assert browser.find_element(By.ID, "error").text == "Wrong user name or password."
            assert urlsplit(browser.current_url).path == f"{prefix}/login"

            # The form comes back with the user name kept: only the password again.
            assert browser.find_element(By.NAME, "username").get_attribute("value") == DEMO_USER
            browser.find_element(By.NAME, "password").send_keys(DEMO_PASSWORD)
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            WebDriverWait(browser, 30).until(
                expected_conditions.presence_of_element_located((By.ID, "greeting"))
            )
            # The relative Location ("{prefix}/") was followed under the prefix.
            assert browser.current_url == f"{base}{prefix}/"
            assert browser.find_element(By.ID, "greeting").text == f"Hello, {DEMO_USER}!"
            assert browser.get_cookie("session") is not None
            color = browser.execute_script(
                "return getComputedStyle(document.getElementById('greeting')).color"
            )
            assert color == "rgb(34, 170, 102)"  # style.css, served by nginx
        log = d.scgi.access_log_text()
        assert f'"POST {prefix}/login HTTP/1.1" 200' in log, log
        assert f'"POST {prefix}/login HTTP/1.1" 302' in log, log
        assert f'"GET {prefix}/ HTTP/1.1" 200' in log, log
        assert "/static/" not in log
        d.assert_clean_logs()
    finally:
        d.stop()
