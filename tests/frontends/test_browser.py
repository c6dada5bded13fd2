"""A real browser, headless Chromium, through nginx in front of the Django example.

The visit a person would make: open the guest book under ``/app``, type a
name into the form, submit it (the browser keeps the CSRF cookie and sends
its Origin), follow the redirect and see the thank-you page, styled by the
stylesheet nginx served.  Needs Debian's ``chromium`` and ``chromium-driver``
and the ``selenium`` package (test extra); skipped without them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .common import Deployment, Site
from .nginx import SCGI_PARAMS, Nginx, debian_host_param
from .test_django import SITE_DIR, static_root  # noqa: F401  (the fixture)

NAME = "Zoë"


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (Debian package: chromium)")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip("chromedriver not installed (Debian package: chromium-driver)")
    return chromium, driver


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
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
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
    try:
        browser = webdriver.Chrome(options=options, service=service)
        try:
            browser.set_page_load_timeout(30)
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
        finally:
            browser.quit()
        log = d.scgi.access_log_text()
        assert '"POST /app/ HTTP/1.1" 302' in log, log
        assert '"GET /app/thanks/Zo%C3%AB/ HTTP/1.1" 200' in log, log
        assert "/static/" not in log
        d.assert_clean_logs()
    finally:
        d.stop()
