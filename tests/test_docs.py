"""The Sphinx documentation builds with warnings as errors.

CI builds the docs too (``.ci/run``, ``tox -e docs``); this test makes the
README's test command catch doc rot as well: a broken cross-reference, a
docstring autodoc cannot render, a page missing from the toctree, or a click
option sphinx-click cannot document.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BUILD_TIMEOUT = 110.0


def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    for module in ("sphinx", "sphinx_click"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"sphinx failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "html" / "cli.html").is_file()
