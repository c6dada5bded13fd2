"""The parser fuzz harness (tests/fuzz/fuzz_parser.py), bounded for CI.

The seed corpus (``tests/data/*/*.scgi``) always goes through the harness's
checks, atheris or not; then, when atheris is installed, the harness runs
as libFuzzer would for RUNS iterations in a child process, in a temporary
copy of the corpus (libFuzzer adds the inputs it finds to it).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scgiwsgi.protocol import BodyData, RequestParser

TESTS = Path(__file__).resolve().parent
HARNESS = TESTS / "fuzz" / "fuzz_parser.py"
SEEDS = sorted(TESTS.glob("data/*/*.scgi"))
RUNS = 20_000
TIME_LIMIT = 60
MIN_RUNS = 2_000
"""Runs that must be done when the time limit ends the run first (a loaded machine)."""


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_parser", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_corpus_passes_the_harness_checks() -> None:
    harness = _load_harness()
    outcomes = {seed.name: harness.parse(seed.read_bytes(), [], 65536, None)[0] for seed in SEEDS}
    for seed in SEEDS:
        harness.check(seed.read_bytes())
    assert len(SEEDS) > 50
    assert outcomes["spec_example.scgi"] == "accepted"
    assert outcomes["scgi_missing.scgi"] == "rejected"


class _OneByteTooMany(RequestParser):
    """A parser whose first body piece carries one byte more than the peer sent."""

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, BodyData) and not getattr(self, "_bad", False):
            self._bad = True
            return BodyData(event.data + b"!")
        return event


def test_harness_checks_catch_a_parser_that_breaks_its_contract(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # If the checks missed this, a clean fuzz run would prove nothing.
    harness = _load_harness()
    seed = (TESTS / "data" / "valid" / "nginx_post.scgi").read_bytes()
    harness.check(seed)
    monkeypatch.setattr(harness, "RequestParser", _OneByteTooMany)
    with pytest.raises(AssertionError):
        harness.check(seed)


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install atheris): the fuzz run is skipped",
)
def test_bounded_fuzz_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in SEEDS:
        shutil.copy(seed, corpus / seed.name)
    result = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            f"-runs={RUNS}",
            f"-max_total_time={TIME_LIMIT}",
            "-rss_limit_mb=1024",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT + 30,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    crashes = sorted(path.name for path in tmp_path.glob("crash-*"))
    assert result.returncode == 0, f"the fuzz run exited with {result.returncode}" + _excerpt(
        output
    )
    assert crashes == [], _excerpt(output)
    done = re.search(r"^Done (\d+) runs in (\d+) second", output, re.MULTILINE)
    assert done is not None, "libFuzzer printed no 'Done N runs' line" + _excerpt(output)
    runs, seconds = int(done.group(1)), int(done.group(2))
    print(
        f"\nfuzz: {runs} runs in {seconds}s; corpus {len(SEEDS)} -> {len(list(corpus.iterdir()))}"
    )
    # A loaded machine may spend the time budget first; that still fuzzed.
    assert runs == RUNS or (seconds >= TIME_LIMIT and runs >= MIN_RUNS), (
        f"{runs} runs in {seconds}s" + _excerpt(output)
    )


def _excerpt(output: str, head_lines: int = 40, tail: int = 3000) -> str:
    """libFuzzer's first lines (its options, the seeds loaded) and the end of its output."""
    head = "\n".join(output.splitlines()[:head_lines])
    if len(output) <= len(head) + tail:
        return f":\n{output}"
    return f":\n{head}\n[...]\n{output[-tail:]}"
