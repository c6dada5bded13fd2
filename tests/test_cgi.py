"""CGI programs over SCGI (scgiwsgi.cgi): real scripts, real processes, real sockets.

Scripts are written into a temporary directory per test; a live server
(conftest's ``serve``, tcp and unix) runs :class:`CGIApp` on it.  Every
script that may outlive its request writes its pid, and the test checks the
process is gone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, ServeFactory, connect, recv_all, wait_for
from legacy_support import ScriptProcess, raw_request, split_response

from scgiwsgi.cgi import CGIApp
from scgiwsgi.errors import ConfigError
from scgiwsgi.protocol import encode_request

ENV_SCRIPT = f"""#!{sys.executable}
import json, os, sys
body = sys.stdin.buffer.read()
env = {{k.decode("latin-1"): v.decode("latin-1") for k, v in os.environb.items()}}
out = {{"env": env, "argv": [a for a in sys.argv[1:]], "body": body.decode("latin-1"),
        "cwd": os.getcwd(), "raw": os.environb.get(b"HTTP_X_RAW", b"").hex()}}
sys.stdout.write("Content-Type: application/json\\r\\n\\r\\n" + json.dumps(out))
"""
AWSTATS_LIKE = "#!/bin/sh\nprintf 'Content-type: text/html\\n\\n<html>stats</html>\\n'\n"
NOT_FOUND = "#!/bin/sh\nprintf 'Status: 404 Not Found\\nContent-Type: text/plain\\n\\ngone\\n'\n"
REDIRECT = "#!/bin/sh\nprintf 'Location: https://example.com/there\\n\\n'\n"
GARBAGE = "#!/bin/sh\necho 'this is not a header'\necho\necho body\n"
SILENT = "#!/bin/sh\necho 'dying-quietly-3b7e' >&2\nexit 3\n"
CAT = "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec cat\n"
STDERR = "#!/bin/sh\necho 'stderr-line-5a1f' >&2\nprintf 'Content-Type: text/plain\\n\\nok'\n"
# Writes its pid and a grandchild's, then hangs: both must be killed.
HANG = """#!/bin/sh
sleep 300 &
echo "$$ $!" > "$PIDS"
{head}
sleep 300
"""


def write_script(path: Path, text: str, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture(params=["tcp", "unix"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cgi_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cgi-bin"
    write_script(root / "env.cgi", ENV_SCRIPT)
    write_script(root / "sub" / "env.cgi", ENV_SCRIPT)
    write_script(root / "awstats.pl", AWSTATS_LIKE)
    write_script(root / "notfound.cgi", NOT_FOUND)
    write_script(root / "redirect.cgi", REDIRECT)
    write_script(root / "garbage.cgi", GARBAGE)
    write_script(root / "silent.cgi", SILENT)
    write_script(root / "cat.cgi", CAT)
    write_script(root / "stderr.cgi", STDERR)
    write_script(root / "plain.txt", "not a program", mode=0o644)
    write_script(root / ".hidden.cgi", AWSTATS_LIKE)
    write_script(tmp_path / "outside" / "evil.cgi", AWSTATS_LIKE)
    (root / "escape.cgi").symlink_to(tmp_path / "outside" / "evil.cgi")
    (root / "alias.cgi").symlink_to(root / "awstats.pl")
    return root


@pytest.fixture
def cgi(serve: ServeFactory, transport: str, cgi_dir: Path) -> Callable[..., RunningServer]:
    def start(target: Path | None = None, **options: Any) -> RunningServer:
        timeout = options.pop("timeout", 20.0)
        app = CGIApp(target or cgi_dir, timeout=timeout)
        return serve(app, transport=transport, script_name="/cgi", **options)

    return start


def run_env(address: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, headers, body = split_response(raw_request(address, path, **kwargs))
    assert status == "200 OK", body
    assert headers["Content-Type"] == "application/json"
    result: dict[str, Any] = json.loads(body)
    return result


def test_rfc3875_environment(
    cgi: Callable[..., RunningServer], cgi_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCGIWSGI_TEST_SECRET", "must-not-leak")
    server = cgi()
    shown = run_env(
        server.address,
        "/cgi/env.cgi/extra/path?x=1&y=2",
        extra={"HTTP_PROXY": "http://evil:3128", "HTTP_X_RAW": "\xc3\xa9", "AUTH_TYPE": "Basic"},
    )
    env = shown["env"]
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_SOFTWARE"].startswith("scgiwsgi/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/cgi/env.cgi", "/extra/path")
    assert env["SCRIPT_FILENAME"] == str(cgi_dir / "env.cgi")
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["AUTH_TYPE"] == "Basic"
    assert env["PATH"] == os.environ["PATH"]
    assert "CONTENT_LENGTH" not in env  # no body
    assert "HTTP_PROXY" not in env  # httpoxy
    assert "SCGIWSGI_TEST_SECRET" not in env
    assert not any(name.startswith("wsgi.") for name in env)
    assert shown["raw"] == "c3a9"  # the wire bytes, not re-encoded
    assert shown["argv"] == []  # the query has "="
    assert shown["cwd"] == str(cgi_dir)


def test_post_body_reaches_stdin_and_isindex_query_becomes_argv(
    cgi: Callable[..., RunningServer],
) -> None:
    server = cgi()
    shown = run_env(server.address, "/cgi/env.cgi?two+words%21+%C3%A9", method="POST", body=b"a=1")
    assert shown["body"] == "a=1"
    assert shown["env"]["CONTENT_LENGTH"] == "3"
    assert shown["argv"] == ["two", "words!", "\u00e9"]


def test_script_in_a_subdirectory(cgi: Callable[..., RunningServer], cgi_dir: Path) -> None:
    shown = run_env(cgi().address, "/cgi/sub/env.cgi/x/")
    assert (shown["env"]["SCRIPT_NAME"], shown["env"]["PATH_INFO"]) == ("/cgi/sub/env.cgi", "/x/")
    assert shown["cwd"] == str(cgi_dir / "sub")


def test_status_line_added_when_the_script_writes_none(cgi: Callable[..., RunningServer]) -> None:
    raw = raw_request(cgi().address, "/cgi/awstats.pl")
    assert raw.startswith(b"Status: 200 OK\r\nContent-type: text/html\r\n\r\n"), raw
    assert split_response(raw)[2] == b"<html>stats</html>\n"


@pytest.mark.parametrize(
    ("path", "status", "header"),
    [
        ("/cgi/notfound.cgi", "404 Not Found", None),
        ("/cgi/redirect.cgi", "302 Found", ("Location", "https://example.com/there")),
        ("/cgi/alias.cgi", "200 OK", ("Content-type", "text/html")),
    ],
)
def test_script_status_and_location(
    cgi: Callable[..., RunningServer], path: str, status: str, header: tuple[str, str] | None
) -> None:
    got, headers, _ = split_response(raw_request(cgi().address, path))
    assert got == status
    if header is not None:
        assert headers[header[0]] == header[1]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/cgi/missing.cgi", "404 Not Found"),
        ("/cgi/sub", "404 Not Found"),
        ("/cgi/", "404 Not Found"),
        ("/cgi/plain.txt", "403 Forbidden"),
        ("/cgi/.hidden.cgi", "403 Forbidden"),
        ("/cgi/escape.cgi", "403 Forbidden"),
        ("/cgi/%2e%2e/outside/evil.cgi", "403 Forbidden"),
        ("/cgi/sub/%2E%2E/%2E%2E/outside/evil.cgi", "403 Forbidden"),
        ("/cgi//etc/passwd", "403 Forbidden"),
        ("/cgi/%2Fetc%2Fpasswd", "403 Forbidden"),
    ],
)
def test_refused_paths(cgi: Callable[..., RunningServer], path: str, status: str) -> None:
    got, _, body = split_response(raw_request(cgi().address, path))
    assert got == status
    assert b"stats" not in body


@pytest.mark.parametrize(
    ("script", "reason"),
    [("garbage.cgi", "malformed header line"), ("silent.cgi", "the output is empty")],
)
def test_invalid_output_is_a_logged_502(
    cgi: Callable[..., RunningServer],
    scgi_log: pytest.LogCaptureFixture,
    script: str,
    reason: str,
) -> None:
    got, _, _ = split_response(raw_request(cgi().address, f"/cgi/{script}"))
    assert got == "502 Bad Gateway"
    assert reason in scgi_log.text


def test_stderr_goes_to_the_error_log(
    cgi: Callable[..., RunningServer], scgi_log: pytest.LogCaptureFixture
) -> None:
    assert split_response(raw_request(cgi().address, "/cgi/stderr.cgi"))[2] == b"ok"
    assert wait_for(lambda: "/cgi/stderr.cgi: stderr: stderr-line-5a1f" in scgi_log.text, 5)


def test_large_body_streams_through_both_ways(cgi: Callable[..., RunningServer]) -> None:
    # 8 MiB both ways at once through `cat`: feeding stdin without reading
    # stdout meanwhile would deadlock on the full pipes.
    # The client sends and reads at once, as a front end does.
    upload = os.urandom(8 << 20)
    request = encode_request({"REQUEST_METHOD": "POST", "REQUEST_URI": "/cgi/cat.cgi"}, upload)
    with connect(cgi().address) as sock:
        sender = threading.Thread(target=sock.sendall, args=(request,))
        sender.start()
        raw, reset = recv_all(sock, 30)
        sender.join(30)
    assert not reset
    assert split_response(raw)[2] == upload


def single_script(tmp_path: Path) -> Path:
    return write_script(tmp_path / "only" / "app.cgi", ENV_SCRIPT)


def test_single_script_mode_runs_it_for_every_path(
    cgi: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = cgi(single_script(tmp_path))
    for path, info in [("/cgi/anything/at/all", "/anything/at/all"), ("/cgi", "")]:
        env = run_env(server.address, path)["env"]
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/cgi", info)


def test_bad_targets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory nor an executable file"):
        CGIApp(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="not a directory nor an executable file"):
        CGIApp(write_script(tmp_path / "x.cgi", "#!/bin/sh\n", mode=0o644))
    with pytest.raises(ConfigError, match="positive"):
        CGIApp(tmp_path, timeout=0)


# -- time limits and vanished front ends: the script and its children die ----------------


def pids_from(path: Path) -> list[int]:
    assert wait_for(lambda: path.exists() and path.read_text().strip().count(" ") == 1, 10)
    return [int(pid) for pid in path.read_text().split()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (not reaped yet by its parent) is dead enough.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
        return True


def hang_script(tmp_path: Path, head: str) -> tuple[Path, Path]:
    pids = tmp_path / "pids"
    script = write_script(tmp_path / "hang" / "hang.cgi", HANG.format(head=head))
    return script, pids


def test_runaway_script_is_killed_with_504(
    serve: ServeFactory, transport: str, tmp_path: Path, scgi_log: pytest.LogCaptureFixture
) -> None:
    script, pids_file = hang_script(tmp_path, head="")
    app = CGIApp(script, timeout=1.0, extra_env={"PIDS": str(pids_file)})
    server = serve(app, transport=transport)
    started = time.monotonic()
    status, _, _ = split_response(raw_request(server.address, "/"))
    assert status == "504 Gateway Timeout"
    assert time.monotonic() - started < 8
    for pid in pids_from(pids_file):
        assert wait_for(lambda pid=pid: gone(pid), 5), f"process {pid} still running"
    assert "ran longer than 1.0s; killed" in scgi_log.text


def test_timeout_after_the_head_aborts_the_connection(serve: ServeFactory, tmp_path: Path) -> None:
    script, pids_file = hang_script(tmp_path, head="printf 'Content-Type: text/plain\\n\\npartial'")
    app = CGIApp(script, timeout=1.0, extra_env={"PIDS": str(pids_file)})
    server = serve(app, transport="tcp")  # AF_UNIX has no reset to observe
    with connect(server.address) as sock:
        sock.sendall(encode_request({"REQUEST_URI": "/"}))
        raw, reset = recv_all(sock)
    assert reset, raw
    assert raw.endswith(b"partial")
    for pid in pids_from(pids_file):
        assert wait_for(lambda pid=pid: gone(pid), 5), f"process {pid} still running"


def test_front_end_gone_kills_the_script(serve: ServeFactory, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = write_script(
        tmp_path / "loop" / "loop.cgi",
        '#!/bin/sh\nsleep 300 &\necho "$$ $!" > "$PIDS"\n'
        "printf 'Content-Type: text/plain\\n\\n'\n"
        "while true; do printf '%01000d\\n' 0; sleep 0.01; done\n",
    )
    app = CGIApp(script, timeout=60.0, extra_env={"PIDS": str(pids_file)})
    server = serve(app, transport="tcp")
    with connect(server.address) as sock:
        sock.sendall(encode_request({"REQUEST_URI": "/"}))
        assert sock.recv(100).startswith(b"Status: 200 OK")
    pids = pids_from(pids_file)
    for pid in pids:
        assert wait_for(lambda pid=pid: gone(pid), 10), f"process {pid} still running"


# -- scgi-wsgi --cgi ------------------------------------------------------------------------


@pytest.fixture
def command(tmp_path: Path) -> Iterator[Callable[..., ScriptProcess]]:
    started: list[ScriptProcess] = []

    def start(*args: str) -> ScriptProcess:
        process = ScriptProcess("-m", tmp_path / f"cli{len(started)}.log", ["scgiwsgi", *args])
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


def test_cli_serves_a_cgi_directory(
    command: Callable[..., ScriptProcess], cgi_dir: Path, tmp_path: Path
) -> None:
    process = command("--cgi", str(cgi_dir), "--bind", "127.0.0.1:0", "--script-name", "/cgi")
    address = process.wait_started()
    raw = raw_request(address, "/cgi/awstats.pl")
    assert raw.startswith(b"Status: 200 OK\r\n"), raw
    assert split_response(raw_request(address, "/cgi/escape.cgi"))[0] == "403 Forbidden"


def test_cli_cgi_single_script_with_time_limit(
    command: Callable[..., ScriptProcess], tmp_path: Path
) -> None:
    script = write_script(tmp_path / "slow" / "slow.cgi", "#!/bin/sh\nexec sleep 30\n")
    process = command("--cgi", str(script), "--cgi-timeout", "0.5", "--bind", "127.0.0.1:0")
    address = process.wait_started()
    assert split_response(raw_request(address, "/any/path"))[0] == "504 Gateway Timeout"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["examples.hello", "--cgi", "."], "cgi replaces app"),
        (["--cgi", "/nonexistent/cgi-bin"], "not a directory nor an executable file"),
    ],
)
def test_cli_cgi_misuse_exits_2(
    command: Callable[..., ScriptProcess], args: list[str], message: str
) -> None:
    process = command(*args, "--bind", "127.0.0.1:0")
    assert process.wait() == 2
    assert message in process.log_text()
