"""Atheris (libFuzzer) harness of :class:`scgiwsgi.protocol.RequestParser`.

Run it for as long as you like, with a corpus directory the fuzzer may
write to (seed it with copies of ``tests/data/*/*.scgi``)::

    pip install atheris
    mkdir -p /tmp/corpus && cp tests/data/*/*.scgi /tmp/corpus/
    python tests/fuzz/fuzz_parser.py -max_total_time=600 /tmp/corpus

and replay a crash file by passing its path instead of a directory.

Each input is a byte string sent by a peer.  The limits
(``max_header_size``, ``max_body_size``) and the points where the input is
split into ``receive_data`` calls are derived from the input's CRC-32, so the
seed files work unchanged and the fuzzer still explores both.  The input is
fed in pieces, then ``b""`` (the peer closed), and the events are drained
after each piece.  Any exception other than
:class:`~scgiwsgi.errors.ProtocolError` is a bug, and so is an
``AssertionError`` from :func:`check`, which holds the parser to its
contract:

* the outcome (the events, or "rejected") does not depend on the split
  points: the input fed whole gives the same;
* events come in order: at most one head, then non-empty body pieces, then
  one end; ``ConnectionClosed`` only for an empty input; no event after the
  end, and never an endless stream of events;
* a head re-encodes to exactly the header bytes of the input, starts with
  ``CONTENT_LENGTH``, has ``SCGI`` = ``1``, and respects both limits;
* the body pieces are exactly the CONTENT_LENGTH bytes that follow the
  netstring in the input;
* a rejection carries status 400, 413 or 431.

:func:`check` needs no atheris: ``tests/test_fuzz_smoke.py`` replays the
seed corpus through it, then runs this harness for a bounded number of
iterations when atheris is installed.
"""

from __future__ import annotations

import itertools
import random
import sys
import zlib
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

_CHECKOUT = str(Path(__file__).resolve().parents[2])
if _CHECKOUT not in sys.path:  # run as a script: import this checkout's scgiwsgi
    sys.path.insert(0, _CHECKOUT)

from scgiwsgi import errors, protocol  # noqa: E402
from scgiwsgi.errors import ProtocolError  # noqa: E402
from scgiwsgi.protocol import (  # noqa: E402
    DEFAULT_MAX_HEADER_SIZE,
    NEED_DATA,
    BodyData,
    ConnectionClosed,
    EndOfRequest,
    Event,
    RequestHead,
    RequestParser,
)

Outcome = tuple[str, tuple[Event, ...]]
"""``("accepted", events)`` or ``("rejected", ())``."""

_STATUS_HINTS = {400, 413, 431}
_MAX_CUTS = 2048


def settings_for(data: bytes) -> tuple[int, int | None, list[int]]:
    """``(max_header_size, max_body_size, cut points)`` derived from ``data``."""
    rng = random.Random(zlib.crc32(data))
    max_header = DEFAULT_MAX_HEADER_SIZE if rng.random() < 0.75 else rng.randint(16, 512)
    max_body = None if rng.random() < 0.6 else rng.choice([0, rng.randint(0, 256), 1 << 20])
    cut_count = rng.choice([0, 1, 2, rng.randint(3, 16), min(len(data), _MAX_CUTS)])
    cuts = (
        sorted({rng.randint(1, len(data) - 1) for _ in range(cut_count)}) if len(data) > 1 else []
    )
    return max_header, max_body, cuts


def parse(data: bytes, cuts: list[int], max_header: int, max_body: int | None) -> Outcome:
    """Feed ``data`` split at ``cuts``, then EOF; the events, or a rejection."""
    parser = RequestParser(max_header_size=max_header, max_body_size=max_body)
    bounds = [0, *cuts, len(data)]
    pieces = [data[start:end] for start, end in itertools.pairwise(bounds)]
    events: list[Event] = []
    try:
        for piece in [*pieces, b""]:
            parser.receive_data(piece)
            _drain(parser, events, limit=len(data) + 4)
    except ProtocolError as exc:
        assert exc.status_hint in _STATUS_HINTS, f"status hint {exc.status_hint}"
        assert isinstance(exc.reason, str) and exc.reason
        return "rejected", ()
    return "accepted", tuple(events)


def _drain(parser: RequestParser, events: list[Event], limit: int) -> None:
    for _ in range(limit):
        event = parser.next_event()
        if event is NEED_DATA:
            return
        events.append(event)
    raise AssertionError(f"more than {limit} events without NEED_DATA: {events[-3:]}")


def check(data: bytes) -> None:
    """Parse ``data`` split and whole; raise AssertionError on a contract breach."""
    max_header, max_body, cuts = settings_for(data)
    split = parse(data, cuts, max_header, max_body)
    whole = parse(data, [], max_header, max_body)
    assert _joined(split) == _joined(whole), f"cuts {cuts}: {split} but whole: {whole}"
    for status, events in (split, whole):
        if status == "accepted":
            _check_events(data, events, max_header, max_body)


def _joined(outcome: Outcome) -> Outcome:
    """The outcome with its body pieces joined (their sizes follow the splits)."""
    status, events = outcome
    body = b"".join(event.data for event in events if isinstance(event, BodyData))
    others = tuple(event for event in events if not isinstance(event, BodyData))
    return status, (*others[:1], BodyData(body), *others[1:]) if body else others


def _check_events(
    data: bytes, events: tuple[Event, ...], max_header: int, max_body: int | None
) -> None:
    if not data:
        assert events == (ConnectionClosed(),), events
        return
    assert events, "a non-empty input ended with neither events nor an error"
    head, *rest = events
    assert isinstance(head, RequestHead), f"first event {head!r}"
    assert isinstance(rest[-1], EndOfRequest) if rest else False, "no EndOfRequest after EOF"
    body_events = rest[:-1]
    assert all(isinstance(e, BodyData) and e.data for e in body_events), body_events
    colon = data.index(b":")
    length = int(data[:colon])
    block = data[colon + 1 : colon + 1 + length]
    assert data[colon + 1 + length : colon + 2 + length] == b","
    assert length <= max_header
    assert head.headers == _expected_headers(block)
    assert next(iter(head.headers)) == b"CONTENT_LENGTH"
    assert head.headers[b"SCGI"] == b"1"
    assert head.content_length == int(head.headers[b"CONTENT_LENGTH"])
    assert max_body is None or head.content_length <= max_body
    start = colon + 2 + length
    body = b"".join(e.data for e in body_events if isinstance(e, BodyData))
    assert body == data[start : start + head.content_length]
    assert len(body) == head.content_length


def _expected_headers(block: bytes) -> dict[bytes, bytes]:
    """The header block read independently: repeated HTTP_ names joined."""
    items = block[:-1].split(b"\0")
    expected: dict[bytes, bytes] = {}
    for name, value in zip(items[0::2], items[1::2], strict=True):
        if name in expected:
            assert name.startswith(b"HTTP_") and name != b"HTTP_HOST", name
            separator = b"; " if name == b"HTTP_COOKIE" else b", "
            expected[name] += separator + value
        else:
            expected[name] = value
    assert (
        b"".join(k + b"\0" + v + b"\0" for k, v in zip(items[0::2], items[1::2], strict=True))
        == block
    )
    return expected


def fuzz_one_input(data: bytes) -> None:
    """The libFuzzer entry point."""
    check(bytes(data))


def _instrument(atheris: Any, module: ModuleType) -> int:
    """Instrument the functions and methods defined in ``module``; return how many.

    ``atheris.instrument_all()`` would patch every loaded function (about
    4,000, 40 s here); coverage of the parser is what guides the fuzzer.
    """
    count = 0
    for value in vars(module).values():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        members = vars(value).values() if isinstance(value, type) else [value]
        for member in members:
            if isinstance(member, FunctionType):
                atheris.instrument_func(member)
                count += 1
    return count


def main() -> None:
    import atheris  # type: ignore[import-untyped]

    count = sum(_instrument(atheris, module) for module in (protocol, errors))
    print(f"fuzz_parser: instrumented {count} functions of scgiwsgi.protocol and .errors")
    atheris.Setup(sys.argv, fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
