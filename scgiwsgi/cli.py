"""The ``scgi-wsgi`` command: options -> :class:`~scgiwsgi.Config` -> server.

Defaults live in :class:`~scgiwsgi.Config` only; an option left out on the
command line is simply not passed on.  Exit statuses: 0 after a normal or
graceful stop, 2 for a bad option, 3 when an address cannot be bound, 4 when
the application cannot be loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from . import __version__
from .config import ACCESS_LOG_FORMATS, LOG_LEVELS, Config
from .errors import AppImportError, StartupError
from .gateway import WSGIApp
from .logs import configure_error_log
from .settings import parse_mode, parse_size, resolve, to_toml

__all__ = ["main"]

_DEFAULTS: dict[str, Any] = {field.name: field.default for field in dataclasses.fields(Config)}


class SizeParam(click.ParamType):  # type: ignore[type-arg]
    """A byte count: ``65536``, ``64K``, ``10M``, ``1G`` (powers of 1024)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class ModeParam(click.ParamType):  # type: ignore[type-arg]
    """Octal permission bits such as ``660`` or ``0o600``."""

    name = "MODE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_mode(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _default(name: str) -> str:
    value = _DEFAULTS[name]
    if name == "socket_mode":
        return oct(int(value))[2:]
    if name == "bind":
        return ", ".join(value)
    return "none" if value is None else str(value)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("app", required=False)
@click.option(
    "-b",
    "--bind",
    multiple=True,
    metavar="ADDRESS",
    help="HOST:PORT, [IPv6]:PORT, unix:/path or fd://N; repeat for several. "
    f"[default: {_default('bind')}]",
)
@click.option("--single", "backend", flag_value="single", help="Serve one request at a time.")
@click.option(
    "--threaded",
    "backend",
    flag_value="threaded",
    help="Serve requests from a pool of threads (the default).",
)
@click.option(
    "--fork",
    "backend",
    flag_value="fork",
    help="Prefork: an arbiter supervises worker processes (for production).",
)
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Worker processes with --fork. [default: the number of CPUs]",
)
@click.option(
    "--preload",
    is_flag=True,
    default=None,
    help="With --fork, import the app once in the arbiter before forking.",
)
@click.option(
    "--reload",
    is_flag=True,
    default=None,
    help="For development: restart the workers when a .py file of the app changes "
    "(needs watchfiles). Implies --fork with one worker; not with --preload.",
)
@click.option(
    "--max-requests",
    type=click.IntRange(min=0),
    metavar="N",
    help="With --fork, a worker retires after N requests. [default: 0, never]",
)
@click.option(
    "--max-requests-jitter",
    type=click.IntRange(min=0),
    metavar="N",
    help="Add up to N requests at random to each worker's --max-requests.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="With --fork, a request running longer has its stack logged and its worker "
    f"killed; 0 disables. [default: {_default('timeout')}]",
)
@click.option(
    "--pid",
    "pid_file",
    metavar="FILE",
    help="Write the server's pid to FILE at start; removed at exit.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    metavar="N",
    help="Threads per process. [default: 8 with --threaded, 1 with --fork]",
)
@click.option(
    "--script-name",
    metavar="PREFIX",
    help="Mount prefix: SCRIPT_NAME for requests under it, e.g. /app.",
)
@click.option(
    "--absolute-redirects",
    is_flag=True,
    default=None,
    help="Make a relative Location header absolute (scheme://host/path) from the request.",
)
@click.option(
    "--offload",
    metavar="SPEC",
    help="Let the front end send wsgi.file_wrapper files under DIR: x-sendfile:DIR "
    "(Apache, lighttpd) or x-accel-redirect:DIR=URI (nginx).",
)
@click.option(
    "--max-header-size",
    type=SizeParam(),
    metavar="SIZE",
    help=f"Largest SCGI header block (431 above). [default: {_default('max_header_size')}]",
)
@click.option(
    "--max-body-size",
    type=SizeParam(),
    metavar="SIZE",
    help="Largest request body (413 above). [default: unlimited]",
)
@click.option(
    "--socket-mode",
    type=ModeParam(),
    metavar="MODE",
    help=f"Mode of unix sockets. [default: {_default('socket_mode')}]",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="CIDR",
    help="Only TCP peers in this network may connect (IPv4 or IPv6); repeatable.",
)
@click.option("--socket-group", metavar="GROUP", help="Group of the unix socket files.")
@click.option("--user", metavar="USER", help="Switch to USER after binding (needs root).")
@click.option(
    "--group", metavar="GROUP", help="Switch to GROUP after binding. [default: USER's group]"
)
@click.option(
    "--backlog",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Listen queue length. [default: {_default('backlog')}]",
)
@click.option(
    "--defer-accept/--no-defer-accept",
    default=None,
    help="Take a TCP connection only once its request starts arriving (Linux). [default: on]",
)
@click.option(
    "--graceful-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Time in-flight requests get after SIGTERM/SIGINT. "
    f"[default: {_default('graceful_timeout')}]",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help=f"Time to receive the SCGI header. [default: {_default('header_timeout')}]",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help=f"Time allowed between body reads and sends. [default: {_default('body_timeout')}]",
)
@click.option(
    "--access-log",
    metavar="FILE|-",
    help="Write an access log (Apache combined format) to FILE, or - for stdout.",
)
@click.option(
    "--access-log-format",
    type=click.Choice(ACCESS_LOG_FORMATS, case_sensitive=False),
    help="combined (Apache's) or json (one object a line, with the time in microseconds). "
    "[default: combined]",
)
@click.option("--error-log", metavar="FILE", help="Write the error log to FILE. [default: stderr]")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help=f"Error log level. [default: {_default('log_level')}]",
)
@click.option(
    "-c",
    "--config",
    "config_file",
    metavar="FILE",
    help="Read options from a TOML file (also $SCGI_WSGI_CONFIG). Precedence: command line, "
    "then SCGI_WSGI_<OPTION> environment variables, then this file.",
)
@click.option(
    "--check-config",
    is_flag=True,
    help="Check the settings and import the app, then exit 0, or 1 with the reason.",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the effective settings as TOML and exit.",
)
@click.option("--chdir", metavar="DIR", help="Change to DIR before loading the app.")
@click.option(
    "--pythonpath",
    multiple=True,
    metavar="DIR",
    help="Put DIR at the front of sys.path; repeatable.",
)
@click.option(
    "--cgi",
    metavar="DIR|SCRIPT",
    help="Run CGI programs: the script the request path names inside DIR, or SCRIPT "
    "for every request.",
)
@click.option(
    "--cgi-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help=f"Time limit of one CGI run (then 504). [default: {_default('cgi_timeout')}]",
)
@click.option(
    "--inetd",
    is_flag=True,
    default=None,
    help="Answer the one request of the connection on stdin/stdout, then exit "
    "(inetd, xinetd, systemd Accept=yes).",
)
@click.option(
    "--http",
    metavar="HOST:PORT",
    help="Also serve HTTP on HOST:PORT, each request forwarded to the first SCGI "
    "listener, to browse the app with no web server. For development only.",
)
@click.version_option(__version__, "-V", "--version", prog_name="scgi-wsgi")
def command(
    config_file: str | None, check_config: bool, print_config: bool, **options: Any
) -> None:
    """Serve the WSGI application APP over SCGI.

    APP is pkg.mod:name, pkg.mod:factory() (literal arguments allowed),
    pkg.mod (then 'application', then 'app'), or path/to/file.py[:name].
    Without APP, a built-in page lists each request's CGI variables.
    """
    inetd = bool(options.pop("inetd", False))
    settings = {name: value for name, value in options.items() if value not in (None, ())}
    if str(settings.get("app", "")).isdigit():  # python-scgi style: a bare port
        settings["bind"] = (*settings.get("bind", ()), f"127.0.0.1:{settings.pop('app')}")
    if inetd and "bind" in settings:
        raise click.UsageError("--inetd serves the connection on stdin; it takes no --bind")
    if inetd and settings.get("reload"):
        raise click.UsageError("--inetd serves one connection and exits; it takes no --reload")
    if settings.get("backend") == "single" and "threads" in settings:
        raise click.UsageError("--threads applies to --threaded and --fork, not --single")
    for name in ("log_level", "access_log_format"):
        if name in settings:
            settings[name] = settings[name].lower()
    try:
        config = resolve(settings, config_file=config_file)
        if print_config:
            click.echo(to_toml(config), nl=False)
            sys.exit(0)
        configure_error_log(config.log_level, path=config.error_log)
        if check_config:
            _check(config)
        if inetd:
            _serve_inetd(_loader(config), config)
        status = _serve(_loader(config), config.app, config)
    except StartupError as exc:
        _fail(exc, check_config)
    sys.exit(status)


def _loader(config: Config) -> Callable[[], WSGIApp] | None:
    if config.cgi is not None:
        return functools.partial(_cgi_app, config.cgi, config.cgi_timeout)
    if config.app is None:
        return None
    from .loading import load_app

    return functools.partial(load_app, config.app, chdir=config.chdir, pythonpath=config.pythonpath)


def _cgi_app(target: str, timeout: float) -> WSGIApp:
    from .cgi import CGIApp

    return CGIApp(target, timeout=timeout)


def _check(config: Config) -> NoReturn:
    loader = _loader(config)
    if loader is not None:
        loader()
    what = f"the application {config.app} imports" if loader else "no application (built-in page)"
    click.echo(f"scgi-wsgi: configuration OK; {what}")
    sys.exit(0)


def _serve_inetd(loader: Callable[[], WSGIApp] | None, config: Config) -> NoReturn:
    from .inetd import run_app

    run_app(loader() if loader is not None else None, config=config)


def _serve(loader: Callable[[], WSGIApp] | None, spec: str | None, config: Config) -> int:
    from .server import WSGIServer

    # Import now, before binding, unless each forked worker imports for itself.
    load_in_workers = config.backend == "fork" and not config.preload
    application = loader() if loader is not None and not load_in_workers else None
    server = WSGIServer(
        application,
        config=config,
        app_name=spec,
        # With --fork the loader also serves --preload reloads (re-exec).
        app_loader=loader if config.backend == "fork" else None,
    )
    return server.serve_forever()


def _fail(exc: StartupError, checking: bool = False) -> NoReturn:
    if isinstance(exc, AppImportError) and exc.traceback_text:
        click.echo(exc.traceback_text.rstrip("\n"), err=True)
    click.echo(f"scgi-wsgi: error: {exc}", err=True)
    sys.exit(1 if checking else exc.exit_code)


def main() -> None:
    """Console-script entry point."""
    command(prog_name="scgi-wsgi")
