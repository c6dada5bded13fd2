"""Tests for scgiwsgi.loading: app specs, factories, files and error messages."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scgiwsgi.errors import AppImportError
from scgiwsgi.loading import AppLoadError, load_app

REPO_ROOT = Path(__file__).resolve().parent.parent

APP_SOURCE = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]
"""


@pytest.fixture(autouse=True)
def _isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo every change load_app makes to sys.path, sys.modules and the cwd."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(os.getcwd())
    before = set(sys.modules)
    importlib.invalidate_caches()
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(root: Path, relpath: str, source: str) -> Path:
    """Write ``source`` to ``root/relpath``, making packages on the way."""
    path = root / relpath
    root.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if parent != Path("."):
            (root / parent).mkdir(exist_ok=True)
            (root / parent / "__init__.py").touch()
    path.write_text(textwrap.dedent(source))
    return path


def load_error(spec: str, **kwargs: Any) -> AppLoadError:
    with pytest.raises(AppLoadError) as info:
        load_app(spec, **kwargs)
    return info.value


def call(app: Any) -> tuple[str, bytes]:
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}
    body = b"".join(app(environ, start_response))
    return statuses[0], body


# -- successful loads ------------------------------------------------------------


def test_module_attribute(tmp_path: Path) -> None:
    write(tmp_path, "pkg/mod.py", APP_SOURCE)
    app = load_app("pkg.mod:app", pythonpath=[str(tmp_path)])
    assert app is sys.modules["pkg.mod"].app
    assert call(app) == ("200 OK", b"app")


def test_dotted_attribute_path(tmp_path: Path) -> None:
    write(tmp_path, "dotted.py", APP_SOURCE + "\nclass obj:\n    inner = staticmethod(app)\n")
    app = load_app("dotted:obj.inner", pythonpath=[str(tmp_path)])
    assert call(app) == ("200 OK", b"app")


def test_bare_module_prefers_application_over_app(tmp_path: Path) -> None:
    write(tmp_path, "both.py", APP_SOURCE + "\napplication = lambda e, s: [b'application']\n")
    app = load_app("both", pythonpath=[str(tmp_path)])
    assert app is sys.modules["both"].application


def test_bare_module_falls_back_to_app(tmp_path: Path) -> None:
    write(tmp_path, "only_app.py", APP_SOURCE)
    app = load_app("only_app", pythonpath=[str(tmp_path)])
    assert app is sys.modules["only_app"].app


def test_factory_without_arguments(tmp_path: Path) -> None:
    write(tmp_path, "fact.py", APP_SOURCE + "\ndef create():\n    return app\n")
    app = load_app("fact:create()", pythonpath=[str(tmp_path)])
    assert app is sys.modules["fact"].app


def test_factory_with_literal_arguments(tmp_path: Path) -> None:
    source = """
    class App:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs
        def __call__(self, environ, start_response):
            return []

    def create_app(*args, **kwargs):
        return App(*args, **kwargs)
    """
    write(tmp_path, "factargs.py", source)
    app: Any = load_app(
        "factargs:create_app('prod', -1, (2, 3.5), debug=True, opts={'a': [None]})",
        pythonpath=[str(tmp_path)],
    )
    assert app.args == ("prod", -1, (2, 3.5))
    assert app.kwargs == {"debug": True, "opts": {"a": [None]}}


def test_pythonpath_entries_and_cwd_go_first_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    shadow = "def application(e, s):\n    s('200 OK', [])\n    return [{!r}]\n"
    write(first, "shadow.py", shadow.format(b"first"))
    write(second, "shadow.py", shadow.format(b"second"))
    app = load_app("shadow", chdir=str(tmp_path), pythonpath=["first", str(second)])
    assert sys.path[:3] == [str(first), str(second), str(tmp_path)]
    assert call(app)[1] == b"first"


def test_chdir_puts_new_cwd_on_path(tmp_path: Path) -> None:
    write(tmp_path, "here.py", APP_SOURCE)
    app = load_app("here:app", chdir=str(tmp_path))
    assert os.getcwd() == str(tmp_path)
    assert call(app) == ("200 OK", b"app")


def test_file_path_with_sibling_import(tmp_path: Path) -> None:
    write(tmp_path, "site/helper.py", "BODY = b'from helper'\n")
    source = """
    from helper import BODY

    def application(environ, start_response):
        start_response("200 OK", [])
        return [BODY]
    """
    path = write(tmp_path, "site/my-site.py", source)
    app = load_app(str(path))
    assert call(app) == ("200 OK", b"from helper")
    assert sys.modules["my_site"].application is app


def test_relative_file_path_with_factory(tmp_path: Path) -> None:
    write(tmp_path, "srv/wsgi_file.py", APP_SOURCE + "\ndef make(body):\n    return app\n")
    app = load_app("srv/wsgi_file.py:make('x')", chdir=str(tmp_path))
    assert app is sys.modules["wsgi_file"].app


def test_file_named_like_stdlib_module_does_not_replace_it(tmp_path: Path) -> None:
    import json

    path = write(tmp_path, "json.py", APP_SOURCE)
    app = load_app(f"{path}:app")
    assert sys.modules["json"] is json
    assert sys.modules["_scgiwsgi_app_json"].app is app


# -- missing modules, files, attributes --------------------------------------------


def test_missing_module_is_one_line_without_traceback() -> None:
    error = load_error("nosuch.mod")
    assert str(error) == "cannot import module 'nosuch.mod': No module named 'nosuch'"
    assert error.traceback_text is None
    assert isinstance(error, AppImportError)
    assert error.exit_code == 4


def test_missing_submodule_of_existing_package(tmp_path: Path) -> None:
    write(tmp_path, "pkg/mod.py", APP_SOURCE)
    error = load_error("pkg.nope:app", pythonpath=[str(tmp_path)])
    assert str(error) == "cannot import module 'pkg.nope': No module named 'pkg.nope'"
    assert error.traceback_text is None


def test_missing_file() -> None:
    error = load_error("no/such/file.py:app")
    assert str(error) == "application file 'no/such/file.py' does not exist"


def test_directory_given_as_file(tmp_path: Path) -> None:
    (tmp_path / "dir.py").mkdir()
    error = load_error(f"{tmp_path / 'dir.py'}")
    assert "is not a file" in str(error)


def test_missing_attribute(tmp_path: Path) -> None:
    write(tmp_path, "pkg/mod.py", APP_SOURCE)
    error = load_error("pkg.mod:nope", pythonpath=[str(tmp_path)])
    assert str(error) == "module 'pkg.mod' has no attribute 'nope'"
    assert error.traceback_text is None


def test_missing_attribute_in_dotted_path(tmp_path: Path) -> None:
    write(tmp_path, "pkg/mod.py", APP_SOURCE + "\nclass obj:\n    pass\n")
    error = load_error("pkg.mod:obj.nope.deeper", pythonpath=[str(tmp_path)])
    assert str(error) == "module 'pkg.mod' has no attribute 'obj.nope'"


def test_bare_module_without_default_names(tmp_path: Path) -> None:
    write(tmp_path, "pkg/mod.py", "other = 1\n")
    error = load_error("pkg.mod", pythonpath=[str(tmp_path)])
    assert str(error) == "module 'pkg.mod' has neither 'application' nor 'app'"


def test_file_without_default_names(tmp_path: Path) -> None:
    path = write(tmp_path, "empty_app.py", "")
    error = load_error(str(path))
    assert str(error) == f"file '{path}' has neither 'application' nor 'app'"


# -- errors raised by the user's code ----------------------------------------------


def test_module_importing_something_missing_keeps_traceback(tmp_path: Path) -> None:
    write(tmp_path, "needsdep.py", "import missing_dependency_xyz\n" + APP_SOURCE)
    error = load_error("needsdep:app", pythonpath=[str(tmp_path)])
    assert str(error) == (
        "error while importing module 'needsdep': "
        "ModuleNotFoundError: No module named 'missing_dependency_xyz'"
    )
    assert error.traceback_text is not None
    assert "needsdep.py" in error.traceback_text
    assert "import missing_dependency_xyz" in error.traceback_text


def test_package_init_importing_something_missing(tmp_path: Path) -> None:
    write(tmp_path, "brokenpkg/mod.py", APP_SOURCE)
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import missing_dependency_xyz\n")
    error = load_error("brokenpkg.mod:app", pythonpath=[str(tmp_path)])
    assert str(error).startswith("error while importing module 'brokenpkg.mod': ")
    assert error.traceback_text is not None


def test_exception_in_module_traceback_starts_in_user_code(tmp_path: Path) -> None:
    write(tmp_path, "divides.py", "x = 1\ny = x / 0\n")
    error = load_error("divides", pythonpath=[str(tmp_path)])
    assert str(error) == (
        "error while importing module 'divides': ZeroDivisionError: division by zero"
    )
    assert error.traceback_text is not None
    assert "y = x / 0" in error.traceback_text
    assert "loading.py" not in error.traceback_text
    assert "importlib" not in error.traceback_text


def test_syntax_error_in_module(tmp_path: Path) -> None:
    write(tmp_path, "broken.py", "def app(:\n    pass\n")
    error = load_error("broken:app", pythonpath=[str(tmp_path)])
    assert str(error).startswith("error while importing module 'broken': SyntaxError: ")
    assert error.traceback_text is not None
    assert "broken.py" in error.traceback_text


def test_multiline_exception_message_becomes_one_line(tmp_path: Path) -> None:
    write(tmp_path, "multi.py", "raise ValueError('first line\\nsecond line')\n")
    error = load_error("multi", pythonpath=[str(tmp_path)])
    assert str(error) == "error while importing module 'multi': ValueError: first line"
    assert error.traceback_text is not None
    assert "second line" in error.traceback_text


def test_sys_exit_in_module(tmp_path: Path) -> None:
    write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    error = load_error("exits", pythonpath=[str(tmp_path)])
    assert str(error) == "error while importing module 'exits': SystemExit: 3"


def test_exception_in_file_is_reported_and_not_left_in_sys_modules(tmp_path: Path) -> None:
    path = write(tmp_path, "failing_file.py", "raise RuntimeError('nope')\n")
    error = load_error(f"{path}:app")
    assert str(error) == f"error while importing file '{path}': RuntimeError: nope"
    assert "failing_file" not in sys.modules


def test_factory_raises(tmp_path: Path) -> None:
    write(tmp_path, "fact.py", "def create(mode):\n    raise RuntimeError(f'bad mode {mode}')\n")
    error = load_error("fact:create('prod')", pythonpath=[str(tmp_path)])
    assert str(error) == "factory 'fact:create' raised RuntimeError: bad mode prod"
    assert error.traceback_text is not None
    assert "raise RuntimeError" in error.traceback_text
    assert "loading.py" not in error.traceback_text


def test_factory_called_with_wrong_arguments(tmp_path: Path) -> None:
    write(tmp_path, "fact.py", "def create():\n    pass\n")
    error = load_error("fact:create(1)", pythonpath=[str(tmp_path)])
    assert str(error).startswith("factory 'fact:create' raised TypeError: ")


def test_attribute_access_raising_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "lazy.py", "def __getattr__(name):\n    raise KeyError(name)\n")
    error = load_error("lazy:thing", pythonpath=[str(tmp_path)])
    assert str(error) == "getting 'thing' from module 'lazy' raised KeyError: 'thing'"
    assert error.traceback_text is not None


# -- not callable -----------------------------------------------------------------


def test_attribute_not_callable(tmp_path: Path) -> None:
    write(tmp_path, "values.py", "app = 42\n")
    error = load_error("values:app", pythonpath=[str(tmp_path)])
    assert str(error) == (
        "'values:app' is not a WSGI application: got int object, which is not callable"
    )


def test_bare_module_default_not_callable(tmp_path: Path) -> None:
    write(tmp_path, "values.py", "application = 'text'\n")
    error = load_error("values", pythonpath=[str(tmp_path)])
    assert str(error) == (
        "'values:application' is not a WSGI application: got str object, which is not callable"
    )


def test_factory_returning_none(tmp_path: Path) -> None:
    write(tmp_path, "fact.py", "def create():\n    pass\n")
    error = load_error("fact:create()", pythonpath=[str(tmp_path)])
    assert str(error) == (
        "factory 'fact:create' did not return a WSGI application: got None, which is not callable"
    )


def test_calling_something_not_callable(tmp_path: Path) -> None:
    write(tmp_path, "values.py", "app = 42\n")
    error = load_error("values:app()", pythonpath=[str(tmp_path)])
    assert str(error) == "factory 'values:app' is not callable: got int object"


# -- malformed specs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty application spec"),
        ("   ", "empty application spec"),
        (":app", "application spec ':app' names no module before ':'"),
        ("mod:", "application spec 'mod:' names no object after ':'"),
        ("mod:create(", "application spec 'mod:create(': invalid syntax in 'create('"),
        ("mod:1app", "application spec 'mod:1app': invalid syntax in '1app'"),
        ("my-mod:app", "application spec 'my-mod:app': 'my-mod' is not a module name"),
        ("pkg..mod", "application spec 'pkg..mod': 'pkg..mod' is not a module name"),
        ("mod:apps[0]", "expected a name, a dotted name or a call with literal arguments"),
        ("mod:make()()", "expected a name, a dotted name or a call with literal arguments"),
        ("mod:make().app", "expected a name, a dotted name or a call with literal arguments"),
        ("mod:make(os.environ)", "factory argument 'os.environ' is not a Python literal"),
        ("mod:make(x=open('f'))", "factory argument \"open('f')\" is not a Python literal"),
        ("mod:make(*args)", "'*' arguments are not supported"),
        ("mod:make(**kw)", "'**' arguments are not supported"),
    ],
)
def test_malformed_spec(spec: str, message: str) -> None:
    error = load_error(spec)
    assert message in str(error)
    assert "\n" not in str(error)
    assert error.traceback_text is None


def test_malformed_spec_is_rejected_before_importing(tmp_path: Path) -> None:
    write(tmp_path, "sideeffect.py", "raise RuntimeError('must not run')\n")
    error = load_error("sideeffect:make(os.environ)", pythonpath=[str(tmp_path)])
    assert "is not a Python literal" in str(error)
    assert "sideeffect" not in sys.modules


def test_chdir_to_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    error = load_error("mod:app", chdir=str(missing))
    assert str(error) == f"cannot change directory to '{missing}': No such file or directory"


# -- the bundled examples -------------------------------------------------------------


def test_example_hello_loads_and_answers() -> None:
    app = load_app("examples.hello", pythonpath=[str(REPO_ROOT)])
    assert call(app) == ("200 OK", b"Hello, world!\n")


def test_example_flask_app_loads_from_file() -> None:
    pytest.importorskip("flask")
    app: Any = load_app("examples/flask_app/__init__.py:app", chdir=str(REPO_ROOT))
    client = app.test_client()
    info = client.get("/info", base_url="https://example.test/prefix").get_json()
    assert info["path"] == "/info"
    assert info["script_root"] == "/prefix"
    assert info["url_for_index"] == "/prefix/"
    assert info["scheme"] == "https"
    assert client.post("/echo", data={"a": "1"}).get_json() == {"a": ["1"]}
    upload = client.post("/upload", data={"file": (io.BytesIO(b"data"), "d.bin")})
    assert upload.get_data(as_text=True).strip() == hashlib.sha256(b"data").hexdigest()


def test_example_flask_app_login_flow() -> None:
    pytest.importorskip("flask")
    app: Any = load_app("examples.flask_app:app", pythonpath=[str(REPO_ROOT)])
    client = app.test_client()
    base = "http://example.test/prefix"
    form = client.get("/login", base_url=base).get_data(as_text=True)
    assert 'action="/prefix/login"' in form
    assert 'href="/prefix/static/style.css"' in form
    wrong = client.post("/login", data={"username": "demo", "password": "x"}, base_url=base)
    assert wrong.status_code == 200
    assert "Wrong user name or password." in wrong.get_data(as_text=True)
    signed_in = client.post(
        "/login", data={"username": "demo", "password": "scgiwsgi"}, base_url=base
    )
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"] == "/prefix/"  # relative: the browser resolves it
    assert "Hello, demo!" in client.get("/", base_url=base).get_data(as_text=True)
    assert client.post("/logout", base_url=base).headers["Location"] == "/prefix/login"
    assert client.get("/", base_url=base).get_data(as_text=True) == "Hello from Flask!\n"
    assert client.get("/static/style.css").status_code == 200  # found from the package
