"""The Flask application of the front-end matrix, with no deployment-specific code.

Served as ``tests/frontends/apps/matrix.py:app``.  Every route reports what
the application saw, so the tests can compare it with what the client sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Flask, Response, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue

flask_app = Flask(__name__)

STREAM_CHUNK = 64 * 1024
STREAM_CHUNKS = 16  # 1 MiB in all


def stream_bytes() -> Iterator[bytes]:
    """The body of /stream: 1 MiB that differs from chunk to chunk."""
    for index in range(STREAM_CHUNKS):
        yield hashlib.sha256(b"%d" % index).digest() * (STREAM_CHUNK // 32)


@flask_app.route("/")
def index() -> str:
    return "Hello from the matrix app!\n"


def _seen(**more: Any) -> ResponseReturnValue:
    environ = request.environ
    return jsonify(
        path=request.path,
        script_root=request.script_root,
        url=request.url,
        url_for_index=url_for("index"),
        url_for_external=url_for("index", _external=True),
        scheme=request.scheme,
        is_secure=request.is_secure,
        host=request.host,
        args=request.args.to_dict(flat=False),
        environ={
            name: environ.get(name)
            for name in ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "HTTPS")
        },
        **more,
    )


@flask_app.route("/info")
def info() -> ResponseReturnValue:
    return _seen()


@flask_app.route("/p/<path:rest>")
def segments(rest: str) -> ResponseReturnValue:
    return _seen(rest=rest, url_for_self=url_for("segments", rest=rest))


@flask_app.route("/echo", methods=["POST"])
def echo() -> ResponseReturnValue:
    return jsonify(request.form.to_dict(flat=False))


@flask_app.route("/upload", methods=["POST"])
def upload() -> ResponseReturnValue:
    uploaded = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: uploaded.stream.read(65536), b""):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(
        sha256=digest.hexdigest(), size=size, filename=uploaded.filename, note=request.form["note"]
    )


@flask_app.route("/stream")
def stream() -> ResponseReturnValue:
    return Response(stream_bytes(), mimetype="application/octet-stream")


@flask_app.route("/teapot")
def teapot() -> ResponseReturnValue:
    return "short and stout\n", "418 Short And Stout"


@flask_app.route("/cookies")
def cookies() -> ResponseReturnValue:
    response = Response("three cookies\n")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2", path="/somewhere")
    response.set_cookie("third", "3", httponly=True)
    return response


@flask_app.route("/big-header")
def big_header() -> ResponseReturnValue:
    size = int(request.args["size"])
    response = Response("big header\n")
    response.headers["X-Big"] = "b" * size
    return response


@flask_app.route("/auth")
def auth() -> ResponseReturnValue:
    credentials = request.authorization
    return jsonify(
        header=request.environ.get("HTTP_AUTHORIZATION"),
        username=credentials.username if credentials else None,
        password=credentials.password if credentials else None,
    )


@flask_app.route("/login", methods=["POST"])
def login() -> ResponseReturnValue:
    # Post/Redirect/Get: Werkzeug sends the relative Location "/app/welcome".
    return redirect(url_for("welcome", user=request.form["user"]))


@flask_app.route("/welcome")
def welcome() -> str:
    return f"welcome {request.args['user']}\n"


@flask_app.route("/redirect-200")
def redirect_200() -> ResponseReturnValue:
    # Not a redirect to the client: status 200 with a local Location, the
    # form Apache's mod_proxy_scgi turns into an internal redirect.
    return Response("not followed\n", headers={"Location": url_for("welcome", user="internal")})


@flask_app.route("/boom")
def boom() -> str:
    raise RuntimeError("matrix-boom-5d1e: raised on purpose")


def _bad_header(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Bad", "a\r\nInjected: yes")])
    return [b"never sent\n"]


def _raw_boom(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    raise RuntimeError("raw-boom-8c2d: raised before the response head")


def _late_boom(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    raise RuntimeError("late-boom-4e7a: raised after the head was sent")


def _late_boom_with_length(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    yield b"first part\n"
    raise RuntimeError("late-boom-4e7a: raised after the head was sent")


RAW_ROUTES = {
    "/bad-header": _bad_header,
    "/raw-boom": _raw_boom,
    "/late-boom": _late_boom,
    "/late-boom-with-length": _late_boom_with_length,
}


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The WSGI entry point: Flask, except raw routes that Flask would not let fail so."""
    raw = RAW_ROUTES.get(environ.get("PATH_INFO", ""))
    if raw is not None:
        return raw(environ, start_response)
    return flask_app(environ, start_response)
