"""Response, start_response, write(), FileWrapper and sendfile, without sockets."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scgiwsgi import response as response_module
from scgiwsgi.errors import ResponseError
from scgiwsgi.response import (
    ClientDisconnected,
    FileWrapper,
    Response,
    ShortResponse,
    validate_header,
    validate_status,
)


class Wire:
    """A fake ``send``: records every call."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.sends)

    def split(self) -> tuple[list[bytes], bytes]:
        """The head lines (the Status line first) and the body."""
        head, sep, body = self.data.partition(b"\r\n\r\n")
        assert sep, f"no blank line after the head in {self.data!r}"
        return head.split(b"\r\n"), body


class FakeSendfile:
    """A fake ``sendfile``: records (file, offset, count) and 'sends' it all."""

    def __init__(self) -> None:
        self.calls: list[tuple[IO[bytes], int, int]] = []

    def __call__(self, file: IO[bytes], offset: int, count: int) -> int:
        self.calls.append((file, offset, count))
        return count


def make(**options: Any) -> tuple[Response, Wire]:
    wire = Wire()
    return Response(wire, **options), wire


def exc_info_of(exc: BaseException) -> Any:
    try:
        raise exc
    except BaseException:
        return sys.exc_info()


# -- the head ---------------------------------------------------------------------------


def test_head_format_and_single_send() -> None:
    response, wire = make()
    write = response.start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5"), ("X-A", "b c")]
    )
    assert wire.sends == []
    write(b"hello")
    response.finish()
    assert wire.sends == [
        b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: b c\r\n\r\nhello"
    ]
    assert response.status_code == 200
    assert response.body_bytes == 5


def test_every_line_ends_in_crlf() -> None:
    response, wire = make()
    response.start_response("404 Not Found", [("A", "1"), ("B", "2")])
    response.write(b"x\ny")
    head, body = wire.split()
    assert head == [b"Status: 404 Not Found", b"A: 1", b"B: 2"]
    assert b"\n" not in wire.data.partition(b"\r\n\r\n")[0].replace(b"\r\n", b"")
    assert body == b"x\ny"


def test_no_body_sends_the_head_once_at_finish() -> None:
    response, wire = make()
    response.start_response("204 No Content", [])
    assert wire.sends == []
    response.finish()
    assert wire.sends == [b"Status: 204 No Content\r\n\r\n"]


def test_empty_chunks_before_the_first_one_send_nothing() -> None:
    response, wire = make()
    write = response.start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"")
    response.write(b"")
    assert wire.sends == []
    assert response.headers_sent is False
    write(b"body")
    assert wire.sends == [b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nbody"]
    write(b"")
    write(b"more")
    assert wire.sends[1:] == [b"more"]
    response.finish()
    assert len(wire.sends) == 2


def test_large_first_chunk_is_sent_whole() -> None:
    response, wire = make()
    response.start_response("200 OK", [])
    big = bytes(range(256)) * 4096  # 1 MiB
    response.write(big)
    response.finish()
    assert wire.sends[0].startswith(b"Status: 200 OK\r\n")
    assert wire.split()[1] == big


def test_bytearray_and_memoryview_chunks_are_accepted() -> None:
    response, wire = make()
    response.start_response("200 OK", [])
    response.write(bytearray(b"ab"))  # type: ignore[arg-type]
    response.write(memoryview(b"cd"))  # type: ignore[arg-type]
    assert wire.split()[1] == b"abcd"


# -- status and headers validated ---------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    ["200 OK", "404 Not Found", "599 Whatever It Is", "201 Cr\xe9\xe9", "500 Tab\there"],
)
def test_valid_status(status: str) -> None:
    assert validate_status(status) == int(status[:3])


@pytest.mark.parametrize(
    "status",
    [
        "200",
        "200OK",
        "99 X",
        "600 X",
        "100 Continue",
        "2000 OK",
        " 200 OK",
        "abc OK",
        "\uff12\uff10\uff10 OK",  # fullwidth digits
        "200 OK\r\nX-Injected: 1",
        "200 O\nK",
        "200 O\x00K",
        "200 \u2713",  # not latin-1: cannot go on the wire
        "",
    ],
)
def test_invalid_status(status: str) -> None:
    with pytest.raises(ResponseError):
        validate_status(status)
    response, wire = make()
    with pytest.raises(ResponseError):
        response.start_response(status, [])
    assert response.status is None
    with pytest.raises(ResponseError):
        response.write(b"x")
    assert wire.sends == []


@pytest.mark.parametrize("status", [b"200 OK", 200, None, ["200 OK"]])
def test_non_str_status(status: Any) -> None:
    response, wire = make()
    with pytest.raises(ResponseError):
        response.start_response(status, [])
    assert wire.sends == []


@pytest.mark.parametrize(
    "header",
    [
        (b"X-A", "v"),
        ("X-A", b"v"),
        ("X-A", 1),
        ["X-A", "v"],
        ("X-A",),
        ("X-A", "v", "w"),
        "X-A: v",
    ],
)
def test_non_str_or_malformed_header(header: Any) -> None:
    response, wire = make()
    with pytest.raises(ResponseError):
        validate_header(header)
    with pytest.raises(ResponseError):
        response.start_response("200 OK", [header])
    assert wire.sends == []


def test_headers_must_be_a_list() -> None:
    response, _ = make()
    with pytest.raises(ResponseError):
        response.start_response("200 OK", (("X-A", "v"),))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\x00"])
@pytest.mark.parametrize("where", ["name", "value"])
def test_cr_lf_nul_are_rejected_and_nothing_reaches_the_wire(bad: str, where: str) -> None:
    header = ("X-Evil" + bad + "Injected", "v") if where == "name" else ("X-A", "a" + bad + "b")
    with pytest.raises(ResponseError):
        validate_header(header)
    response, wire = make()
    with pytest.raises(ResponseError):
        response.start_response("200 OK", [("Content-Type", "text/plain"), header])
    with pytest.raises(ResponseError):
        response.write(b"body")
    with pytest.raises(ResponseError):
        response.finish()
    assert wire.sends == []


@pytest.mark.parametrize("name", ["X A", "X:A", "", "X-\xe9", "(X)"])
def test_invalid_header_names(name: str) -> None:
    with pytest.raises(ResponseError):
        validate_header((name, "v"))


def test_header_value_must_be_latin1() -> None:
    assert validate_header(("X-A", "caf\xe9\tok")) == ("X-A", "caf\xe9\tok")
    with pytest.raises(ResponseError):
        validate_header(("X-A", "\u2713"))


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "connection",
        "Transfer-Encoding",
        "TRANSFER-ENCODING",
        "Keep-Alive",
        "Upgrade",
        "TE",
        "Trailer",
        "Proxy-Authenticate",
        "Proxy-Authorization",
    ],
)
def test_hop_by_hop_headers_rejected(name: str) -> None:
    response, wire = make()
    with pytest.raises(ResponseError):
        response.start_response("200 OK", [(name, "close")])
    assert wire.sends == []


@pytest.mark.parametrize("name", ["Status", "status", "STATUS"])
def test_status_header_rejected(name: str) -> None:
    with pytest.raises(ResponseError):
        validate_header((name, "302 Found"))


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "\u0661"])
def test_invalid_content_length(value: str) -> None:
    response, _ = make()
    with pytest.raises(ResponseError):
        response.start_response("200 OK", [("Content-Length", value)])


def _reference_value_error(value: str) -> str | None:
    # The value rules spelled out: control characters first, then latin-1.
    if any((ord(char) < 0x20 and char != "\t") or char == "\x7f" for char in value):
        return "control character"
    if any(ord(char) > 0xFF for char in value):
        return "not latin-1"
    return None


@given(st.text(alphabet=st.characters(max_codepoint=0x2FF)) | st.text())
def test_header_values_follow_the_reference_rules(value: str) -> None:
    expected = _reference_value_error(value)
    for _ in range(2):  # the first call caches the name, the second takes the cached path
        if expected is None:
            assert validate_header(("X-Value", value)) == ("X-Value", value)
        else:
            with pytest.raises(ResponseError, match=expected):
                validate_header(("X-Value", value))
        response, _ = make()
        if expected is None:
            response.start_response("200 OK", [("X-Value", value)])
        else:
            with pytest.raises(ResponseError, match=expected):
                response.start_response("200 OK", [("X-Value", value)])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\nb", "control character"),
        ("\u2713", "not latin-1"),
        ("\u2713\r", "control character"),  # both: the control character is named
    ],
)
def test_a_known_name_still_has_its_value_checked(value: str, message: str) -> None:
    validate_header(("X-Known", "fine"))
    response, _ = make()
    response.start_response("200 OK", [("X-Known", "fine")])
    with pytest.raises(ResponseError, match=message):
        validate_header(("X-Known", value))
    response, wire = make()
    with pytest.raises(ResponseError, match=message):
        response.start_response("200 OK", [("X-Known", value)])
    assert wire.sends == []


def test_str_subclasses_are_refused_after_the_plain_str_was_accepted() -> None:
    class Text(str):
        pass

    assert validate_status("200 OK") == 200
    validate_header(("Content-Type", "text/plain"))
    with pytest.raises(ResponseError, match="status must be a str"):
        validate_status(Text("200 OK"))
    with pytest.raises(ResponseError, match="must be str"):
        validate_header((Text("Content-Type"), "text/plain"))
    response, _ = make()
    with pytest.raises(ResponseError, match="status must be a str"):
        response.start_response(Text("200 OK"), [])
    with pytest.raises(ResponseError, match="must be str"):
        response.start_response("200 OK", [(Text("Content-Type"), "text/plain")])


def test_the_caches_of_valid_names_and_statuses_are_bounded() -> None:
    limit = response_module._CACHE_LIMIT
    for index in range(limit + 10):
        validate_header((f"X-Generated-{index}", "v"))
        validate_status(f"299 Generated {index}")
    assert len(response_module._valid_names) <= limit
    assert len(response_module._valid_statuses) <= limit
    # Names and statuses past the limit are still checked, and still pass.
    assert validate_header(("X-One-More", "v")) == ("X-One-More", "v")
    assert validate_status("299 One More") == 299
    with pytest.raises(ResponseError, match="hop-by-hop"):
        validate_header(("Connection", "close"))
    with pytest.raises(ResponseError, match="invalid status"):
        validate_status("600 Nope")


def test_an_invalid_header_is_reported_before_a_bad_content_length() -> None:
    response, _ = make()
    with pytest.raises(ResponseError, match="hop-by-hop"):
        response.start_response("200 OK", [("Content-Length", "abc"), ("Connection", "close")])


def test_the_first_content_length_counts_and_padding_is_allowed() -> None:
    response, _ = make()
    response.start_response("200 OK", [("content-length", " 5 "), ("Content-Length", "7")])
    assert response.content_length == 5


def test_start_response_keeps_its_own_copy_of_the_headers() -> None:
    headers = [("Content-Type", "text/plain")]
    response, wire = make()
    response.start_response("200 OK", headers)
    headers.append(("X-Late", "1"))
    response.finish()
    assert wire.split()[0] == [b"Status: 200 OK", b"Content-Type: text/plain"]


# -- start_response call rules ------------------------------------------------------------


def test_second_call_without_exc_info_is_an_error() -> None:
    response, _ = make()
    response.start_response("200 OK", [])
    with pytest.raises(ResponseError):
        response.start_response("404 Not Found", [])
    assert response.status == "200 OK"


def test_exc_info_before_headers_sent_replaces_status_and_headers() -> None:
    response, wire = make()
    response.start_response("200 OK", [("X-Old", "1"), ("Content-Length", "100")])
    response.write(b"")
    response.start_response(
        "500 Internal Server Error",
        [("X-New", "1"), ("Content-Length", "3")],
        exc_info_of(ValueError("boom")),
    )
    response.write(b"err")
    response.finish()
    head, body = wire.split()
    assert head == [b"Status: 500 Internal Server Error", b"X-New: 1", b"Content-Length: 3"]
    assert body == b"err"


def test_exc_info_on_the_first_call_is_fine() -> None:
    response, wire = make()
    response.start_response("503 Service Unavailable", [], exc_info_of(KeyError("k")))
    response.finish()
    assert wire.sends == [b"Status: 503 Service Unavailable\r\n\r\n"]


def test_exc_info_after_headers_sent_reraises_that_exception() -> None:
    response, wire = make()
    response.start_response("200 OK", [])
    response.write(b"partial")
    original = ValueError("the app's own error")
    info = exc_info_of(original)
    with pytest.raises(ValueError) as raised:
        response.start_response("500 Internal Server Error", [], info)
    assert raised.value is original
    assert response.status == "200 OK"
    assert wire.sends == [b"Status: 200 OK\r\n\r\npartial"]


def test_start_response_returns_write() -> None:
    response, wire = make()
    write = response.start_response("200 OK", [])
    write(b"one")
    response.write(b"two")
    write(b"three")
    assert wire.split()[1] == b"onetwothree"
    assert response.body_bytes == len(b"onetwothree")


def test_write_before_start_response_is_an_error() -> None:
    response, wire = make()
    with pytest.raises(ResponseError):
        response.write(b"too early")
    with pytest.raises(ResponseError):
        response.write(b"")
    assert wire.sends == []


@pytest.mark.parametrize("chunk", ["text", 5, None, [b"x"]])
def test_write_non_bytes_is_an_error(chunk: Any) -> None:
    response, wire = make()
    response.start_response("200 OK", [])
    with pytest.raises(ResponseError):
        response.write(chunk)
    assert wire.sends == []


def test_finish_without_start_response_is_an_error() -> None:
    response, wire = make()
    with pytest.raises(ResponseError):
        response.finish()
    assert wire.sends == []


# -- Content-Length ------------------------------------------------------------------------


def test_excess_over_content_length_is_dropped() -> None:
    response, wire = make()
    response.start_response("200 OK", [("Content-Length", "5")])
    response.write(b"hello world")
    response.write(b"and more")
    response.finish()
    assert wire.split()[1] == b"hello"
    assert response.body_bytes == 5
    assert response.truncated == len(b" world") + len(b"and more")


def test_exact_content_length_is_not_truncated() -> None:
    response, wire = make()
    response.start_response("200 OK", [("Content-Length", "10")])
    response.write(b"hello")
    response.write(b"world")
    response.finish()
    assert response.truncated == 0
    assert wire.split()[1] == b"helloworld"


def test_short_body_raises_short_response() -> None:
    response, wire = make()
    response.start_response("200 OK", [("Content-Length", "10")])
    response.write(b"short")
    with pytest.raises(ShortResponse):
        response.finish()
    assert wire.split()[1] == b"short"


def test_no_body_at_all_with_content_length_is_short() -> None:
    response, _ = make()
    response.start_response("200 OK", [("Content-Length", "1")])
    with pytest.raises(ShortResponse):
        response.finish()


def test_head_request_may_declare_a_length_without_a_body() -> None:
    response, wire = make(head_request=True)
    response.start_response("200 OK", [("Content-Length", "1234")])
    response.finish()
    assert wire.sends == [b"Status: 200 OK\r\nContent-Length: 1234\r\n\r\n"]


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses_are_not_short(status: str) -> None:
    response, wire = make()
    response.start_response(status, [("Content-Length", "50")])
    response.finish()
    assert wire.data.startswith(f"Status: {status}\r\n".encode())


# -- send_error -----------------------------------------------------------------------------


def test_send_error_500_is_a_complete_response() -> None:
    response, wire = make()
    response.send_error(500)
    response.finish()
    head, body = wire.split()
    assert head[0] == b"Status: 500 Internal Server Error"
    lengths = [line for line in head if line.lower().startswith(b"content-length:")]
    assert lengths == [b"Content-Length: " + str(len(body)).encode()]
    assert body.startswith(b"500 Internal Server Error")
    assert len(wire.sends) == 1
    assert response.status_code == 500


def test_send_error_replaces_an_unsent_response() -> None:
    response, wire = make()
    response.start_response("200 OK", [("X-App", "1"), ("Content-Length", "999")])
    response.send_error(500)
    response.finish()
    head, _ = wire.split()
    assert head[0] == b"Status: 500 Internal Server Error"
    assert b"X-App: 1" not in head


def test_send_error_after_the_head_was_sent_is_refused() -> None:
    response, wire = make()
    response.start_response("200 OK", [])
    response.write(b"x")
    with pytest.raises(ResponseError):
        response.send_error(500)
    assert wire.sends == [b"Status: 200 OK\r\n\r\nx"]


# -- FileWrapper and sendfile ------------------------------------------------------------------

FILE_DATA = bytes(range(100))


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(FILE_DATA)
    return path


def test_send_file_from_the_current_position(data_file: Path) -> None:
    sendfile = FakeSendfile()
    response, wire = make(sendfile=sendfile)
    with data_file.open("rb") as file:
        file.seek(10)
        response.start_response("200 OK", [("Content-Type", "application/octet-stream")])
        assert response.send_file(FileWrapper(file)) is True
        response.finish()
        assert sendfile.calls == [(file, 10, 90)]
    assert wire.sends == [b"Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"]
    assert response.body_bytes == 90


def test_send_file_after_reading_honours_the_logical_position(data_file: Path) -> None:
    sendfile = FakeSendfile()
    response, _ = make(sendfile=sendfile)
    with data_file.open("rb") as file:
        assert file.read(7) == FILE_DATA[:7]  # buffered: the OS offset is past 7
        response.start_response("200 OK", [])
        assert response.send_file(FileWrapper(file))
        assert sendfile.calls == [(file, 7, 93)]


def test_send_file_count_limited_by_content_length(data_file: Path) -> None:
    sendfile = FakeSendfile()
    response, _ = make(sendfile=sendfile)
    with data_file.open("rb") as file:
        file.seek(10)
        response.start_response("200 OK", [("Content-Length", "30")])
        assert response.send_file(FileWrapper(file))
        response.finish()
        assert sendfile.calls == [(file, 10, 30)]
    assert response.body_bytes == 30


def test_send_file_shorter_than_content_length_is_short(data_file: Path) -> None:
    sendfile = FakeSendfile()
    response, _ = make(sendfile=sendfile)
    with data_file.open("rb") as file:
        response.start_response("200 OK", [("Content-Length", "500")])
        assert response.send_file(FileWrapper(file))
        assert sendfile.calls == [(file, 0, 100)]
        with pytest.raises(ShortResponse):
            response.finish()


def test_send_file_without_fileno_falls_back_to_iteration() -> None:
    sendfile = FakeSendfile()
    response, wire = make(sendfile=sendfile)
    stream = io.BytesIO(FILE_DATA)
    stream.seek(3)
    wrapper = FileWrapper(stream, block_size=16)
    response.start_response("200 OK", [])
    assert response.send_file(wrapper) is False
    assert wire.sends == []
    assert sendfile.calls == []
    chunks = list(wrapper)
    assert all(0 < len(chunk) <= 16 for chunk in chunks)
    for chunk in chunks:
        response.write(chunk)
    response.finish()
    assert wire.split()[1] == FILE_DATA[3:]


def test_send_file_needs_a_sendfile_callable_and_a_status(data_file: Path) -> None:
    with data_file.open("rb") as file:
        response, wire = make()
        response.start_response("200 OK", [])
        assert response.send_file(FileWrapper(file)) is False
        sendfile = FakeSendfile()
        response, wire = make(sendfile=sendfile)
        assert response.send_file(FileWrapper(file)) is False
        assert sendfile.calls == []
        assert wire.sends == []


def test_file_wrapper_close_closes_the_file(data_file: Path) -> None:
    file = data_file.open("rb")
    wrapper = FileWrapper(file)
    assert not file.closed
    wrapper.close()
    assert file.closed


def test_file_wrapper_close_without_a_close_method() -> None:
    class Reader:
        def read(self, size: int) -> bytes:
            return b""

    FileWrapper(Reader()).close()  # must not raise
    assert list(FileWrapper(Reader())) == []


# -- send and sendfile failures ----------------------------------------------------------------

TIMED_OUT = "timed out sending the response"
FILE_TIMED_OUT = "timed out sending a file"
SEND_FAILURES = [
    (BlockingIOError(11, "Resource temporarily unavailable"), TIMED_OUT),
    (TimeoutError("timed out"), TIMED_OUT),
    (BrokenPipeError(32, "Broken pipe"), "[Errno 32] Broken pipe"),
    (ConnectionResetError(104, "Connection reset by peer"), "[Errno 104] Connection reset by peer"),
    (OSError(9, "Bad file descriptor"), "[Errno 9] Bad file descriptor"),
]


class FailingSend:
    """A ``send`` like ``sock.sendall``: succeeds ``ok`` times, then raises ``error``."""

    def __init__(self, error: BaseException, ok: int = 0) -> None:
        self.error = error
        self.ok = ok
        self.sends: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        if len(self.sends) >= self.ok:
            raise self.error
        self.sends.append(bytes(data))


def _first_write(response: Response) -> None:
    response.start_response("200 OK", [])
    response.write(b"body")


def _later_write(response: Response) -> None:
    response.start_response("200 OK", [])
    response.write(b"first")
    response.write(b"second")


def _large_write(response: Response) -> None:
    # Past the coalescing limit the head and the data are two sends.
    response.start_response("200 OK", [])
    response.write(b"x" * (response_module._COALESCE_LIMIT + 1))


def _head_at_finish(response: Response) -> None:
    response.start_response("204 No Content", [])
    response.finish()


def _error_page(response: Response) -> None:
    response.send_error(500)


@pytest.mark.parametrize(
    ("action", "ok"),
    [
        (_first_write, 0),
        (_later_write, 1),
        (_large_write, 0),
        (_large_write, 1),
        (_head_at_finish, 0),
        (_error_page, 0),
    ],
)
@pytest.mark.parametrize(("error", "message"), SEND_FAILURES)
def test_send_errors_become_client_disconnected(
    action: Callable[[Response], None], ok: int, error: OSError, message: str
) -> None:
    send = FailingSend(error, ok)
    response = Response(send)
    with pytest.raises(ClientDisconnected) as raised:
        action(response)
    assert str(raised.value) == message
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert len(send.sends) == ok


def test_client_disconnected_from_send_passes_unchanged() -> None:
    gone = ClientDisconnected("the front end went away")
    for action in (_first_write, _later_write, _head_at_finish):
        response = Response(FailingSend(gone, ok=1 if action is _later_write else 0))
        with pytest.raises(ClientDisconnected) as raised:
            action(response)
        assert raised.value is gone


def test_a_failed_send_counts_no_body_bytes() -> None:
    response = Response(FailingSend(BrokenPipeError(32, "Broken pipe"), ok=1))
    response.start_response("200 OK", [])
    response.write(b"first")
    with pytest.raises(ClientDisconnected):
        response.write(b"second")
    assert response.body_bytes == len(b"first")


def test_non_os_errors_from_send_are_not_converted() -> None:
    response = Response(FailingSend(ValueError("a bug in send")))
    with pytest.raises(ValueError, match="a bug in send"):
        _first_write(response)


class FailingSendfile:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, file: IO[bytes], offset: int, count: int) -> int:
        raise self.error


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (error, FILE_TIMED_OUT if message == TIMED_OUT else message)
        for error, message in SEND_FAILURES
    ],
)
def test_sendfile_errors_become_client_disconnected(
    data_file: Path, error: OSError, message: str
) -> None:
    response, wire = make(sendfile=FailingSendfile(error))
    with data_file.open("rb") as file:
        response.start_response("200 OK", [])
        with pytest.raises(ClientDisconnected) as raised:
            response.send_file(FileWrapper(file))
    assert str(raised.value) == message
    assert raised.value.__cause__ is None
    assert wire.sends == [b"Status: 200 OK\r\n\r\n"]
    assert response.body_bytes == 0


def test_client_disconnected_from_sendfile_passes_unchanged(data_file: Path) -> None:
    gone = ClientDisconnected("the front end went away")
    response, _ = make(sendfile=FailingSendfile(gone))
    with data_file.open("rb") as file:
        response.start_response("200 OK", [])
        with pytest.raises(ClientDisconnected) as raised:
            response.send_file(FileWrapper(file))
    assert raised.value is gone


@pytest.mark.parametrize(("error", "message"), SEND_FAILURES)
def test_send_errors_for_the_head_before_sendfile(
    data_file: Path, error: OSError, message: str
) -> None:
    sendfile = FakeSendfile()
    response = Response(FailingSend(error), sendfile=sendfile)
    with data_file.open("rb") as file:
        response.start_response("200 OK", [])
        with pytest.raises(ClientDisconnected, match=re.escape(message)):
            response.send_file(FileWrapper(file))
    assert sendfile.calls == []
