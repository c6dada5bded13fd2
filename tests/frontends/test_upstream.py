"""nginx with an ``upstream`` of two scgiwsgi instances (examples/nginx_upstream.conf).

Under a bounded load of GETs one instance is stopped (SIGTERM: graceful)
while requests are in flight; every request must still succeed, served by
one instance or the other, and by the survivor alone after the stop.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .common import FrontEnd, ScgiServer, Site, write_app
from .nginx import Nginx

INSTANCE_APP = """\
import os, time

def app(environ, start_response):
    time.sleep(0.01)  # keep requests in flight while an instance stops
    body = os.environ["SCGIWSGI_TEST_INSTANCE"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""
CLIENTS = 4
REQUESTS = 240
STOP_AFTER = 60


def test_stopping_one_instance_loses_no_get(tmp_path: Path) -> None:
    Nginx.find()
    app = write_app(tmp_path / "apps" / "instance.py", INSTANCE_APP)
    servers = {
        name: ScgiServer(
            tmp_path / name, app, transport="tcp", env={"SCGIWSGI_TEST_INSTANCE": name}
        )
        for name in ("a", "b")
    }
    nginx: FrontEnd | None = None
    try:
        for server in servers.values():
            server.start()
        site = Site.example(
            "nginx_upstream.conf",
            values={"backend_a": servers["a"].address, "backend_b": servers["b"].address},
        )
        nginx = Nginx(tmp_path / "nginx", site)
        nginx.start()
        results = _load_while_stopping(nginx, servers["a"])
    finally:
        if nginx is not None:
            nginx.stop()
        for server in servers.values():
            server.stop()

    answered = [r for r in results if isinstance(r, tuple) and r[0] == 200]
    assert len(answered) == len(results) == REQUESTS, [r for r in results if r not in answered][:5]
    served = [body for _status, body, _after in answered]
    assert set(served) == {b"a", b"b"}  # both took a share before the stop
    after_stop = [body for _status, body, after in answered if after]
    assert after_stop and set(after_stop) == {b"b"}
    assert "stopped" in servers["a"].log_text()
    # nginx's log may show the refused connections to the stopped instance;
    # nothing else.
    assert nginx is not None
    address = servers["a"].address
    others = [line for line in nginx.complaints() if address not in line]
    assert others == [], nginx.describe()


def _load_while_stopping(
    nginx: FrontEnd, victim: ScgiServer
) -> list[tuple[int, bytes, bool] | BaseException]:
    results: list[tuple[int, bytes, bool] | BaseException] = []
    lock = threading.Lock()
    stopped = threading.Event()
    counter = iter(range(REQUESTS))

    def client() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            if index == STOP_AFTER:
                threading.Thread(target=_stop, daemon=True).start()
            after = stopped.is_set()
            try:
                result = nginx.request("GET", f"/r{index}")
                outcome: tuple[int, bytes, bool] | BaseException = (
                    result.status,
                    result.body,
                    after,
                )
            except Exception as exc:
                outcome = exc
            with lock:
                results.append(outcome)

    def _stop() -> None:
        victim.stop()
        stopped.set()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.1))
    assert not any(thread.is_alive() for thread in threads), "the load did not finish in 60s"
    assert stopped.wait(30), "instance a did not stop"
    return results
