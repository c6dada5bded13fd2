"""Find the WSGI application named on the command line.

An application spec has one of these forms::

    pkg.mod                      attribute ``application``, else ``app``
    pkg.mod:name                 an attribute; dotted paths such as ``obj.app`` work
    pkg.mod:create_app()         call a factory; arguments must be Python literals
    pkg.mod:create_app('prod', debug=True)
    path/to/file.py              a file, with the same ``:name`` / ``:factory()`` forms

Every failure is an :class:`AppLoadError` (an
:class:`~scgiwsgi.errors.AppImportError`, exit status 4) whose message is one
line.  When the failure happened inside the user's code (an exception while
importing the module, or raised by a factory) ``traceback_text`` holds the
formatted traceback so the CLI can show it; otherwise it is ``None``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from .errors import AppImportError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse

__all__ = ["AppLoadError", "WSGIApp", "load_app"]

WSGIApp: TypeAlias = "Callable[[dict[str, Any], StartResponse], Iterable[bytes]]"

_DEFAULT_NAMES = ("application", "app")


class AppLoadError(AppImportError):
    """The application could not be loaded; ``traceback_text`` may explain why.

    ``traceback_text`` is the formatted traceback of an exception raised by the
    user's code (while importing the module or calling the factory), or
    ``None`` when the one-line message says everything.
    """

    def __init__(self, message: str, traceback_text: str | None = None) -> None:
        super().__init__(message)
        self.traceback_text = traceback_text


@dataclass(frozen=True)
class _Target:
    """The part of a spec after the colon: an attribute path, maybe called."""

    attrs: tuple[str, ...]
    is_call: bool = False
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def load_app(spec: str, *, chdir: str | None = None, pythonpath: Sequence[str] = ()) -> WSGIApp:
    """Import and return the WSGI application named by ``spec``.

    ``chdir`` is entered first.  The ``pythonpath`` entries (relative ones are
    taken from the new working directory) and then the working directory
    itself are put at the front of :data:`sys.path`.  For a file spec the
    file's directory is added too, so the file can import its siblings.

    Raises :class:`AppLoadError` (an ``AppImportError``) with a one-line
    message when the spec is malformed, the module or file is missing, the
    attribute is missing, the module or the factory raises, or the object is
    not callable.  The caller should print the message (and ``traceback_text``
    when it is not ``None``) and exit with ``exit_code``.
    """
    module_part, target = _parse_spec(spec)
    if chdir is not None:
        _change_directory(chdir)
    _prepend_sys_path([*pythonpath, os.getcwd()])
    if _is_file_spec(module_part):
        module = _load_file(module_part)
        label = f"file {module_part!r}"
    else:
        module = _import_module(module_part)
        label = f"module {module_part!r}"
    if target is None:
        attr, obj = _default_app(module, label)
        return _check_callable(obj, f"{module_part}:{attr}")
    obj = _resolve_attrs(module, target.attrs, label)
    name = f"{module_part}:{'.'.join(target.attrs)}"
    if target.is_call:
        return _check_callable(_call_factory(obj, target, name), name, returned=True)
    return _check_callable(obj, name)


# -- parsing the spec -----------------------------------------------------------


def _parse_spec(spec: str) -> tuple[str, _Target | None]:
    """Split ``spec`` into the module (or file) part and the parsed target."""
    text = spec.strip()
    if not text:
        raise AppLoadError("empty application spec")
    module_part, colon, obj_part = text.partition(":")
    module_part, obj_part = module_part.strip(), obj_part.strip()
    if not module_part:
        raise AppLoadError(f"application spec {spec!r} names no module before ':'")
    if not _is_file_spec(module_part):
        _check_module_name(module_part, spec)
    if not colon:
        return module_part, None
    if not obj_part:
        raise AppLoadError(f"application spec {spec!r} names no object after ':'")
    return module_part, _parse_target(obj_part, spec)


def _is_file_spec(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or os.sep in module_part


def _check_module_name(name: str, spec: str) -> None:
    if not all(part.isidentifier() for part in name.split(".")):
        raise AppLoadError(
            f"application spec {spec!r}: {name!r} is not a module name or a path to a .py file"
        )


def _parse_target(text: str, spec: str) -> _Target:
    """Parse ``name``, ``a.b.c`` or ``factory(<literals>)``."""
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError):
        raise AppLoadError(f"application spec {spec!r}: invalid syntax in {text!r}") from None
    if not isinstance(node, ast.Call):
        return _Target(attrs=_attr_path(node, spec))
    attrs = _attr_path(node.func, spec)
    args = tuple(_literal(arg, spec) for arg in node.args)
    kwargs: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise AppLoadError(f"application spec {spec!r}: '**' arguments are not supported")
        kwargs[keyword.arg] = _literal(keyword.value, spec)
    return _Target(attrs=attrs, is_call=True, args=args, kwargs=kwargs)


def _attr_path(node: ast.expr, spec: str) -> tuple[str, ...]:
    """Turn ``a`` or ``a.b.c`` into ``('a', 'b', 'c')``; anything else is an error."""
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise AppLoadError(
            f"application spec {spec!r}: expected a name, a dotted name or a call "
            f"with literal arguments, got {ast.unparse(node)!r}"
        )
    names.append(node.id)
    return tuple(reversed(names))


def _literal(node: ast.expr, spec: str) -> Any:
    if isinstance(node, ast.Starred):
        raise AppLoadError(f"application spec {spec!r}: '*' arguments are not supported")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise AppLoadError(
            f"application spec {spec!r}: factory argument {ast.unparse(node)!r} "
            "is not a Python literal"
        ) from None


# -- the import path and importing --------------------------------------------


def _change_directory(path: str) -> None:
    try:
        os.chdir(path)
    except OSError as exc:
        raise AppLoadError(f"cannot change directory to {path!r}: {exc.strerror}") from None


def _prepend_sys_path(entries: Sequence[str]) -> None:
    """Put ``entries`` (made absolute) at the front of sys.path, in order."""
    for entry in reversed([os.path.abspath(e) for e in entries]):
        while entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if _is_target_or_parent(exc.name, name):
            raise AppLoadError(f"cannot import module {name!r}: {exc}") from None
        raise _user_error(f"error while importing module {name!r}:", exc) from exc
    except (Exception, SystemExit) as exc:
        raise _user_error(f"error while importing module {name!r}:", exc) from exc


def _is_target_or_parent(missing: str | None, name: str) -> bool:
    """Is ``missing`` (ModuleNotFoundError.name) the module itself or a parent?"""
    if missing is None:
        return False
    return name == missing or name.startswith(missing + ".")


def _load_file(path: str) -> ModuleType:
    """Execute the Python file at ``path`` as a module and return it."""
    full = os.path.abspath(path)
    if not os.path.exists(full):
        raise AppLoadError(f"application file {path!r} does not exist")
    if not os.path.isfile(full):
        raise AppLoadError(f"application path {path!r} is not a file")
    if not full.endswith(".py"):
        raise AppLoadError(f"application file {path!r} is not a .py file")
    _prepend_sys_path([os.path.dirname(full)])
    name = _module_name_for_file(full)
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    module_spec = importlib.util.spec_from_file_location(name, full)
    if module_spec is None or module_spec.loader is None:
        raise AppLoadError(f"cannot load application file {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running so the file's own (and its siblings') imports
    # of this name find the module being loaded instead of loading it twice.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise _user_error(f"error while importing file {path!r}:", exc) from exc
    return module


def _module_name_for_file(full: str) -> str:
    """The file's stem, unless that name already belongs to another module.

    Using the stem means ``from <stem> import x`` in a sibling returns the
    same module object.  A name taken by a different module (``json.py``
    would otherwise replace the standard library's json) gets a prefix.
    """
    stem = os.path.splitext(os.path.basename(full))[0]
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    if not name.isidentifier():
        name = f"_{name}"
    existing = sys.modules.get(name)
    if existing is None or _module_file(existing) == full:
        return name
    return f"_scgiwsgi_app_{name}"


def _module_file(module: ModuleType) -> str | None:
    filename = getattr(module, "__file__", None)
    return os.path.abspath(filename) if isinstance(filename, str) else None


# -- finding and checking the object ------------------------------------------


def _default_app(module: ModuleType, label: str) -> tuple[str, object]:
    """Return the name and value of ``application``, else ``app``."""
    for name in _DEFAULT_NAMES:
        if hasattr(module, name):
            return name, _resolve_attrs(module, (name,), label)
    raise AppLoadError(f"{label} has neither 'application' nor 'app'")


def _resolve_attrs(module: ModuleType, attrs: tuple[str, ...], label: str) -> object:
    obj: object = module
    for index, attr in enumerate(attrs):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            path = ".".join(attrs[: index + 1])
            raise AppLoadError(f"{label} has no attribute {path!r}") from None
        except Exception as exc:
            raise _user_error(f"getting {attr!r} from {label} raised", exc) from exc
    return obj


def _call_factory(factory: object, target: _Target, name: str) -> object:
    if not callable(factory):
        raise AppLoadError(f"factory {name!r} is not callable: got {_describe(factory)}")
    try:
        return factory(*target.args, **target.kwargs)
    except (Exception, SystemExit) as exc:
        raise _user_error(f"factory {name!r} raised", exc) from exc


def _check_callable(obj: object, name: str, *, returned: bool = False) -> WSGIApp:
    if callable(obj):
        return cast("WSGIApp", obj)
    if returned:
        what = f"factory {name!r} did not return a WSGI application"
    else:
        what = f"{name!r} is not a WSGI application"
    raise AppLoadError(f"{what}: got {_describe(obj)}, which is not callable")


def _describe(obj: object) -> str:
    return "None" if obj is None else f"{type(obj).__name__} object"


# -- errors raised by user code ------------------------------------------------


def _user_error(prefix: str, exc: BaseException) -> AppLoadError:
    """An AppLoadError for ``exc`` raised by user code, with its traceback."""
    lines = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
    return AppLoadError(f"{prefix} {detail}", traceback_text=text)


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip the leading frames of this module and of importlib's machinery."""
    while tb is not None and _is_machinery(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def _is_machinery(filename: str) -> bool:
    if filename in (__file__, importlib.__file__):
        return True
    return filename.startswith("<frozen importlib")
