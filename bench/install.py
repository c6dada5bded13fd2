"""Install what the benchmark needs, only when it is missing.

* ``nginx`` and ``wrk`` from Debian (``apt-get install -y``; needs root).
* ``bench/.venv``: a virtualenv of its own with the pinned peers of
  ``bench/requirements.txt`` (uWSGI builds from source with gcc and the
  interpreter's headers) and scgiwsgi itself, ``pip install -e`` from this
  checkout, so the working tree is what gets measured.  It is made from the
  interpreter that runs the benchmark; ``--python PATH`` gets a virtualenv
  of that interpreter, ``bench/.venv-<path>``.

A peer whose package fails to install is reported, not fatal: the run goes
on without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from nginx import nginx_binary
from peers import BENCH_DIR, REPO_ROOT

VENV = BENCH_DIR / ".venv"
REQUIREMENTS = BENCH_DIR / "requirements.txt"
INSTALL_LOG = BENCH_DIR / "results" / "install.log"
PIP_TIMEOUT = 900

_PROBE = """
import importlib.metadata as md, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        found[name] = None
try:
    import scgiwsgi
    found["scgiwsgi_path"] = scgiwsgi.__file__
except Exception:
    found["scgiwsgi_path"] = None
found["python"] = sys.version.split()[0] + " (" + sys.executable + ")"
print(json.dumps(found))
"""


def _log(message: str) -> None:
    print(f"[install] {message}", flush=True)


def _run(argv: list[str], timeout: float = PIP_TIMEOUT) -> bool:
    INSTALL_LOG.parent.mkdir(exist_ok=True)
    with INSTALL_LOG.open("a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        try:
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            log.write(f"timed out after {timeout}s\n")
            return False
    return done.returncode == 0


def ensure_tools() -> None:
    """Install nginx and wrk from Debian when either is missing."""
    missing = [
        name
        for name, found in (("nginx", nginx_binary()), ("wrk", shutil.which("wrk")))
        if found is None
    ]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"bench: {' and '.join(missing)} missing; run: apt-get install -y nginx wrk")
    _log(f"apt-get install -y {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            sys.exit(f"bench: apt-get install {' '.join(missing)} failed")


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def venv_for(python: str | None) -> Path:
    """The virtualenv of interpreter ``python``; None: the one running the benchmark."""
    if python is None:
        return VENV
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", os.path.realpath(python)).strip("-")
    return BENCH_DIR / f".venv-{slug}"


def probe(venv: Path = VENV) -> dict[str, str | None]:
    """Versions installed in ``venv`` (None when missing), and its ``python``."""
    python = venv / "bin" / "python"
    if not python.exists():
        return {}
    names = [*_pins(), "scgiwsgi"]
    # cwd="/": run from the checkout, "import scgiwsgi" would find its
    # scgiwsgi/ even when the venv has none.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [str(python), "-c", _PROBE, *names],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=env,
    )
    if done.returncode != 0:
        return {}
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def ensure_venv(python: str | None = None) -> dict[str, str | None]:
    """Create or complete the virtualenv of ``python``; return the versions found in it."""
    venv = venv_for(python)
    if not (venv / "bin" / "python").exists():
        _log(f"creating {venv}")
        if not _run([python or sys.executable, "-m", "venv", str(venv)], timeout=300):
            sys.exit(f"bench: could not create {venv}; see {INSTALL_LOG}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    found = probe(venv)
    for name, version in _pins().items():
        if found.get(name) != version:
            _log(f"pip install {name}=={version} (log: {INSTALL_LOG})")
            if not _run([*pip, f"{name}=={version}"]):
                _log(f"{name} failed to install; its peer will be skipped")
    path = found.get("scgiwsgi_path") or ""
    if not path.startswith(str(REPO_ROOT / "scgiwsgi")):
        _log(f"pip install -e {REPO_ROOT}")
        if not _run([*pip, "-e", str(REPO_ROOT)]):
            sys.exit(f"bench: could not install scgiwsgi from {REPO_ROOT}; see {INSTALL_LOG}")
    return probe(venv)


def export_revision(rev: str, dest: Path) -> str:
    """Extract ``scgiwsgi/`` as of git revision ``rev`` into ``dest``.

    Putting ``dest`` first on the path measures that commit instead of the
    working tree (which other people may be editing).  Returns the short
    commit id; exits with a message if the revision is unknown.
    """
    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        sys.exit(f"bench: unknown git revision {rev!r}")
    commit = done.stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", commit, "scgiwsgi"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=60)
    return commit


def tool_versions() -> dict[str, str]:
    """nginx and wrk versions, as they print them."""
    versions = {}
    nginx = nginx_binary()
    if nginx:
        done = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
        versions["nginx"] = done.stderr.strip().rpartition("/")[2]
    wrk = shutil.which("wrk")
    if wrk:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
        first = (done.stdout or done.stderr).split("[")[0].strip()
        versions["wrk"] = first.removeprefix("wrk ").strip()
    return versions
