"""``wsgi.input``: the request body, bounded to CONTENT_LENGTH.

:class:`BodyInput` pulls body bytes from a callable and never asks for more
than CONTENT_LENGTH in total, so no read waits for an EOF that a front end
never sends.  It holds at most one pulled chunk, so a large upload streams.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator
from types import TracebackType

__all__ = ["BodyInput", "ReadChunk", "all_in_hand", "empty_input"]

ReadChunk = Callable[[int], bytes]
"""``read_chunk(n)`` returns 1..n body bytes, or raises when the peer is gone."""


def all_in_hand(size: int) -> bytes:
    """``read_chunk`` of a body that is all in ``received`` (never called: nothing is left)."""
    return b""


_DEFAULT_CHUNK = 64 * 1024


class BodyInput:
    """A readable binary stream over exactly ``length`` bytes of body.

    ``received`` is the start of the body, if some is already in hand;
    ``read_chunk`` pulls the rest.  It is called only while body bytes
    remain; it must return between 1 and ``n`` bytes or raise (``OSError``
    for a dropped connection, ``TimeoutError`` for a stalled peer).  Errors
    propagate to the application, which normally lets them reach the
    server.

    It has the methods of a readable :class:`io.RawIOBase` (``read``,
    ``readinto``, ``readline``, ``readlines``, iteration, ``close``, the
    ``with`` statement), so it can be wrapped in :class:`io.BufferedReader`,
    but it is not a subclass.  Strategy: one is made per request, and an
    ``io.IOBase`` runs a finalizer when it is freed (it looks up
    ``closed``, sets an attribute, calls ``close()`` and ``flush()``), about
    2,000 instructions per request; gunicorn's and uWSGI's inputs are plain
    objects too.
    """

    # No __slots__: these class attributes are the state of an empty body,
    # which empty_input() makes without running __init__.
    _read_chunk: ReadChunk = staticmethod(all_in_hand)
    unpulled = 0
    """Body bytes not yet pulled with ``read_chunk`` (still on the socket); read-only."""
    _buffer = b""
    """Bytes pulled (or received) and not yet returned."""
    closed = False
    """True once :meth:`close` was called (reads still work: nothing is freed)."""

    def __init__(self, read_chunk: ReadChunk, length: int, received: bytes = b"") -> None:
        # ``received``: the first body bytes, already in hand (the server's
        # header read usually brings the whole of a small body with it).
        if received:
            if len(received) > length:
                raise ValueError("received holds more bytes than length")
            length -= len(received)
        self._read_chunk = read_chunk
        self.unpulled = length
        self._buffer = received

    @property
    def remaining(self) -> int:
        """Body bytes not yet returned to the application."""
        return self.unpulled + len(self._buffer)

    def readable(self) -> bool:
        """True: the body can be read."""
        return True

    def seekable(self) -> bool:
        """False: the body is read once, from the socket."""
        return False

    def writable(self) -> bool:
        """False."""
        return False

    def isatty(self) -> bool:
        """False."""
        return False

    def fileno(self) -> int:
        """Raise :class:`io.UnsupportedOperation`: the body has no file descriptor."""
        raise io.UnsupportedOperation("wsgi.input has no file descriptor")

    def flush(self) -> None:
        """Do nothing (nothing is written)."""

    def close(self) -> None:
        """Mark the stream closed; the server still drains what is left of the body."""
        self.closed = True

    def __enter__(self) -> BodyInput:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _pull(self, size: int) -> bytes:
        size = min(size, self.unpulled)
        if size <= 0:
            return b""
        data = self._read_chunk(size)
        if not data:
            raise ConnectionError("request body ended before CONTENT_LENGTH")
        if len(data) > size:
            raise RuntimeError("read_chunk returned more bytes than asked")
        self.unpulled -= len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes (fewer only at the end); the rest if None or < 0.

        Like a buffered file, not a raw one: apps (Django's ``request.body``)
        call ``read(CONTENT_LENGTH)`` once and expect the whole body.
        """
        if size is None or size < 0:
            return self.readall()
        buffer = self._buffer
        if len(buffer) >= size or not self.unpulled:
            # All from the bytes in hand (the whole body, when it came with
            # the head): taking all of them makes no copy.
            self._buffer = buffer[size:]
            return buffer[:size]
        self._buffer = b""
        parts = [buffer] if buffer else []
        missing = size - len(buffer)
        while missing > 0 and self.unpulled:
            data = self._pull(missing)
            parts.append(data)
            missing -= len(data)
        return _joined(parts)

    def readall(self) -> bytes:
        """Read the rest of the body."""
        parts = [self._buffer] if self._buffer else []
        self._buffer = b""
        while self.unpulled:
            parts.append(self._pull(max(self.unpulled, 1)))
        return _joined(parts)

    def readinto(self, target: bytearray | memoryview) -> int:
        """Read up to ``len(target)`` bytes into ``target``; return how many."""
        view = memoryview(target).cast("B")  # byte offsets, whatever the item size
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line (ending in ``\\n``), at most ``size`` bytes if given."""
        limit = -1 if size is None else size
        parts: list[bytes] = []
        taken = 0
        while limit < 0 or taken < limit:
            if not self._buffer:
                self._buffer = self._pull(_DEFAULT_CHUNK)
                if not self._buffer:
                    break
            want = len(self._buffer) if limit < 0 else limit - taken
            newline = self._buffer.find(b"\n", 0, want)
            cut = newline + 1 if newline >= 0 else min(want, len(self._buffer))
            parts.append(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            taken += cut
            if newline >= 0:
                break
        return b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Read lines until the end, or until ``hint`` bytes were read."""
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def discard(self) -> int:
        """Read and drop what remains of the body; return how many bytes."""
        dropped = len(self._buffer)
        self._buffer = b""
        while self.unpulled:
            dropped += len(self._pull(_DEFAULT_CHUNK))
        return dropped


def _joined(parts: list[bytes]) -> bytes:
    # A body that came in one piece (the common case) is returned as it is:
    # joining would copy it.
    return parts[0] if len(parts) == 1 else b"".join(parts)


empty_input: Callable[[], BodyInput] = functools.partial(object.__new__, BodyInput)
"""A new :class:`BodyInput` over no body, as ``BodyInput(all_in_hand, 0)``.

Strategy: most requests have no body.  This makes the object without a
Python ``__init__`` (its class attributes are an empty body's state): about
600 machine instructions, against 1,400 for a call of the class.
"""
