"""Settings from the environment and TOML files, and their precedence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scgiwsgi.config import Config
from scgiwsgi.errors import ConfigError
from scgiwsgi.logs import format_json
from scgiwsgi.settings import from_environ, from_toml, parse_size, resolve, to_toml

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scgi-wsgi.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("65536", 65536),
        ("64K", 65536),
        ("64k", 65536),
        ("10M", 10 << 20),
        ("1G", 1 << 30),
        ("2KiB", 2048),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5M", "10T", "K"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_environment_variables_are_converted_by_type() -> None:
    found = from_environ(
        {
            "SCGI_WSGI_THREADS": "4",
            "SCGI_WSGI_PRELOAD": "yes",
            "SCGI_WSGI_MAX_BODY_SIZE": "10M",
            "SCGI_WSGI_GRACEFUL_TIMEOUT": "2.5",
            "SCGI_WSGI_BIND": "127.0.0.1:1, unix:/tmp/a.sock",
            "SCGI_WSGI_SOCKET_MODE": "600",
            "SCGI_WSGI_UNRELATED": "x",
            "OTHER": "y",
        }
    )
    assert found == {
        "threads": 4,
        "preload": True,
        "max_body_size": 10 << 20,
        "graceful_timeout": 2.5,
        "bind": ("127.0.0.1:1", "unix:/tmp/a.sock"),
        "socket_mode": 0o600,
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [("SCGI_WSGI_THREADS", "many"), ("SCGI_WSGI_PRELOAD", "maybe"), ("SCGI_WSGI_TIMEOUT", "x")],
)
def test_bad_environment_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_environ({name: value})


def test_toml_file_top_level_and_table(tmp_path: Path) -> None:
    top = from_toml(write(tmp_path, 'threads = 3\nmax-header-size = "32K"\n'))
    assert top == {"threads": 3, "max_header_size": 32768}
    table = from_toml(write(tmp_path, '[scgi-wsgi]\nbind = ["unix:/tmp/s.sock"]\npreload = true\n'))
    assert table == {"bind": ("unix:/tmp/s.sock",), "preload": True}


def test_toml_unknown_option_and_bad_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'thread'"):
        from_toml(write(tmp_path, "thread = 3\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        from_toml(write(tmp_path, "threads = \n"))
    with pytest.raises(ConfigError, match="config file"):
        from_toml(str(tmp_path / "missing.toml"))


def test_precedence_command_line_then_environment_then_file(tmp_path: Path) -> None:
    path = write(tmp_path, "threads = 2\nbacklog = 10\nbody_timeout = 5.0\n")
    env = {"SCGI_WSGI_THREADS": "3", "SCGI_WSGI_BACKLOG": "20"}
    config = resolve({"threads": 4}, config_file=path, environ=env)
    assert (config.threads, config.backlog, config.body_timeout) == (4, 20, 5.0)
    config = resolve({}, config_file=path, environ=env)
    assert (config.threads, config.backlog) == (3, 20)
    config = resolve({}, config_file=path, environ={})
    assert (config.threads, config.backlog) == (2, 10)


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "backlog = 7\n")
    assert resolve({}, environ={"SCGI_WSGI_CONFIG": path}).backlog == 7


def test_print_config_round_trips(tmp_path: Path) -> None:
    config = Config(bind=("127.0.0.1:9", "unix:/tmp/x y.sock"), threads=3, max_body_size=1024)
    path = write(tmp_path, to_toml(config))
    assert resolve({}, config_file=path, environ={}) == config


def test_json_access_log_line() -> None:
    environ = {"REMOTE_ADDR": "10.0.0.1", "REQUEST_METHOD": "GET", "REQUEST_URI": "/a?b"}
    record = json.loads(format_json(environ, 201, 12, 0.0015))
    assert record["status"] == 201 and record["bytes"] == 12
    assert record["duration_us"] == 1500 and record["uri"] == "/a?b"
    assert isinstance(record["pid"], int)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scgiwsgi", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_print_config_shows_merged_settings(tmp_path: Path) -> None:
    path = write(tmp_path, 'app = "examples.hello"\nthreads = 2\n')
    result = run_cli(
        "--config", path, "--backlog", "5", "--print-config", env={"SCGI_WSGI_THREADS": "6"}
    )
    assert result.returncode == 0, result.stderr
    assert 'app = "examples.hello"' in result.stdout
    assert "threads = 6" in result.stdout and "backlog = 5" in result.stdout


def test_defer_accept_on_by_default_and_off_from_each_source(tmp_path: Path) -> None:
    assert resolve({}, environ={}).defer_accept is True
    assert resolve({}, environ={"SCGI_WSGI_DEFER_ACCEPT": "off"}).defer_accept is False
    path = write(tmp_path, "defer_accept = false\n")
    assert resolve({}, environ={"SCGI_WSGI_CONFIG": path}).defer_accept is False
    result = run_cli("--no-defer-accept", "--print-config")
    assert result.returncode == 0, result.stderr
    assert "defer_accept = false" in result.stdout


def test_cli_check_config_ok_and_failing(tmp_path: Path) -> None:
    good = run_cli("examples.hello", "--check-config")
    assert good.returncode == 0 and "configuration OK" in good.stdout
    missing = run_cli("no_such_module_xyz", "--check-config")
    assert missing.returncode == 1
    assert "cannot import module 'no_such_module_xyz'" in missing.stderr
    bad = run_cli("--check-config", env={"SCGI_WSGI_BACKLOG": "lots"})
    assert bad.returncode == 1 and "SCGI_WSGI_BACKLOG" in bad.stderr


def test_cli_error_log_file(tmp_path: Path) -> None:
    log_file = tmp_path / "error.log"
    result = run_cli("no_such_module_xyz", "--error-log", str(log_file), "--check-config")
    assert result.returncode == 1
    assert "scgi-wsgi: error" in result.stderr
    bad_dir = run_cli("--error-log", str(tmp_path / "nope" / "e.log"), "--check-config")
    assert bad_dir.returncode == 1 and "error_log: cannot open" in bad_dir.stderr
