"""``--user`` / ``--group``: drop root's privileges once the sockets are bound.

Binding a port below 1024, or a unix socket in a root-owned directory, needs
root; serving requests must not.  The server binds first, then switches to
the named user and group (supplementary groups included) before it imports
the application or forks workers.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import os
import pwd
from collections.abc import Sequence

from .config import Config
from .errors import ConfigError
from .sockets import Listener

__all__ = ["apply_socket_group", "drop_privileges", "group_id", "secure", "warn_if_root"]

log = logging.getLogger("scgiwsgi.error")


def group_id(name: str) -> int:
    """The gid of a group name or number; ConfigError if there is none."""
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"group: no group named {name!r}") from None


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"user: no user named {name!r}") from None


def drop_privileges(user: str | None, group: str | None) -> None:
    """Become ``user`` (and ``group``, default: the user's own group).

    Does nothing when both are None.  Raises
    :class:`~scgiwsgi.errors.ConfigError` for an unknown name, or when the
    process may not switch (not running as root).
    """
    if user is None and group is None:
        return
    entry = _user(user) if user is not None else None
    if entry is not None and os.geteuid() == entry.pw_uid and os.geteuid() != 0:
        return  # already that user (a re-executed arbiter)
    gid = group_id(group) if group is not None else (entry.pw_gid if entry else os.getgid())
    try:
        if entry is not None:
            os.initgroups(entry.pw_name, gid)
        elif os.geteuid() == 0:
            os.setgroups([gid])
        os.setgid(gid)
        if entry is not None:
            os.setuid(entry.pw_uid)
    except PermissionError:
        raise ConfigError("user/group: only root can switch to another user or group") from None
    log.info("running as user %s, group %s", entry.pw_name if entry else os.getuid(), gid)


def warn_if_root(user: str | None) -> None:
    """Log a warning when the server would serve requests as root."""
    if os.geteuid() == 0 and user is None:
        log.warning("running as root: use --user (and --group) to drop privileges after binding")


def apply_socket_group(config: Config, listeners: Sequence[Listener]) -> None:
    """Give the unix socket files this server created to ``config.socket_group``.

    Raises :class:`~scgiwsgi.errors.ConfigError` for an unknown group or a
    file that cannot be given to it.
    """
    if config.socket_group is None:
        return
    gid = group_id(config.socket_group)
    for listener in listeners:
        if listener.owned_file is None:
            continue
        try:
            os.chown(listener.spec.path, -1, gid)
        except OSError as exc:
            raise ConfigError(
                f"socket_group: cannot give {listener.display} to group "
                f"{config.socket_group!r}: {exc.strerror}"
            ) from None


def secure(config: Config, listeners: Sequence[Listener]) -> None:
    """Warn about ports other machines can reach, then drop privileges.

    Called once the sockets are bound and before the application is
    imported.  Raises :class:`~scgiwsgi.errors.ConfigError` for an unknown
    user or group.
    """
    if not config.allow:
        for listener in listeners:
            if _exposed(listener):
                log.warning(
                    "%s is reachable from other machines and SCGI trusts its peer "
                    "(REMOTE_ADDR, REMOTE_USER...): restrict it with --allow or a firewall",
                    listener.display,
                )
    drop_privileges(config.user, config.group)
    warn_if_root(config.user)


def _exposed(listener: Listener) -> bool:
    if listener.spec.kind != "tcp":
        return False
    try:
        address = ipaddress.ip_address(listener.server_name.split("%", 1)[0])
    except ValueError:
        return True
    return not address.is_loopback
