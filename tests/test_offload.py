"""scgiwsgi.offload: wsgi.file_wrapper files handed to the front end, without sockets."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scgiwsgi.config import Config
from scgiwsgi.errors import ConfigError
from scgiwsgi.offload import Offload, OffloadFiles, parse_offload
from scgiwsgi.response import FileWrapper


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "files"
    (directory / "sub").mkdir(parents=True)
    (directory / "sub" / "caf\u00e9 1.txt").write_bytes(b"hello")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (directory / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return directory


def test_parse_offload(root: Path) -> None:
    assert parse_offload(f"x-sendfile:{root}") == Offload("X-Sendfile", str(root))
    assert parse_offload(f"X-Accel-Redirect:{root}=/_files") == Offload(
        "X-Accel-Redirect", str(root), "/_files/"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "sendfile:/srv",
        "x-sendfile:relative/dir",
        "x-accel-redirect:/srv",
        "x-accel-redirect:/srv=x",
    ],
)
def test_parse_offload_rejects(spec: str) -> None:
    with pytest.raises(ConfigError, match="offload"):
        parse_offload(spec)
    with pytest.raises(ConfigError, match="offload"):
        Config(offload=spec)


def test_header_values(root: Path) -> None:
    inside = str(root / "sub" / "caf\u00e9 1.txt")
    assert Offload("X-Sendfile", str(root)).header_value(inside) == inside
    accel = Offload("X-Accel-Redirect", str(root), "/_files/")
    assert accel.header_value(inside) == "/_files/sub/caf%C3%A9%201.txt"
    assert accel.header_value(str(root / "escape.txt")) is None  # a symlink out of the root
    assert accel.header_value(str(root.parent / "secret.txt")) is None
    assert accel.header_value(str(root)) is None


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], Any]] = []
        self.written: list[bytes] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.calls.append((status, headers, exc_info))
        return self.written.append


def _file_app(path: Path, status: str = "200 OK") -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return FileWrapper(open(path, "rb"))

    return app


def test_file_under_root_leaves_as_a_header(root: Path) -> None:
    path = root / "sub" / "caf\u00e9 1.txt"
    offload = parse_offload(f"x-accel-redirect:{root}=/_files")
    start = Recorder()
    body = OffloadFiles(_file_app(path), offload)({}, start)
    assert list(body) == []
    assert start.calls == [
        (
            "200 OK",
            [("Content-Type", "text/plain"), ("X-Accel-Redirect", "/_files/sub/caf%C3%A9%201.txt")],
            None,
        )
    ]


@pytest.mark.parametrize("status", ["200 OK", "404 Not Found"])
def test_other_files_and_statuses_are_sent_as_usual(root: Path, status: str) -> None:
    offload = parse_offload(f"x-sendfile:{root}")
    path = root / "escape.txt" if status.startswith("200") else root / "sub" / "caf\u00e9 1.txt"
    start = Recorder()
    body = OffloadFiles(_file_app(path, status), offload)({}, start)
    assert isinstance(body, FileWrapper)
    assert b"".join(body) in (b"secret", b"hello")
    body.close()
    assert start.calls == [
        (status, [("Content-Type", "text/plain"), ("Content-Length", "5")], None)
    ]


def test_plain_iterables_generators_and_write_pass_through(root: Path) -> None:
    offload = parse_offload(f"x-sendfile:{root}")

    def listing(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [b"a"]

    def generator(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("X", "1")])  # called only when iterated
        yield b"g"

    def writer(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        write = start_response("200 OK", [])
        write(b"w")
        return FileWrapper(io.BytesIO(b"not a file"))

    for app, expected in ((listing, b"a"), (generator, b"g"), (writer, b"not a file")):
        start = Recorder()
        body = b"".join(OffloadFiles(app, offload)({}, start))
        assert start.calls[0][0] == "200 OK"
        assert len(start.calls) == 1
        assert b"".join(start.written) + body in (expected, b"w" + expected)


def test_open_file_not_at_its_start_is_not_offloaded(root: Path) -> None:
    offload = parse_offload(f"x-sendfile:{root}")
    path = root / "sub" / "caf\u00e9 1.txt"

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        handle = open(path, "rb")  # noqa: SIM115
        handle.seek(2)
        return FileWrapper(handle)

    start = Recorder()
    body = OffloadFiles(app, offload)({}, start)
    try:
        assert b"".join(body) == b"llo"
    finally:
        body.close()  # type: ignore[attr-defined]
    assert start.calls == [("200 OK", [], None)]
    assert os.path.exists(path)
