"""Backends decide who accepts a connection and runs the request pipeline.

Each backend is a small class whose ``multithread`` / ``multiprocess``
attributes flow into the environ; :func:`backend_class` picks one by name.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Backend
from .single import SingleBackend
from .threaded import ThreadedBackend

__all__ = ["Backend", "SingleBackend", "ThreadedBackend", "backend_class"]

_BACKENDS: dict[str, type[Backend]] = {
    SingleBackend.name: SingleBackend,
    ThreadedBackend.name: ThreadedBackend,
}


def backend_class(name: str) -> type[Backend]:
    """Return the backend class called ``name``; ConfigError if unknown."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown backend {name!r}; choose one of {', '.join(_BACKENDS)}"
        ) from None
