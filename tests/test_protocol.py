"""Tests of the sans-IO SCGI parser and encoders in :mod:`scgiwsgi.protocol`.

The bulk is data driven: ``tests/data/valid/NAME.scgi`` and
``tests/data/invalid/NAME.scgi`` hold raw requests exactly as a front end
sends them, and ``NAME.json`` next to each says what the parser must make of
it.  Every case is fed whole, one byte at a time, and split at random points
(seeded by the case name, so a failure reproduces).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scgiwsgi.errors import (
    BodyTooLarge,
    HeaderTooLarge,
    IncompleteRequest,
    MalformedRequest,
    ProtocolError,
)
from scgiwsgi.protocol import (
    NEED_DATA,
    BodyData,
    ConnectionClosed,
    EndOfRequest,
    RequestHead,
    RequestParser,
    encode_error_response,
    encode_request,
    encode_response_head,
    reason_phrase,
)

DATA = Path(__file__).parent / "data"
RANDOM_SPLITS = 20
ERROR_CLASSES: dict[int, type[ProtocolError]] = {
    400: MalformedRequest,
    413: BodyTooLarge,
    431: HeaderTooLarge,
}
SPEC_EXAMPLE = (
    b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00"
    b"REQUEST_URI\x00/deepthought\x00,What is the answer to life?"
)


# -- the corpus ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    spec: dict[str, Any]

    def parser(self) -> RequestParser:
        return RequestParser(**self.spec.get("limits", {}))


def _load(kind: str) -> list[Case]:
    cases = []
    for path in sorted((DATA / kind).glob("*.scgi")):
        spec = json.loads(path.with_suffix(".json").read_text(encoding="ascii"))
        cases.append(Case(path.stem, path.read_bytes(), spec))
    return cases


VALID = _load("valid")
INVALID = _load("invalid")


def _cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    """``data`` split at ``points``, without empty pieces (b"" would mean EOF)."""
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _random_splits(case: Case) -> Iterator[list[bytes]]:
    # Split i has 1 + i % 4 cut points, so single two-way splits and finer
    # fragmentations are both exercised.
    rng = random.Random(case.name)
    for index in range(RANDOM_SPLITS):
        count = min(1 + index % 4, max(len(case.raw) - 1, 0))
        yield _cut(case.raw, rng.sample(range(1, len(case.raw)), count))


def _feedings(case: Case, mode: str) -> Iterator[list[bytes]]:
    if mode == "whole":
        yield [case.raw]
    elif mode == "bytewise":
        yield [case.raw[i : i + 1] for i in range(len(case.raw))]
    else:
        yield from _random_splits(case)


MODES = ["whole", "bytewise", "random"]


# -- driving a parser ------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What a parser produced, checked for a legal event order on the way."""

    head: RequestHead | None = None
    body: bytearray = dataclasses.field(default_factory=bytearray)
    ended: bool = False
    closed: bool = False

    def record(self, event: object) -> None:
        assert not self.ended, f"{event!r} after EndOfRequest"
        assert not self.closed, f"{event!r} after ConnectionClosed"
        if isinstance(event, RequestHead):
            assert self.head is None, "a second RequestHead"
            self.head = event
        elif isinstance(event, BodyData):
            assert self.head is not None, "BodyData before RequestHead"
            assert event.data, "empty BodyData"
            self.body += event.data
            assert len(self.body) <= self.head.content_length
        elif isinstance(event, EndOfRequest):
            assert self.head is not None, "EndOfRequest before RequestHead"
            assert len(self.body) == self.head.content_length
            self.ended = True
        else:
            assert isinstance(event, ConnectionClosed), f"unknown event {event!r}"
            assert self.head is None, "ConnectionClosed after RequestHead"
            self.closed = True


def drain(parser: RequestParser, outcome: Outcome) -> int:
    """Pull events until NEED_DATA; return how many there were."""
    count = 0
    while (event := parser.next_event()) is not NEED_DATA:
        outcome.record(event)
        count += 1
        assert count < 10_000, "next_event never returns NEED_DATA"
    return count


def feed(parser: RequestParser, chunks: Sequence[bytes], outcome: Outcome | None = None) -> Outcome:
    """Feed ``chunks`` one by one, draining events after each."""
    outcome = outcome if outcome is not None else Outcome()
    for chunk in chunks:
        assert chunk, "an empty chunk would mean EOF"
        parser.receive_data(chunk)
        drain(parser, outcome)
    return outcome


def parse_whole(data: bytes, **limits: int) -> Outcome:
    return feed(RequestParser(**limits), [data])


# -- the corpus, run -----------------------------------------------------------


def _expected_body(spec: dict[str, Any]) -> tuple[int, str]:
    if "body" in spec:
        body = spec["body"].encode("latin-1")
        return len(body), hashlib.sha256(body).hexdigest()
    return spec["body_length"], spec["body_sha256"]


def test_corpus_is_complete() -> None:
    for kind in ("valid", "invalid"):
        stems = {path.stem for path in (DATA / kind).glob("*.scgi")}
        specs = {path.stem for path in (DATA / kind).glob("*.json")}
        assert stems == specs, f"unpaired files in {kind}: {stems ^ specs}"
    assert len(VALID) >= 15
    assert len(INVALID) >= 50
    assert {"spec_example", "nginx_get", "apache_get", "lighttpd_post"} <= {c.name for c in VALID}
    for case in INVALID:
        assert case.spec["status"] in ERROR_CLASSES, case.name
        assert case.spec["reason"], case.name


def test_spec_example_is_the_published_bytes() -> None:
    (case,) = [c for c in VALID if c.name == "spec_example"]
    assert case.raw == SPEC_EXAMPLE


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_request(case: Case, mode: str) -> None:
    expected_headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in case.spec["headers"]
    ]
    body_length, body_sha256 = _expected_body(case.spec)
    for chunks in _feedings(case, mode):
        parser = case.parser()
        outcome = feed(parser, chunks)
        # The request must be complete without the peer closing its side.
        assert outcome.ended
        assert outcome.head is not None
        assert list(outcome.head.headers.items()) == expected_headers
        assert outcome.head.content_length == body_length
        assert len(outcome.body) == body_length
        assert hashlib.sha256(outcome.body).hexdigest() == body_sha256
        assert parser.body_remaining == 0
        parser.receive_data(b"")
        assert drain(parser, outcome) == 0


def _expect_error(parser: RequestParser, chunks: Sequence[bytes], eof: bool) -> ProtocolError:
    if not eof:
        with pytest.raises(ProtocolError) as info:
            feed(parser, chunks)
        assert not isinstance(info.value, IncompleteRequest)
        return info.value
    # A truncated request is only an error once the peer closes.
    outcome = feed(parser, chunks)
    assert not outcome.ended
    with pytest.raises(IncompleteRequest) as incomplete:
        parser.receive_data(b"")
        drain(parser, outcome)
    return incomplete.value


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_invalid_request(case: Case, mode: str) -> None:
    for chunks in _feedings(case, mode):
        error = _expect_error(case.parser(), chunks, case.spec.get("eof", False))
        assert error.status_hint == case.spec["status"]
        assert isinstance(error, ERROR_CLASSES[case.spec["status"]])
        assert case.spec["reason"] in error.reason
        assert str(error) == error.reason


@pytest.mark.parametrize("mode", ["whole", "random"])
@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_variables_are_the_decoded_headers(case: Case, mode: str) -> None:
    expected = [(name, value) for name, value in case.spec["headers"]]
    for chunks in _feedings(case, mode):
        outcome = feed(case.parser(), chunks)
        assert outcome.head is not None
        variables = outcome.head.variables
        assert list(variables.items()) == expected
        assert all(type(k) is str and type(v) is str for k, v in variables.items())
        assert outcome.head.headers == {
            k.encode("latin-1"): v.encode("latin-1") for k, v in variables.items()
        }


# -- direct unit tests -----------------------------------------------------------


def test_immediate_eof_is_connection_closed() -> None:
    parser = RequestParser()
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"")
    assert isinstance(parser.next_event(), ConnectionClosed)
    assert parser.next_event() is NEED_DATA


def test_eof_after_one_byte_is_not_connection_closed() -> None:
    parser = RequestParser()
    parser.receive_data(b"7")
    parser.receive_data(b"")
    with pytest.raises(IncompleteRequest):
        parser.next_event()


def test_need_data_until_the_comma() -> None:
    comma = SPEC_EXAMPLE.index(b",")
    parser = RequestParser()
    for byte in SPEC_EXAMPLE[:comma]:
        parser.receive_data(bytes([byte]))
        assert parser.next_event() is NEED_DATA
    parser.receive_data(b",")
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    assert head.headers[b"REQUEST_URI"] == b"/deepthought"
    assert parser.next_event() is NEED_DATA
    assert parser.body_remaining == 27


def test_body_is_delivered_as_it_arrives() -> None:
    comma = SPEC_EXAMPLE.index(b",")
    parser = RequestParser()
    parser.receive_data(SPEC_EXAMPLE[: comma + 5])
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == BodyData(b"What")
    assert parser.body_remaining == 23
    assert parser.next_event() is NEED_DATA
    parser.receive_data(SPEC_EXAMPLE[comma + 5 :] + b"ignored")
    assert parser.next_event() == BodyData(b" is the answer to life?")
    assert isinstance(parser.next_event(), EndOfRequest)


def test_take_body_returns_what_came_and_the_events_go_on_from_there() -> None:
    comma = SPEC_EXAMPLE.index(b",")
    parser = RequestParser()
    assert parser.take_body() == b""  # before the head
    parser.receive_data(SPEC_EXAMPLE[: comma + 5])
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.take_body() == b"What"
    assert parser.take_body() == b""
    assert parser.next_event() is NEED_DATA
    parser.receive_data(SPEC_EXAMPLE[comma + 5 : comma + 8])
    parser.receive_data(SPEC_EXAMPLE[comma + 8 :] + b"ignored")
    assert parser.take_body() == b" is the answer to life?"  # two pieces, joined
    assert parser.body_remaining == 0
    assert isinstance(parser.next_event(), EndOfRequest)
    assert parser.take_body() == b""


def test_take_body_gives_a_whole_body_that_came_with_the_head() -> None:
    body = bytes(range(256)) * 64
    request = encode_request({"REQUEST_METHOD": "POST"}, body)
    parser = RequestParser()
    parser.receive_data(request)
    assert isinstance(parser.next_event(), RequestHead)
    taken = parser.take_body()
    assert taken == body
    assert type(taken) is bytes
    assert isinstance(parser.next_event(), EndOfRequest)


def test_a_head_that_came_in_pieces_yields_its_body_as_bytes() -> None:
    # The head's buffer is a bytearray once a second piece arrived; the
    # body taken from it must still be an immutable bytes.
    parser = RequestParser()
    parser.receive_data(SPEC_EXAMPLE[:3])
    assert parser.next_event() is NEED_DATA
    parser.receive_data(SPEC_EXAMPLE[3:])
    assert isinstance(parser.next_event(), RequestHead)
    event = parser.next_event()
    assert event == BodyData(b"What is the answer to life?")
    assert isinstance(event, BodyData) and type(event.data) is bytes


def test_end_of_request_is_returned_once() -> None:
    parser = RequestParser()
    parser.receive_data(encode_request({"REQUEST_METHOD": "GET"}))
    assert isinstance(parser.next_event(), RequestHead)
    assert isinstance(parser.next_event(), EndOfRequest)
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"more bytes after the request")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"")
    assert parser.next_event() is NEED_DATA


def test_round_trip_latin1_and_empty_values() -> None:
    headers = {
        "REQUEST_METHOD": "POST",
        "REQUEST_URI": "/caf\xe9?x=\xff",
        "HTTP_X_\xc4": "\x80\x01 value",
        "QUERY_STRING": "",
    }
    outcome = parse_whole(encode_request(headers, b"\x00body\xff"))
    assert outcome.ended
    assert outcome.head is not None
    assert list(outcome.head.headers.items()) == [
        (b"CONTENT_LENGTH", b"6"),
        (b"SCGI", b"1"),
        (b"REQUEST_METHOD", b"POST"),
        (b"REQUEST_URI", b"/caf\xe9?x=\xff"),
        (b"HTTP_X_\xc4", b"\x80\x01 value"),
        (b"QUERY_STRING", b""),
    ]
    assert bytes(outcome.body) == b"\x00body\xff"


def test_encode_request_matches_the_spec_example() -> None:
    pairs = [("REQUEST_METHOD", "POST"), ("REQUEST_URI", "/deepthought")]
    assert encode_request(pairs, b"What is the answer to life?") == SPEC_EXAMPLE


def test_encode_request_writes_its_own_content_length_and_scgi() -> None:
    raw = encode_request({"SCGI": "2", "CONTENT_LENGTH": "99", "X": "y"}, b"ab")
    assert raw == b"28:CONTENT_LENGTH\x002\x00SCGI\x001\x00X\x00y\x00,ab"


@pytest.mark.parametrize(
    "headers",
    [{"NA\x00ME": "v"}, {"NAME": "va\x00lue"}, {"": "v"}, {"NAME": "\u20ac"}],
    ids=["nul-in-name", "nul-in-value", "empty-name", "not-latin-1"],
)
def test_encode_request_rejects_unencodable_headers(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_request(headers)


def test_encode_response_head() -> None:
    head = encode_response_head("200 OK", [("Content-Type", "text/plain"), ("X-Caf\xe9", "\xe9")])
    assert head == b"Status: 200 OK\r\nContent-Type: text/plain\r\nX-Caf\xe9: \xe9\r\n\r\n"
    assert encode_response_head("204 No Content", []) == b"Status: 204 No Content\r\n\r\n"


def _split_response(response: bytes) -> tuple[list[bytes], dict[bytes, bytes], bytes]:
    head, separator, body = response.partition(b"\r\n\r\n")
    assert separator, "no blank line after the head"
    status, *lines = head.split(b"\r\n")
    fields = dict(line.split(b": ", 1) for line in lines)
    return status.split(b" ", 2), fields, body


@pytest.mark.parametrize(
    ("code", "status_line"),
    [
        (400, b"Status: 400 Bad Request"),
        (413, b"Status: 413 Content Too Large"),
        (431, b"Status: 431 Request Header Fields Too Large"),
        (599, b"Status: 599 Error"),
    ],
)
def test_encode_error_response(code: int, status_line: bytes) -> None:
    response = encode_error_response(code, "duplicate header 'SCGI'")
    assert response.startswith(status_line + b"\r\n")
    _, fields, body = _split_response(response)
    assert int(fields[b"Content-Length"]) == len(body)
    assert fields[b"Content-Type"].startswith(b"text/plain")
    assert b"duplicate header 'SCGI'" in body


def test_encode_error_response_body_matches_its_charset() -> None:
    _, fields, body = _split_response(encode_error_response(400, "caf\xe9 \u20ac"))
    assert fields[b"Content-Type"] == b"text/plain; charset=utf-8"
    assert int(fields[b"Content-Length"]) == len(body)
    assert "caf\xe9 \u20ac" in body.decode("utf-8")


def test_encode_error_response_without_message() -> None:
    status, fields, body = _split_response(encode_error_response(400))
    assert status == [b"Status:", b"400", b"Bad Request"]
    assert body == b"400 Bad Request\n"
    assert fields[b"Content-Length"] == b"16"


def test_reason_phrase() -> None:
    assert reason_phrase(404) == "Not Found"
    assert reason_phrase(431) == "Request Header Fields Too Large"
    assert reason_phrase(299) == ""


@pytest.mark.parametrize(
    ("code", "phrase"),
    [
        (413, "Content Too Large"),
        (414, "URI Too Long"),
        (416, "Range Not Satisfiable"),
        (422, "Unprocessable Content"),
    ],
)
def test_reason_phrases_are_rfc_9110_s_on_every_python(code: int, phrase: str) -> None:
    # http.HTTPStatus has these names from Python 3.13 only; the server's
    # own answers must not change with the interpreter.
    assert reason_phrase(code) == phrase


@pytest.mark.timeout(30)
def test_max_size_header_byte_by_byte_is_not_quadratic() -> None:
    # 64 KiB byte by byte: a parser that walks its whole buffer in Python for
    # every byte takes ~2e9 steps and hits the timeout.  (Copying at memcpy
    # speed stays under it: no timing assertion, by design.)
    filler = "x" * (65536 - len(b"CONTENT_LENGTH\x000\x00SCGI\x001\x00HTTP_X\x00\x00"))
    raw = encode_request({"HTTP_X": filler})
    assert raw.startswith(b"65536:")
    parser = RequestParser()
    outcome = feed(parser, [raw[i : i + 1] for i in range(len(raw))])
    assert outcome.ended
    assert outcome.head is not None
    assert outcome.head.headers[b"HTTP_X"] == filler.encode()


def test_limits_are_checked_before_the_bytes_arrive() -> None:
    parser = RequestParser(max_header_size=100)
    parser.receive_data(b"10")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"1")
    with pytest.raises(HeaderTooLarge):
        parser.next_event()


def test_factory_parsers_keep_the_limits_they_were_made_with() -> None:
    new_parser = RequestParser.factory(max_header_size=100, max_body_size=10)
    parser = new_parser()
    assert isinstance(parser, RequestParser)
    assert (parser.max_header_size, parser.max_body_size) == (100, 10)
    with pytest.raises(HeaderTooLarge):
        feed(parser, [b"101:"])
    with pytest.raises(BodyTooLarge):
        feed(new_parser(), [encode_request({}, b"x" * 11)])
    outcome = feed(new_parser(), [encode_request({"HTTP_X": "y"}, b"x" * 10)])
    assert outcome.head is not None
    assert outcome.head.variables["HTTP_X"] == "y"
    assert bytes(outcome.body) == b"x" * 10
    assert outcome.ended
    # Each call makes a new parser; the class's own defaults are unchanged.
    assert new_parser() is not new_parser()
    assert RequestParser().max_header_size == 64 * 1024


def test_headers_are_the_variables_as_wire_bytes() -> None:
    head = parse_whole(SPEC_EXAMPLE).head
    assert head is not None
    assert head.headers[b"REQUEST_METHOD"] == b"POST"
    assert head.variables["REQUEST_METHOD"] == "POST"
    assert list(head.headers) == [name.encode("latin-1") for name in head.variables]


def test_a_head_cannot_be_changed() -> None:
    head = parse_whole(SPEC_EXAMPLE).head
    assert head is not None
    assert type(head) is RequestHead
    with pytest.raises(AttributeError):
        head.content_length = 0  # type: ignore[misc]
    assert head == RequestHead(head.variables, 27)


def _with_content_length(raw_length: bytes) -> bytes:
    block = b"CONTENT_LENGTH\0" + raw_length + b"\0SCGI\x001\0"
    return b"%d:%s," % (len(block), block)


@pytest.mark.parametrize("raw_length", [b"\xb9", b"\xb2", b"\xb3", b"1\xb2", b"\xb90"])
def test_latin1_digit_content_length_is_rejected(raw_length: bytes) -> None:
    # "\xb9" (superscript one) is a digit to str.isdigit() and int() reads it.
    raw = _with_content_length(raw_length)
    for chunks in ([raw], [raw[:5], raw[5:]], [raw[i : i + 1] for i in range(len(raw))]):
        with pytest.raises(MalformedRequest) as info:
            feed(RequestParser(), chunks)
        assert "CONTENT_LENGTH must be decimal digits" in info.value.reason


def test_a_head_split_after_the_colon_parses() -> None:
    colon = SPEC_EXAMPLE.index(b":")
    for cut in (colon, colon + 1, colon + 2):
        outcome = feed(RequestParser(), [SPEC_EXAMPLE[:cut], SPEC_EXAMPLE[cut:]])
        assert outcome.ended
        assert outcome.head is not None
        assert outcome.head.variables["REQUEST_URI"] == "/deepthought"
        assert bytes(outcome.body) == b"What is the answer to life?"


def test_length_prefix_longer_than_twenty_digits_with_a_huge_limit() -> None:
    parser = RequestParser(max_header_size=10**25)
    parser.receive_data(b"1" + b"0" * 20 + b":CONTENT_LENGTH")
    assert parser.next_event() is NEED_DATA


# -- properties ----------------------------------------------------------------

LATIN1 = st.characters(min_codepoint=1, max_codepoint=255)
NAMES = st.text(LATIN1, min_size=1, max_size=12).filter(
    lambda n: n not in ("CONTENT_LENGTH", "SCGI")
)
HEADER_DICTS = st.dictionaries(NAMES, st.text(LATIN1, max_size=20), max_size=8)


@st.composite
def split_points(draw: st.DrawFn, data: bytes) -> list[bytes]:
    points = draw(st.lists(st.integers(1, max(len(data) - 1, 1)), max_size=6))
    return _cut(data, [p for p in points if p < len(data)])


@st.composite
def near_requests(draw: st.DrawFn) -> bytes:
    """A valid request, maybe truncated, re-framed, or with a byte changed or inserted."""
    raw = encode_request(draw(HEADER_DICTS), draw(st.binary(max_size=40)))
    action = draw(st.sampled_from(["keep", "truncate", "replace", "insert", "cut_block"]))
    where = draw(st.integers(0, len(raw) - 1))
    byte = bytes([draw(st.sampled_from([0, 0x2C, 0x3A, 0x30, 0x31, 0x39, 0x41, 0xFF]))])
    if action == "cut_block":
        # A well-framed netstring around a prefix of the header block.
        colon = raw.index(b":")
        end = colon + 1 + int(raw[:colon])
        block = raw[colon + 1 : end][: draw(st.integers(0, end - colon - 1))]
        return b"%d:%s,%s" % (len(block), block, raw[end + 1 :])
    if action == "truncate":
        return raw[:where]
    if action == "replace":
        return raw[:where] + byte + raw[where + 1 :]
    if action == "insert":
        return raw[:where] + byte + raw[where:]
    return raw


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    raw=st.one_of(st.binary(max_size=200), near_requests()),
    eof=st.booleans(),
    max_header_size=st.one_of(st.just(65536), st.integers(0, 200)),
    max_body_size=st.one_of(st.none(), st.integers(0, 50)),
)
def test_any_input_gives_events_or_a_protocol_error(
    data: st.DataObject, raw: bytes, eof: bool, max_header_size: int, max_body_size: int | None
) -> None:
    chunks = data.draw(split_points(raw))
    parser = RequestParser(max_header_size=max_header_size, max_body_size=max_body_size)
    outcome = Outcome()
    try:
        feed(parser, chunks, outcome)
        if eof:
            parser.receive_data(b"")
            drain(parser, outcome)
    except ProtocolError as error:
        assert error.status_hint in ERROR_CLASSES
        assert isinstance(error, ERROR_CLASSES[error.status_hint])
        assert error.reason
        return
    if eof:
        # After EOF without an error the parser must have finished.
        assert outcome.ended or outcome.closed
    else:
        assert not outcome.closed


@settings(max_examples=200, deadline=None)
@given(data=st.data(), headers=HEADER_DICTS, body=st.binary(max_size=100))
def test_round_trip_of_random_headers(
    data: st.DataObject, headers: dict[str, str], body: bytes
) -> None:
    chunks = data.draw(split_points(encode_request(headers, body)))
    parser = RequestParser()
    outcome = feed(parser, chunks)
    assert outcome.ended
    assert outcome.head is not None
    expected = [(b"CONTENT_LENGTH", str(len(body)).encode()), (b"SCGI", b"1")]
    expected += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    assert list(outcome.head.headers.items()) == expected
    assert bytes(outcome.body) == body


def test_a_long_content_length_of_leading_zeros_is_a_small_length() -> None:
    # More than 18 characters takes the full checks: only significant digits count.
    block = b"CONTENT_LENGTH\0" + b"0" * 25 + b"5\0SCGI\x001\0"
    outcome = feed(RequestParser(), [b"%d:%s,hello" % (len(block), block)])
    assert outcome.head is not None
    assert outcome.head.content_length == 5
    assert bytes(outcome.body) == b"hello"
    assert outcome.ended


def test_nineteen_significant_digits_are_too_large_even_before_a_bad_scgi() -> None:
    # The checks run in order: the length's size comes before SCGI's value.
    block = b"CONTENT_LENGTH\0" + b"0" * 3 + b"1" * 19 + b"\0SCGI\x002\0"
    with pytest.raises(BodyTooLarge) as info:
        feed(RequestParser(), [b"%d:%s," % (len(block), block)])
    assert "is too large" in info.value.reason
