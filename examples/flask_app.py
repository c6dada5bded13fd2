"""A small Flask application for trying scgiwsgi behind a front-end server.

Run it from the repository root with::

    scgi-wsgi examples.flask_app:app --bind 127.0.0.1:4000

Routes: ``/`` greets, ``/echo`` (POST) echoes the form back, ``/info`` shows
how the request URL was understood (useful for checking SCRIPT_NAME and the
scheme behind a proxy), ``/upload`` (POST) returns the SHA-256 of the
uploaded file field ``file``.
"""

from __future__ import annotations

import hashlib

from flask import Flask, abort, jsonify, request, url_for
from flask.typing import ResponseReturnValue

app = Flask(__name__)


@app.route("/")
def index() -> str:
    """Greet."""
    return "Hello from Flask!\n"


@app.route("/echo", methods=["POST"])
def echo() -> ResponseReturnValue:
    """Return the submitted form fields as JSON."""
    return jsonify(request.form.to_dict(flat=False))


@app.route("/info")
def info() -> ResponseReturnValue:
    """Show how the server's environ was turned into a URL."""
    return jsonify(
        path=request.path,
        script_root=request.script_root,
        url_for_index=url_for("index"),
        url=request.url,
        scheme=request.scheme,
    )


@app.route("/upload", methods=["POST"])
def upload() -> str:
    """Return the SHA-256 hex digest of the uploaded file ``file``."""
    uploaded = request.files.get("file")
    if uploaded is None:
        abort(400, "missing file field 'file'")
    digest = hashlib.sha256()
    for chunk in iter(lambda: uploaded.stream.read(65536), b""):
        digest.update(chunk)
    return digest.hexdigest() + "\n"
