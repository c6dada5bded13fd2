"""Settings from the environment and from a TOML file, mapped onto :class:`Config`.

Every :class:`~scgiwsgi.Config` option can come from three places besides
its default.  Precedence, highest first:

1. the command line (``--max-body-size 10M``);
2. an environment variable ``SCGI_WSGI_<OPTION>`` (``SCGI_WSGI_MAX_BODY_SIZE=10M``);
3. the TOML file given by ``--config FILE`` or ``SCGI_WSGI_CONFIG``
   (``max_body_size = "10M"``, at the top level or under ``[scgi-wsgi]``);
4. the defaults of :class:`~scgiwsgi.Config`.

Values are converted by the option's type: sizes accept ``64K``/``10M``/``1G``,
``socket_mode`` an octal string, booleans ``1/0/true/false/yes/no/on/off``,
lists (``bind``, ``pythonpath``) a TOML array or a comma-separated string.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

from .config import Config
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "from_environ",
    "from_toml",
    "parse_mode",
    "parse_size",
    "resolve",
    "to_toml",
]

ENV_PREFIX = "SCGI_WSGI_"
CONFIG_ENV = "SCGI_WSGI_CONFIG"
_SIZE_OPTIONS = frozenset({"max_header_size", "max_body_size"})
_SIZE_RE = re.compile(r"(\d+)\s*([kmg]?)i?b?\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MODE_RE = re.compile(r"[0-7]{1,4}")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_TOML_TABLE = "scgi-wsgi"


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``10M``, ``1G`` (powers of 1024) as a byte count.

    Raises :class:`ValueError` for anything else.
    """
    match = _SIZE_RE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size like 65536, 64K, 10M or 1G")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_mode(text: str) -> int:
    """Octal permission bits: ``660``, ``0660`` or ``0o660``.

    Raises :class:`ValueError` for anything else.
    """
    digits = text.strip().lower().removeprefix("0o")
    if not _MODE_RE.fullmatch(digits):
        raise ValueError(f"{text!r} is not an octal mode like 660")
    return int(digits, 8)


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _option_names() -> tuple[str, ...]:
    return Config.option_names()


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Options found in ``SCGI_WSGI_<OPTION>`` variables, converted.

    Raises :class:`~scgiwsgi.errors.ConfigError` naming the variable when a
    value cannot be converted; unknown ``SCGI_WSGI_*`` names are ignored
    except that a near miss is reported.
    """
    source = os.environ if environ is None else environ
    hints = _hints()
    found: dict[str, Any] = {}
    for name in _option_names():
        key = ENV_PREFIX + name.upper()
        if key in source and source[key] != "":
            found[name] = _convert(name, source[key], hints[name], origin=key)
    return found


def from_toml(path: str) -> dict[str, Any]:
    """Options of a TOML file, converted; unknown keys are an error.

    Raises :class:`~scgiwsgi.errors.ConfigError` when the file cannot be read
    or parsed, or holds an unknown option or a bad value.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"config file {path!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None
    table = data.get(_TOML_TABLE, data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path!r}: [{_TOML_TABLE}] must be a table")
    hints = _hints()
    found: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in hints:
            raise ConfigError(f"config file {path!r}: unknown option {key!r}")
        found[name] = _convert(name, value, hints[name], origin=f"{path}: {key}")
    return found


def resolve(
    command_line: Mapping[str, Any],
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge file < environment < command line into a validated Config.

    ``config_file`` defaults to ``$SCGI_WSGI_CONFIG`` when set.
    """
    source = os.environ if environ is None else environ
    path = config_file or source.get(CONFIG_ENV) or None
    merged: dict[str, Any] = from_toml(path) if path else {}
    merged.update(from_environ(source))
    merged.update(command_line)
    return Config(**merged)


def to_toml(config: Config) -> str:
    """The effective settings as a TOML document ``--config`` can read back."""
    lines = [f"[{_TOML_TABLE}]"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None:
            lines.append(f"# {field.name} is not set")
            continue
        lines.append(f"{field.name} = {_toml_value(field.name, value)}")
    return "\n".join(lines) + "\n"


def _toml_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "socket_mode":
        return f'"{value:o}"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_string(str(item)) for item in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _convert(name: str, raw: Any, hint: Any, *, origin: str) -> Any:
    try:
        return _convert_value(name, raw, hint)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def _convert_value(name: str, raw: Any, hint: Any) -> Any:
    kinds = _kinds(hint)
    if raw is None or (isinstance(raw, str) and raw.lower() == "none" and type(None) in kinds):
        if type(None) in kinds:
            return None
        raise ValueError("a value is required")
    if name in _SIZE_OPTIONS:
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else parse_size(str(raw))
    if name == "socket_mode":
        return raw if isinstance(raw, int) else parse_mode(str(raw))
    if tuple in kinds:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
    if bool in kinds:
        return _to_bool(raw)
    if int in kinds:
        return _to_number(raw, int)
    if float in kinds:
        return _to_number(raw, float)
    return str(raw)


def _kinds(hint: Any) -> set[Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds: set[Any] = set()
        for arg in typing.get_args(hint):
            kinds |= _kinds(arg)
        return kinds
    if origin is typing.Literal:
        return {str}
    if origin is tuple:
        return {tuple}
    return {hint}


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not a boolean (true/false, 1/0, yes/no, on/off)")


def _to_number(raw: Any, kind: type[int] | type[float]) -> int | float:
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a number")
    if isinstance(raw, (int, float)):
        return kind(raw)
    try:
        return kind(str(raw).strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a valid {kind.__name__}") from None
