"""Upload integrity: 50 concurrent uploads of random bytes, echoed as SHA-256.

On every backend (single and threaded in this process, fork as a child
process), 50 clients start together, each streaming a body of seeded random
bytes over loopback TCP or a unix socket (alternately), and the application
(:func:`reliability_apps.sha256_echo`) reads it with one of five
``wsgi.input`` methods (``read(64K)``, ``read(8191)``, ``readinto``,
``readline``, iteration) and answers its SHA-256 and length.  Every digest
must match what the client sent.

Sizes are drawn log-uniformly between 1 MiB and 50 MiB with a fixed seed,
plus one upload at each bound: 554 MiB per backend.  On a shared 2-core box
the three backends took 30-45 s together (5.5 to 23 s each), within the
one-minute budget, so the full version always runs.

Body bytes come from a 16 MiB pool of seeded random bytes: each upload is a
sequence of 64 KiB pieces taken at random offsets of the pool, so no two
uploads and no two pieces of one upload are alike, and a lost, repeated or
reordered piece changes the digest.  Generating every byte afresh is slower
than the server under test on this hardware.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import reliability_apps
from conftest import ServeFactory, connect
from reliability_support import StartServer, run_clients, server_processes

from scgiwsgi.client import parse_response

UPLOADS = 50
SEED = 20261122
MIB = 1024 * 1024
SMALLEST, LARGEST = MIB, 50 * MIB
PIECE = 64 * 1024
POOL_SIZE = 16 * MIB
UPLOAD_TIMEOUT = 90.0
"""Seconds one upload may take, waiting for its turn included (single backend)."""
METHODS = sorted(reliability_apps.READ_METHODS)


@dataclasses.dataclass(frozen=True)
class Upload:
    index: int
    size: int
    method: str
    seed: int

    def pieces(self, pool: bytes) -> Iterator[memoryview]:
        """The body: 64 KiB (the last one shorter) pieces at seeded pool offsets."""
        rng = random.Random(self.seed)
        view = memoryview(pool)
        left = self.size
        while left > 0:
            length = min(PIECE, left)
            start = rng.randrange(POOL_SIZE - length)
            yield view[start : start + length]
            left -= length

    def digest(self, pool: bytes) -> str:
        sha = hashlib.sha256()
        for piece in self.pieces(pool):
            sha.update(piece)
        return sha.hexdigest()


def _plan() -> list[Upload]:
    rng = random.Random(SEED)
    low, high = math.log(SMALLEST), math.log(LARGEST)
    sizes = [SMALLEST, LARGEST]
    sizes += [int(math.exp(rng.uniform(low, high))) for _ in range(UPLOADS - 2)]
    return [
        Upload(index, size, METHODS[index % len(METHODS)], rng.getrandbits(64))
        for index, size in enumerate(sizes)
    ]


PLAN = _plan()
TOTAL = sum(upload.size for upload in PLAN)


@pytest.fixture(scope="module")
def pool_and_digests() -> tuple[bytes, dict[int, str]]:
    """The random pool and the expected digest of every upload, computed once."""
    pool = random.Random(SEED).randbytes(POOL_SIZE)
    return pool, {upload.index: upload.digest(pool) for upload in PLAN}


def _head(upload: Upload) -> bytes:
    variables = {
        "REQUEST_METHOD": "POST",
        "REQUEST_URI": f"/upload?{upload.method}",
        "QUERY_STRING": upload.method,
        "CONTENT_TYPE": "application/octet-stream",
    }
    block = b"CONTENT_LENGTH\0%d\0SCGI\x001\0" % upload.size
    block += b"".join(b"%s\0%s\0" % (k.encode(), v.encode()) for k, v in variables.items())
    return b"%d:%s," % (len(block), block)


def _send(address: str, upload: Upload, pool: bytes) -> dict[str, object]:
    deadline = time.monotonic() + UPLOAD_TIMEOUT
    with connect(address, UPLOAD_TIMEOUT) as sock:
        sock.sendall(_head(upload))
        for piece in upload.pieces(pool):
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(piece)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
    response = parse_response(b"".join(chunks))
    assert response.status == 200, response.body[:300]
    report: dict[str, object] = json.loads(response.body)
    return report


def _upload_all(
    addresses: list[str], pool: bytes, digests: dict[int, str]
) -> tuple[float, list[str]]:
    """Run the 50 uploads at once; return the seconds taken and every mismatch."""
    barrier = threading.Barrier(UPLOADS, timeout=30.0)
    mismatches: list[str] = []

    def one(index: int) -> None:
        upload = PLAN[index]
        barrier.wait()
        report = _send(addresses[index % len(addresses)], upload, pool)
        expected = {"sha256": digests[index], "bytes": upload.size}
        if report != expected:
            mismatches.append(f"upload {index} ({upload.method}): {report} != {expected}")

    started = time.monotonic()
    errors = run_clients(UPLOADS, one, timeout=UPLOAD_TIMEOUT + 10.0)
    took = time.monotonic() - started
    return took, mismatches + [repr(error) for error in errors]


def _report(backend: str, took: float) -> None:
    print(
        f"\n[{backend}] {UPLOADS} concurrent uploads, {TOTAL / MIB:.0f} MiB "
        f"({PLAN[0].size / MIB:.3g}-{PLAN[1].size / MIB:.3g} MiB each): "
        f"{took:.1f}s, {TOTAL / MIB / took:.0f} MiB/s, all SHA-256 correct"
    )


def test_the_plan_spans_the_bounds() -> None:
    sizes = sorted(upload.size for upload in PLAN)
    assert len(PLAN) == UPLOADS
    assert (sizes[0], sizes[-1]) == (SMALLEST, LARGEST)
    assert 500 * MIB < TOTAL < 600 * MIB
    assert {upload.method for upload in PLAN} == set(METHODS)
    assert len({upload.seed for upload in PLAN}) == UPLOADS


@pytest.mark.parametrize("backend", ["single", "threaded"])
def test_concurrent_uploads_in_process(
    serve: ServeFactory, backend: str, pool_and_digests: tuple[bytes, dict[int, str]]
) -> None:
    pool, digests = pool_and_digests
    server = serve(reliability_apps.sha256_echo, transport="both", backend=backend)
    assert len(server.addresses) == 2
    took, failures = _upload_all(server.addresses, pool, digests)
    assert failures == []
    _report(backend, took)


def test_concurrent_uploads_fork(
    tmp_path: Path, pool_and_digests: tuple[bytes, dict[int, str]]
) -> None:
    pool, digests = pool_and_digests
    start: StartServer
    with server_processes(tmp_path) as start:
        args = ("--fork", "--workers", "2", "--threads", "4")
        server = start(*args, app="tests/reliability_apps.py:sha256_echo", transport="both")
        assert len(server.addresses) == 2
        took, failures = _upload_all(server.addresses, pool, digests)
    assert failures == []
    _report("fork", took)
