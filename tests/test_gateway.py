"""run_application with tiny apps and a fake send, without sockets."""

from __future__ import annotations

import io
import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from wsgiref.validate import validator

import pytest

from scgiwsgi.environ import ServerInfo, build_environ
from scgiwsgi.gateway import Outcome, run_application
from scgiwsgi.response import ClientDisconnected, FileWrapper, Response
from scgiwsgi.wsgi_input import BodyInput

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse

# The validator asserts in __del__ that the server closed its iterator;
# make that failure (an unraisable exception) fail the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

SECRET = "db password is hunter2"


class Wire:
    """A fake ``send``; raises ClientDisconnected from call ``fail_at`` on."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sends: list[bytes] = []
        self.fail_at = fail_at

    def __call__(self, data: bytes) -> None:
        if self.fail_at is not None and len(self.sends) >= self.fail_at:
            raise ClientDisconnected("Broken pipe")
        self.sends.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.sends)

    def split(self) -> tuple[list[bytes], bytes]:
        head, sep, body = self.data.partition(b"\r\n\r\n")
        assert sep, f"no complete head in {self.data!r}"
        return head.split(b"\r\n"), body


class Body:
    """An app result that records close(); may fail while iterated or closed."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        fail_at: int | None = None,
        close_error: Exception | None = None,
    ) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.close_error = close_error
        self.closed = 0
        self.yielded = 0

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise RuntimeError(SECRET)
            self.yielded += 1
            yield chunk

    def close(self) -> None:
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error


def make_environ(
    method: str = "GET", body: bytes = b"", read_chunk: Callable[[int], bytes] | None = None
) -> dict[str, Any]:
    headers = {
        b"CONTENT_LENGTH": str(len(body)).encode(),
        b"SCGI": b"1",
        b"REQUEST_METHOD": method.encode(),
        b"REQUEST_URI": b"/path?q=1",
        b"REMOTE_ADDR": b"192.0.2.7",
        b"SERVER_PROTOCOL": b"HTTP/1.1",
    }
    source = io.BytesIO(body)
    return build_environ(
        headers,
        server=ServerInfo(server_name="test", server_port="80"),
        wsgi_input=BodyInput(read_chunk or source.read, len(body)),
        wsgi_errors=io.StringIO(),
        file_wrapper=FileWrapper,
    )


def run(
    app: Any,
    *,
    wire: Wire | None = None,
    method: str = "GET",
    body: bytes = b"",
    sendfile: Any = None,
    read_chunk: Callable[[int], bytes] | None = None,
) -> tuple[Outcome, Wire, Response]:
    wire = wire or Wire()
    response = Response(wire, sendfile=sendfile, head_request=method == "HEAD")
    outcome = run_application(app, make_environ(method, body, read_chunk), response)
    return outcome, wire, response


@pytest.fixture
def error_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    """caplog on ``scgiwsgi.error`` from DEBUG, propagation forced on."""
    monkeypatch.setattr(logging.getLogger("scgiwsgi"), "propagate", True)
    monkeypatch.setattr(logging.getLogger("scgiwsgi.error"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="scgiwsgi.error")
    return caplog


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "scgiwsgi.error"]


def assert_is_500_page(wire: Wire) -> None:
    head, body = wire.split()
    assert head[0] == b"Status: 500 Internal Server Error"
    assert b"Content-Length: " + str(len(body)).encode() in head
    assert body.startswith(b"500 Internal Server Error")
    assert SECRET.encode() not in wire.data
    assert b"Traceback" not in wire.data


def assert_traceback_logged(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> None:
    logged = [record for record in records(caplog) if record.exc_info]
    assert len(logged) == 1
    assert logged[0].levelno == level
    assert SECRET in caplog.text  # the exception message, in the log only
    assert "Traceback" in caplog.text


# -- success -------------------------------------------------------------------------------


def test_valid_app_complete_and_closed(error_log: pytest.LogCaptureFixture) -> None:
    result = Body([b"hello ", b"world"])

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
        return result

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert wire.sends == [
        b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello ",
        b"world",
    ]
    assert result.closed == 1
    assert records(error_log) == []


def test_small_response_is_one_send() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"", b"all of it"]

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert wire.sends == [b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"]


def test_app_reads_the_body() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        data = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [data[::-1]]

    outcome, wire, _ = run(validator(app), method="POST", body=b"abc")
    assert outcome is Outcome.COMPLETE
    assert wire.split()[1] == b"cba"


def test_write_interleaves_with_iteration() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"1-")

        def generate() -> Iterator[bytes]:
            yield b"2-"
            write(b"3-")
            yield b"4"

        return generate()

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert wire.split()[1] == b"1-2-3-4"
    assert wire.sends[1:] == [b"2-", b"3-", b"4"]


def test_start_response_inside_the_generator() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        yield b"late"

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert wire.sends == [b"Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nlate"]


def test_head_request_with_length_and_no_body() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "42")])
        return []

    outcome, wire, _ = run(validator(app), method="HEAD")
    assert outcome is Outcome.COMPLETE
    assert wire.split() == (
        [b"Status: 200 OK", b"Content-Type: text/plain", b"Content-Length: 42"],
        b"",
    )


# -- app errors ------------------------------------------------------------------------------


def test_error_before_start_response_gives_500(error_log: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        raise RuntimeError(SECRET)

    outcome, wire, response = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert_is_500_page(wire)
    assert response.status_code == 500
    assert_traceback_logged(error_log)


def test_error_after_start_response_before_body_gives_500(
    error_log: pytest.LogCaptureFixture,
) -> None:
    result = Body([b"never"], fail_at=0)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "1")])
        return result

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert_is_500_page(wire)
    assert b"X-App" not in wire.data
    assert result.closed == 1
    assert_traceback_logged(error_log)


def test_error_after_the_head_was_sent_aborts(error_log: pytest.LogCaptureFixture) -> None:
    result = Body([b"first", b"second"], fail_at=1)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.ABORT
    assert wire.sends == [b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst"]
    assert result.closed == 1
    assert_traceback_logged(error_log)


def test_generator_that_yields_then_raises_aborts(error_log: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError(SECRET)

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.ABORT
    assert b"500" not in wire.data
    assert wire.split()[1] == b"partial"
    assert_traceback_logged(error_log)


def test_exc_info_before_head_sends_the_apps_error_page(
    error_log: pytest.LogCaptureFixture,
) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("handled by the app")
        except ValueError:
            start_response(
                "503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"try later"]

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert wire.sends == [
        b"Status: 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\ntry later"
    ]
    assert records(error_log) == []


def test_exc_info_after_head_reraises_and_aborts(error_log: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"streaming")
        try:
            raise ValueError(SECRET)
        except ValueError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"unreachable"]

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.ABORT
    assert wire.sends == [b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nstreaming"]
    assert_traceback_logged(error_log)


def test_invalid_header_gives_500_and_nothing_of_it_on_the_wire(
    error_log: pytest.LogCaptureFixture,
) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Location", "/x\r\nSet-Cookie: evil=1")])
        return [b"body"]

    outcome, wire, _ = run(app)
    assert outcome is Outcome.COMPLETE
    assert_is_500_page(wire)
    assert b"evil" not in wire.data
    assert len([record for record in records(error_log) if record.exc_info]) == 1


@pytest.mark.parametrize("result", ["a str body", "", b"bytes, not a list", b""])
def test_str_or_bytes_result_gives_500(error_log: pytest.LogCaptureFixture, result: Any) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    outcome, wire, _ = run(app)
    assert outcome is Outcome.COMPLETE
    assert_is_500_page(wire)
    assert len([record for record in records(error_log) if record.exc_info]) == 1


@pytest.mark.parametrize("chunks", [[], [b""], [b"body"]], ids=["empty", "empty-chunk", "body"])
def test_never_calling_start_response_gives_500(
    error_log: pytest.LogCaptureFixture, chunks: list[bytes]
) -> None:
    result = Body(chunks)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        return result

    outcome, wire, _ = run(app)
    assert outcome is Outcome.COMPLETE
    assert_is_500_page(wire)
    assert b"body" not in wire.data
    assert result.closed == 1
    logged = [record for record in records(error_log) if record.levelno >= logging.ERROR]
    assert len(logged) == 1
    assert "start_response" in error_log.text


def test_non_iterable_result_gives_500(error_log: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        start_response("200 OK", [])
        return None

    outcome, wire, _ = run(app)
    assert outcome is Outcome.COMPLETE
    assert_is_500_page(wire)


def test_base_exceptions_propagate_after_close() -> None:
    class Interrupted(Body):
        def __iter__(self) -> Iterator[bytes]:
            raise KeyboardInterrupt

    result = Interrupted([])

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [])
        return result

    with pytest.raises(KeyboardInterrupt):
        run(app)
    assert result.closed == 1


# -- client gone -----------------------------------------------------------------------------


def test_client_disconnect_is_gone_with_one_info_line(
    error_log: pytest.LogCaptureFixture,
) -> None:
    result = Body([b"a", b"b", b"c"])

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    outcome, wire, _ = run(validator(app), wire=Wire(fail_at=1))
    assert outcome is Outcome.GONE
    assert len(wire.sends) == 1
    assert result.closed == 1
    assert result.yielded == 2  # stopped at the failed send
    logged = records(error_log)
    assert [record.levelno for record in logged] == [logging.INFO]
    assert logged[0].exc_info is None
    assert "Traceback" not in error_log.text
    assert "Broken pipe" in error_log.text


def test_client_disconnect_on_the_first_send_is_gone(error_log: pytest.LogCaptureFixture) -> None:
    result = Body([b"a"])

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    outcome, wire, _ = run(validator(app), wire=Wire(fail_at=0))
    assert outcome is Outcome.GONE
    assert wire.sends == []
    assert result.closed == 1
    assert [record.levelno for record in records(error_log)] == [logging.INFO]


def test_client_disconnect_while_sending_the_500_is_gone(
    error_log: pytest.LogCaptureFixture,
) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        raise RuntimeError(SECRET)

    outcome, wire, _ = run(app, wire=Wire(fail_at=0))
    assert outcome is Outcome.GONE
    assert wire.sends == []


def test_client_disconnect_while_reading_the_body_is_gone(
    error_log: pytest.LogCaptureFixture,
) -> None:
    def dropped(size: int) -> bytes:
        raise ClientDisconnected("connection lost while reading the body")

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"unreachable"]

    outcome, wire, _ = run(app, method="POST", body=b"0123456789", read_chunk=dropped)
    assert outcome is Outcome.GONE
    assert wire.sends == []
    assert [record.levelno for record in records(error_log)] == [logging.INFO]


class SocketSend:
    """A ``send`` like ``sock.sendall``: raises ``error`` (an OSError) on every call."""

    def __init__(self, error: OSError) -> None:
        self.error = error

    def __call__(self, data: bytes) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (BrokenPipeError(32, "Broken pipe"), "Broken pipe"),
        (BlockingIOError(11, "Resource temporarily unavailable"), "timed out sending the response"),
        (TimeoutError("timed out"), "timed out sending the response"),
    ],
)
def test_os_errors_of_a_socket_send_are_gone(
    error_log: pytest.LogCaptureFixture, error: OSError, message: str
) -> None:
    result = Body([b"a"])

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    response = Response(SocketSend(error))
    outcome = run_application(validator(app), make_environ(), response)
    assert outcome is Outcome.GONE
    assert result.closed == 1
    logged = records(error_log)
    assert [record.levelno for record in logged] == [logging.INFO]
    assert message in logged[0].getMessage()
    assert "Traceback" not in error_log.text


def test_sendfile_timeout_is_gone_and_the_file_closed(
    tmp_path: Path, error_log: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 50)
    file = path.open("rb")

    def sendfile(file: IO[bytes], offset: int, count: int) -> int:
        raise TimeoutError("timed out")

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](file)

    outcome, wire, _ = run(app, sendfile=sendfile)
    assert outcome is Outcome.GONE
    assert len(wire.sends) == 1  # the head
    assert file.closed
    assert "timed out sending a file" in records(error_log)[0].getMessage()


# -- close() -----------------------------------------------------------------------------------


def test_close_error_is_logged_and_success_stays_complete(
    error_log: pytest.LogCaptureFixture,
) -> None:
    result = Body([b"ok"], close_error=RuntimeError("close failed"))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return result

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert wire.split()[1] == b"ok"
    assert result.closed == 1
    logged = [record for record in records(error_log) if record.exc_info]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert "close failed" in error_log.text


def test_close_error_does_not_change_abort(error_log: pytest.LogCaptureFixture) -> None:
    result = Body([b"a", b"b"], fail_at=1, close_error=RuntimeError("close failed"))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    outcome, _, _ = run(validator(app))
    assert outcome is Outcome.ABORT
    assert result.closed == 1
    assert len([record for record in records(error_log) if record.exc_info]) == 2


def test_close_error_does_not_change_gone(error_log: pytest.LogCaptureFixture) -> None:
    result = Body([b"a"], close_error=RuntimeError("close failed"))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    outcome, _, _ = run(validator(app), wire=Wire(fail_at=0))
    assert outcome is Outcome.GONE
    assert result.closed == 1


def test_close_error_does_not_change_the_500(error_log: pytest.LogCaptureFixture) -> None:
    result = Body([b"a"], fail_at=0, close_error=RuntimeError("close failed"))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    outcome, wire, _ = run(app)
    assert outcome is Outcome.COMPLETE
    assert_is_500_page(wire)


# -- Content-Length ------------------------------------------------------------------------------


def test_short_response_aborts_with_an_error_log(error_log: pytest.LogCaptureFixture) -> None:
    result = Body([b"only this"])

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return result

    outcome, wire, _ = run(validator(app))
    assert outcome is Outcome.ABORT
    assert wire.split()[1] == b"only this"
    assert result.closed == 1
    errors = [record for record in records(error_log) if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "Content-Length" in errors[0].getMessage()


def test_excess_output_stops_iteration_and_warns(error_log: pytest.LogCaptureFixture) -> None:
    endless = Body(itertools.repeat(b"0123456789", 1000))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "25")])
        return endless

    outcome, wire, response = run(validator(app))
    assert outcome is Outcome.COMPLETE
    assert wire.split()[1] == b"0123456789" * 2 + b"01234"
    assert response.truncated == 5
    assert endless.yielded == 3  # no iterating on once the length is reached
    assert endless.closed == 1
    assert [record.levelno for record in records(error_log)] == [logging.WARNING]


# -- wsgi.file_wrapper -----------------------------------------------------------------------------


class FakeSendfile:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, file: IO[bytes], offset: int, count: int) -> int:
        self.calls.append((offset, count))
        return count


def test_file_wrapper_goes_through_sendfile_and_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 50)
    file = path.open("rb")
    file.seek(10)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](file)

    sendfile = FakeSendfile()
    outcome, wire, _ = run(app, sendfile=sendfile)
    assert outcome is Outcome.COMPLETE
    assert sendfile.calls == [(10, 40)]
    assert wire.sends == [b"Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"]
    assert file.closed


def test_file_wrapper_without_fileno_is_iterated_and_closed() -> None:
    stream = io.BytesIO(b"in-memory file")

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](stream, 4)

    sendfile = FakeSendfile()
    outcome, wire, _ = run(validator(app), sendfile=sendfile)
    assert outcome is Outcome.COMPLETE
    assert sendfile.calls == []
    assert wire.split()[1] == b"in-memory file"
    assert stream.closed


# -- list results ------------------------------------------------------------------------------


def test_list_result_without_content_length_sends_every_chunk() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[Any]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"one ", b"", b"two ", bytearray(b"three")]

    outcome, wire, response = run(app)
    assert outcome is Outcome.COMPLETE
    assert wire.split()[1] == b"one two three"
    assert response.body_bytes == len(b"one two three")
    assert response.truncated == 0


def test_list_result_past_content_length_stops_at_the_first_excess(
    error_log: pytest.LogCaptureFixture,
) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "15")])
        return [b"0123456789", b"0123456789", b"0123456789"]

    outcome, wire, response = run(app)
    assert outcome is Outcome.COMPLETE
    assert wire.split()[1] == b"0123456789" + b"01234"
    assert response.truncated == 5  # the third chunk is not looked at
    assert [record.levelno for record in records(error_log)] == [logging.WARNING]


def test_list_result_with_a_bad_chunk_gives_500(error_log: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[Any]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["not bytes"]

    outcome, wire, _ = run(app)
    assert outcome is Outcome.COMPLETE
    assert wire.split()[0][0] == b"Status: 500 Internal Server Error"


def test_list_subclass_with_close_is_closed() -> None:
    class ClosingList(list[bytes]):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    result = ClosingList([b"body"])

    def app(environ: dict[str, Any], start_response: StartResponse) -> ClosingList:
        start_response("200 OK", [])
        return result

    outcome, wire, _ = run(app)
    assert outcome is Outcome.COMPLETE
    assert wire.split()[1] == b"body"
    assert result.closed == 1
