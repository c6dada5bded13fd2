"""BodyInput: wsgi.input bounded to CONTENT_LENGTH, without sockets."""

from __future__ import annotations

import array
import io
import tracemalloc
from collections.abc import Callable, Generator

import pytest

from scgiwsgi.wsgi_input import BodyInput, empty_input

TRAILER = b"NEXT-REQUEST-BYTES-THAT-ARE-NOT-BODY"


class Source:
    """A fake ``read_chunk`` over a body followed by bytes that are not body.

    Hands out at most ``piece`` bytes per call.  Asking for more than what is
    left of the body, or calling at all once it is consumed, fails the test:
    a real socket would then block waiting for an EOF the front end never
    sends (or hand out the next bytes on the wire).
    """

    def __init__(self, body: bytes, piece: int | None = None) -> None:
        self.wire = body + TRAILER
        self.length = len(body)
        self.piece = piece
        self.position = 0
        self.calls: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.calls.append(size)
        left = self.length - self.position
        if left == 0:
            raise AssertionError("read_chunk called after the body ended (would wait for EOF)")
        if not 0 < size <= left:
            raise AssertionError(f"read_chunk asked for {size} bytes with {left} left")
        size = min(size, self.piece or size)
        chunk = self.wire[self.position : self.position + size]
        self.position += size
        return chunk


BODY = b"first line\nsecond\n\nfourth line is longer\nno newline at the end"
LINES = [b"first line\n", b"second\n", b"\n", b"fourth line is longer\n", b"no newline at the end"]
PIECES = [None, 1, 3]


def body_input(body: bytes = BODY, piece: int | None = None) -> tuple[BodyInput, Source]:
    source = Source(body, piece)
    return BodyInput(source, len(body)), source


@pytest.fixture(params=PIECES, ids=["whole", "1-byte", "3-byte"])
def piece(request: pytest.FixtureRequest) -> int | None:
    """How many bytes read_chunk hands out at most per call."""
    value: int | None = request.param
    return value


# -- read -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [None, -1, "omitted"])
def test_read_all(piece: int | None, size: int | str | None) -> None:
    stream, source = body_input(piece=piece)
    data = stream.read() if size == "omitted" else stream.read(size)  # type: ignore[arg-type]
    assert data == BODY
    assert source.position == len(BODY)
    calls = len(source.calls)
    assert stream.read() == b""
    assert stream.read(10) == b""
    assert len(source.calls) == calls


def test_read_n_returns_n_bytes_until_the_end(piece: int | None) -> None:
    # Django's request.body does one read(CONTENT_LENGTH): a short read loses data.
    stream, _ = body_input(piece=piece)
    assert stream.read(5) == BODY[:5]
    assert stream.read(20) == BODY[5:25]
    assert stream.read(len(BODY)) == BODY[25:]
    assert stream.read(1) == b""


def test_read_content_length_at_once_gets_the_whole_body(piece: int | None) -> None:
    stream, _ = body_input(piece=piece)
    assert stream.read(len(BODY)) == BODY


@pytest.mark.parametrize("read", [lambda body: body.read(64), lambda body: body.read()])
def test_a_body_pulled_in_one_piece_is_returned_without_a_copy(
    read: Callable[[BodyInput], bytes],
) -> None:
    # The handler's chunk is usually the whole body: joining would copy it.
    chunk = bytes(range(64))
    body = BodyInput(lambda size: chunk[:size], len(chunk))
    assert read(body) is chunk
    assert body.read() == b""


def test_read_zero_asks_nothing() -> None:
    stream, source = body_input()
    assert stream.read(0) == b""
    assert source.calls == []


def test_empty_body_never_calls_read_chunk() -> None:
    source = Source(b"")
    stream = BodyInput(source, 0)
    assert stream.read() == b""
    assert stream.read(100) == b""
    assert stream.readline() == b""
    assert stream.readlines() == []
    assert list(stream) == []
    assert stream.readinto(bytearray(4)) == 0
    assert stream.discard() == 0
    assert source.calls == []


def test_an_empty_input_reads_as_an_empty_body() -> None:
    stream = empty_input()
    assert type(stream) is BodyInput
    assert stream.remaining == 0
    assert stream.read() == b""
    assert stream.read(100) == b""
    assert stream.readline() == b""
    assert list(stream) == []
    assert stream.readinto(bytearray(4)) == 0
    assert stream.discard() == 0
    assert not stream.closed
    stream.close()
    assert stream.closed
    # Closing one empty input leaves the next one (and the class) open.
    assert not empty_input().closed
    assert empty_input() is not empty_input()
    stream.note = "apps may set attributes"
    assert not hasattr(empty_input(), "note")


def test_mixed_reads_stay_inside_the_body(piece: int | None) -> None:
    # Source fails on any request past the body; here every method takes a turn.
    stream, source = body_input(piece=piece)
    assert stream.readline() == LINES[0]
    assert stream.read(7) == b"second\n"
    assert stream.readline(3) == b"\n"
    assert stream.read() == BODY[len(LINES[0]) + 8 :]
    assert source.position == len(BODY)
    assert stream.remaining == 0
    if piece is None:
        assert sum(source.calls) <= len(BODY)


def test_read_chunk_returning_empty_early_is_a_connection_error() -> None:
    def dropped(size: int) -> bytes:
        return b""

    stream = BodyInput(dropped, 10)
    with pytest.raises(ConnectionError):
        stream.read()
    with pytest.raises(ConnectionError):
        BodyInput(dropped, 10).readline()
    with pytest.raises(ConnectionError):
        BodyInput(dropped, 10).read(3)


def test_connection_error_after_a_partial_body() -> None:
    chunks = iter([b"abc", b""])
    stream = BodyInput(lambda size: next(chunks), 10)
    with pytest.raises(ConnectionError):
        stream.read()


def test_read_chunk_returning_too_much_is_refused() -> None:
    stream = BodyInput(lambda size: b"x" * (size + 1), 10)
    with pytest.raises(RuntimeError):
        stream.read(4)


def test_errors_of_read_chunk_propagate() -> None:
    def stalled(size: int) -> bytes:
        raise TimeoutError("peer stalled")

    with pytest.raises(TimeoutError):
        BodyInput(stalled, 5).read()


# -- lines ----------------------------------------------------------------------------


def test_readline(piece: int | None) -> None:
    stream, source = body_input(piece=piece)
    assert [stream.readline() for _ in LINES] == LINES
    assert stream.readline() == b""
    assert source.position == len(BODY)


def test_readline_none_and_negative_mean_no_limit() -> None:
    stream, _ = body_input()
    assert stream.readline(None) == LINES[0]
    assert stream.readline(-1) == LINES[1]


def test_readline_limit(piece: int | None) -> None:
    stream, _ = body_input(piece=piece)
    assert stream.readline(5) == b"first"
    assert stream.readline(100) == b" line\n"
    assert stream.readline(7) == b"second\n"
    assert stream.readline(0) == b""
    assert stream.readline(1) == b"\n"
    assert stream.read(6) == b"fourth"


def test_readlines(piece: int | None) -> None:
    stream, _ = body_input(piece=piece)
    assert stream.readlines() == LINES
    assert stream.readlines() == []


def test_readlines_hint_stops_once_reached(piece: int | None) -> None:
    stream, _ = body_input(piece=piece)
    assert stream.readlines(12) == LINES[:2]  # 11 bytes < 12, so a second line
    assert stream.readlines(1) == [LINES[2]]
    assert stream.readlines(0) == LINES[3:]


def test_iteration(piece: int | None) -> None:
    stream, source = body_input(piece=piece)
    assert list(stream) == LINES
    assert source.position == len(BODY)


def test_mixing_readline_and_read(piece: int | None) -> None:
    stream, _ = body_input(piece=piece)
    assert stream.readline() == LINES[0]
    assert stream.read(3) == b"sec"
    assert next(stream) == b"ond\n"
    assert stream.read() == BODY[len(LINES[0]) + len(LINES[1]) :]


# -- readinto -------------------------------------------------------------------------


def test_readinto(piece: int | None) -> None:
    stream, _ = body_input(piece=piece)
    target = bytearray(16)
    assert stream.readinto(target) == 16
    assert bytes(target) == BODY[:16]
    rest = bytearray(len(BODY))
    count = stream.readinto(memoryview(rest))
    assert count == len(BODY) - 16
    assert bytes(rest[:count]) == BODY[16:]
    assert stream.readinto(bytearray(4)) == 0


def test_readinto_counts_bytes_not_items() -> None:
    body = bytes(range(16))
    stream, _ = body_input(body)
    target = array.array("i", [0, 0])  # 2 items, 8 bytes
    assert stream.readinto(target) == target.itemsize * 2  # type: ignore[arg-type]
    assert target.tobytes() == body[: target.itemsize * 2]


def test_buffered_reader_over_it_reads_lines_and_the_rest(piece: int | None) -> None:
    stream, source = body_input(piece=piece)
    buffered = io.BufferedReader(stream, buffer_size=8)  # type: ignore[arg-type]
    assert buffered.readline() == LINES[0]
    assert buffered.read() == BODY[len(LINES[0]) :]
    assert source.position == len(BODY)


def test_the_io_methods_of_a_raw_stream() -> None:
    stream, _ = body_input()
    assert (stream.readable(), stream.seekable(), stream.writable()) == (True, False, False)
    assert not stream.isatty()
    with pytest.raises(io.UnsupportedOperation):
        stream.fileno()
    with stream as same:
        assert same is stream and not stream.closed
        assert same.read(5) == BODY[:5]
    assert stream.closed
    stream.custom = "middleware state"  # type: ignore[attr-defined]
    assert stream.custom == "middleware state"  # type: ignore[attr-defined]


# -- discard and remaining ------------------------------------------------------------


def test_discard_drops_the_rest(piece: int | None) -> None:
    stream, source = body_input(piece=piece)
    assert stream.read(4) == BODY[:4]
    assert stream.remaining == len(BODY) - 4
    assert stream.discard() == len(BODY) - 4
    assert stream.remaining == 0
    assert source.position == len(BODY)
    assert stream.read() == b""
    assert stream.discard() == 0


def test_discard_counts_buffered_bytes() -> None:
    stream, _ = body_input()
    stream.readline()  # pulls the whole body into the buffer, returns one line
    assert stream.remaining == len(BODY) - len(LINES[0])
    assert stream.discard() == len(BODY) - len(LINES[0])


@pytest.mark.parametrize("split", [1, 11, len(BODY) - 1])
def test_received_bytes_come_first_and_the_rest_is_pulled(split: int, piece: int | None) -> None:
    source = Source(BODY[split:], piece)
    stream = BodyInput(source, len(BODY), BODY[:split])
    assert stream.remaining == len(BODY)
    assert stream.readline() == LINES[0]
    assert stream.read() == BODY[len(LINES[0]) :]
    assert stream.remaining == 0
    assert source.position == len(BODY) - split


def test_a_body_received_whole_never_pulls() -> None:
    def no_pull(size: int) -> bytes:
        raise AssertionError("read_chunk called for a body already in hand")

    stream = BodyInput(no_pull, len(BODY), BODY)
    assert stream.unpulled == 0
    assert stream.read() is BODY  # handed over as it is, not copied
    assert stream.read(1) == b""
    assert BodyInput(no_pull, len(BODY), BODY).discard() == len(BODY)
    # read(CONTENT_LENGTH), as Django and Flask call it, or more: no copy either.
    assert BodyInput(no_pull, len(BODY), BODY).read(len(BODY)) is BODY
    assert BodyInput(no_pull, len(BODY), BODY).read(len(BODY) + 10) is BODY
    stream = BodyInput(no_pull, len(BODY), BODY)
    assert stream.read(5) == BODY[:5]
    assert stream.read(len(BODY)) == BODY[5:]


def test_unpulled_counts_what_is_still_to_pull() -> None:
    stream = BodyInput(Source(BODY[4:]), len(BODY), BODY[:4])
    assert stream.unpulled == len(BODY) - 4
    assert stream.read(2) == BODY[:2]
    assert stream.unpulled == len(BODY) - 4
    assert stream.read(10) == BODY[2:12]
    assert stream.unpulled == len(BODY) - 12


def test_received_bytes_beyond_the_length_are_refused() -> None:
    with pytest.raises(ValueError, match="more bytes than length"):
        BodyInput(Source(b""), 3, b"four")


# -- streaming --------------------------------------------------------------------------

GIB = 1 << 30
KIB64 = 64 * 1024
_ZEROS = bytes(KIB64)


def virtual_body(length: int) -> Generator[bytes, int, None]:
    """Yields body pieces of the size sent in; fails if asked past ``length``."""
    handed = 0
    size = yield b""
    while True:
        if not 0 < size <= length - handed:
            raise AssertionError(f"asked for {size} bytes with {length - handed} left")
        size = min(size, KIB64)
        handed += size
        size = yield _ZEROS[:size]


def test_one_gib_body_streams_in_small_chunks() -> None:
    body = virtual_body(GIB)
    next(body)
    asked: list[int] = []
    largest = 0

    def read_chunk(size: int) -> bytes:
        nonlocal largest
        asked.append(size)
        chunk = body.send(size)
        largest = max(largest, len(chunk))
        return chunk

    stream = BodyInput(read_chunk, GIB)
    total = 0
    reads = 0
    tracemalloc.start()
    try:
        while data := stream.read(KIB64):
            assert len(data) <= KIB64
            total += len(data)
            reads += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == GIB
    assert reads == GIB // KIB64
    assert largest <= KIB64
    assert max(asked) <= KIB64
    assert peak < 4 * 1024 * 1024
